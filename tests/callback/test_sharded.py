"""InitCallback under Lightning's ModelParallelStrategy on 2 CPU ranks (gloo): FSDP2
(``data_parallel_size=2``) and tensor parallel (``tensor_parallel_size=2``); and on 4 ranks, a
2-D mesh (both sizes 2, a launch of its own).

Each case runs ``tests/helpers/_sharded_script.py`` in its own subprocess (a fit that fails
under this strategy can end in a segfault during teardown), which writes each rank's results: the
full fingerprint at ``on_train_start``, the full tensors' statistics where the diagnostics read
them (``.full_tensor()``), the callback's state and the TensorBoard directory.
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
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

_ROOT = Path(__file__).resolve().parents[2]

CASES = ["fsdp_default", "tp_default", "fsdp_seeded", "tp_seeded", "fsdp_empty", "tp_empty",
         "fsdp_resume", "tp_resume", "fsdp_failure", "fsdp_auto", "tp_auto"]


MESH_CASES = ["mesh_default", "mesh_seeded"]


def _launch(out_dir: Path, cases: list[str]) -> dict[str, Any]:
    """``cases`` in one launch of ``tests/helpers/_sharded_script.py`` (each start costs seconds of
    imports): ``{"code", "stderr", case: per-rank results}``."""
    environment = {**os.environ, "PYTHONPATH": str(_ROOT), "PL_DISABLE_FORK": "1"}
    for name in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        environment.pop(name, None)
    try:
        completed = subprocess.run(
            [sys.executable, str(_ROOT / "tests" / "helpers" / "_sharded_script.py"), str(out_dir),
             *cases],
            cwd=out_dir, env=environment, capture_output=True, text=True, timeout=400,
            check=False,
        )
        code, stderr = completed.returncode, completed.stderr[-3000:]
    except subprocess.TimeoutExpired as timeout:
        code, stderr = -1, f"timed out: {str(timeout.stderr)[-3000:]}"
    results: dict[str, Any] = {"code": code, "stderr": stderr}
    for case in cases:
        results[case] = [json.loads(p.read_text()) for p in sorted(out_dir.glob(f"{case}_rank*"))]
    return results


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every 2-rank case, in one launch of 2 processes."""
    return _launch(tmp_path_factory.mktemp("sharded"), CASES)


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The 2-D mesh cases, in one launch of 4 processes."""
    return _launch(tmp_path_factory.mktemp("sharded_mesh"), MESH_CASES)


def _finished(run: dict[str, Any], case: str, ranks: int = 2) -> list[dict[str, Any]]:
    results = run[case]
    errors = [r.get("traceback", r.get("error")) for r in results if "error" in r]
    assert not errors, errors[0]
    assert sorted(r["rank"] for r in results) == list(range(ranks)), (run["code"], run["stderr"])
    return results


def _reference_fingerprint() -> str:
    from _sharded_script import reference_fingerprint

    return reference_fingerprint()


def _scalars(log_dir: str) -> dict[str, dict[int, float]]:
    events = EventAccumulator(str(Path(log_dir) / "diagnostics"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)}
            for tag in events.Tags()["scalars"]}


def test_the_launch_exits_cleanly(run: dict[str, Any]) -> None:
    assert run["code"] == 0, run["stderr"]


@pytest.mark.parametrize("case", ["fsdp_default", "tp_default", "fsdp_seeded", "tp_seeded"])
def test_fit_finishes(run: dict[str, Any], case: str) -> None:
    results = _finished(run, case)
    assert all(r["state"]["applied"] for r in results)


def test_the_check_runs_under_tensor_parallel_on_full_outputs(run: dict[str, Any]) -> None:
    """A tensor-parallel fit's check runs (a row-wise layer's output is a DTensor: its
    statistics are the full tensor's) and agrees with the FSDP fit's on the layers whose output
    is whole on every rank. A column-wise layer's output stays a local shard: its statistics
    are the shard's (not corrected)."""
    reports = {}
    for case in ("fsdp_default", "tp_default"):
        rank_zero = next(r for r in _finished(run, case) if r["rank"] == 0)
        report = json.loads((Path(rank_zero["log_dir"]) / "init_check.json").read_text())
        assert report["ok"], report["problems"]
        reports[case] = {layer["name"]: layer["output_std"] for layer in report["layers"]}
    whole = [name for name in reports["fsdp_default"] if name.endswith(("down", "head"))]
    assert len(whole) == 4
    for name in whole:
        assert reports["tp_default"][name] == pytest.approx(reports["fsdp_default"][name],
                                                            rel=1e-5), name


