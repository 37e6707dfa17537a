"""From verdict to fix: a policy that answers what the check found, verified before offered.

:func:`suggest_policy` builds the automatic policy (:mod:`lightning_init.policy.auto`) for the
checked model, notes above each rule which problem of the check it answers, applies it to a
deep copy and runs the same check again. The :class:`Suggestion` holds both verdicts; its
``policy`` is ``None`` (withheld) when the re-check is not better than the original. Problems
that no init can fix (NaN in the data, an input that does not vary) stay in ``remaining``.

Example:
    >>> import torch
    >>> from lightning_init.check import check_init
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> layers = []
    >>> for _ in range(30):
    ...     layers += [torch.nn.Linear(64, 64), torch.nn.ReLU()]
    >>> net = torch.nn.Sequential(*layers)
    >>> report = check_init(net, torch.randn(128, 64))
    >>> report.ok
    False
    >>> suggestion = report.suggest_policy()
    >>> suggestion.offered, suggestion.recheck.ok
    (True, True)
    >>> suggestion.policy.explain(net).entries[0].initializer
    'normal(std=sqrt(2) / sqrt(fan_in) -> 0.176777)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lightning_init._lightning import model_copy
from lightning_init.check.findings import PREFIX
from lightning_init.check.records import CheckProblem, CheckSubject
from lightning_init.check.report import InitCheckReport
from lightning_init.check.run import check_init
from lightning_init.policy.auto import AutoRules, auto_rules

__all__ = ["CheckSubject", "Suggestion", "suggest_policy"]

@dataclass
class Suggestion:
    """A suggested policy and what the re-check on a deep copy found.

    Attributes:
        policy: the :class:`~lightning_init.InitPolicy`, or ``None`` when withheld.
        yaml: its YAML text, a comment per rule (role, finding answered, source).
        original: the check's report on the model as it was.
        recheck: the same check on a deep copy initialized by the policy.
        offered: ``True`` when the re-check is better than the original.
        reason: one sentence: why it is offered or withheld.
        remaining: the problems the re-check still finds (what init did not fix).
    """

    policy: Any
    yaml: str
    original: InitCheckReport
    recheck: InitCheckReport
    offered: bool
    reason: str
    remaining: list[CheckProblem] = field(default_factory=list)
    remaining_notes: list[str] = field(default_factory=list)

    def verdicts(self) -> str:
        """The original verdict next to the re-check's, one line each, then what remains."""
        lines = [f"before: {_verdict(self.original)}",
                 f"after the suggested policy: {_verdict(self.recheck)}",
                 f"suggestion: {self.reason}"]
        lines += [f"  - still: {problem.message}" for problem in self.remaining]
        lines += [f"  - still: {note}" for note in self.remaining_notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.verdicts() + ("\n\n" + self.yaml if self.offered else "")


def _verdict(report: InitCheckReport) -> str:
    notes = sum(note.startswith(PREFIX) for note in report.notes)
    noted = f", {notes} init note(s)" if notes else ""
    if report.ok:
        return f"OK, no problem found{noted}"
    kinds = ", ".join(dict.fromkeys(problem.kind for problem in report.problems))
    return f"{len(report.problems)} problem(s) ({kinds}){noted}"


def _answers(rules: AutoRules, problems: list[CheckProblem]) -> None:
    """Note above each rule the first problem of the check about one of its layers."""
    for index, rule in enumerate(rules.rules):
        covered = set(rule.layers)
        found = [problem for problem in problems if covered.intersection(problem.layers)]
        if found:
            first = found[0]
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            rules.answers[index] = f"{first.kind} at {first.layers[0] or '(model)'}{more}"


def _findings(report: InitCheckReport) -> int:
    """Problems plus the init notes of :mod:`lightning_init.check.findings`."""
    return len(report.problems) + sum(note.startswith(PREFIX) for note in report.notes)


def _better(original: InitCheckReport, recheck: InitCheckReport) -> bool:
    return _findings(recheck) < _findings(original)


def suggest_policy(report: InitCheckReport, model: nn.Module | None = None, inputs: Any = None,
                   *, prior: float | None = None, **options: Any) -> Suggestion:
    """The policy that fixes what ``report`` found, re-checked on a deep copy of the model.

    Args:
        report: a report of :func:`~lightning_init.check_init`.
        model: the model checked (default: the one ``check_init`` ran on).
        inputs: the sample batch (default: the one ``check_init`` ran on).
        prior: for a sigmoid head, the positive class's frequency: its bias starts at
            ``ln(prior / (1 - prior))`` (Lin et al. 2017).
        **options: ``check_init`` options for the re-check (default: those of the check).

    Returns:
        A :class:`Suggestion`; ``suggestion.policy`` is ``None`` when the re-check is not
        better than ``report``.

    Raises:
        ValueError: no model or inputs were given and the report does not know them (a report
            of ``check_lightning_module``).
    """
    subject: CheckSubject | None = getattr(report, "_subject", None)
    if model is None or inputs is None:
        if subject is None:
            raise ValueError("suggest_policy: this report does not hold its model and sample "
                             "batch; pass them: report.suggest_policy(model, inputs)")
        model = subject.model if model is None else model
        inputs = subject.inputs if inputs is None else inputs
        options = {**subject.options, **options}
    flagged = {name for problem in report.problems for name in problem.layers}
    # one copy: the policy is measured on it in place, then applied over it for the re-check
    trial = model_copy(model)
    rules = auto_rules(trial, inputs, forward=options.get("forward"),
                       num_classes=report.num_classes, prior=prior, flagged=flagged,
                       in_place=True)
    _answers(rules, report.problems)
    text = rules.yaml()
    policy = rules.policy()
    policy._apply(trial, atomic=False, report=False)
    recheck = check_init(trial, inputs, **options)
    offered = _better(report, recheck)
    if offered:
        reason = "offered: verified on a deep copy, the re-check is better"
    elif not _findings(report):
        reason = "withheld: the check found nothing to fix"
    else:
        reason = "withheld: on a deep copy initialized by it, the re-check is no better"
    return Suggestion(policy=policy if offered else None, yaml=text, original=report,
                      recheck=recheck, offered=offered, reason=reason,
                      remaining=list(recheck.problems),
                      remaining_notes=[n for n in recheck.notes if n.startswith(PREFIX)])
