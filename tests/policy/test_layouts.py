"""Fan layouts: the fans of each layer type match the connections it makes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_init import PolicyError
from lightning_init.anatomy import layouts as _layouts
from lightning_init.anatomy.layouts import Layout, fans, layout_for, parse_layout, register_layout

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Registrations made by a test stay in that test."""
    monkeypatch.setattr(_layouts, "_REGISTRY", dict(_layouts._REGISTRY))


def _torch_fans(tensor):
    return torch.nn.init._calculate_fan_in_and_fan_out(tensor)


def _gpt2(n_layer=2):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=64, n_head=4, vocab_size=200,
                                     n_positions=64, bos_token_id=0,
                                     eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def _output_variance(layer, x, weight_std, crop=None):
    """Variance of ``layer(x)``, the weight's mean square exactly ``weight_std ** 2``, no bias.

    The weight is rescaled to its nominal second moment so that only the input's sampling
    noise remains: then an output summing ``n`` terms has variance ``n * weight_std ** 2``.
    """
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.weight.normal_(0.0, 1.0, generator=gen)
        layer.weight.mul_(weight_std / layer.weight.pow(2).mean().sqrt())
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()
        out = layer(x)
    if crop is not None:
        out = out[..., crop:-crop, crop:-crop]
    return out.var().item()


def test_gpt2_conv1d_fans_are_its_nx_and_nf_unlike_torch():
    model = _gpt2()
    seen = 0
    for name, module in model.named_modules():
        if type(module).__name__ == "Conv1D":
            fan_in, fan_out = fans(module, "weight", module.weight)
            assert (fan_in, fan_out) == (module.nx, module.nf), name
            assert _torch_fans(module.weight) == (module.nf, module.nx)
            seen += 1
    assert seen == 4 * 2  # c_attn, c_proj, c_fc, mlp.c_proj per block


def test_gpt2_conv1d_fan_in_preserves_the_variance_torch_fan_in_does_not():
    c_fc = _gpt2().transformer.h[0].mlp.c_fc  # (64, 256): 64 inputs, 256 outputs
    x = torch.randn(4096, 64, generator=torch.Generator().manual_seed(1))
    ours, _ = fans(c_fc, "weight", c_fc.weight)
    torchs, _ = _torch_fans(c_fc.weight)
    assert _output_variance(c_fc, x, ours ** -0.5) == pytest.approx(1.0, rel=0.05)
    assert _output_variance(c_fc, x, torchs ** -0.5) == pytest.approx(0.25, rel=0.05)


def test_linear_and_embedding_keep_torchs_reading():
    linear, embedding = nn.Linear(3, 5), nn.Embedding(100, 16)
    assert fans(linear, "weight", linear.weight) == _torch_fans(linear.weight) == (3, 5)
    assert fans(embedding, "weight", embedding.weight) == _torch_fans(embedding.weight) == (16, 100)
    bag = nn.EmbeddingBag(100, 16)
    assert fans(bag, "weight", bag.weight) == (16, 100)


def test_grouped_conv2d_fan_in_is_exact_and_fan_out_is_torchs():
    conv = nn.Conv2d(8, 16, kernel_size=3, groups=4)  # weight (16, 2, 3, 3)
    assert fans(conv, "weight", conv.weight) == _torch_fans(conv.weight) == (18, 144)
    x = torch.randn(64, 8, 12, 12, generator=torch.Generator().manual_seed(2))
    assert _output_variance(conv, x, 18 ** -0.5) == pytest.approx(1.0, rel=0.05)


def test_grouped_conv2d_exact_fan_out_on_request():
    conv = nn.Conv2d(8, 16, kernel_size=3, groups=4)
    register_layout(nn.Conv2d, {"in": 1, "out": 0, "grouped": "out"})
    assert fans(conv, "weight", conv.weight) == (18, 36)


def test_conv_transpose2d_fans_count_the_connections():
    convt = nn.ConvTranspose2d(8, 6, kernel_size=3, groups=2)  # weight (8, 3, 3, 3)
    assert fans(convt, "weight", convt.weight) == (36, 27)
    assert _torch_fans(convt.weight) == (27, 72)
    x = torch.randn(64, 8, 12, 12, generator=torch.Generator().manual_seed(3))
    # away from the border every output sums in/groups * 3 * 3 = 36 terms
    assert _output_variance(convt, x, 36 ** -0.5, crop=2) == pytest.approx(1.0, rel=0.05)
    assert _output_variance(convt, x, 27 ** -0.5, crop=2) == pytest.approx(36 / 27, rel=0.05)


def test_meta_tensors_and_chunks_use_the_shape_given():
    convt = nn.ConvTranspose1d(4, 2, kernel_size=5)
    meta = torch.empty(4, 2, 5, device="meta")
    assert fans(convt, "weight", meta) == (20, 10)
    assert fans(nn.Linear(4, 9), "weight", torch.empty(3, 4)) == (4, 3)


