"""The automatic policy's rules: a role and a rule per weight layer, norm, embedding, head and
recurrent layer, from what the sample pass found (:mod:`lightning_init.policy._auto_pass`), and
the measured variables (:mod:`lightning_init.policy._calibrate`). The rules build their policy
through the factory they are given (:mod:`lightning_init.policy.auto` gives
``InitPolicy.from_dict``), so this module does not import ``init_policy``; see
:mod:`lightning_init.policy.auto` for the roles and their sources."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from torch import nn

from lightning_init._yaml import load_yaml
from lightning_init.policy._auto_pass import (
    batch_normed_layers,
    call_order,
    first_block,
    following_activation,
    is_cross_attention,
    is_norm,
    is_residual_projection,
    is_weight_layer,
    normed_blocks,
    out_features,
    output_layer,
    post_norm_blocks,
    repeated_blocks,
    stream_width,
    trace_calls,
)
from lightning_init.policy._calibrate import Trial, attention_logit_rms, input_rms

__all__ = ["AutoRule", "AutoRules", "PolicyFactory", "build_rules"]

PolicyFactory = Callable[..., Any]  # (mapping, *, source) -> the policy

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


_QUERY_NAMES = frozenset({"q", "q_proj", "query", "q_lin", "wq"})


_HEAD_GAIN = 0.5  # the least std of the output layer's outputs


_LOSS_EXCESS = 0.1  # the initial loss may exceed ln(C) by this fraction


_HEAD_STD = "head_gain / (sqrt(fan_in) * head_input_rms)"


_QUERY_SOURCE = ("; over attention_logit_rms, the attention logits' std measured (at least 1): "
                 "logits of unit variance, the argument for 1/sqrt(d_k) (Vaswani et al. 2017, "
                 "section 3.2.1), which T5 folds into its query init (Raffel et al. 2020)")


_STREAM_SOURCE = ("; times stream_rms, the residual stream's rms measured at the first block: "
                  "a branch starts at the scale of the stream it adds to (GPT-2's N(0, 0.02) "
                  "next to its 0.02-scale embeddings)")


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
    # mapping, source= -> the policy (InitPolicy.from_dict, given by the caller: this module
    # does not import init_policy, which imports it)
    factory: PolicyFactory = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

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
            >>> from lightning_init.policy.auto import auto_rules
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
        the policy are the same thing) by the factory the rules were built with."""
        text = self.yaml(name=name, seed=seed)
        return self.factory(load_yaml(text, source=f"<{name} policy>"), source=f"<{name} policy>")


@dataclass
class _Builder:
    """Collects the rules of one model, role by role (:meth:`weights`, then :meth:`structure`);
    what the measuring passes need (the first block, whether there are queries) is noted on the
    way."""

    model: nn.Module
    num_classes: int | None
    blocks: dict[str, str]  # module name -> its repeated block's count glob (repeated_blocks)
    normed: set[str]  # the normalized residual blocks' globs (normed_blocks)
    post_norm: set[str]  # those with the norm after the add (post_norm_blocks)
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
        output = output_layer(order, after, modules)
        if output is not None:
            self.head_weight = modules[output].weight
            self.tied_embedding = any(isinstance(m, nn.Embedding) and m.weight is self.head_weight
                                      for m in modules.values())
            self.head(output, out_features(modules[output]))
        residual: dict[str, list[str]] = {}
        groups: dict[tuple[str, str], list[str]] = {}
        for name in order:
            if name == output or not is_weight_layer(modules[name]):
                continue
            kind = after.get(name) or "linear"
            glob = self.blocks.get(name)
            if is_residual_projection(name) and glob and kind == "linear":
                residual.setdefault(glob, []).append(name)
            elif glob in self.normed:
                query = name.rsplit(".", 1)[-1] in _QUERY_NAMES and kind == "linear"
                groups.setdefault((kind, "query" if query else "stream"), []).append(name)
                self.stream = self.stream or first_block(self.model, glob)
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
            zeroed = [name for name in names if not is_cross_attention(name)]
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
                self.stream = self.stream or first_block(self.model, glob)
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
        width = stream_width(self.model)
        for name, module in self.model.named_modules():
            if is_norm(module):
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


def build_rules(model: nn.Module, sample: Any, factory: PolicyFactory, *, forward: Any = None,
                num_classes: int | None = None, prior: float | None = None,
                in_place: bool = False) -> AutoRules:
    """The automatic policy's rules for ``model``, from its structure and one sample pass.

    Args and result as :func:`lightning_init.policy.auto.auto_rules`; ``factory`` builds the
    policy from its mapping (``InitPolicy.from_dict``).
    """
    if prior is not None and not 0 < prior < 1:
        raise ValueError(f"auto policy: prior must be a probability strictly between 0 and 1 "
                         f"(the positive class's frequency, e.g. 0.01), got {prior!r}")
    meta = next((name for name, param in model.named_parameters() if param.is_meta), None)
    if meta is not None:
        raise ValueError(f"auto policy: `{meta}` is on the meta device, and the policy is built "
                         "from a forward pass on the sample batch: materialize the model first "
                         "(to_empty + any init), or give a fixed policy")
    trace = trace_calls(model, sample, forward)
    after = following_activation(trace)
    order = call_order(model, trace)
    for name in order:
        after.setdefault(name, "linear")
    blocks = repeated_blocks(model)
    normed = normed_blocks(model, blocks)
    builder = _Builder(model, num_classes, blocks, normed, post_norm_blocks(trace, blocks, normed),
                       prior=prior)
    output = builder.weights(order, after, batch_normed_layers(trace))
    if prior is not None and output is None:
        raise ValueError("auto policy: prior= sets the output layer's bias, but the sample pass "
                         "found no output layer (a weight layer with nothing after it but linear "
                         "operations or a sigmoid)")
    builder.rules.factory = factory
    builder.structure(trace.called)
    builder.rules.uncalled = [name for name, module in model.named_modules()
                              if is_weight_layer(module) and name not in trace.called
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
