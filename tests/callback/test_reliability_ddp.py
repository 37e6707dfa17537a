"""Issue 25 under 2-process gloo DDP: a part loaded before the fit is kept on every rank, and a
lazy model trained on two dataloaders is materialized (DDP refuses to wrap it otherwise) and
checked on the batch training_step gets. The script: tests/helpers/_reliability_ddp_script.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out_dir = tmp_path_factory.mktemp("reliability_ddp")
    environment = {**os.environ, "PYTHONPATH": str(_ROOT), "PL_DISABLE_FORK": "1"}
    for name in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        environment.pop(name, None)
    script = _ROOT / "tests" / "helpers" / "_reliability_ddp_script.py"
    completed = subprocess.run(
        [sys.executable, str(script), str(out_dir)],
        cwd=out_dir, env=environment, capture_output=True, text=True, timeout=240, check=False)
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*_rank*.json")):
        found.setdefault(path.stem.rsplit("_rank", 1)[0], []).append(json.loads(path.read_text()))
    assert set(found) == {"loaded_part", "two_loaders_lazy"}, completed.stderr[-4000:]
    assert all(len(ranks) == 2 for ranks in found.values()), completed.stderr[-4000:]
    return found


def test_item1_ddp_a_part_loaded_before_the_fit_is_kept_on_every_rank(results):
    ranks = results["loaded_part"]
    assert [rank.get("error") for rank in ranks] == [None, None]
    assert all(rank["backbone_kept"] and rank["head_constant"] for rank in ranks)
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]


def test_item3_ddp_lazy_modules_and_two_dataloaders_fit_and_are_checked(results):
    ranks = results["two_loaders_lazy"]
    assert [rank.get("error") for rank in ranks] == [None, None]
    assert all(rank["checked"] and not rank["stepped_aside"] for rank in ranks)
    assert all(rank["shape"] == [16, 6] for rank in ranks)
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
