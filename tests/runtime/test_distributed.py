"""``lightning_init.runtime.distributed`` on 2 gloo CPU processes: full-tensor statistics of
DTensors from the shards' partial sums, against ``.full_tensor()``.

``tests/helpers/_distributed_script.py`` runs once per module in a subprocess (a hung collective
is cut by the timeout) and writes each rank's measurements and references.
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

_ROOT = Path(__file__).resolve().parents[2]
_BINS = 8


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("distributed")
    environment = {**os.environ, "PYTHONPATH": str(_ROOT)}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    completed = subprocess.run(
        [sys.executable, str(_ROOT / "tests" / "helpers" / "_distributed_script.py"), str(out_dir)],
        env=environment, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def _close(actual: float, expected: float, rel: float = 1e-4) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return actual == pytest.approx(expected, rel=rel, abs=1e-12)


@pytest.mark.parametrize("rank", [0, 1])
def test_statistics_equal_the_full_tensors(ranks: list[dict[str, Any]], rank: int) -> None:
    result = ranks[rank]
    fields = ("numel", "sum", "sum_sq", "absmax", "nonfinite", "norm", "mean", "std")
    for name, row, reference in zip(
        result["names"], result["stats"], result["reference"], strict=True
    ):
        for field, actual, expected in zip(fields, row, reference, strict=True):
            assert _close(actual, expected), (name, field, actual, expected)


def test_cases_cover_each_placement(ranks: list[dict[str, Any]]) -> None:
    rows = dict(zip(ranks[0]["names"], ranks[0]["stats"], strict=True))
    # The replicated tensors count once, the empty shard adds nothing, non-finite values count.
    assert rows["replicate"][0] == 7
    assert rows["submesh_rep"][0] == 9
    assert rows["mesh2d_rep_rep"][0] == 4
    assert rows["shard0_uneven"][0] == 15
    assert rows["empty_shard"][0] == 4
    assert rows["nonfinite"][4] == 2 and math.isnan(rows["nonfinite"][3])
    # A plain tensor is each rank's own.
    assert ranks[0]["stats"][7] != ranks[1]["stats"][7]


@pytest.mark.parametrize("rank", [0, 1])
def test_histograms_equal_the_full_tensors(ranks: list[dict[str, Any]], rank: int) -> None:
    result = ranks[rank]
    for name, row, reference in zip(
        result["names"], result["histograms"], result["reference_histograms"], strict=True
    ):
        assert row[5 + _BINS:] == reference[5 + _BINS:], name  # counts: bit-equal
        for actual, expected in zip(row[: 5 + _BINS], reference[: 5 + _BINS], strict=True):
            assert actual == pytest.approx(expected, rel=1e-4, abs=1e-6), name


def test_a_sampled_histogram_takes_each_shard_in_proportion(
    ranks: list[dict[str, Any]],
) -> None:
    assert ranks[0]["sampled_histogram_num"] == 10


def test_reduced_squares_count_replicas_once(ranks: list[dict[str, Any]]) -> None:
    for result in ranks:
        rows = dict(zip(result["names"], result["reference"], strict=True))
        sharded, replicated, plain = result["squares"]
        assert sharded == pytest.approx(rows["shard0_uneven"][2], rel=1e-6)
        assert replicated == pytest.approx(rows["replicate"][2], rel=1e-6)
        assert plain == result["local_squares"][2]
    assert ranks[0]["local_squares"][0] != ranks[0]["squares"][0]


def test_a_handful_of_collectives_whatever_the_number_of_tensors(
    ranks: list[dict[str, Any]],
) -> None:
    assert ranks[0]["collectives"] == {
        "stats_30": 2, "stats_3": 2, "stats_30_plus_10_partial": 3, "histograms_30": 2,
    }


def test_a_local_failure_still_joins_the_collectives(ranks: list[dict[str, Any]]) -> None:
    failed, other = ranks[1]["failure"], ranks[0]["failure"]
    assert failed["stats_error"] == "local failure on rank 1"
    # The other rank returns: NaN where rank 1's part was missing, its own plain tensor intact.
    names = ranks[0]["names"]
    for name, row in zip(names, other["stats"], strict=True):
        if name == "plain_per_rank":
            assert row == ranks[0]["stats"][names.index(name)]
        else:
            assert all(math.isnan(value) for value in row), name
    # And the next call is in step on both ranks.
    assert failed["after"] == other["after"]
    assert failed["after"][0][0] == 24


@pytest.mark.parametrize("kind", ["tp", "fsdp"])
def test_fingerprint_of_a_sharded_model_is_the_unsharded_one(
    ranks: list[dict[str, Any]], kind: str
) -> None:
    for result in ranks:
        models = result["models"]
        assert models[f"{kind}_fingerprint"] == models["reference_fingerprint"]
        assert models[f"{kind}_local_fingerprint"] != models["reference_fingerprint"]


@pytest.mark.parametrize("kind", ["tp", "fsdp"])
def test_parameter_statistics_of_sharded_models(
    ranks: list[dict[str, Any]], kind: str
) -> None:
    models = ranks[0]["models"]
    # Tensor parallel leaves the row-wise layer's bias replicated and LayerNorm's plain.
    if kind == "tp":
        assert models["tp_placements"][3] == "(Replicate(),)"
    for row, reference in zip(models[f"{kind}_stats"], models["reference_stats"], strict=True):
        for actual, expected in zip(row, reference, strict=True):
            assert _close(actual, expected), (kind, actual, expected)
