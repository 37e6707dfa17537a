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
from lightning_init.check.verdicts import (
    SURROGATE_ASSUMED,
    zero_gradient_problem,
    zero_gradients,
)
from lightning_init.runtime.no_trace import values_kept

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
    with values_kept([param for param, _ in gates]):
        with torch.no_grad():
            for param, grad in gates:
                direction = grad.detach().to(param.dtype)
                rms = direction.pow(2).mean().sqrt()
                param.sub_(direction * (_STEP_RMS / rms))
        yield


def _signature(problem: CheckProblem) -> tuple[str, str]:
    """What a problem is, finer than its kind: a zero gradient, a NaN/Inf one and a drift over
    depth are three ``gradient`` findings, none the persistence of another."""
    return problem.kind, problem.cause


def _persists(problem: CheckProblem, later: Sequence[CheckProblem]) -> bool:
    return any(_signature(other) == _signature(problem) and set(other.layers) & set(problem.layers)
               for other in later)


def _still_zero(problem: CheckProblem, report: InitCheckReport, ahead: InitCheckReport,
                unread: frozenset[str]) -> tuple[list[ParameterRecord], list[ParameterRecord]]:
    """A zero-gradient problem's parameters, split: those still at exactly zero gradient after
    the look-ahead step, and those it opened."""
    layers = set(problem.layers)
    listed = [param for param in zero_gradients(report.parameters)
              if param.layer in layers and param.name not in unread]
    zero_ahead = {param.name for param in zero_gradients(ahead.parameters)}
    return ([param for param in listed if param.name in zero_ahead],
            [param for param in listed if param.name not in zero_ahead])


def _judged(report: InitCheckReport, ahead: InitCheckReport, unread: frozenset[str]
            ) -> tuple[list[CheckProblem], list[str]]:
    """Each problem after the look-ahead step: kept, narrowed to the parameters still stuck,
    or gated (then only its description, for the note). Only the kinds a closed gate can cause
    are stepped; the others (``loss``, ``nonfinite``, ``embedding``, ...) are kept as they are,
    and a new finding of the look-ahead pass is no persistence of another one."""
    kept: list[CheckProblem] = []
    gated: list[str] = []
    for problem in report.problems:
        if problem.kind not in GATED_KINDS:
            kept.append(problem)
        elif _signature(problem) == ("gradient", "zero"):
            stuck, opened = _still_zero(problem, report, ahead, unread)
            if not opened:
                kept.append(problem)
                continue
            if stuck:
                assumed = SURROGATE_ASSUMED if report.loss_source is None else ""
                kept.append(zero_gradient_problem(stuck, assumed))
            gated.append(f"zero gradient of {len(opened)} parameter(s) from "
                         f"`{opened[0].name}` on")
        elif _persists(problem, ahead.problems):
            kept.append(problem)
        else:
            gated.append(f"{problem.kind} at `{problem.layers[0]}`")
    return kept, gated


def settle(report: InitCheckReport, ahead: InitCheckReport, gates: Sequence[str],
           min_input_dependence: float, unread: frozenset[str] = frozenset()
           ) -> InitCheckReport:
    """Turn the findings that a look-ahead step on the gates removes into a note, when the
    zero-init is deliberate (see the module docstring); return ``report`` otherwise.

    Judged per parameter for zero gradients: the parameters the step opens leave the problem,
    those it leaves at zero stay (``unread``: those no init changes, left to their own note).

    Example:
        >>> from lightning_init.check.records import LayerRecord
        >>> layer = LayerRecord(index=0, name="head", type="Linear", shape=(8, 4),
        ...                     output_mean=0.0, output_std=1.0, input_dependence=1.0,
        ...                     dead_fraction=None, saturated_fraction=None, nonfinite=0)
        >>> loss = CheckProblem("loss", ("head",), "initial loss ...")
        >>> report = InitCheckReport(problems=[loss], layers=[layer])
        >>> ahead = InitCheckReport(problems=[], layers=[layer])
        >>> settle(report, ahead, ["head.weight"], 0.01).problems == [loss]
        True
    """
    kept, gated = _judged(report, ahead, unread)
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
            f"one look-ahead step and are not counted: " + "; ".join(gated))
    report.problems = kept
    report.notes.append(note)
    return report


def _owned_by(parameter: str, module: str) -> bool:
    owner = parameter.rpartition(".")[0]
    return owner == module
