"""The init check's notes on the init itself: ``trunc_normal_`` bounds that truncate nothing
(in a Hugging Face model's ``_init_weights``, and in a policy rule), and uninitialized memory
seen as exact repeats."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from _preset_models import MODELS
from torch import nn

from lightning_init import InitPolicy, check_init, weights_fingerprint
from lightning_init.check.findings import PREFIX, init_findings

_IDLE = "so nothing is truncated"
_REPEATS = "(exact repeats)"


def _notes(model: nn.Module, word: str) -> list[str]:
    return [note for note in init_findings(model, []) if word in note]


# ----------------------------------------------------- trunc_normal_ in the model's init code


def _zoo(name: str) -> tuple[nn.Module, object]:
    pytest.importorskip("transformers")
    from zoo import HEALTHY, build

    return build(next(case for case in HEALTHY if case.name == name))


def test_vit_init_weights_trunc_normal_is_noted_and_the_model_untouched() -> None:
    model, inputs = _zoo("vit")
    before = weights_fingerprint(model)
    report = check_init(model, inputs)
    assert weights_fingerprint(model) == before
    notes = [note for note in report.notes if _IDLE in note]
    assert len(notes) == 1, report.notes
    note = notes[0]
    assert note.startswith(PREFIX)
    assert "`vit.embeddings.position_embeddings`, `vit.embeddings.cls_token`" in note
    assert "std 0.02" in note and "-100 / +100 std" in note
    assert "a=-2*std, b=2*std (a=-0.04, b=0.04)" in note
    assert report.ok  # a note, not a problem


def test_the_recording_draws_no_random_number() -> None:
    model, _ = _zoo("vit")
    rng = torch.random.get_rng_state()
    assert _notes(model, _IDLE)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert torch.nn.init.trunc_normal_.__module__ == "torch.nn.init"  # restored


def test_dinov2_notes_its_linear_weights_and_counts_the_rest() -> None:
    model, _ = _zoo("dinov2")
    [note] = _notes(model, _IDLE)
    assert "`dinov2.embeddings.patch_embeddings.projection.weight` and 13 more" in note


def test_a_plain_torch_model_gets_no_trunc_normal_note() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    for layer in model[::2]:
        nn.init.trunc_normal_(layer.weight, std=0.02)  # idle bounds, but no init code to read
    assert not _notes(model, _IDLE)


def _vit_class(init_weights):
    transformers = pytest.importorskip("transformers")

    class ViT(transformers.ViTForImageClassification):
        _init_weights = init_weights

    return ViT, transformers.ViTConfig(hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64,
                                       image_size=32, patch_size=8, num_labels=3)


def test_a_vit_whose_init_cuts_at_two_std_gets_no_note() -> None:
    from transformers import PreTrainedModel
    from transformers.models.vit.modeling_vit import ViTEmbeddings

    def init_weights(self, module: nn.Module) -> None:
        PreTrainedModel._init_weights(self, module)
        if isinstance(module, ViTEmbeddings):
            std = self.config.initializer_range
            for tensor in (module.position_embeddings, module.cls_token):
                nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)

    cls, config = _vit_class(init_weights)
    assert not _notes(cls(config), _IDLE)


def test_an_init_that_fills_a_temporary_copy_is_attributed_to_its_parameter() -> None:
    """As transformers 4.x's ViT: ``weight.data = trunc_normal_(weight.data.to(...)).to(dtype)``."""

    def init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            module.weight.data = nn.init.trunc_normal_(
                module.weight.data.to(torch.float64), mean=0.0, std=0.02,
            ).to(module.weight.dtype)

    cls, config = _vit_class(init_weights)
    model = cls(config)
    before = weights_fingerprint(model)
    [note] = _notes(model, _IDLE)
    assert "`vit.layers.0.attention.q_proj.weight`, `vit.layers.0.attention.k_proj.weight`" in note
    assert "and 4 more" in note  # o_proj, the MLP's two, the classifier
    assert weights_fingerprint(model) == before


# --------------------------------------------------------------- trunc_normal in a policy


def _policy_messages(caplog: pytest.LogCaptureFixture, spec: dict, model: nn.Module) -> list[str]:
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"}, "weight": spec}]})
    with caplog.at_level(logging.WARNING, logger="lightning_init"):
        policy.apply(model)
    return [record.getMessage() for record in caplog.records if _IDLE in record.getMessage()]


def test_a_policy_rule_with_idle_bounds_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    [message] = _policy_messages(caplog, {"init": "trunc_normal", "std": 0.02}, model)
    assert message.startswith("rules[0] (type=Linear)")
    assert "'0.weight'" in message and "a=-0.04, b=0.04" in message


def test_an_expression_std_is_judged_at_its_value(caplog: pytest.LogCaptureFixture) -> None:
    spec = {"init": "trunc_normal", "std": "1 / sqrt(fan_in)", "a": -1.0, "b": 1.0}
    assert not _policy_messages(caplog, spec, nn.Linear(4, 4))  # std 0.5: cut at 2 std
    caplog.clear()
    assert _policy_messages(caplog, spec, nn.Linear(400, 4))  # std 0.05: cut at 20 std


def test_a_policy_with_bounds_in_std_units_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    spec = {"init": "trunc_normal", "std": 0.02, "a": -0.04, "b": 0.04}
    assert not _policy_messages(caplog, spec, nn.Linear(8, 8))


def test_a_policy_file_warning_names_its_line(caplog: pytest.LogCaptureFixture,
                                              tmp_path: object) -> None:
    path = tmp_path / "policy.yaml"  # type: ignore[operator]
    path.write_text("rules:\n  - match: {type: Linear}\n    weight: {init: trunc_normal, "
                    "std: 0.01}\n")
    with caplog.at_level(logging.WARNING, logger="lightning_init"):
        InitPolicy.from_yaml(path).explain(nn.Linear(8, 8))
    [message] = [record.getMessage() for record in caplog.records]
    assert f"({path}, line 2)" in message and "at std 0.01" in message


