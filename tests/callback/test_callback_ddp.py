"""InitCallback under 2-process gloo DDP: every rank holds the policy's weights, or it raises.

``tests/helpers/_ddp_script.py`` runs in a subprocess with
``Trainer(strategy="ddp", accelerator="cpu", devices=2)``; Lightning re-runs the script for rank 1.
Each rank seeds its global RNG differently before building its model.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lightning_init import weights_fingerprint
from lightning_init.policy import InitPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from _models import RELU_POLICY, ConfiguredNet, Net

_ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out_dir = tmp_path_factory.mktemp("ddp")
    environment = {**os.environ, "PYTHONPATH": str(_ROOT), "PL_DISABLE_FORK": "1"}
    # PL_GLOBAL_SEED would seed every rank alike (DDP's setup re-seeds from it).
    for name in (
        "LOCAL_RANK",
        "NODE_RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "PL_GLOBAL_SEED",
        "PL_SEED_WORKERS",
    ):
        environment.pop(name, None)
    completed = subprocess.run(
        [sys.executable, str(_ROOT / "tests" / "helpers" / "_ddp_script.py"), str(out_dir)],
        cwd=out_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*_rank*.json")):
        case = path.stem.rsplit("_rank", 1)[0]
        results.setdefault(case, []).append(json.loads(path.read_text()))
    assert "init" in results and "configure_model" in results, completed.stderr[-4000:]
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", ["init", "configure_model"])
def test_every_rank_holds_the_policy_weights(
    ddp_results: dict[str, list[dict[str, Any]]], case: str
) -> None:
    ranks = ddp_results[case]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    assert ranks[0]["state"] == ranks[1]["state"]
    state = ranks[0]["state"]
    assert state["applied"] and state["fingerprint"] == ranks[0]["fingerprint"]
    assert state["policy_name"] == "relu" and state["seed"] is not None  # rank 0's, shared
    assert all(rank["steps"] == 2 for rank in ranks)
    # lr=0: the trained weights are exactly what the policy gives with the shared seed.
    expected = Net() if case == "init" else ConfiguredNet()
    expected.configure_model()
    InitPolicy.from_dict(RELU_POLICY).apply(expected, seed=state["seed"])
    assert weights_fingerprint(expected) == state["fingerprint"]


@pytest.mark.slow
def test_auto_policy_measured_on_each_ranks_batch_is_rank_zeros_everywhere(
    ddp_results: dict[str, list[dict[str, Any]]],
) -> None:
    ranks = ddp_results["auto"]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    assert all("error" not in rank for rank in ranks), ranks
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    assert ranks[0]["state"]["applied"] and ranks[0]["state"]["policy_name"] == "auto"
    assert ranks[0]["variables"] == ranks[1]["variables"]
    assert 0.3 < ranks[0]["variables"]["head_input_rms"] < 3


@pytest.mark.slow
def test_rank_dependent_init_raises_on_every_rank(
    ddp_results: dict[str, list[dict[str, Any]]],
) -> None:
    ranks = ddp_results["rank_dependent"]
    assert ranks[0]["rank"] == 0  # rank 0 reports; rank 1 may be stopped by the launcher
    assert ranks[0]["fingerprint"] != ranks[-1]["fingerprint"] or len(ranks) == 1, ranks
    for rank in ranks:
        assert "ranks hold different weights" in rank["error"]
        for other in ranks:  # each rank's own fingerprint is listed under its rank
            assert f"rank {other['rank']}: {other['fingerprint']}" in rank["error"]
        assert "rank 1: " in rank["error"]
        assert rank["steps"] == 0 and not rank["state"]["applied"]


@pytest.mark.slow
def test_activations_are_aggregated_over_every_rank(
    ddp_results: dict[str, list[dict[str, Any]]],
) -> None:
    """Rank zero logs the statistics of both ranks' batches, not of its own only."""
    ranks = ddp_results["diagnostics"]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    assert all(rank["hooks_left"] == 2 for rank in ranks)  # only the test's own two hooks
    assert ranks[0]["sum_sq"] != pytest.approx(ranks[1]["sum_sq"])  # different data per rank
    logged = ranks[0]["metrics"]["0"]
    total = ranks[0]["sum"] + ranks[1]["sum"]
    total_sq = ranks[0]["sum_sq"] + ranks[1]["sum_sq"]
    count = ranks[0]["count"] + ranks[1]["count"]
    assert logged["lightning_init/act_mean/net.0"] == pytest.approx(total / count, rel=1e-5)
    variance = (total_sq - total * total / count) / (count - 1)
    assert logged["lightning_init/act_std/net.0"] == pytest.approx(math.sqrt(variance), rel=1e-5)
    # A ReLU unit is dead only if it gave 0 on every sample of every rank.
    unit_max = [max(a, b) for a, b in zip(*(r["relu_unit_max"] for r in ranks), strict=True)]
    dead = sum(1 for value in unit_max if value == 0) / len(unit_max)
    assert dead == 6 / 8  # the script's construction: units 0 and 1 each live on one rank
    assert logged["lightning_init/act_dead_fraction/net.1"] == pytest.approx(dead)
    assert ranks[1]["metrics"] == {}  # only rank zero writes


@pytest.mark.slow
def test_a_rank_whose_diagnostics_failed_still_joins_the_collectives(
    ddp_results: dict[str, list[dict[str, Any]]],
) -> None:
    """Rank 0's measurement raises at step 0: training goes on, nobody waits forever."""
    ranks = ddp_results["diagnostics_failed"]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    assert all(rank["steps"] == 2 for rank in ranks)  # both ranks trained to the end
    assert any("measurement broke on rank 0" in message for message in ranks[0]["warnings"])
    assert ranks[0]["metrics"] == {} and ranks[1]["warnings"] == []
    assert all(rank["hooks_left"] == 2 for rank in ranks)