def test_auto_policy_under_sharding_is_its_yaml_on_an_unsharded_model(run: dict[str, Any]) -> None:
    """policy="auto" built from the sharded module's sample pass (FSDP2, tensor parallel): every
    rank holds the same full weights, and the YAML written to the log directory gives an
    unsharded copy of the model exactly those weights."""
    from _sharded_script import ResidualMLP

    from lightning_init import InitPolicy, weights_fingerprint

    results = _finished(run, "fsdp_auto") + _finished(run, "tp_auto")
    assert all(r["state"]["applied"] and r["state"]["policy_name"] == "auto" for r in results)
    for result in results:
        model = ResidualMLP("none")
        InitPolicy.from_yaml(Path(result["log_dir"]) / "init_policy.yaml").apply(model)
        assert weights_fingerprint(model) == result["state"]["fingerprint"], result["case"]


@pytest.mark.parametrize("case", ["fsdp_seeded", "tp_seeded"])
def test_full_weights_equal_an_unsharded_models(run: dict[str, Any], case: str) -> None:
    results = _finished(run, case)
    expected = _reference_fingerprint()
    assert [r["fingerprint_at_start"] for r in results] == [expected, expected]


@pytest.mark.parametrize("case", ["fsdp_seeded", "tp_seeded"])
def test_the_recorded_fingerprint_is_the_full_models(run: dict[str, Any], case: str) -> None:
    results = _finished(run, case)
    assert [r["state"]["fingerprint"] for r in results] == [_reference_fingerprint()] * 2


_STATISTICS = {
    "weight_norm": ("weights", "norm"), "weight_std": ("weights", "std"),
    "weight_mean": ("weights", "mean"), "weight_absmax": ("weights", "absmax"),
    "grad_norm": ("grads", "norm"), "grad_std": ("grads", "std"),
    "grad_absmax": ("grads", "absmax"), "update_ratio": ("updates", None),
}


def _assert_logged_statistics_are_the_full_tensors(results: list[dict[str, Any]]) -> None:
    rank0 = next(r for r in results if r["rank"] == 0)
    scalars = _scalars(rank0["log_dir"])
    compared = 0
    for statistic, (source, key) in _STATISTICS.items():
        for step, per_name in rank0[source].items():
            for name, value in per_name.items():
                expected = value if key is None else value[key]
                if not math.isfinite(expected) or (statistic == "update_ratio" and expected == 0):
                    continue
                logged = scalars[f"lightning_init/{statistic}/{name}"][int(step)]
                assert logged == pytest.approx(expected, rel=1e-4, abs=1e-7), (
                    statistic, name, step)
                compared += 1
    assert compared > 100


@pytest.mark.parametrize("case", ["fsdp_seeded", "tp_seeded"])
def test_logged_statistics_are_the_full_tensors(run: dict[str, Any], case: str) -> None:
    _assert_logged_statistics_are_the_full_tensors(_finished(run, case))


@pytest.mark.parametrize("case", ["fsdp_empty", "tp_empty"])
def test_empty_init_gets_the_policy_as_its_one_initialization(
    run: dict[str, Any], case: str
) -> None:
    results = _finished(run, case)
    assert all(r["built_on_meta"] for r in results)
    assert [r["fingerprint_at_start"] for r in results] == [_reference_fingerprint()] * 2
    assert all(r["reset_parameters_calls"] == 0 for r in results)
    # No rank materializes a full-size copy of a sharded parameter (tensor parallel leaves the
    # head unsharded: 16 x 4 + 4 elements).
    unsharded = {"fsdp_empty": 0, "tp_empty": 68}[case]
    assert all(r["plain_numel_materialized"] <= unsharded for r in results)


