"""The automatic policy's rules: a role, an evidence and a rule per weight layer, norm,
embedding, head and recurrent layer, read from the model's anatomy (:mod:`lightning_init.anatomy`;
the builder is :mod:`lightning_init.policy._auto_build`), and the measured variables
(:mod:`lightning_init.policy._calibrate`). The rules build their policy through the factory they
are given (:mod:`lightning_init.policy.auto` gives one that also takes an empty rule list: a
model without weight layers), so this module does not import ``init_policy``; see
:mod:`lightning_init.policy.auto` for the roles and their sources."""


from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import yaml
from torch import nn

from lightning_init._yaml import load_yaml
from lightning_init.anatomy import Anatomy, anatomy_of
from lightning_init.policy._auto_build import Builder
from lightning_init.policy._auto_heads import LOSS_EXCESS
from lightning_init.policy._calibrate import (
    Trial,
    label_free_loss,
    logit_scale_for,
    measured_anatomy,
)

__all__ = ["AutoRule", "AutoRules", "PolicyFactory", "build_rules"]

PolicyFactory = Callable[..., Any]  # (mapping, *, source) -> the policy


@dataclass(frozen=True)
class AutoRule:
    """One rule of the automatic policy.

    Attributes:
        role: what the rule is about (``"followed by relu"``, ``"output layer"``).
        layers: the qualified names of the modules it covers.
        rule: the rule as a policy mapping (``{"match": ..., "weight": ...}``).
        source: where the formula comes from.
        evidence: what the model's anatomy showed about these layers.
    """

    role: str
    layers: tuple[str, ...]
    rule: dict[str, Any]
    source: str
    evidence: str = ""


@dataclass
class AutoRules:
    """The automatic policy's rules, with :meth:`mapping`, :meth:`yaml` and :meth:`policy`.

    Attributes:
        rules: the rules, most specific first.
        variables: the policy's variables (``n_blocks``, the measured ``head_input_rms`` and
            ``stream_rms``).
        answers: an optional remark per rule index (which finding of a check it answers).
        uncalled: weight layers the sample pass never called: no rule, named in a comment.
        measured: what the measuring passes found (the initial loss, branch-to-stream ratios),
            one comment line each at the top of the YAML.
        anatomy: the anatomy the rules were read from.
    """

    rules: list[AutoRule] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    answers: dict[int, str] = field(default_factory=dict)
    uncalled: list[str] = field(default_factory=list)  # weight layers the pass never called
    measured: list[str] = field(default_factory=list)
    anatomy: Anatomy | None = field(default=None, repr=False)
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
            # Written by lightning_init from the model's anatomy and one sample pass.
            # anatomy: 1 weight layers, 0 residual branches on 0 stream(s)
            name: auto
            seed: 0
            rules:
              # followed by relu: 0
              # evidence: its output goes into relu
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
        lines = ["# Written by lightning_init from the model's anatomy and one sample pass."]
        if self.anatomy is not None:
            lines += [f"# anatomy: {line}" for line in self.anatomy.describe().splitlines()]
        lines += [f"# measured: {line}" for line in self.measured]
        lines += [yaml.safe_dump(head, sort_keys=False).rstrip(), "rules:"]
        for index, rule in enumerate(self.rules):
            shown = ", ".join(rule.layers[:4]) + (", ..." if len(rule.layers) > 4 else "")
            lines.append(f"  # {rule.role}: {shown or '(model)'}")
            if index in self.answers:
                lines.append(f"  # answers: {self.answers[index]}")
            if rule.evidence:
                lines.append(f"  # evidence: {rule.evidence}")
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


def build_rules(model: nn.Module, sample: Any, factory: PolicyFactory, *, forward: Any = None,
                num_classes: int | None = None, prior: float | None = None,
                flagged: Collection[str] = (), in_place: bool = False) -> AutoRules:
    """The automatic policy's rules for ``model``, from its anatomy and one sample pass.

    Args and result as :func:`lightning_init.policy.auto.auto_rules`; ``factory`` builds the
    policy from its mapping (empty rules allowed).
    """
    if prior is not None and not 0 < prior < 1:
        raise ValueError(f"auto policy: prior must be a probability strictly between 0 and 1 "
                         f"(the positive class's frequency, e.g. 0.01), got {prior!r}")
    meta = next((name for name, param in model.named_parameters() if param.is_meta), None)
    if meta is not None:
        raise ValueError(f"auto policy: `{meta}` is on the meta device, and the policy is built "
                         "from a forward pass on the sample batch: materialize the model first "
                         "(to_empty + any init), or give a fixed policy")
    anatomy = anatomy_of(model, sample, forward=forward)
    builder = Builder(model, anatomy, num_classes, prior, rule_type=AutoRule,
                      flagged=frozenset(flagged))
    builder.build()
    if prior is not None and builder.head is None:
        raise ValueError("auto policy: prior= sets the output layer's bias, but the sample pass "
                         "found no output layer (a weight layer with nothing after it but "
                         "element-wise operations before what the loss reads)")
    rules = AutoRules(rules=builder.rules, variables=builder.variables, anatomy=anatomy,
                      uncalled=list(anatomy.uncalled), factory=factory)
    _calibrate(builder, rules, Trial(model, in_place=in_place), sample, forward)
    return rules