def test_layout_override_wins_over_the_registry():
    linear = nn.Linear(3, 5)
    assert fans(linear, "weight", linear.weight, layout={"in": 0, "out": 1}) == (5, 3)
    assert fans(linear, "weight", linear.weight, layout=Layout(0, 1)) == (5, 3)


def test_transformers_is_not_imported():
    code = "import sys, lightning_init.anatomy.layouts; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "False"


class _Kernel(nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(*shape))
        self.weight = nn.Parameter(torch.empty(*shape))


class _SubKernel(_Kernel):
    pass


def test_register_by_class_path_and_name_subclasses_and_parameter():
    layer = _SubKernel(3, 5)
    assert layout_for(layer, "kernel") is None
    assert fans(layer, "kernel", layer.kernel) == (5, 3)  # torch's reading
    register_layout(f"{__name__}._Kernel", {"in": 0, "out": 1}, param="kernel")
    assert fans(layer, "kernel", layer.kernel) == (3, 5)
    assert fans(layer, "weight", layer.weight) == (5, 3)  # another parameter: untouched
    register_layout("_Kernel", Layout(1, 0), param="kernel")  # later wins, same class
    assert fans(layer, "kernel", layer.kernel) == (5, 3)
    register_layout(_SubKernel, Layout(0, 1), param="kernel")  # nearer class wins
    register_layout(_Kernel, Layout(1, 0), param="kernel")
    assert fans(layer, "kernel", layer.kernel) == (3, 5)


def test_hf_conv1d_matched_by_its_path_and_overridable_by_its_bare_name():
    c_attn = _gpt2(1).transformer.h[0].attn.c_attn
    assert layout_for(c_attn, "weight") == Layout(0, 1)
    register_layout("Conv1D", {"in": 1, "out": 0})
    assert fans(c_attn, "weight", c_attn.weight) == (192, 64)


@pytest.mark.parametrize(("spec", "words"), [
    ({"in": 0, "ouy": 1}, "fan_layout: unknown key 'ouy'. Did you mean 'out'? Valid keys: in, "
                          "out, grouped."),
    ({"in": 0}, "fan_layout: key 'out' is missing: give both, e.g. {in: 0, out: 1}"),
    ({"in": True, "out": 0}, "fan_layout: in: expected a dimension index (an integer), got True"),
    ({"in": "0", "out": 1}, "in: expected a dimension index (an integer), got '0'"),
    ({"in": 1, "out": 1}, "fan_layout: 'in' and 'out' are both dimension 1"),
    ({"in": 1, "out": 0, "grouped": "both"}, "grouped: expected 'in' or 'out'"),
    ([0, 1], "fan_layout: expected a mapping such as {in: 0, out: 1}, got list [0, 1]"),
])
def test_parse_layout_errors(spec, words):
    with pytest.raises(PolicyError) as info:
        parse_layout(spec)
    assert words in str(info.value)


def test_fans_errors_name_the_module_type_and_parameter():
    linear = nn.Linear(3, 5)
    with pytest.raises(PolicyError, match=r"^Linear\.bias: fan_in and fan_out of a tensor of "
                                          r"shape \(5,\) are undefined"):
        fans(linear, "bias", linear.bias)
    with pytest.raises(PolicyError, match=r"Linear\.weight: fan_layout \{in: 2, out: 0\} names "
                                          r"dimension 2, but the shape \(5, 3\) has 2"):
        fans(linear, "weight", linear.weight, layout={"in": 2, "out": 0})
    with pytest.raises(PolicyError, match=r"names dimension 1 of shape \(5, 3\) as both"):
        fans(linear, "weight", linear.weight, layout={"in": -1, "out": 1})


def test_register_layout_rejects_what_is_not_a_type():
    with pytest.raises(PolicyError, match="expected a module class or its name, got int 3"):
        register_layout(3, {"in": 0, "out": 1})
    with pytest.raises(PolicyError, match="the layer type name is empty"):
        register_layout(" ", {"in": 0, "out": 1})
    with pytest.raises(PolicyError, match="register_layout: unknown key 'inn'"):
        register_layout(nn.Linear, {"inn": 0, "out": 1})


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
       st.integers(1, 3))
def test_conv_fans_are_torchs_and_transposed_ones_count_per_group(dims, per_in, per_out, groups,
                                                                    kernel):
    conv_cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    convt_cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
    in_ch, out_ch = per_in * groups, per_out * groups
    with torch.device("meta"):
        conv = conv_cls(in_ch, out_ch, kernel, groups=groups)
        convt = convt_cls(in_ch, out_ch, kernel, groups=groups)
    receptive = kernel ** dims
    assert fans(conv, "weight", conv.weight) == _torch_fans(conv.weight)
    assert fans(convt, "weight", convt.weight) == (per_in * receptive, per_out * receptive)
    # torch's reading of the transposed weight swaps the two and counts in over all groups
    assert _torch_fans(convt.weight) == (per_out * receptive, in_ch * receptive)
