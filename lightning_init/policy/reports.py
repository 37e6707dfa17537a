"""What a policy would do (:class:`PolicyPlan`) and what it did (:class:`InitReport`), as tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from lightning_init._text import format_number, markdown_table, table
from lightning_init.fingerprint import weights_fingerprint

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.policy.plan import PlanItem

__all__ = ["InitRecord", "InitReport", "PlanEntry", "PolicyPlan"]


@dataclass(frozen=True)
class PlanEntry:
    """One row of a plan: which rule initializes which parameter, and how.

    Attributes:
        qualified_name: the parameter's name in the model (``"encoder.0.weight"``).
        shape: its shape.
        rule_index: index of the rule in ``rules`` (``None`` for ``default: reset``).
        rule: the rule's label (``"rules[0] (type=Linear)"`` or ``"default: reset"``).
        initializer: the initializer's description.
        expected_std: the std the initializer's formula promises, if it has one.

    Example:
        >>> entry = PlanEntry("fc.weight", (4, 2), 0, "rules[0] (type=Linear)", "zeros", 0.0)
        >>> entry.rule, entry.expected_std
        ('rules[0] (type=Linear)', 0.0)
    """

    qualified_name: str
    shape: tuple[int, ...]
    rule_index: int | None
    rule: str
    initializer: str
    expected_std: float | None

    @classmethod
    def of(cls, item: PlanItem) -> PlanEntry:
        """The row of one plan item."""
        target = item.target
        return cls(target.qualified_name, tuple(target.shape), item.rule_index, item.rule,
                   item.describe(), item.expected_std())


@dataclass(frozen=True)
class InitRecord(PlanEntry):
    """One initialized parameter in an :class:`InitReport`: its plan row, and what was written.

    Attributes:
        measured_mean: the mean of the values written.
        measured_std: the (population) std of the values written.

    The other attributes are :class:`PlanEntry`'s.

    Example:
        >>> record = InitRecord("b", (2,), 0, "rules[0]", "ones", 0.0, 1.0, 0.0)
        >>> record.measured_mean
        1.0
    """

    measured_mean: float
    measured_std: float

    @classmethod
    def of(cls, item: PlanItem, mean: float, std: float) -> InitRecord:  # type: ignore[override]
        """The record of one written plan item."""
        entry = PlanEntry.of(item)
        return cls(entry.qualified_name, entry.shape, entry.rule_index, entry.rule,
                   entry.initializer, entry.expected_std, mean, std)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _name(policy_name: str | None) -> str:
    return f"init policy {policy_name!r}" if policy_name else "init policy"


def _std_is_off(record: InitRecord) -> bool:
    """Whether the measured std is off the expected one by more than sampling explains.

    The sample std of ``n`` values is off by about ``1 / sqrt(2 n)`` of the true one (normal
    values); four of those, and at least 20%, are allowed.
    """
    expected, measured = record.expected_std, record.measured_std
    if expected is None or math.isnan(measured):
        return False
    if expected == 0:
        return measured > 1e-12
    numel = max(math.prod(record.shape), 1)
    return abs(measured - expected) > expected * max(0.2, 4 / math.sqrt(2 * numel))


def _short_rule(entry: PlanEntry) -> str:
    """A rule's cell: its index and the first value it matches on, ``"0: Linear +6"``; the
    full label is listed once under the table (:func:`_rule_legend`).

    Example:
        >>> _short_rule(PlanEntry("w", (2, 2), 0, "rules[0] (type=Linear,Conv1d name=enc.*)",
        ...                       "zeros", 0.0))
        '0: Linear +2'
        >>> _short_rule(PlanEntry("w", (2,), None, "default: reset", "reset", None))
        'default: reset'
    """
    head, _, match = entry.rule.partition(" (")
    if entry.rule_index is None or not match:
        return entry.rule if entry.rule_index is None else head
    values = [value for part in match.rstrip(")").split(" ")
              for value in part.partition("=")[2].split(",") if value]
    if not values:
        return str(entry.rule_index)
    more = f" +{len(values) - 1}" if len(values) > 1 else ""
    return f"{entry.rule_index}: {values[0]}{more}"


def _rule_legend(entries: list[PlanEntry]) -> list[str]:
    """One line per rule whose label was shortened in the table."""
    labels = dict.fromkeys(e.rule for e in entries if e.rule_index is not None and " (" in e.rule)
    return [f"{label.replace(' (', ': ', 1).rstrip(')')}" for label in labels]


class _PlanTable:
    """The text and Markdown rendering shared by :class:`PolicyPlan` and :class:`InitReport`."""

    policy_name: str | None
    left_alone: list[tuple[str, str]]
    unused_rules: list[str]
    variables: dict[str, float]

    def _sections(self) -> tuple[list[str], list[list[str]]]:
        raise NotImplementedError

    def _entries(self) -> list[PlanEntry]:
        raise NotImplementedError

    def _footer(self) -> list[str]:
        lines = _rule_legend(self._entries())
        if self.variables:
            lines.append("variables: " + ", ".join(f"{name} = {format_number(value)}"
                                                   for name, value in self.variables.items()))
        if self.left_alone:
            lines.append("left alone: " + ", ".join(f"{n} ({r})" for n, r in self.left_alone))
        if self.unused_rules:
            lines.append("unused rules: " + "; ".join(self.unused_rules))
        return lines

    def __str__(self) -> str:
        title = f"init policy {self.policy_name!r}" if self.policy_name else "init policy"
        return "\n".join([title, table(*self._sections()), *self._footer()])

    def _headline(self) -> str:
        raise NotImplementedError

    def to_markdown(self) -> str:
        """Markdown for TensorBoard's text tab: the headline of a report (what was set, and
        whether the values have the std their formula promises) first, then the table, each
        rule by its index and first match (the full match listed below) and a long
        initializer's arguments on a second line, then what was left alone."""
        headers, rows = self._sections()
        init = headers.index("initializer")
        rows = [list(row) for row in rows]
        for row in rows:  # a long call on two lines: the narrow columns keep their width
            if len(row[init]) > 24 and "(" in row[init]:
                row[init] = row[init].replace("(", "<br>(", 1)
        headline = self._headline()
        parts = [headline and f"**{headline}**", markdown_table(headers, rows)]
        return "\n\n".join([part for part in parts if part] + self._footer())


