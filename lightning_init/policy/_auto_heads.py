"""The automatic policy's output layers: a classifier's readout, a tied head, a regression
output, a deliberate zero head. Functions of the :class:`Builder` they add to."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lightning_init.policy._auto_structure import HEAD_STD, KEPT

if TYPE_CHECKING:
    from lightning_init.policy._auto_build import Builder

__all__ = ["LOSS_EXCESS", "head_gain", "head_rules"]

READOUT_GAIN = 0.5  # the std of a classifier's outputs where the head's weight is its own
REGRESSION_GAIN = 0.1  # a regression output starts at a tenth of its target's scale
LOSS_EXCESS = 0.1  # the initial loss may exceed ln(C) by this fraction


def head_rules(self: Builder, kept: set[str]) -> None:
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
        _regression_head(self, names)
        return
    classes = self.num_classes or outputs
    self.classifier = classes > 1
    self.variables["head_gain"] = float(f"{head_gain(self, classes):.4g}")
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
             _head_source(self, classes) + source, _head_evidence(self, names))

def head_gain(self: Builder, classes: int) -> float:
    """The std of a classifier's outputs: ``READOUT_GAIN`` where the head's weight is its
    own (a small readout, as muP's); where it is a tied embedding's, the larger
    ``sqrt(2 LOSS_EXCESS ln C)`` that the initial-loss promise allows, at least that. One
    gain serves every head: an untied head beside a tied one (a pretraining model's
    next-sentence head) gets the tied one's, which the measured initial loss then lowers
    where the logits overshoot."""
    if not self.tied:
        return READOUT_GAIN
    return max(READOUT_GAIN, math.sqrt(2 * LOSS_EXCESS * math.log(max(classes, 1))))

def _head_source(self: Builder, classes: int) -> str:
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

def _regression_head(self: Builder, names: list[str]) -> None:
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
             f"{seen}; " + _head_evidence(self, names))

def _head_evidence(self: Builder, names: list[str]) -> str:
    heads = [head for head in self.anatomy.heads if head.name in names]
    parts = []
    for head in heads:
        after = f" through {', '.join(dict.fromkeys(head.ops_after))}" if head.ops_after \
            else ""
        parts.append(f"`{head.name}` is the last weight layer before `{head.output}`{after}")
    return "; ".join(parts)
