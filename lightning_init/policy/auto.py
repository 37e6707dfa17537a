"""An init policy built from a model's structure and one sample pass (``policy: "auto"``).

:func:`auto_rules` runs the model once on a sample batch under ``torch.no_grad`` and records, in
call order, every weight layer (``Linear``, convolutions, Hugging Face ``Conv1D``) and every
activation (``nn.ReLU`` and friends, and functional calls such as ``F.relu`` or
``torch.tanh``). Each weight layer then gets the gain of the activation that actually follows
it (He et al. 2015, arXiv:1502.01852, section 2.2: ``std = gain / sqrt(fan_in)`` keeps the
second moment of the pre-activations constant). Around that:

- a layer whose output goes straight into a BatchNorm uses ``fan_out``, as torchvision's
  ResNet does (He et al. 2015, section 2.2, the backward-pass case);
- inside a normalized residual block (a repeated block holding a LayerNorm or RMSNorm) the
  norms set the scale, and what matters is the size of a branch next to the residual stream
  it adds to: each layer's std is multiplied by ``stream_rms``, the stream's rms measured at
  the first block's input. GPT-2's ``N(0, 0.02)`` next to its 0.02-scale embeddings is the
  same idea;
- residual output projections (``c_proj``, ``out_proj``, ``o_proj``, ``fc2``, ``down_proj``,
  ``linear2``, BERT's ``output.dense``... inside a repeated block) are further scaled by
  ``1 / sqrt(2 * n_blocks)`` (Radford et al. 2019, GPT-2, section 2.3; Shoeybi et al. 2019,
  Megatron-LM, arXiv:1909.08053); in a post-norm block (``norm(x + f(x))``: the block's last
  call is a norm) they start at zero, so each block starts as the
  identity (Fixup, ReZero), except a cross-attention's, which carries the encoder to the loss;
- attention query projections (``q``, ``q_proj``, ``query``...) are also divided by
  ``attention_logit_rms``, the attention logits' measured std (at least 1): logits of unit
  variance, the ``1 / sqrt(d_k)`` argument of Vaswani et al. 2017, which T5 leaves out of its
  attention and folds into its query init;
- the output layer (the last weight layer called, with no activation or norm after it) gives
  outputs of std ``head_gain = max(0.5, sqrt(0.2 ln C))`` on the sample batch: ``std =
  head_gain / (sqrt(fan_in) * head_input_rms)`` with the input's rms measured, so the initial
  loss starts within about 10% of ln(C) whatever the features' scale; an embedding tied to
  it shares that std, and the other input embeddings of the stream's width follow it
  (untied: ``N(0, 1)``, the unit-scale stream of Vaswani et al. 2017 and T5). With
  ``prior=p`` its bias is ``ln(p / (1 - p))`` (Lin et al. 2017, Focal Loss);
- normalization layers start at identity: weight 1, bias 0;
- LSTM/GRU: Xavier input weights, orthogonal hidden weights per gate (Saxe et al. 2014,
  arXiv:1312.6120), LSTM forget-gate bias 1 (Jozefowicz et al. 2015);
- ``MultiheadAttention``'s packed input projection is Xavier uniform, as PyTorch does.

The measured values (``head_input_rms``, ``stream_rms``, ``attention_logit_rms``) are policy
variables, read on the model initialized by the policy (one deep copy, or the model itself with
``in_place=True``; :mod:`lightning_init.policy._calibrate`), so the YAML reproduces the init
without the sample batch.

Each rule comes with a comment saying which role it answers and its source; :class:`AutoRules`
renders the policy as commented YAML. Weight layers the sample pass never called are left
alone, and the YAML's last comment names them.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    >>> rules = auto_rules(net, torch.randn(4, 8))
    >>> [rule.role for rule in rules.rules]
    ['output layer', 'followed by tanh']
    >>> from lightning_init import InitPolicy
    >>> InitPolicy.auto(net, torch.randn(4, 8)).name
    'auto'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import yaml
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.overrides import TorchFunctionMode

from lightning_init._hooks import HookHandles
from lightning_init.policy._calibrate import Trial, attention_logit_rms, input_rms, quiet_pass

__all__ = ["AutoRule", "AutoRules", "auto_rules"]

# Gain per activation: 1 / sqrt(E[f(z)^2]) for z ~ N(0, 1) (the He et al. 2015 argument),
# PyTorch's calculate_gain where it has one, LeCun normal for SELU (Klambauer et al. 2017).
_GAINS: dict[str, tuple[str, str]] = {
    "relu": ("sqrt(2)", "He et al. 2015 (arXiv:1502.01852), gain sqrt(2) for ReLU"),
    "leaky_relu": ("sqrt(2 / 1.0001)",
                   "He et al. 2015, gain sqrt(2 / (1 + a^2)) for leaky ReLU"),
    "tanh": ("5 / 3", "torch.nn.init.calculate_gain('tanh') = 5/3"),
    "sigmoid": ("1", "torch.nn.init.calculate_gain('sigmoid') = 1"),
    "selu": ("1", "LeCun normal for SELU, Klambauer et al. 2017 (arXiv:1706.02515)"),
    "gelu": ("1.533", "1/sqrt(E[gelu(z)^2]), z ~ N(0,1): the He et al. 2015 argument for GELU"),
    "silu": ("1.676", "1/sqrt(E[silu(z)^2]), z ~ N(0,1): the He et al. 2015 argument for SiLU"),
    "elu": ("1.245", "1/sqrt(E[elu(z)^2]), z ~ N(0,1): the He et al. 2015 argument for ELU"),
    "mish": ("1.486", "1/sqrt(E[mish(z)^2]), z ~ N(0,1): the He et al. 2015 argument for Mish"),
    "linear": ("1", "LeCun et al. 1998, gain 1 when no activation follows"),
}
# Class-name fragments, most specific first ("selu" before "elu", "leakyrelu" before "relu").
_ACTIVATION_NAMES = (("gelu", "gelu"), ("silu", "silu"), ("swish", "silu"), ("selu", "selu"),
                     ("leakyrelu", "leaky_relu"), ("leaky_relu", "leaky_relu"),
                     ("relu", "relu"), ("tanh", "tanh"), ("sigmoid", "sigmoid"),
                     ("mish", "mish"), ("elu", "elu"))
_NOT_ACTIVATIONS = ("atanh", "arctanh", "tanhshrink")  # they contain "tanh"
_RESIDUAL_NAMES = frozenset({"c_proj", "out_proj", "o_proj", "fc2", "down_proj", "linear2",
                             "w2", "wo", "proj", "pwconv2"})
_QUERY_NAMES = frozenset({"q", "q_proj", "query", "q_lin", "wq"})
# Hugging Face's BERT-style blocks: `attention.output.dense`, `output.dense`; ALBERT's.
_RESIDUAL_SUFFIXES = (".output.dense", "ffn_output", "attention.dense")
# torch's nn.TransformerDecoderLayer names its cross-attention `multihead_attn`.
_CROSS_ATTENTION = ("encoder_attn", "crossattention", "cross_attn", "encdecattention",
                    "multihead_attn")
_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)")  # a ModuleList/Sequential index
_RECURRENT = (nn.LSTM, nn.LSTMCell, nn.GRU, nn.GRUCell)
_HEAD_GAIN = 0.5  # the least std of the output layer's outputs
_LOSS_EXCESS = 0.1  # the initial loss may exceed ln(C) by this fraction
_HEAD_STD = "head_gain / (sqrt(fan_in) * head_input_rms)"
_QUERY_SOURCE = ("; over attention_logit_rms, the attention logits' std measured (at least 1): "
                 "logits of unit variance, the argument for 1/sqrt(d_k) (Vaswani et al. 2017, "
                 "section 3.2.1), which T5 folds into its query init (Raffel et al. 2020)")
_STREAM_SOURCE = ("; times stream_rms, the residual stream's rms measured at the first block: "
                  "a branch starts at the scale of the stream it adds to (GPT-2's N(0, 0.02) "
                  "next to its 0.02-scale embeddings)")


def _activation_kind(name: str) -> str | None:
    """The activation a class or function name stands for (``"NewGELUActivation"`` -> gelu)."""
    lowered = name.lower().rstrip("_")
    if lowered.startswith(_NOT_ACTIVATIONS):
        return None
    for fragment, kind in _ACTIVATION_NAMES:
        if fragment in lowered:
            return kind
    return None


def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, _ConvNd)) or (
        type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None)


def _is_token_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or (
        type(module).__name__.endswith(("LayerNorm", "RMSNorm")))


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (_NormBase, nn.GroupNorm)) or _is_token_norm(module)


@dataclass(frozen=True)
class AutoRule:
    """One rule of the automatic policy.

    Attributes:
        role: what the rule is about (``"followed by relu"``, ``"output layer"``).
        layers: the qualified names of the modules it covers.
        rule: the rule as a policy mapping (``{"match": ..., "weight": ...}``).
        source: where the formula comes from.
    """

    role: str
    layers: tuple[str, ...]
    rule: dict[str, Any]
    source: str


@dataclass
class AutoRules:
    """The automatic policy's rules, with :meth:`mapping`, :meth:`yaml` and :meth:`policy`.

    Attributes:
        rules: the rules, most specific first.
        variables: the policy's variables (``n_blocks``, the measured ``head_input_rms`` and
            ``stream_rms``).
        answers: an optional remark per rule index (which finding of a check it answers).
        uncalled: weight layers the sample pass never called: no rule, named in a comment.
    """

    rules: list[AutoRule] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    answers: dict[int, str] = field(default_factory=dict)
    uncalled: list[str] = field(default_factory=list)  # weight layers the pass never called

    def mapping(self, *, name: str = "auto", seed: int | None = 0) -> dict[str, Any]:
        """The policy as a mapping for :meth:`InitPolicy.from_dict`."""
        out: dict[str, Any] = {"name": name}
        if seed is not None:
            out["seed"] = seed
        if self.variables:
            out["variables"] = dict(self.variables)
        out["rules"] = [rule.rule for rule in self.rules]
        return out

    def yaml(self, *, name: str = "auto", seed: int | None = 0) -> str:
        """The policy as YAML text, a comment above each rule (its role, finding and source).

        Example:
            >>> import torch
            >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
            >>> print(auto_rules(net, torch.randn(2, 4)).yaml())  # doctest: +ELLIPSIS
            # Written by lightning_init from the model's structure and one sample pass.
            name: auto
            seed: 0
            rules:
              # followed by relu: 0
              # source: He et al. 2015 (arXiv:1502.01852), gain sqrt(2) for ReLU
              - match:
                  name: ['0']
                optional: true
                weight: {init: normal, std: sqrt(2) / sqrt(fan_in)}
                bias: zeros
            <BLANKLINE>
        """
        head = {key: value for key, value in self.mapping(name=name, seed=seed).items()
                if key != "rules"}
        lines = ["# Written by lightning_init from the model's structure and one sample pass.",
                 yaml.safe_dump(head, sort_keys=False).rstrip(), "rules:"]
        for index, rule in enumerate(self.rules):
            shown = ", ".join(rule.layers[:4]) + (", ..." if len(rule.layers) > 4 else "")
            lines.append(f"  # {rule.role}: {shown or '(model)'}")
            if index in self.answers:
                lines.append(f"  # answers: {self.answers[index]}")
            lines.append(f"  # source: {rule.source}")
            body = yaml.safe_dump([rule.rule], sort_keys=False, width=96,
                                  default_flow_style=None).rstrip()
            lines.extend("  " + line for line in body.splitlines())
        if self.uncalled:
            shown = ", ".join(self.uncalled[:6]) + (", ..." if len(self.uncalled) > 6 else "")
            lines.append(f"# not called by the sample pass, so left to the model's own init "
                         f"({len(self.uncalled)}): {shown}")
        return "\n".join(lines) + "\n"

    def policy(self, *, name: str = "auto", seed: int | None = 0) -> Any:
        """The :class:`~lightning_init.InitPolicy`, parsed from :meth:`yaml` (so the text and
        the policy are the same thing)."""
        from lightning_init._yaml import load_yaml
        from lightning_init.policy.init_policy import InitPolicy

        text = self.yaml(name=name, seed=seed)
        return InitPolicy.from_dict(load_yaml(text, source=f"<{name} policy>"),
                                    source=f"<{name} policy>")


# ------------------------------------------------------------------------------ the sample pass
@dataclass
class _Trace:
    """Call order: ``("layer", name)`` and ``("act", kind)`` events."""

    events: list[tuple[str, str]] = field(default_factory=list)
    called: set[str] = field(default_factory=set)
    inside_activation: int = 0


class _ActivationCalls(TorchFunctionMode):
    """Records functional activations (``F.relu``, ``torch.tanh``, ``x.sigmoid()``)."""

    def __init__(self, trace: _Trace) -> None:
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kind = _activation_kind(getattr(func, "__name__", ""))
        if kind is not None and not self.trace.inside_activation:
            self.trace.events.append(("act", kind))
        return func(*args, **(kwargs or {}))


def _hook(trace: _Trace, name: str, module: nn.Module, handles: HookHandles) -> None:
    kind = None if any(True for _ in module.parameters(recurse=False)) else _activation_kind(
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
    elif _is_weight_layer(module) or isinstance(module, (nn.MultiheadAttention, *_RECURRENT)):
        def called(_m: nn.Module, _i: Any, _o: Any) -> None:
            trace.called.add(name)
            if not trace.inside_activation:
                trace.events.append(("layer", name))

        handles.add(module.register_forward_hook(called))
    elif _is_norm(module):
        event = "batchnorm" if isinstance(module, _NormBase) else "norm"

        def normalized(_m: nn.Module, _i: Any, _o: Any) -> None:
            if not trace.inside_activation:
                trace.events.append((event, name))

        handles.add(module.register_forward_hook(normalized))


def _trace(model: nn.Module, sample: Any, forward: Any) -> _Trace:
    trace = _Trace()
    with HookHandles() as handles:
        for name, module in model.named_modules():
            _hook(trace, name, module, handles)
        with _ActivationCalls(trace):
            quiet_pass(model, sample, forward)
    return trace


def _following(trace: _Trace) -> dict[str, str | None]:
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


def _batch_normed(trace: _Trace) -> set[str]:
    """The layers whose output goes straight into a BatchNorm (or InstanceNorm)."""
    out: set[str] = set()
    last: str | None = None
    for event, value in trace.events:
        if event == "batchnorm" and last is not None:
            out.add(last)
        last = value if event == "layer" else None
    return out


# ------------------------------------------------------------------------------ structure
def _blocks(model: nn.Module) -> dict[str, str]:
    """Module name -> the count glob of the innermost repeated block it sits in (``"h.*"``;
    ``"stages.*.layers.*"`` for blocks repeated inside repeated stages: all of them count)."""
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.named_children())
        if len(children) < 2 or len({type(child) for _, child in children}) != 1:
            continue
        if not any(_is_weight_layer(m) for _, child in children for m in child.modules()):
            continue
        if all(_is_weight_layer(child) for _, child in children):
            continue
        glob = f"{_INDEX.sub('*', name)}.*" if name else "*"
        for child_name, child in children:
            prefix = f"{name}.{child_name}" if name else child_name
            for sub_name, _ in child.named_modules():
                out[f"{prefix}.{sub_name}" if sub_name else prefix] = glob
    return out


def _matches(name: str, glob: str) -> bool:
    """Whether a qualified name matches a count glob segment by segment, at its depth."""
    parts, globs = name.split("."), glob.split(".")
    return len(parts) == len(globs) and all(fnmatchcase(part, pattern)
                                            for part, pattern in zip(parts, globs, strict=True))


def _outputs(module: nn.Module) -> int:
    """How many outputs a weight layer has (a head's logits); HF ``Conv1D`` is (in, out)."""
    weight = module.weight
    if isinstance(module, _ConvTransposeNd):  # (in, out / groups, ...)
        return int(weight.shape[1] * module.groups)
    return int(weight.shape[1] if type(module).__name__ == "Conv1D" else weight.shape[0])


def _is_cross_attention(name: str) -> bool:
    """Whether a layer sits in a cross-attention (it reads the encoder's states)."""
    return any(part in name.lower() for part in _CROSS_ATTENTION)


def _is_residual_projection(name: str) -> bool:
    """Whether a layer's name is that of a residual branch's output projection."""
    return name.rsplit(".", 1)[-1] in _RESIDUAL_NAMES or name.endswith(_RESIDUAL_SUFFIXES)


def _post_norm(trace: _Trace, blocks: dict[str, str], normed: set[str]) -> set[str]:
    """The normalized blocks whose last call is a norm, the one after the add: post-norm
    blocks, ``norm(x + f(x))`` (BERT, BART, the original Transformer), as opposed to pre-norm
    ones, ``x + f(norm(x))`` (GPT-2, Llama, ViT, ConvNeXt), which end with a projection."""
    last: dict[str, str] = {}
    for event, name in trace.events:
        if event in ("layer", "norm") and blocks.get(name) in normed:
            last[blocks[name]] = event
    return {glob for glob, event in last.items() if event == "norm"}


def _output_layer(order: list[str], after: dict[str, str | None],
                  modules: dict[str, nn.Module]) -> str | None:
    """The output layer: the last weight layer called with nothing but linear operations after
    it, or the last one called when only a sigmoid follows it (a sigmoid head)."""
    heads = [name for name in order if _is_weight_layer(modules[name])]
    output = next((name for name in reversed(heads) if after.get(name) is None), None)
    if output is None and heads and after.get(heads[-1]) == "sigmoid" and heads[-1] == order[-1]:
        return heads[-1]
    return output


def _stream_width(model: nn.Module) -> int:
    """The residual stream's width: the widest embedding (relative-position tables and other
    narrow lookups are not the stream's input)."""
    return max((m.embedding_dim for m in model.modules() if isinstance(m, nn.Embedding)),
               default=0)


def _first_block(model: nn.Module, glob: str) -> str:
    """The first block (in registration order) that ``glob`` counts: ``"transformer.h.0"``."""
    return next(name for name, _ in model.named_modules() if _matches(name, glob))


def _normed_blocks(model: nn.Module, blocks: dict[str, str]) -> set[str]:
    """The repeated blocks holding a LayerNorm or RMSNorm and a residual output projection:
    transformer-style residual blocks, where every branch is normalized before it is used (a
    stack of Linear-LayerNorm-ReLU with no skip path is not one)."""
    modules = list(model.named_modules())
    normed = {blocks[name] for name, module in modules
              if name in blocks and _is_token_norm(module)}
    residual = {blocks[name] for name, module in modules
                if name in blocks and _is_weight_layer(module) and _is_residual_projection(name)}
    return normed & residual


@dataclass
class _Builder:
    """Collects the rules of one model, role by role (:meth:`weights`, then :meth:`structure`);
    what the measuring passes need (the first block, whether there are queries) is noted on the
    way."""

    model: nn.Module
    num_classes: int | None
    blocks: dict[str, str]  # module name -> its repeated block's count glob (_blocks)
    normed: set[str]  # the normalized residual blocks' globs (_normed_blocks)
    post_norm: set[str]  # those with the norm after the add (_post_norm)
    prior: float | None = None
    rules: AutoRules = field(default_factory=AutoRules)
    stream: str | None = None  # the first normalized block: its input is the residual stream
    head_weight: Any = None  # the output layer's weight (an embedding may share it)
    tied_embedding: bool = False
    queries: bool = False  # query projections scaled by the measured attention logits

    def add(self, role: str, names: list[str], rule: dict[str, Any], source: str) -> None:
        """One rule for the modules ``names`` (none: no rule), optional so that the policy
        applies to the model's copies and to models that lack a layer."""
        if not names:
            return
        match = ({"type": type(self.model).__name__} if names == [""]  # the model is the layer
                 else {"name": list(names)})
        self.rules.rules.append(AutoRule(role, tuple(names), {
            "match": match, "optional": True, **rule}, source))

    def weights(self, order: list[str], after: dict[str, str | None],
                batch_normed: set[str]) -> str | None:
        """Rules for the called weight layers; returns the output layer's name."""
        modules = dict(self.model.named_modules())
        output = _output_layer(order, after, modules)
        if output is not None:
            self.head_weight = modules[output].weight
            self.tied_embedding = any(isinstance(m, nn.Embedding) and m.weight is self.head_weight
                                      for m in modules.values())
            self.head(output, _outputs(modules[output]))
        residual: dict[str, list[str]] = {}
        groups: dict[tuple[str, str], list[str]] = {}
        for name in order:
            if name == output or not _is_weight_layer(modules[name]):
                continue
            kind = after.get(name) or "linear"
            glob = self.blocks.get(name)
            if _is_residual_projection(name) and glob and kind == "linear":
                residual.setdefault(glob, []).append(name)
            elif glob in self.normed:
                query = name.rsplit(".", 1)[-1] in _QUERY_NAMES and kind == "linear"
                groups.setdefault((kind, "query" if query else "stream"), []).append(name)
                self.stream = self.stream or _first_block(self.model, glob)
            else:
                fan = "fan_out" if name in batch_normed else "fan_in"
                groups.setdefault((kind, fan), []).append(name)
        self.residual(residual)
        for (kind, fan), names in groups.items():
            self.gain(kind, fan, names)
        return output

    def gain(self, kind: str, fan: str, names: list[str]) -> None:
        """The rule for layers followed by the activation ``kind``: over ``fan_in``, over
        ``fan_out`` before a BatchNorm, times ``stream_rms`` inside a normalized block
        (``"stream"``), and over ``attention_logit_rms`` too for queries (``"query"``)."""
        gain, source = _GAINS[kind]
        if fan == "stream":
            self.add(f"inside a normalized residual block, followed by {kind}", names, {
                "weight": {"init": "normal", "std": f"{gain} / sqrt(fan_in) * stream_rms"},
                "bias": "zeros"}, source + _STREAM_SOURCE)
            return
        if fan == "query":
            self.queries = True
            self.add("attention query projection", names, {
                "weight": {"init": "normal",
                           "std": f"{gain} / sqrt(fan_in) * stream_rms / attention_logit_rms"},
                "bias": "zeros"}, source + _STREAM_SOURCE + _QUERY_SOURCE)
            return
        role = "no activation follows" if kind == "linear" else f"followed by {kind}"
        if fan == "fan_out":
            role = "followed by BatchNorm" + ("" if kind == "linear" else f", then {kind}")
            source += ("; fan_out before a BatchNorm, as torchvision's ResNet (He et al. 2015, "
                       "section 2.2, the backward-pass case)")
        self.add(role, names, {
            "weight": {"init": "normal", "std": f"{gain} / sqrt({fan})"},
            "bias": "zeros"}, source)

    def residual(self, residual: dict[str, list[str]]) -> None:
        """Residual output projections, by block glob: zeros in post-norm blocks (not
        cross-attention), else ``/ sqrt(2 * n_blocks)`` with ``n_blocks`` a count variable."""
        for index, (glob, names) in enumerate(residual.items()):
            zeroed = [name for name in names if not _is_cross_attention(name)]
            if glob in self.post_norm and zeroed:
                names = [name for name in names if name not in zeroed]
                self.add("residual output projection, a norm after the add (post-norm)", zeroed,
                         {"weight": "zeros", "bias": "zeros"},
                         "zero-initialized branch: with the norm after the add each block starts "
                         "as the identity and the norms keep the scale (Zhang et al. 2019, "
                         "Fixup, arXiv:1901.09321; Bachlechner et al. 2020, ReZero, "
                         "arXiv:2003.04887); not cross-attention, which would cut the encoder "
                         "off from the loss")
                if not names:
                    continue
            variable = "n_blocks" if not self.rules.variables.get("n_blocks") \
                else f"n_blocks_{index}"
            self.rules.variables[variable] = {"count": glob}
            if glob in self.normed:
                self.stream = self.stream or _first_block(self.model, glob)
            scale = f"stream_rms / sqrt(fan_in * 2 * {variable})" if glob in self.normed \
                else f"1 / sqrt(fan_in * 2 * {variable})"
            self.add("residual output projection", names, {
                "weight": {"init": "normal", "std": scale}, "bias": "zeros"},
                "GPT-2 (Radford et al. 2019, section 2.3) and Megatron-LM (arXiv:1909.08053): "
                "residual projections scaled by 1/sqrt(2 * number of blocks)")

    def head(self, name: str, outputs: int) -> None:
        """The output layer: outputs of std ``head_gain`` on the sample batch, whatever scale
        its inputs have (a final norm, a pooled feature, a rescaled hidden state).

        For C logits of std s, E[cross-entropy] is about ln(C) + s^2 / 2 (the log-sum-exp's
        second-order expansion), so ``head_gain = sqrt(0.2 * ln(C))`` starts the loss within
        10% of ln(C) (Karpathy 2019, 'A Recipe for Training Neural Networks'); at least 0.5,
        for regression and binary heads. C is ``num_classes``, else the layer's outputs."""
        classes = self.num_classes or outputs
        gain = max(_HEAD_GAIN, math.sqrt(2 * _LOSS_EXCESS * math.log(max(classes, 1))))
        self.rules.variables["head_gain"] = float(f"{gain:.4g}")
        self.rules.variables["head_input_rms"] = 1.0  # measured by _calibrate
        role = "output layer (classifier head)" if self.num_classes else "output layer"
        bias: Any = "zeros"
        source = ("bias 0 is the uniform class prior (-ln(C) on every logit is the same under "
                  "softmax)")
        if self.prior is not None:
            logit = math.log(self.prior / (1 - self.prior))
            bias = {"init": "constant", "val": float(f"{logit:.6g}")}
            source = (f"bias ln(p / (1 - p)) for the prior p = {self.prior}: sigmoid outputs "
                      "start at the prior (Lin et al. 2017, Focal Loss, section 4.1)")
        self.add(role, [name], {"weight": {"init": "normal", "std": _HEAD_STD}, "bias": bias},
                 f"outputs of std head_gain = max(0.5, sqrt(0.2 ln C)), C = {classes}, with "
                 "head_input_rms measured on the sample batch: an initial loss within 10% of "
                 "ln(C) (Karpathy 2019, 'A Recipe for Training Neural Networks'); " + source
                 + ("; the tied embedding shares this weight" if self.tied_embedding else ""))

    def structure(self, called: set[str]) -> None:
        """The rules read from the module types: norms, LSTM/GRU, MultiheadAttention, input
        embeddings."""
        by_kind: dict[str, list[str]] = {}
        width = _stream_width(self.model)
        for name, module in self.model.named_modules():
            if _is_norm(module):
                by_kind.setdefault("norm", []).append(name)
            elif name in called and isinstance(module, (nn.LSTM, nn.LSTMCell)):
                by_kind.setdefault("lstm", []).append(name)
            elif name in called and isinstance(module, (nn.GRU, nn.GRUCell)):
                by_kind.setdefault("gru", []).append(name)
            elif name in called and isinstance(module, nn.MultiheadAttention):
                by_kind.setdefault("mha", []).append(name)
            elif isinstance(module, nn.Embedding) and module.weight is not self.head_weight \
                    and module.embedding_dim == width:
                by_kind.setdefault("embedding", []).append(name)
        if self.tied_embedding:
            self.add("input embedding beside the tied one", by_kind.get("embedding", []),
                     {"weight": {"init": "normal", "std": _HEAD_STD}},
                     "the tied token embedding's scale (it sets the residual stream's)")
        else:
            self.add("input embedding", by_kind.get("embedding", []),
                     {"weight": {"init": "normal", "std": 1.0}},
                     "unit-scale embeddings (Vaswani et al. 2017 scale theirs by sqrt(d_model); "
                     "T5: N(0, 1)): the residual stream starts at scale 1")
        self.add("normalization layer", by_kind.get("norm", []),
                 {"weight": "ones", "bias": "zeros"},
                 "identity at init: weight 1, bias 0 (Ioffe & Szegedy 2015; Ba et al. 2016)")
        recurrent = ("Xavier input weights (Glorot & Bengio 2010), orthogonal hidden weights per "
                     "gate (Saxe et al. 2014, arXiv:1312.6120)")
        self.add("LSTM", by_kind.get("lstm", []), {
            "weight_ih*": {"init": "xavier_uniform", "chunks": 4},
            "weight_hh*": {"init": "orthogonal", "chunks": 4},
            "bias_ih*": {"chunks": ["zeros", "ones", "zeros", "zeros"]},
            "bias_hh*": "zeros"},
            recurrent + ", forget-gate bias 1 (Jozefowicz et al. 2015)")
        self.add("GRU", by_kind.get("gru", []), {
            "weight_ih*": {"init": "xavier_uniform", "chunks": 3},
            "weight_hh*": {"init": "orthogonal", "chunks": 3}, "bias_*": "zeros"}, recurrent)
        self.add("multi-head attention input projection", by_kind.get("mha", []), {
            "in_proj_weight": "xavier_uniform", "in_proj_bias": "zeros"},
            "torch.nn.MultiheadAttention._reset_parameters: Xavier uniform (Glorot & Bengio "
            "2010)")


def _order(model: nn.Module, trace: _Trace) -> list[str]:
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


def auto_rules(model: nn.Module, sample: Any, *, forward: Any = None,
               num_classes: int | None = None, prior: float | None = None,
               in_place: bool = False) -> AutoRules:
    """The automatic policy's rules for ``model``, from its structure and one sample pass.

    Args:
        model: the model; left as it was (modes and RNG states restored, no gradient taken),
            unless ``in_place``.
        sample: one batch: a tensor (``model(sample)``), a tuple/list or a dict.
        forward: ``forward(model, sample)`` to call the model another way.
        num_classes: when the output layer is a C-class classifier head (it is named so).
        prior: for a sigmoid head, the positive class's frequency: the head's bias starts at
            ``ln(prior / (1 - prior))``.
        in_place: measure the policy's variables on ``model`` itself, not on a deep copy:
            its weights are overwritten by the policy's (for weights about to be replaced,
            as under ``InitCallback``; no copy of the model is made).

    Returns:
        The :class:`AutoRules` (``.policy()`` gives the :class:`~lightning_init.InitPolicy`).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
        ...                           torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 5))
        >>> rules = auto_rules(net, torch.randn(2, 3, 4, 4), num_classes=5)
        >>> [(rule.role, rule.layers) for rule in rules.rules]  # doctest: +NORMALIZE_WHITESPACE
        [('output layer (classifier head)', ('4',)), ('followed by BatchNorm, then relu', ('0',)),
         ('normalization layer', ('1',))]
        >>> rules.rules[0].rule["weight"]
        {'init': 'normal', 'std': 'head_gain / (sqrt(fan_in) * head_input_rms)'}
        >>> auto_rules(net, torch.randn(2, 3, 4, 4), prior=0.01).rules[0].rule["bias"]
        {'init': 'constant', 'val': -4.59512}
    """
    if prior is not None and not 0 < prior < 1:
        raise ValueError(f"auto policy: prior must be a probability strictly between 0 and 1 "
                         f"(the positive class's frequency, e.g. 0.01), got {prior!r}")
    meta = next((name for name, param in model.named_parameters() if param.is_meta), None)
    if meta is not None:
        raise ValueError(f"auto policy: `{meta}` is on the meta device, and the policy is built "
                         "from a forward pass on the sample batch: materialize the model first "
                         "(to_empty + any init), or give a fixed policy")
    trace = _trace(model, sample, forward)
    after = _following(trace)
    order = _order(model, trace)
    for name in order:
        after.setdefault(name, "linear")
    blocks = _blocks(model)
    normed = _normed_blocks(model, blocks)
    builder = _Builder(model, num_classes, blocks, normed, _post_norm(trace, blocks, normed),
                       prior=prior)
    output = builder.weights(order, after, _batch_normed(trace))
    if prior is not None and output is None:
        raise ValueError("auto policy: prior= sets the output layer's bias, but the sample pass "
                         "found no output layer (a weight layer with nothing after it but linear "
                         "operations or a sigmoid)")
    builder.structure(trace.called)
    builder.rules.uncalled = [name for name, module in model.named_modules()
                              if _is_weight_layer(module) and name not in trace.called
                              and name not in order]
    _calibrate(builder, Trial(model, in_place=in_place), sample, forward, output)
    return builder.rules


def _calibrate(builder: _Builder, trial: Trial, sample: Any, forward: Any,
               output: str | None) -> None:
    """Measure the policy's variables in order, each on the ``trial`` model initialized by the
    policy with the ones before it: the head's input, then the stream (a tied embedding is the
    head), then the attention logits (the queries scale with the stream)."""
    variables = builder.rules.variables
    if builder.stream is not None:
        variables["stream_rms"] = 1.0
    if builder.queries:
        variables["attention_logit_rms"] = 1.0
    if output is not None:
        variables["head_input_rms"] = input_rms(trial, sample, forward, builder.rules.policy(),
                                                output)
    if builder.stream is not None:
        variables["stream_rms"] = input_rms(trial, sample, forward, builder.rules.policy(),
                                            builder.stream)
    if builder.queries:
        measured = attention_logit_rms(trial, sample, forward, builder.rules.policy())
        variables["attention_logit_rms"] = max(1.0, measured or 1.0)