def _rounded(value: float | None) -> float:
    return float(f"{value:.4g}") if value is not None and math.isfinite(value) and value > 0 \
        else 1.0


def _calibrate(builder: Builder, rules: AutoRules, trial: Trial, sample: Any,
               forward: Any) -> None:
    """Measure the policy's variables on the ``trial`` model (one copy, or the model itself)
    initialized by the policy as it stands, each pass with the values before it: the head's
    input and the stream (where the stream is the tied embedding's, whose std is the head's, it
    is divided by the head input's rms that the pass ran without), then the attention logits and
    the initial loss; where the loss is above its promise, ``head_gain`` is lowered (and
    ``stream_rms`` with it when the stream is the tied embedding's) and measured again."""
    variables = rules.variables
    if builder.stream_branch is not None:
        variables["stream_rms"] = 1.0
    if builder.queries:
        variables["attention_logit_rms"] = 1.0
    if builder.head is None and builder.stream_branch is None and not builder.queries \
            and not builder.positions:
        return
    if builder.positions:
        _positions(rules, *measured_anatomy(trial, sample, forward, rules.policy()))
    anatomy, _ = measured_anatomy(trial, sample, forward, rules.policy())
    if builder.head is not None and builder.head in anatomy.layers:
        variables["head_input_rms"] = _rounded(anatomy.layers[builder.head].input_rms)
    if builder.stream_branch is not None and builder.stream_branch < len(anatomy.branches):
        stream = anatomy.branches[builder.stream_branch].stream_rms
        if builder.tied and stream is not None:  # the stream's embeddings follow the head's
            stream /= variables["head_input_rms"]  # std, measured at head_input_rms = 1
        variables["stream_rms"] = _rounded(stream)
    anatomy, logits = measured_anatomy(trial, sample, forward, rules.policy(), builder.head)
    _attention(builder, rules, anatomy)
    _ratios(rules, anatomy)
    if builder.classifier and logits is not None:
        _promise_the_loss(builder, rules, trial, sample, forward, logits)


def _positions(rules: AutoRules, anatomy: Anatomy, _logits: Any) -> None:
    """``position_rms``: the rms of what the position tables are added to (over all of them),
    measured before the stream that the tables then join is."""
    found = [summed.stream_rms for summed in anatomy.position_tables() if summed.stream_rms]
    if found:
        rules.variables["position_rms"] = _rounded(
            math.sqrt(sum(rms * rms for rms in found) / len(found)))


def _attention(builder: Builder, rules: AutoRules, anatomy: Anatomy) -> None:
    """``attention_logit_rms``: the logits' std as they would be without it (the measured one
    times the value the pass ran with), at least 1."""
    if not builder.queries or not anatomy.attention:
        return
    stds = [site.logit_std for site in anatomy.attention]
    measured = math.sqrt(sum(std * std for std in stds) / len(stds))
    rules.variables["attention_logit_rms"] = max(1.0, _rounded(
        measured * rules.variables["attention_logit_rms"]))


def _promise_the_loss(builder: Builder, rules: AutoRules, trial: Trial, sample: Any,
                      forward: Any, logits: Any) -> None:
    """Lower ``head_gain`` until the label-free initial loss is within ``LOSS_EXCESS`` of
    ln(C), measured with ties in place; twice at most (the second pass checks the first)."""
    classes = logits.shape[-1]
    if classes < 2:
        return
    expected = math.log(classes)
    for _ in range(2):
        loss = label_free_loss(logits)
        if loss <= (1 + 2 * LOSS_EXCESS) * expected:
            break
        scale = logit_scale_for(logits, (1 + LOSS_EXCESS) * expected)
        rules.variables["head_gain"] = _rounded(rules.variables["head_gain"] * scale)
        if builder.tied and "stream_rms" in rules.variables:
            rules.variables["stream_rms"] = _rounded(rules.variables["stream_rms"] * scale)
        rules.measured.append(f"initial loss {loss:.3g} = {loss / expected:.2f}x ln({classes}) "
                              f"with the head at its first scale: head_gain x {scale:.3g}")
        anatomy, logits = measured_anatomy(trial, sample, forward, rules.policy(), builder.head)
        if logits is None:
            return
        _attention(builder, rules, anatomy)
    rules.measured.append(f"initial loss (label-free, ties in place) "
                          f"{label_free_loss(logits) / expected:.2f}x ln({classes})")


def _ratios(rules: AutoRules, anatomy: Anatomy) -> None:
    ratios = [branch.ratio for branch in anatomy.branches if branch.ratio is not None]
    if ratios:
        rules.measured.append(f"branch-to-stream rms at the adds: {min(ratios):.3g} to "
                              f"{max(ratios):.3g} over {len(ratios)} branches")
