"""``check={"ignore": [...]}``: accept known findings by module glob, optionally by kind.

A pattern is a glob over qualified module names (``"bert.embeddings.*"``, ``"*.bn2"``) or
``"kind:glob"`` (``"gradient:encoder.*"``). A problem is ignored when every module it names
matches a pattern of its kind (or of no kind). Ignored problems leave ``report.problems`` for
``report.ignored`` and the summary lists them, so that nothing is silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from lightning_init._text import did_you_mean, format_choices
from lightning_init.check.records import CheckProblem
from lightning_init.check.report import InitCheckReport

KINDS = ("nonfinite", "scale", "input_dependence", "dead_units", "saturation", "gradient", "loss",
         "gain", "embedding")


def parse_ignore(value: Any, where: str, error: type[Exception] = ValueError) -> tuple[str, ...]:
    """Validate the ``ignore`` option: a glob or a list of globs, each ``"glob"`` or
    ``"kind:glob"``.

    Raises:
        error: not a string or list of strings, an empty pattern, or an unknown kind (with a
            did-you-mean and the valid kinds).

    Example:
        >>> parse_ignore(["*.token_type_embeddings", "gradient:*.bn2"], "check")
        ('*.token_type_embeddings', 'gradient:*.bn2')
        >>> parse_ignore("gradeint:*", "check")
        Traceback (most recent call last):
        ...
        ValueError: check: 'ignore' pattern 'gradeint:*' names an unknown kind 'gradeint'. Did ...
    """
    patterns = (value,) if isinstance(value, str) else value
    if not isinstance(patterns, (list, tuple)) or \
            not all(isinstance(pattern, str) and pattern for pattern in patterns):
        raise error(f"{where}: 'ignore' must be a glob or a list of globs over module names "
                    f"(optionally 'kind:glob'), got {value!r}")
    for pattern in patterns:
        kind, sep, _ = pattern.partition(":")
        if sep and kind not in KINDS:
            raise error(f"{where}: 'ignore' pattern {pattern!r} names an unknown kind {kind!r}."
                        f"{did_you_mean(kind, KINDS)} Valid kinds: {format_choices(KINDS)}")
    return tuple(patterns)


def _matches(problem: CheckProblem, patterns: Sequence[str]) -> bool:
    globs = []
    for pattern in patterns:
        kind, sep, glob = pattern.partition(":")
        if not sep:
            globs.append(pattern)
        elif kind == problem.kind:
            globs.append(glob)
    return bool(problem.layers) and bool(globs) and all(
        any(fnmatchcase(name, glob) for glob in globs) for name in problem.layers)


def apply_ignore(report: InitCheckReport, patterns: Sequence[str]) -> InitCheckReport:
    """Move the problems that ``patterns`` accept to ``report.ignored``; returns ``report``.

    Example:
        >>> report = InitCheckReport(problems=[CheckProblem("gradient", ("net.2",), "...")],
        ...                          layers=[])
        >>> apply_ignore(report, ["gradient:net.*"]).ok, len(report.ignored)
        (True, 1)
    """
    if not patterns:
        return report
    ignored = [problem for problem in report.problems if _matches(problem, patterns)]
    report.problems = [problem for problem in report.problems if problem not in ignored]
    report.ignored.extend(ignored)
    return report
