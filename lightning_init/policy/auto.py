"""An init policy built from a model's structure and one sample pass (``policy: "auto"``).

:func:`auto_rules` runs the model once on a sample batch under ``torch.no_grad`` and records, in
call order, every weight layer (``Linear``, convolutions, Hugging Face ``Conv1D``) and every
activation (``nn.ReLU`` and friends, and functional calls such as ``F.relu`` or
``torch.tanh``). Each weight layer then gets the gain of the activation that actually follows
it (He et al. 2015, arXiv:1502.01852, section 2.2: ``std = gain / sqrt(fan_in)`` keeps the
second moment of the pre-activations constant); the last weight layer called is the output
layer (gain 1, or a small classifier head). Around that:

- residual output projections (``c_proj``, ``out_proj``, ``o_proj``, ``fc2``, ``down_proj``,
  ``linear2``... inside a repeated block) are scaled by ``1 / sqrt(2 * n_blocks)`` (Radford et
  al. 2019, GPT-2, section 2.3; Shoeybi et al. 2019, Megatron-LM, arXiv:1909.08053);
- normalization layers start at identity: weight 1, bias 0;
- an embedding tied to the output layer is ``N(0, 0.02)`` (GPT-2);
- LSTM/GRU: Xavier input weights, orthogonal hidden weights per gate (Saxe et al. 2014,
  arXiv:1312.6120), LSTM forget-gate bias 1 (Jozefowicz et al. 2015);
- ``MultiheadAttention``'s packed input projection is Xavier uniform, as PyTorch does.

Each rule comes with a comment saying which role it answers and its source; :class:`AutoRules`
renders the policy as commented YAML. Weight layers the sample pass never called are left
alone.

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

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.overrides import TorchFunctionMode

from lightning_init._hooks import HookHandles
from lightning_init._lightning import call_model

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
                     ("mish", "silu"), ("elu", "elu"))
_RESIDUAL_NAMES = frozenset({"c_proj", "out_proj", "o_proj", "fc2", "down_proj", "linear2",
                             "w2", "wo", "proj"})
_RECURRENT = (nn.LSTM, nn.LSTMCell, nn.GRU, nn.GRUCell)
_HEAD_GAIN = 0.5


def _activation_kind(name: str) -> str | None:
    """The activation a class or function name stands for (``"NewGELUActivation"`` -> gelu)."""
    lowered = name.lower().rstrip("_")
    for fragment, kind in _ACTIVATION_NAMES:
        if fragment in lowered:
            return kind
    return None


def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, _ConvNd)) or (
        type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or (
        type(module).__name__.endswith(("LayerNorm", "RMSNorm")))


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
        variables: the policy's variables (``n_blocks``).
        answers: an optional remark per rule index (which finding of a check it answers).
    """

    rules: list[AutoRule] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    answers: dict[int, str] = field(default_factory=dict)

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


