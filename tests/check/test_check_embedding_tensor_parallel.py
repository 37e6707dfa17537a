"""The embedding verdict on tensor-parallel embeddings: the sums' scales are the full tensors'
(2 gloo CPU ranks, in a subprocess: ``tests/helpers/_embedding_tp_script.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


def test_tensor_parallel_embeddings_are_judged_as_unsharded(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(_ROOT)}
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    completed = subprocess.run(
        [sys.executable, str(_ROOT / "tests" / "helpers" / "_embedding_tp_script.py"),
         str(tmp_path)], env=environment, capture_output=True, text=True, timeout=120,
        check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert [finding[:3] for finding in plain] == [["embedding", "words", "positions"]]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == plain
