"""The automatic policy's rules, role by role, from the model's anatomy.

Every decision reads :class:`~lightning_init.anatomy.Anatomy` (data flow), never a module's
name: which layers close a residual branch, where the norms sit and what their identity is,
which layers make attention queries, which layers are the heads, which zeros are deliberate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_init.anatomy import Anatomy, Branch, gain_of
from lightning_init.policy._auto_heads import head_rules
from lightning_init.policy._auto_structure import (
    HEAD_STD,
    KEPT,
    NORMALIZED_WEIGHT_SOURCE,
    embedding_rules,
    norm_rules,
    normalized_weight,
    position_rules,
    structure_rules,
)

__all__ = ["HEAD_STD", "Builder"]

_QUERY_SOURCE = ("; over attention_logit_rms, the attention logits' std measured (at least 1): "
                 "logits of unit variance, the argument for 1/sqrt(d_k) (Vaswani et al. 2017, "
                 "section 3.2.1), which T5 folds into its query init (Raffel et al. 2020)")
_SCALE_FREE_SOURCE = (
    "a BatchNorm right after the layer divides its scale out: the forward pass does not see "
    "the weight's std, which sets only the optimizer's step relative to the weight (under "
    "Adam about lr / std a step; van Laarhoven 2017, arXiv:1706.05350; Hoffer et al. 2018, "
    "arXiv:1803.01814), a training choice the model's own init made: its values are kept, as "
    "every scale the forward pass does not constrain")
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
                 sorted(self.normalized), {"weight": "keep"}, NORMALIZED_WEIGHT_SOURCE,
                 "scaling its stored weight leaves the weight its forward pass uses unchanged")
        kept = self.kept_gates()
        head_rules(self, kept)
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