@contextlib.contextmanager
def _quiet(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad for the pass; modes and RNG states restored after."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            yield
    finally:
        for module, training in modes:
            module.training = training


def _trace(model: nn.Module, sample: Any, forward: Any) -> _Trace:
    trace = _Trace()
    with HookHandles() as handles:
        for name, module in model.named_modules():
            _hook(trace, name, module, handles)
        with _quiet(model), _ActivationCalls(trace):
            if forward is not None:
                forward(model, sample)
            else:
                call_model(model, sample)
    return trace


def _following(trace: _Trace) -> dict[str, str | None]:
    """Each called layer -> the first activation after it before the next layer (``None``:
    nothing but linear operations until the end)."""
    after: dict[str, str | None] = {}
    pending: list[str] = []
    for event, value in trace.events:
        if event == "act":
            for name in pending:
                after.setdefault(name, value)
            pending = []
        else:
            for name in pending:
                after.setdefault(name, "linear")
            pending = [value] if value not in after else []
    for name in pending:
        after.setdefault(name, None)
    return after


# ------------------------------------------------------------------------------ structure
def _blocks(model: nn.Module) -> dict[str, str]:
    """Module name -> the count glob of the repeated block it sits in (``"h.*"``)."""
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
        glob = f"{name}.*" if name else "*"
        for child_name, child in children:
            prefix = f"{name}.{child_name}" if name else child_name
            for sub_name, _ in child.named_modules():
                out.setdefault(f"{prefix}.{sub_name}" if sub_name else prefix, glob)
    return out


def _tied_to_embedding(model: nn.Module) -> set[str]:
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {name for name, m in model.named_modules()
            if _is_weight_layer(m) and id(m.weight) in embedded}


@dataclass
class _Builder:
    model: nn.Module
    num_classes: int | None
    rules: AutoRules = field(default_factory=AutoRules)

    def add(self, role: str, names: list[str], rule: dict[str, Any], source: str) -> None:
        if not names:
            return
        match = ({"type": type(self.model).__name__} if names == [""]  # the model is the layer
                 else {"name": list(names)})
        self.rules.rules.append(AutoRule(role, tuple(names), {
            "match": match, "optional": True, **rule}, source))

    def weights(self, order: list[str], after: dict[str, str | None]) -> None:
        modules = dict(self.model.named_modules())
        tied = _tied_to_embedding(self.model)
        blocks = _blocks(self.model)
        output = next((n for n in reversed(order)
                       if after.get(n) is None and _is_weight_layer(modules[n])), None)
        if output is not None and output not in tied:
            self.head(output)
        residual: dict[str, list[str]] = {}
        groups: dict[str, list[str]] = {}
        for name in order:
            if name == output or name in tied or not _is_weight_layer(modules[name]):
                continue
            kind = after.get(name) or "linear"
            if name.rsplit(".", 1)[-1] in _RESIDUAL_NAMES and name in blocks and kind == "linear":
                residual.setdefault(blocks[name], []).append(name)
            else:
                groups.setdefault(kind, []).append(name)
        for index, (glob, names) in enumerate(residual.items()):
            variable = "n_blocks" if index == 0 else f"n_blocks_{index}"
            self.rules.variables[variable] = {"count": glob}
            self.add("residual output projection", names, {
                "weight": {"init": "normal", "std": f"1 / sqrt(fan_in * 2 * {variable})"},
                "bias": "zeros"},
                "GPT-2 (Radford et al. 2019, section 2.3) and Megatron-LM (arXiv:1909.08053): "
                "residual projections scaled by 1/sqrt(2 * number of blocks)")
        for kind, names in groups.items():
            gain, source = _GAINS[kind]
            role = "no activation follows" if kind == "linear" else f"followed by {kind}"
            self.add(role, names, {
                "weight": {"init": "normal", "std": f"{gain} / sqrt(fan_in)"},
                "bias": "zeros"}, source)
        tied_ids = {id(modules[name].weight) for name in tied}
        self.add("embedding tied to the output layer",
                 [n for n, m in modules.items()
                  if isinstance(m, nn.Embedding) and id(m.weight) in tied_ids],
                 {"weight": {"init": "normal", "std": 0.02}},
                 "GPT-2 (Radford et al. 2019): N(0, 0.02) embeddings, logits near ln(vocab)")

    def head(self, name: str) -> None:
        if self.num_classes:
            self.add("output layer (classifier head)", [name], {
                "weight": {"init": "normal", "std": f"{_HEAD_GAIN} / sqrt(fan_in)"},
                "bias": "zeros"},
                "small head weights give an initial loss near ln(C) (Karpathy 2019, 'A Recipe "
                "for Training Neural Networks'); bias 0 is the uniform class prior (-ln(C) on "
                "every logit is the same under softmax)")
        else:
            self.add("output layer", [name], {
                "weight": {"init": "normal", "std": "1 / sqrt(fan_in)"}, "bias": "zeros"},
                _GAINS["linear"][1])

    def structure(self, called: set[str]) -> None:
        by_kind: dict[str, list[str]] = {}
        for name, module in self.model.named_modules():
            if _is_norm(module):
                by_kind.setdefault("norm", []).append(name)
            elif name in called and isinstance(module, (nn.LSTM, nn.LSTMCell)):
                by_kind.setdefault("lstm", []).append(name)
            elif name in called and isinstance(module, (nn.GRU, nn.GRUCell)):
                by_kind.setdefault("gru", []).append(name)
            elif name in called and isinstance(module, nn.MultiheadAttention):
                by_kind.setdefault("mha", []).append(name)
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
               num_classes: int | None = None) -> AutoRules:
    """The automatic policy's rules for ``model``, from its structure and one sample pass.

    Args:
        model: the model; left as it was (modes and RNG states restored, no gradient taken).
        sample: one batch: a tensor (``model(sample)``), a tuple/list or a dict.
        forward: ``forward(model, sample)`` to call the model another way.
        num_classes: when the output layer is a C-class classifier head: its weights are made
            small and its bias set to the class prior, for an initial loss near ln(C).

    Returns:
        The :class:`AutoRules` (``.policy()`` gives the :class:`~lightning_init.InitPolicy`).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
        ...                           torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16, 5))
        >>> rules = auto_rules(net, torch.randn(2, 3, 4, 4), num_classes=5)
        >>> [(rule.role, rule.layers) for rule in rules.rules]  # doctest: +NORMALIZE_WHITESPACE
        [('output layer (classifier head)', ('4',)), ('followed by relu', ('0',)),
         ('normalization layer', ('1',))]
    """
    trace = _trace(model, sample, forward)
    after = _following(trace)
    order = _order(model, trace)
    for name in order:
        after.setdefault(name, "linear")
    builder = _Builder(model, num_classes)
    builder.weights(order, after)
    builder.structure(trace.called)
    return builder.rules