@pytest.mark.parametrize("case", ["fsdp_resume", "tp_resume"])
def test_resume_from_the_distributed_checkpoint(run: dict[str, Any], case: str) -> None:
    results = _finished(run, case)
    for result in results:
        resumed = result["resumed"]
        assert "error" not in resumed, resumed.get("traceback")
        # The checkpoint's weights, not a new init; the callback's state on every rank.
        assert resumed["fingerprint_at_start"] == result["fingerprint_at_end"]
        assert resumed["fingerprint_at_start"] != result["fingerprint_at_start"]
        assert resumed["state"]["applied"] is True
        assert resumed["state"]["fingerprint"] == result["state"]["fingerprint"]
        assert resumed["state"]["policy_name"] == "seeded_kaiming"


def test_a_local_failure_stops_every_ranks_diagnostics_at_the_same_step(
    run: dict[str, Any],
) -> None:
    results = {r["rank"]: r for r in _finished(run, "fsdp_failure")}
    # Rank 1 raised in its own measurement, rank 0 learnt it from the collective: both stop at
    # step 1, and the fit goes on to its end (no rank waits for a collective the other skips).
    assert results[0]["diagnostics_failed"] and results[1]["diagnostics_failed"]
    assert results[0]["logged_steps"] == [0]
    assert results[0]["state"]["applied"] and results[1]["state"]["applied"]


def test_replicas_verified_after_a_tensor_parallel_fit(run: dict[str, Any]) -> None:
    results = _finished(run, "tp_seeded")
    # The head is left whole by tensor parallel: both ranks hold it, and must agree.
    assert all(r["replicas"]["healthy"] is None for r in results)
    for result in results:
        message = result["replicas"]["perturbed"]
        assert message is not None and "head.weight (rank 0: " in message
        assert ", rank 1: " in message and "blocks." not in message


def test_the_2d_mesh_launch_exits_cleanly(mesh_run: dict[str, Any]) -> None:
    assert mesh_run["code"] == 0, mesh_run["stderr"]


def test_2d_mesh_fit_finishes_with_the_default_callback(mesh_run: dict[str, Any]) -> None:
    results = _finished(mesh_run, "mesh_default", ranks=4)
    assert all(r["state"]["applied"] for r in results)
    assert len({r["state"]["fingerprint"] for r in results}) == 1


def test_2d_mesh_fit_finishes_with_the_full_weights_of_an_unsharded_model(
    mesh_run: dict[str, Any],
) -> None:
    results = _finished(mesh_run, "mesh_seeded", ranks=4)
    expected = _reference_fingerprint()
    assert all(r["state"]["applied"] for r in results)
    assert [r["fingerprint_at_start"] for r in results] == [expected] * 4
    assert [r["state"]["fingerprint"] for r in results] == [expected] * 4


def test_2d_mesh_logged_statistics_are_the_full_tensors(mesh_run: dict[str, Any]) -> None:
    _assert_logged_statistics_are_the_full_tensors(_finished(mesh_run, "mesh_seeded", ranks=4))


def test_2d_mesh_replicas_verified(mesh_run: dict[str, Any]) -> None:
    results = _finished(mesh_run, "mesh_seeded", ranks=4)
    # Ranks (dp, tp) = 2 * dp + tp. The head is sharded over the data-parallel dimension only,
    # so ranks 2 and 3 hold the same piece of it; rank 3's was perturbed after the fit.
    assert all(r["replicas"]["healthy"] is None for r in results)
    for result in results:
        message = result["replicas"]["perturbed"]
        assert message is not None and "hold different values" in message
        assert "head.weight (rank 2: " in message and ", rank 3: " in message
        assert "rank 0" not in message and "blocks." not in message
