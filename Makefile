# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv by itself. torch==2.13.0 (CPU build) is installed
# first when the venv has no torch: an unpinned torch would pull GBs of CUDA packages.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lightning-init-installed

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(PY) examples/quickstart.py

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .

bench: venv
	$(PY) benchmarks/bench_policy_apply.py
	$(PY) benchmarks/bench_diagnostics.py
	$(PY) -c "import wandb, sklearn, transformers" 2>/dev/null || $(PY) -m pip install -e ".[bench]"
	$(PY) benchmarks/bench_peers.py
	$(PY) benchmarks/bench_auto_memory.py
	$(PY) benchmarks/bench_auto.py --quick

clean:
	rm -rf $(VENV) lightning_logs build *.egg-info
