"""The automatic policy's view of a model: one sample pass records the call order of weight
layers and activations (module hooks and functional calls), and the model's structure is read
from its names: repeated blocks, normalized blocks, post-norm blocks, residual projections,
cross-attention, the output layer and the stream's width. :mod:`lightning_init.policy.auto`
turns what is found here into rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.overrides import TorchFunctionMode

from lightning_init.policy._calibrate import quiet_pass
from lightning_init.runtime.hooks import HookHandles

__all__ = [
    "Trace",
    "activation_kind",
    "batch_normed_layers",
    "call_order",
    "first_block",
    "following_activation",
    "glob_matches",
    "is_cross_attention",
    "is_norm",
    "is_residual_projection",
    "is_token_norm",
    "is_weight_layer",
    "normed_blocks",
    "out_features",
    "output_layer",
    "post_norm_blocks",
    "repeated_blocks",
    "stream_width",
    "trace_calls",
]

# Class-name fragments, most specific first ("selu" before "elu", "leakyrelu" before "relu").
_ACTIVATION_NAMES = (("gelu", "gelu"), ("silu", "silu"), ("swish", "silu"), ("selu", "selu"),
                     ("leakyrelu", "leaky_relu"), ("leaky_relu", "leaky_relu"),
                     ("relu", "relu"), ("tanh", "tanh"), ("sigmoid", "sigmoid"),
                     ("mish", "mish"), ("elu", "elu"))


_NOT_ACTIVATIONS = ("atanh", "arctanh", "tanhshrink")  # they contain "tanh"


_RESIDUAL_NAMES = frozenset({"c_proj", "out_proj", "o_proj", "fc2", "down_proj", "linear2",
                             "w2", "wo", "proj", "pwconv2"})


# Hugging Face's BERT-style blocks: `attention.output.dense`, `output.dense`; ALBERT's.
_RESIDUAL_SUFFIXES = (".output.dense", "ffn_output", "attention.dense")


# torch's nn.TransformerDecoderLayer names its cross-attention `multihead_attn`.
_CROSS_ATTENTION = ("encoder_attn", "crossattention", "cross_attn", "encdecattention",
                    "multihead_attn")


_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)")  # a ModuleList/Sequential index


_RECURRENT = (nn.LSTM, nn.LSTMCell, nn.GRU, nn.GRUCell)


def activation_kind(name: str) -> str | None:
    """The activation a class or function name stands for (``"NewGELUActivation"`` -> gelu)."""
    lowered = name.lower().rstrip("_")
    if lowered.startswith(_NOT_ACTIVATIONS):
        return None
    for fragment, kind in _ACTIVATION_NAMES:
        if fragment in lowered:
            return kind
    return None


def is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, _ConvNd)) or (
        type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None)


def is_token_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or (
        type(module).__name__.endswith(("LayerNorm", "RMSNorm")))


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, (_NormBase, nn.GroupNorm)) or is_token_norm(module)


@dataclass
class Trace:
    """Call order: ``("layer", name)`` and ``("act", kind)`` events."""

    events: list[tuple[str, str]] = field(default_factory=list)
    called: set[str] = field(default_factory=set)
    inside_activation: int = 0


class _ActivationCalls(TorchFunctionMode):
    """Records functional activations (``F.relu``, ``torch.tanh``, ``x.sigmoid()``)."""

    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kind = activation_kind(getattr(func, "__name__", ""))
        if kind is not None and not self.trace.inside_activation:
            self.trace.events.append(("act", kind))
        return func(*args, **(kwargs or {}))


def _hook(trace: Trace, name: str, module: nn.Module, handles: HookHandles) -> None:
    kind = None if any(True for _ in module.parameters(recurse=False)) else activation_kind(
        type(module).__name__)
    if kind is not None:  # an activation module: one event, whatever it calls inside
        def enter(_m: nn.Module, _i: Any) -> None:
            if not trace.inside_activation:
                trace.events.append(("act", kind))
            trace.inside_activation += 1

        def leave(_m: nn.Module, _i: Any, _o: Any) -> None:
            trace.inside_activation -= 1

        handles.add(module.register_forward_pre_hook(enter))
        handles.add(module.register_forward_hook(leave))
    elif is_weight_layer(module) or isinstance(module, (nn.MultiheadAttention, *_RECURRENT)):
        def called(_m: nn.Module, _i: Any, _o: Any) -> None:
            trace.called.add(name)
            if not trace.inside_activation:
                trace.events.append(("layer", name))

        handles.add(module.register_forward_hook(called))
    elif is_norm(module):
        event = "batchnorm" if isinstance(module, _NormBase) else "norm"

        def normalized(_m: nn.Module, _i: Any, _o: Any) -> None:
            if not trace.inside_activation:
                trace.events.append((event, name))

        handles.add(module.register_forward_hook(normalized))


def trace_calls(model: nn.Module, sample: Any, forward: Any) -> Trace:
    trace = Trace()
    with HookHandles() as handles:
        for name, module in model.named_modules():
            _hook(trace, name, module, handles)
        with _ActivationCalls(trace):
            quiet_pass(model, sample, forward)
    return trace


def following_activation(trace: Trace) -> dict[str, str | None]:
    """Each called layer -> the first activation after it before the next layer (``None``:
    nothing but linear operations until the end, ``"linear"`` when a norm comes first)."""
    after: dict[str, str | None] = {}
    pending: list[str] = []
    normalized: set[str] = set()
    for event, value in trace.events:
        if event in ("norm", "batchnorm"):
            normalized.update(pending)
        elif event == "act":
            for name in pending:
                after.setdefault(name, value)
            pending = []
        elif event == "layer":
            for name in pending:
                after.setdefault(name, "linear")
            pending = [value] if value not in after else []
    for name in pending:
        after.setdefault(name, "linear" if name in normalized else None)
    return after


def batch_normed_layers(trace: Trace) -> set[str]:
    """The layers whose output goes straight into a BatchNorm (or InstanceNorm)."""
    out: set[str] = set()
    last: str | None = None
    for event, value in trace.events:
        if event == "batchnorm" and last is not None:
            out.add(last)
        last = value if event == "layer" else None
    return out


def call_order(model: nn.Module, trace: Trace) -> list[str]:
    """Weight layers in call order; a called MultiheadAttention's ``out_proj`` (used through
    its weight, never called) follows it."""
    modules = dict(model.named_modules())
    order: list[str] = []
    for event, name in trace.events:
        if event != "layer" or name in order:
            continue
        order.append(name)
        if isinstance(modules[name], nn.MultiheadAttention):
            order.append(f"{name}.out_proj" if name else "out_proj")
    return order


def repeated_blocks(model: nn.Module) -> dict[str, str]:
    """Module name -> the count glob of the innermost repeated block it sits in (``"h.*"``;
    ``"stages.*.layers.*"`` for blocks repeated inside repeated stages: all of them count)."""
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.named_children())
        if len(children) < 2 or len({type(child) for _, child in children}) != 1:
            continue
        if not any(is_weight_layer(m) for _, child in children for m in child.modules()):
            continue
        if all(is_weight_layer(child) for _, child in children):
            continue
        glob = f"{_INDEX.sub('*', name)}.*" if name else "*"
        for child_name, child in children:
            prefix = f"{name}.{child_name}" if name else child_name
            for sub_name, _ in child.named_modules():
                out[f"{prefix}.{sub_name}" if sub_name else prefix] = glob
    return out


def glob_matches(name: str, glob: str) -> bool:
    """Whether a qualified name matches a count glob segment by segment, at its depth."""
    parts, globs = name.split("."), glob.split(".")
    return len(parts) == len(globs) and all(fnmatchcase(part, pattern)
                                            for part, pattern in zip(parts, globs, strict=True))


def out_features(module: nn.Module) -> int:
    """How many outputs a weight layer has (a head's logits); HF ``Conv1D`` is (in, out)."""
    weight = module.weight
    if isinstance(module, _ConvTransposeNd):  # (in, out / groups, ...)
        return int(weight.shape[1] * module.groups)
    return int(weight.shape[1] if type(module).__name__ == "Conv1D" else weight.shape[0])


def is_cross_attention(name: str) -> bool:
    """Whether a layer sits in a cross-attention (it reads the encoder's states)."""
    return any(part in name.lower() for part in _CROSS_ATTENTION)


def is_residual_projection(name: str) -> bool:
    """Whether a layer's name is that of a residual branch's output projection."""
    return name.rsplit(".", 1)[-1] in _RESIDUAL_NAMES or name.endswith(_RESIDUAL_SUFFIXES)


def post_norm_blocks(trace: Trace, blocks: dict[str, str], normed: set[str]) -> set[str]:
    """The normalized blocks whose last call is a norm, the one after the add: post-norm
    blocks, ``norm(x + f(x))`` (BERT, BART, the original Transformer), as opposed to pre-norm
    ones, ``x + f(norm(x))`` (GPT-2, Llama, ViT, ConvNeXt), which end with a projection."""
    last: dict[str, str] = {}
    for event, name in trace.events:
        if event in ("layer", "norm") and blocks.get(name) in normed:
            last[blocks[name]] = event
    return {glob for glob, event in last.items() if event == "norm"}


def output_layer(order: list[str], after: dict[str, str | None],
                  modules: dict[str, nn.Module]) -> str | None:
    """The output layer: the last weight layer called with nothing but linear operations after
    it, or the last one called when only a sigmoid follows it (a sigmoid head)."""
    heads = [name for name in order if is_weight_layer(modules[name])]
    output = next((name for name in reversed(heads) if after.get(name) is None), None)
    if output is None and heads and after.get(heads[-1]) == "sigmoid" and heads[-1] == order[-1]:
        return heads[-1]
    return output


def stream_width(model: nn.Module) -> int:
    """The residual stream's width: the widest embedding (relative-position tables and other
    narrow lookups are not the stream's input)."""
    return max((m.embedding_dim for m in model.modules() if isinstance(m, nn.Embedding)),
               default=0)


def first_block(model: nn.Module, glob: str) -> str:
    """The first block (in registration order) that ``glob`` counts: ``"transformer.h.0"``."""
    return next(name for name, _ in model.named_modules() if glob_matches(name, glob))


def normed_blocks(model: nn.Module, blocks: dict[str, str]) -> set[str]:
    """The repeated blocks holding a LayerNorm or RMSNorm and a residual output projection:
    transformer-style residual blocks, where every branch is normalized before it is used (a
    stack of Linear-LayerNorm-ReLU with no skip path is not one)."""
    modules = list(model.named_modules())
    normed = {blocks[name] for name, module in modules
              if name in blocks and is_token_norm(module)}
    residual = {blocks[name] for name, module in modules
                if name in blocks and is_weight_layer(module) and is_residual_projection(name)}
    return normed & residual