@pytest.mark.parametrize("preset", ["vit", "vit_timm", "vit_jax", "llama3_depth_init"])
def test_presets_that_copy_idle_bounds_are_not_told(caplog: pytest.LogCaptureFixture,
                                                    preset: str) -> None:
    with caplog.at_level(logging.WARNING, logger="lightning_init"):
        InitPolicy.from_preset(preset).apply(MODELS[preset]())
    assert not [r for r in caplog.records if _IDLE in r.getMessage()]


# ------------------------------------------------------------------ exact repeats


def _tiled(layer: nn.Linear, pattern: int) -> nn.Linear:
    with torch.no_grad():
        n = layer.weight.numel()
        layer.weight.copy_(torch.randn(pattern).repeat(n // pattern).view_as(layer.weight))
    return layer


def test_a_tiled_pattern_is_noted_unless_every_row_is_the_same() -> None:
    [note] = _notes(_tiled(nn.Linear(40, 64), 16), _REPEATS)
    assert note.startswith(f"{PREFIX}`weight` holds 2560 values but only 16 distinct ones")
    assert "torch.empty / to_empty" in note
    assert not _notes(_tiled(nn.Linear(48, 64), 16), _REPEATS)  # a table for every channel


def test_to_empty_memory_holding_a_freed_pattern_is_noted() -> None:
    """Simulated: CPU malloc often hands ``to_empty`` the block of a tensor just freed, but not
    always; the parameter is given that block's content."""
    with torch.device("meta"):
        layer = nn.Linear(60, 64)
    layer.to_empty(device="cpu")
    with torch.no_grad():
        layer.bias.zero_()
        freed = torch.randn(64, 1).expand(64, 32).contiguous()  # a broadcast that was freed
        layer.weight.view(-1)[:2048].copy_(freed.view(-1))
        layer.weight.view(-1)[2048:].zero_()
    [note] = _notes(layer, _REPEATS)
    assert "`weight` holds 2048 non-zero values but only 64 distinct ones" in note


def test_a_large_tensor_is_read_in_its_first_values() -> None:
    layer = _tiled(nn.Linear(1024, 100), 10)
    [note] = _notes(layer, _REPEATS)
    assert "in its first 65536 values" in note


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fill", [
    lambda w: nn.init.normal_(w, std=0.02), lambda w: nn.init.uniform_(w, -1, 1),
    nn.init.kaiming_normal_, lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5)),
    nn.init.xavier_normal_, nn.init.xavier_uniform_, nn.init.orthogonal_,
    lambda w: nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04),
    lambda w: nn.init.sparse_(w, 0.9), nn.init.eye_, lambda w: nn.init.constant_(w, 0.5),
], ids=["normal", "uniform", "kaiming_normal", "kaiming_uniform", "xavier_normal",
        "xavier_uniform", "orthogonal", "trunc_normal", "sparse", "eye", "constant"])
def test_real_inits_are_not_repeats(fill: object, dtype: torch.dtype) -> None:
    layer = nn.Linear(512, 512).to(dtype)  # 262144 values: the test reads 65536
    with torch.no_grad():
        fill(layer.weight)  # type: ignore[operator]
    assert not _notes(layer, _REPEATS)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_random_inits_repeat_and_are_left_out(dtype: torch.dtype) -> None:
    layer = nn.Linear(256, 256).to(dtype)
    values = layer.weight.detach().flatten()
    assert torch.unique(values).numel() < values.numel() / 2  # legitimately repeats
    assert not _notes(layer, _REPEATS)


def test_deliberate_discrete_inits_are_not_repeats() -> None:
    table = nn.Module()
    rows = torch.log(torch.arange(1, 17, dtype=torch.float32))
    table.A_log = nn.Parameter(rows.repeat(64, 1))  # Mamba: one table for every channel
    table.index = nn.Parameter(torch.arange(100.0).repeat(10))  # integer values
    grid = torch.arange(14.0).repeat_interleave(14)  # 2-D sin-cos over a 14x14 grid, frozen
    table.pos = nn.Parameter(torch.sin(grid[:, None] / torch.arange(1, 33.0)),
                             requires_grad=False)
    assert not _notes(table, _REPEATS)


@pytest.mark.parametrize("preset", sorted(MODELS))
def test_presets_draw_no_repeats(preset: str) -> None:
    model = MODELS[preset]()
    InitPolicy.from_preset(preset).apply(model, seed=0)
    assert not _notes(model, _REPEATS)


# ------------------------------------------------------------------ the healthy zoo


def _healthy() -> list[object]:
    try:
        from zoo import HEALTHY
    except ImportError:  # no transformers
        return []
    from test_check_zoo import _FALSE_ALARMS  # the check's known false alarms, as xfail there

    return [pytest.param(case, id=case.name, marks=[
        pytest.mark.xfail(strict=True, reason=_FALSE_ALARMS[case.name])]
        if case.name in _FALSE_ALARMS else []) for case in HEALTHY]


@pytest.mark.parametrize("case", _healthy())
def test_healthy_zoo_has_no_uninitialized_memory_and_stays_ok(case: object) -> None:
    from zoo import build, check

    model, inputs = build(case)  # type: ignore[arg-type]
    before = weights_fingerprint(model)
    report = check(case, model, inputs)
    assert report.ok, [problem.message for problem in report.problems]
    assert not [note for note in report.notes if "initializer draws" in note], report.notes
    assert weights_fingerprint(model) == before
