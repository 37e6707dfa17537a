"""The automatic policy's rules, role by role, from the model's anatomy.

Every decision reads :class:`~lightning_init.anatomy.Anatomy` (data flow), never a module's
name: which layers close a residual branch, where the norms sit and what their identity is,
which layers make attention queries, which layers are the heads, which zeros are deliberate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_init.anatomy import Anatomy, Branch, gain_of
from lightning_init.policy._auto_structure import (
    HEAD_STD,
    KEPT,
    embedding_rules,
    norm_rules,
    position_rules,
    structure_rules,
)

__all__ = ["HEAD_STD", "Builder"]

READOUT_GAIN = 0.5  # the std of a classifier's outputs where the head's weight is its own
REGRESSION_GAIN = 0.1  # a regression output starts at a tenth of its target's scale
LOSS_EXCESS = 0.1  # the initial loss may exceed ln(C) by this fraction
_QUERY_SOURCE = ("; over attention_logit_rms, the attention logits' std measured (at least 1): "
                 "logits of unit variance, the argument for 1/sqrt(d_k) (Vaswani et al. 2017, "
                 "section 3.2.1), which T5 folds into its query init (Raffel et al. 2020)")
_SCALE_FREE_SOURCE = (
    "a BatchNorm right after the layer divides its scale out: the forward pass does not see "
    "the weight's std, which sets only the optimizer's step relative to the weight (under "
    "Adam about lr / std a step; van Laarhoven 2017, arXiv:1706.05350; Hoffer et al. 2018, "
    "arXiv:1803.01814), a training choice the model's own init made: its values are kept, as "
    "every scale the forward pass does not constrain")
_NORMALIZED_WEIGHT_SOURCE = (
    "a parametrization of the weight divides its scale out (spectral normalization, Miyato et "
    "al. 2018, arXiv:1802.05957: W / sigma(W)): no std drawn for the stored weight reaches the "
    "forward pass, and it sets only the optimizer's step relative to the weight (under Adam "
    "about lr / std a step; a small draw makes each step rotate the normalized weight): its "
    "values are kept, as every scale the forward pass does not constrain")
_INNER_SOURCE = ("; inside a branch that a norm feeds at unit scale, each layer keeps that "
                 "scale, and the layers closing the branch set its output's (stream_rms / "
                 "sqrt(n_branches)), so that the scale is set once, not compounded layer by "
                 "layer")


def _normalized(anatomy: Anatomy, branch: Branch | None) -> bool:
    """A branch whose scale the token norms set: pre-, post- or sandwich-normed, or with a
    LayerNorm/RMSNorm inside (a conv branch closed by a BatchNorm is not one)."""
    if branch is None:
        return False
    if branch.place in ("pre", "post", "sandwich"):
        return True
    names = [name for names in branch.norms.values() for name in names]
    return any(anatomy.norms[name].kind == "token" for name in names if name in anatomy.norms)


def normalized_weight(module: nn.Module) -> bool:
    """Whether a parametrization of ``module.weight`` divides its scale out: scaling every
    stored tensor behind it leaves the weight unchanged (``spectral_norm``; not ``weight_norm``,
    whose magnitude ``g`` scales too). Probed with the parametrizations in eval mode (no power
    iteration) and the stored values restored.

    Example:
        >>> from torch.nn.utils import parametrizations
        >>> normalized_weight(parametrizations.spectral_norm(nn.Linear(4, 3)))
        True
        >>> normalized_weight(parametrizations.weight_norm(nn.Linear(4, 3)))
        False
        >>> normalized_weight(nn.Linear(4, 3))
        False
    """
    parametrizations = getattr(module, "parametrizations", None)
    if not isinstance(parametrizations, nn.ModuleDict) or "weight" not in parametrizations:
        return False
    chain = parametrizations["weight"]
    stored = [tensor for _, tensor in chain.named_parameters()]
    if not stored or any(tensor.is_meta or not tensor.is_floating_point() for tensor in stored):
        return False
    modes = [(part, part.training) for part in chain.modules()]
    saved = [tensor.detach().clone() for tensor in stored]
    try:
        with torch.no_grad():
            for part, _ in modes:
                part.training = False
            before = module.weight.detach().clone()
            for tensor in stored:
                tensor.mul_(2.0)
            after = module.weight.detach()
            return bool(torch.isfinite(before).all()) and float(before.abs().max()) > 0 \
                and torch.allclose(before, after, rtol=1e-4, atol=0)
    finally:
        with torch.no_grad():
            for tensor, value in zip(stored, saved, strict=True):
                tensor.copy_(value)
        for part, training in modes:
            part.training = training


@dataclass
class Builder:
    """Collects the rules of one model (:meth:`build`); what the measuring passes need (the
    branch where the stream is measured, whether there are queries) is noted on the way."""

    model: nn.Module
    anatomy: Anatomy
    num_classes: int | None = None
    prior: float | None = None
    rules: list[Any] = field(default_factory=list)  # AutoRule
    variables: dict[str, Any] = field(default_factory=dict)
    stream_branch: int | None = None  # index in anatomy.branches where stream_rms is measured
    queries: bool = False
    positions: list[str] = field(default_factory=list)  # learned position tables (parameters)
    head: str | None = None  # the first head (measured)
    tied: bool = False  # the head's weight is an embedding's: the stream follows head_gain
    classifier: bool = False  # the head's logits are classes: the initial loss is measured
    rule_type: Any = None  # AutoRule, set by the caller (avoids an import cycle)
    flagged: frozenset[str] = frozenset()  # layers a check flagged: their zeros are not kept
    rates: list[str] = field(default_factory=list)  # layers whose output becomes a rate
    normalized: set[str] = field(default_factory=set)  # weights a parametrization normalizes

    def add(self, role: str, names: list[str], rule: dict[str, Any], source: str,
            evidence: str = "") -> None:
        """One rule for the modules ``names`` (none: no rule), optional so that the policy
        applies to the model's copies and to models that lack a layer. The bias of a layer
        whose output becomes a rate is left as the model set it (a rule of its own)."""
        if not names:
            return
        rates = [name for name in names if name in self.rates and "bias" in rule]
        if rates and len(rates) < len(names):
            self.add(role, [n for n in names if n not in rates], rule, source, evidence)
            self.add(role, rates, rule, source, evidence)
            return
        if rates:
            rule = {key: value for key, value in rule.items() if key != "bias"}
            role += ", its bias kept"
            source += ("; the bias of a layer whose output becomes a positive rate (softplus, "
                       "exp: a state-space model's time step) sets that rate's range, so it is "
                       "left as the model's own init set it (Gu & Dao 2023, Mamba, section 3.6)")
            evidence = (evidence + "; " if evidence else "") + \
                "its output goes through a softplus or an exp"
        match = ({"type": type(self.model).__name__} if names == [""]  # the model is the layer
                 else {"name": list(names)})
        self.rules.append(self.rule_type(role, tuple(names), {
            "match": match, "optional": True, **rule}, source, evidence))

    def build(self) -> None:
        modules = dict(self.model.named_modules())
        self.normalized = {name for name in self.anatomy.layers
                           if name in modules and normalized_weight(modules[name])}
        self.add("weight normalized by a parametrization (spectral norm), its own scale kept",
                 sorted(self.normalized), {"weight": "keep"}, _NORMALIZED_WEIGHT_SOURCE,
                 "scaling its stored weight leaves the weight its forward pass uses unchanged")
        kept = self.kept_gates()
        self.heads(kept)
        self.weights(kept)
        norm_rules(self, kept)
        embedding_rules(self)
        position_rules(self)
        structure_rules(self)

    def kept_gates(self) -> set[str]:
        """Deliberate zero-inits to keep: a zero head, and a zero layer or norm that closes a
        residual branch (the block starts as the identity: ``zero_init_last``, Fixup), unless a
        check flagged their layer. A zero anywhere else cuts the signal: no deliberate init."""
        closers = set(self.anatomy.residual_projections())
        closers |= {name for branch in self.anatomy.branches
                    for name in branch.norms.get("sandwich", ())}
        return {gate.param for gate in self.anatomy.gates
                if gate.param.rpartition(".")[0] not in self.flagged
                and (gate.kind == "head" or (gate.kind in ("norm", "weight")
                                             and gate.param.rpartition(".")[0] in closers))}

    # ------------------------------------------------------------------ heads
    def heads(self, kept: set[str]) -> None:
        heads = self.anatomy.heads
        if not heads:
            return
        names = [name for name in self.anatomy.head_names()
                 if f"{name}.weight" not in kept and name not in self.normalized]
        zero = [name for name in self.anatomy.head_names() if f"{name}.weight" in kept]
        self.add("output layer, zero (kept)", zero, {"weight": "zeros", "bias": "zeros"}, KEPT,
                 "an all-zero output layer on the loss's path")
        if not names:
            return
        self.head = names[0]
        self.tied = any(head.tied for head in heads if head.name in names)
        outputs = max(head.outputs for head in heads)
        regression = self.anatomy.regression and self.prior is None and not self.num_classes
        if regression:
            self.regression_head(names)
            return
        classes = self.num_classes or outputs
        self.classifier = classes > 1
        self.variables["head_gain"] = float(f"{self.head_gain(classes):.4g}")
        self.variables["head_input_rms"] = 1.0  # measured
        bias: Any = "zeros"
        source = ("bias 0 is the uniform class prior (-ln(C) on every logit is the same under "
                  "softmax)")
        if self.prior is not None:
            logit = math.log(self.prior / (1 - self.prior))
            bias = {"init": "constant", "val": float(f"{logit:.6g}")}
            source = (f"bias ln(p / (1 - p)) for the prior p = {self.prior}: sigmoid outputs "
                      "start at the prior (Lin et al. 2017, Focal Loss, section 4.1)")
        role = "output layer (classifier head)" if self.num_classes else "output layer"
        self.add(role, names, {"weight": {"init": "normal", "std": HEAD_STD}, "bias": bias},
                 self._head_source(classes) + source, self._head_evidence(names))

    def head_gain(self, classes: int) -> float:
        """The std of a classifier's outputs: ``READOUT_GAIN`` where the head's weight is its
        own (a small readout, as muP's); where it is a tied embedding's, the larger
        ``sqrt(2 LOSS_EXCESS ln C)`` that the initial-loss promise allows, at least that. One
        gain serves every head: an untied head beside a tied one (a pretraining model's
        next-sentence head) gets the tied one's, which the measured initial loss then lowers
        where the logits overshoot."""
        if not self.tied:
            return READOUT_GAIN
        return max(READOUT_GAIN, math.sqrt(2 * LOSS_EXCESS * math.log(max(classes, 1))))

    def _head_source(self, classes: int) -> str:
        measured = ("with head_input_rms measured on the sample batch, then the initial loss "
                    "measured with ties in place and head_gain lowered until it is within 10% "
                    "of ln(C) (Karpathy 2019, 'A Recipe for Training Neural Networks'); ")
        if not self.tied:
            return ("outputs of std head_gain = 0.5, a small readout: the logits start near "
                    "the uniform prior and the first steps learn features rather than undo "
                    "the head's random preferences (muP's readout, Yang et al. 2022, Tensor "
                    "Programs V, arXiv:2203.03466, starts it small or at zero), " + measured)
        return (f"outputs of std head_gain = max(0.5, sqrt(0.2 ln C)), C = {classes}: the "
                "tied embedding shares this weight, and a readout as small as an untied "
                "head's would start the token embeddings, which the stream is made of, at "
                "that small scale; the most that keeps the initial loss within 10% of ln(C) "
                "(an excess of about head_gain^2 / 2), " + measured)

    def regression_head(self, names: list[str]) -> None:
        target = self.anatomy.target_rms or 1.0
        gain = REGRESSION_GAIN * target
        self.variables["head_gain"] = float(f"{gain:.4g}")
        self.variables["head_input_rms"] = 1.0
        seen = f"{self.anatomy.loss_op} against a target of rms {target:.3g}" \
            if self.anatomy.loss_op else "one output and no class loss"
        self.add("output layer (regression)", names,
                 {"weight": {"init": "normal", "std": HEAD_STD}, "bias": "zeros"},
                 "outputs of std head_gain = 0.1 x the target's rms: a regression starts near "
                 "the mean, small next to the target, and its first steps fit the target's "
                 "scale rather than undo the init's noise",
                 f"{seen}; " + self._head_evidence(names))

    def _head_evidence(self, names: list[str]) -> str:
        heads = [head for head in self.anatomy.heads if head.name in names]
        parts = []
        for head in heads:
            after = f" through {', '.join(dict.fromkeys(head.ops_after))}" if head.ops_after \
                else ""
            parts.append(f"`{head.name}` is the last weight layer before `{head.output}`{after}")
        return "; ".join(parts)

    # ------------------------------------------------------------------ weight layers
    def weights(self, kept: set[str]) -> None:
        anatomy = self.anatomy
        heads = set(anatomy.head_names())
        queries = set(anatomy.query_layers())
        residual: dict[int, list[str]] = {}
        zeroed: list[str] = []
        mixing: dict[int, list[str]] = {}
        groups: dict[tuple[str, str], list[str]] = {}
        for name, site in anatomy.layers.items():
            if name in heads or f"{name}.weight" in kept or name in self.normalized:
                continue
            branch = anatomy.branch_of(name)
            kind = site.followed_by or "linear"
            normalized = _normalized(anatomy, branch)
            if branch is not None and name in branch.last and kind == "linear" \
                    and site.normalized_by is None:
                if branch.place == "post" and not branch.reads:
                    if _mixes_positions(anatomy, branch):
                        mixing.setdefault(anatomy.branches.index(branch), []).append(name)
                    else:
                        zeroed.append(name)
                else:
                    residual.setdefault(branch.stream, []).append(name)
            elif normalized:
                query = name in queries and kind == "linear"
                groups.setdefault((kind, "query" if query else "stream"), []).append(name)
            else:
                fan = self._fan(name, site.norm_kind)
                groups.setdefault(("" if fan == "kept" else kind, fan), []).append(name)
            if normalized and self.stream_branch is None:
                self.stream_branch = anatomy.branches.index(branch)
        self.rates = [name for name, site in anatomy.layers.items() if site.rate]
        self._attention_closers(residual, zeroed, mixing)
        self.zero_branches(zeroed)
        self.mixing_branches(mixing)
        self.residual(residual)
        for (kind, fan), names in groups.items():
            self.gain(kind, fan, names)
        gated = sorted(p.rpartition(".")[0] for p in kept
                       if p.rpartition(".")[0] in anatomy.layers and p.rpartition(".")[0]
                       not in heads)
        self.add("branch closer, zero (kept)", gated, {"weight": "zeros"}, KEPT,
                 "an all-zero layer closing a residual branch")

    def _fan(self, name: str, norm_kind: str | None) -> str:
        """``fan_in``; before a BatchNorm, ``"kept"`` (the model's own weight: its scale is
        divided out) where that weight is usable (finite, not constant, not flagged by a
        check), else ``fan_out``."""
        if norm_kind != "batch":
            return "fan_in"
        weight = getattr(self.model.get_submodule(name), "weight", None)
        usable = isinstance(weight, torch.Tensor) and not weight.is_meta \
            and weight.numel() > 1 and name not in self.flagged
        if usable:
            with torch.no_grad():
                usable = bool(torch.isfinite(weight).all()) and float(weight.std()) > 0
        return "kept" if usable else "fan_out"

    def _attention_closers(self, residual: dict[int, list[str]], zeroed: list[str],
                           mixing: dict[int, list[str]]) -> None:
        """A ``MultiheadAttention`` closing a branch: its ``out_proj`` is the projection."""
        modules = dict(self.model.named_modules())
        for index, branch in enumerate(self.anatomy.branches):
            for name in branch.last:
                if isinstance(modules.get(name), nn.MultiheadAttention):
                    post = branch.place == "post" and not branch.reads
                    target = mixing.setdefault(index, []) if post \
                        else residual.setdefault(branch.stream, [])
                    target.append(f"{name}.out_proj" if name else "out_proj")

    def zero_branches(self, names: list[str]) -> None:
        self.add("residual branch closer, a norm after the add (post-norm)", names,
                 {"weight": "zeros", "bias": "zeros"},
                 "zero-initialized branch: with the norm after the add each block starts as "
                 "the identity and the norms keep the scale (Zhang et al. 2019, Fixup, "
                 "arXiv:1901.09321; Bachlechner et al. 2020, ReZero, arXiv:2003.04887); not a "
                 "branch that reads another stream (cross-attention), which would cut it off "
                 "from the loss",
                 "its output is the branch's at an add whose sum only a norm reads")

    def mixing_branches(self, mixing: dict[int, list[str]]) -> None:
        """Post-norm branches that mix positions (an attention call inside): drawn at DeepNet's
        ``beta = (8 N)^(-1/4)`` of the normal scale, ``N`` the number of such branches."""
        if not mixing:
            return
        names = [name for names in mixing.values() for name in names]
        self.variables["postnorm_beta"] = float(f"{(8 * len(mixing)) ** -0.25:.4g}")
        self.add("residual branch closer, attention with a norm after the add (post-norm)",
                 names, {"weight": {"init": "normal", "std": "postnorm_beta / sqrt(fan_in)"},
                         "bias": "zeros"},
                 "DeepNet (Wang et al. 2022, arXiv:2203.00555, section 3): the projections of a "
                 "post-norm encoder's branches scaled by beta = (8 N)^(-1/4), N the number of "
                 "layers; small, not zero: a zero attention branch leaves a position's state "
                 "blind to the other positions at step 0 (a classifier reading one token would "
                 "see the same vector for every sample), while a zero feed-forward branch, "
                 "per position, starts at the identity (Fixup)",
                 "its branch holds an attention call (a softmax over positions whose queries or "
                 "keys its layers make) at an add whose sum only a norm reads")

    def residual(self, residual: dict[int, list[str]]) -> None:
        """Branch closers, per stream: ``/ sqrt(n_branches)``, times the stream's rms where a
        norm sets the branch's scale."""
        for stream, names in residual.items():
            count = len(self.anatomy.branches_on(stream))
            variable = "n_branches" if stream == 0 or "n_branches" not in self.variables \
                else f"n_branches_{stream}"
            self.variables[variable] = count
            branches = [b for b in self.anatomy.branches_on(stream) if set(b.last) & set(names)]
            normed = any(_normalized(self.anatomy, b) for b in branches)
            if normed and self.stream_branch is None:
                self.stream_branch = self.anatomy.branches.index(branches[0])
            scale = f"stream_rms / sqrt(fan_in * {variable})" if normed \
                else f"1 / sqrt(fan_in * {variable})"
            self.add("residual branch closer", names, {
                "weight": {"init": "normal", "std": scale}, "bias": "zeros"},
                "GPT-2 (Radford et al. 2019, section 2.3) and Megatron-LM (arXiv:1909.08053): "
                "the layers that close a residual branch scaled by 1/sqrt(number of branches "
                "added to the stream)" + ("; times stream_rms, the stream's rms measured where "
                "the first normalized branch leaves it: the branch starts at the scale of the "
                "stream it adds to" if normed else ""),
                f"each closes one of the {count} residual branches of stream {stream} (its "
                "output is added to the stream that entered the branch)")

    def gain(self, kind: str, fan: str, names: list[str]) -> None:
        """Layers followed by the activation ``kind``: over ``fan_in``, over ``fan_out`` before
        a BatchNorm, and over ``attention_logit_rms`` too for queries."""
        gain = gain_of(kind)
        expression, source = gain.expression, gain.source
        if fan == "stream":
            self.add(f"inside a normalized residual branch, followed by {kind}", names, {
                "weight": {"init": "normal", "std": f"{expression} / sqrt(fan_in)"},
                "bias": "zeros"}, source + _INNER_SOURCE,
                "inside a branch whose scale a norm sets")
            return
        if fan == "query":
            self.queries = True
            std = f"{expression} / sqrt(fan_in) / attention_logit_rms"
            self.add("attention query projection", names, {
                "weight": {"init": "normal", "std": std},
                "bias": "zeros"}, source + _INNER_SOURCE + _QUERY_SOURCE,
                "its output is the query of an attention's q k^T")
            return
        if fan == "kept":
            self.add("followed by BatchNorm, its own scale kept", names,
                     {"weight": "keep", "bias": "zeros"}, _SCALE_FREE_SOURCE,
                     "its output goes straight into a BatchNorm")
            return
        role = "no activation follows" if kind == "linear" else f"followed by {kind}"
        evidence = f"its output goes into {kind}" if kind != "linear" else \
            "no activation reads its output"
        if fan == "fan_out":
            role = "followed by BatchNorm" + ("" if kind == "linear" else f", then {kind}")
            source += ("; fan_out before a BatchNorm, as torchvision's ResNet (He et al. 2015, "
                       "section 2.2, the backward-pass case)")
            evidence = "its output goes straight into a BatchNorm"
        self.add(role, names, {"weight": {"init": "normal", "std": f"{expression} / sqrt({fan})"},
                               "bias": "zeros"}, source, evidence)


def _mixes_positions(anatomy: Anatomy, branch: Branch) -> bool:
    """Whether a branch mixes positions: an attention call's queries or keys come from its
    layers."""
    inside = set(branch.layers)
    return any(inside & {*site.queries, *site.keys} for site in anatomy.attention)