@dataclass
class PolicyPlan(_PlanTable):
    """The dry-run result of :meth:`InitPolicy.explain`: nothing was changed.

    Attributes:
        policy_name: the policy's ``name``.
        entries: one :class:`PlanEntry` per parameter a rule (or ``default: reset``) covers.
        left_alone: ``(qualified_name, reason)`` for every parameter the policy does not touch.
        unused_rules: labels of rules that match no parameter.
        variables: the model-wide variables' values (declared, and derived ones in use).

    Example:
        >>> plan = PolicyPlan("demo", [PlanEntry("fc.bias", (2,), 0, "rules[0]", "zeros", 0.0)],
        ...                   [("fc.weight", "no rule")], [])
        >>> print(plan)
        init policy 'demo'
        parameter  shape  rule      initializer  expected std
        ---------  -----  --------  -----------  ------------
        fc.bias    2      rules[0]  zeros        0
        left alone: fc.weight (no rule)
    """

    policy_name: str | None
    entries: list[PlanEntry]
    left_alone: list[tuple[str, str]]
    unused_rules: list[str]
    variables: dict[str, float] = field(default_factory=dict)

    def _headline(self) -> str:
        return ""  # a dry run has no verdict: the table comes first

    def _sections(self) -> tuple[list[str], list[list[str]]]:
        headers = ["parameter", "shape", "rule", "initializer", "expected std"]
        rows = [[e.qualified_name, _shape(e.shape), _short_rule(e), e.initializer,
                 format_number(e.expected_std)] for e in self.entries]
        return headers, rows

    def _entries(self) -> list[PlanEntry]:
        return list(self.entries)


