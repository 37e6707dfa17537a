"""Deliberate zero-inits, told from broken ones by one look-ahead step.

A parameter that is exactly zero while its gradient is not is a gate: a zero-initialized last
BatchNorm of a residual block (Goyal et al. 2017, timm's ``zero_init_last``), a ReZero scale
(Bachlechner et al. 2020), Fixup's zero branches (Zhang et al. 2019), a zero head. At init the
gate hides what lies behind it (an output that ignores the input, zero gradients upstream);
after the first optimizer step it opens. The check steps every gate once along its negative
gradient, measures again, and calls the findings that vanish "gated". They are deliberate when
the input still reaches the model's output (the skip path carries it) or when the gates belong
to the output layer (a zero head); otherwise the model's output ignores its input until a gate
moves, and the findings stay problems.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from lightning_init.check.records import CheckProblem, ParameterRecord
from lightning_init.check.report import InitCheckReport

# The gates' root-mean-square after the look-ahead step: small, so that only what the gate
# hides changes, not the scale of anything else.
_STEP_RMS = 1e-3
# What a closed gate can cause: an output that ignores the input, zero gradients behind it,
# ReLUs fed a constant.
GATED_KINDS = ("input_dependence", "gradient", "dead_units")


def is_gate(parameter: ParameterRecord) -> bool:
    """A multiplicative parameter (not a bias) that is exactly zero and gets a nonzero,
    finite gradient.

    Example:
        >>> is_gate(ParameterRecord("block.bn2.weight", "block.bn2", 0.0, 0.5))
        True
        >>> is_gate(ParameterRecord("block.bn2.bias", "block.bn2", 0.0, 0.5))
        False
    """
    return parameter.weight_norm == 0 and bool(parameter.grad_norm) \
        and parameter.grad_norm is not None and parameter.grad_norm < float("inf") \
        and not parameter.name.rpartition(".")[2].startswith("bias")


@contextlib.contextmanager
def stepped(gates: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Move each ``(parameter, gradient)`` gate one step down its gradient (to a root-mean-square
    of ``1e-3``) and restore it exactly on exit.

    Example:
        >>> weight = torch.zeros(3)
        >>> with stepped([(weight, torch.tensor([1.0, -2.0, 0.0]))]):
        ...     bool((weight != 0).any())
        True
        >>> weight.tolist()
        [0.0, 0.0, 0.0]
    """
    saved = [param.detach().clone() for param, _ in gates]
    try:
        with torch.no_grad():
            for param, grad in gates:
                direction = grad.detach().to(param.dtype)
                rms = direction.pow(2).mean().sqrt()
                param.sub_(direction * (_STEP_RMS / rms))
        yield
    finally:
        with torch.no_grad():
            for (param, _), value in zip(gates, saved, strict=True):
                param.copy_(value)


def _persists(problem: CheckProblem, later: Sequence[CheckProblem]) -> bool:
    return any(other.kind == problem.kind and set(other.layers) & set(problem.layers)
               for other in later)


def settle(report: InitCheckReport, ahead: InitCheckReport, gates: Sequence[str],
           min_input_dependence: float) -> InitCheckReport:
    """Turn the findings that a look-ahead step on the gates removes into a note, when the
    zero-init is deliberate (see the module docstring); return ``report`` otherwise."""
    gated = [problem for problem in report.problems if not _persists(problem, ahead.problems)]
    if not gated:
        return report
    output = report.layers[-1] if report.layers else None
    reaches_output = output is not None and output.input_dependence is not None \
        and output.input_dependence >= min_input_dependence
    head = output is not None and all(_owned_by(gate, output.name) for gate in gates)
    if not (reaches_output or head):
        return report
    shown = ", ".join(gates[:3]) + (f" and {len(gates) - 3} more" if len(gates) > 3 else "")
    where = "the output layer starts at zero (a zero head)" if head and not reaches_output \
        else "the skip paths carry the input to the output"
    note = (f"deliberate zero-init: {shown} start at zero and get a nonzero gradient, so they "
            f"open at the first step ({where}); {len(gated)} finding(s) behind them vanish after "
            f"one look-ahead step and are not counted: "
            + "; ".join(f"{problem.kind} at `{problem.layers[0]}`" for problem in gated))
    report.problems = [problem for problem in report.problems if problem not in gated]
    report.notes.append(note)
    return report


def _owned_by(parameter: str, module: str) -> bool:
    owner = parameter.rpartition(".")[0]
    return owner == module