class InitReport(_PlanTable):
    """What :meth:`InitPolicy.apply` did: per parameter the rule, initializer and statistics.

    Attributes:
        records: one :class:`InitRecord` per initialized parameter.
        left_alone: ``(qualified_name, reason)`` for parameters left as they were.
        unused_rules: labels of rules that matched nothing.
        policy_name: the policy's ``name``.
        variables: the model-wide variables' values (declared, and derived ones in use).

    Example:
        >>> report = InitReport("demo", [InitRecord("b", (2,), 0, "rules[0]", "ones", 0.0, 1.0,
        ...                                         0.0)], [], [])
        >>> print(report.to_markdown())
        **init policy 'demo': 1 parameter(s) set, 0 left alone; every std as its formula promises**
        <BLANKLINE>
        | parameter | shape | rule | initializer | expected std | mean | std |
        |---|---|---|---|---|---|---|
        | b | 2 | rules[0] | ones | 0 | 1 | 0 |
    """

    def __init__(self, policy_name: str | None, records: list[InitRecord],
                 left_alone: list[tuple[str, str]], unused_rules: list[str],
                 model: nn.Module | None = None, *,
                 variables: dict[str, float] | None = None) -> None:
        self.policy_name = policy_name
        self.records = records
        self.left_alone = left_alone
        self.unused_rules = unused_rules
        self.variables = dict(variables or {})
        self._model = model
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str | None:
        """:func:`~lightning_init.weights_fingerprint` of the model after apply (computed on
        first access)."""
        if self._fingerprint is None and self._model is not None:
            self._fingerprint = weights_fingerprint(self._model)
            self._model = None
        return self._fingerprint

    def _headline(self) -> str:
        """What was set, and whether each value has the std its formula promises.

        Example:
            >>> record = InitRecord("w", (64, 64), 0, "rules[0]", "normal", 0.1, 0.0, 0.5)
            >>> InitReport("demo", [record], [], [])._headline()
            "init policy 'demo': 1 parameter(s) set, 0 left alone; std off its formula's: w (0.5 for 0.1)"
        """  # noqa: E501
        text = (f"{_name(self.policy_name)}: {len(self.records)} parameter(s) set, "
                f"{len(self.left_alone)} left alone")
        off = [r for r in self.records if _std_is_off(r)]
        if off:
            shown = ", ".join(f"{r.qualified_name} ({r.measured_std:.3g} for {r.expected_std:.3g})"
                              for r in off[:3])
            return f"{text}; std off its formula's: {shown}" + (" ..." if len(off) > 3 else "")
        if any(r.expected_std is not None for r in self.records):
            return f"{text}; every std as its formula promises"
        return text

    def _sections(self) -> tuple[list[str], list[list[str]]]:
        headers = ["parameter", "shape", "rule", "initializer", "expected std", "mean", "std"]
        rows = [[r.qualified_name, _shape(r.shape), _short_rule(r), r.initializer,
                 format_number(r.expected_std), format_number(r.measured_mean),
                 format_number(r.measured_std)] for r in self.records]
        return headers, rows

    def _entries(self) -> list[PlanEntry]:
        return list(self.records)

    def summary(self, where: str | None = None) -> str:
        """One line for a console: the policy, how many parameters it set and left alone, and
        where the full table is.

        Example:
            >>> report = InitReport("demo", [InitRecord("b", (2,), 0, "rules[0]", "ones", 0.0,
            ...                                         1.0, 0.0)], [("w", "no rule")], [])
            >>> report.summary("TensorBoard, TEXT tab, lightning_init/policy")
            "lightning_init: policy 'demo' set 1 parameter, left 1 alone (full table: TensorBoard, TEXT tab, lightning_init/policy)"
        """  # noqa: E501
        count = len(self.records)
        name = repr(self.policy_name) if self.policy_name else "(unnamed)"
        text = (f"lightning_init: policy {name} set {count} parameter{'s' * (count != 1)}, "
                f"left {len(self.left_alone)} alone")
        if self.unused_rules:
            text += f", {len(self.unused_rules)} rule(s) matched nothing"
        return f"{text} (full table: {where or 'InitPolicy.explain(model)'})"

    def __repr__(self) -> str:
        return (f"InitReport(policy_name={self.policy_name!r}, records={len(self.records)}, "
                f"left_alone={len(self.left_alone)}, unused_rules={self.unused_rules!r})")
