"""Text shared by every message and table: did-you-mean, choice listings, tables, numbers."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence

__all__ = [
    "closest",
    "did_you_mean",
    "edit_distance",
    "format_choices",
    "format_number",
    "listing",
    "markdown_table",
    "table",
]


def closest(word: str, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The choice nearest to ``word``, or ``None`` when nothing is close.

    Matching ignores case and a trailing underscore (``kaiming_normal_`` ~ ``kaiming_normal``).

    Example:
        >>> closest("kaiming_normall", ["kaiming_normal", "xavier_normal"])
        'kaiming_normal'
        >>> closest("sdt", ["mean", "std"])
        'std'
        >>> closest("zzz", ["mean", "std"]) is None
        True
    """
    choices = list(dict.fromkeys(str(c) for c in choices))
    normalized = {c.lower().rstrip("_"): c for c in choices}
    key = str(word).lower().rstrip("_")
    if key in normalized:
        return normalized[key]
    hits = difflib.get_close_matches(key, list(normalized), n=1, cutoff=cutoff)
    if not hits and len(key) <= 4:
        # Short words (std, val, a, b) differ by a transposition: try sorted letters.
        hits = [n for n in normalized if sorted(n) == sorted(key)][:1]
    return normalized[hits[0]] if hits else None


def edit_distance(a: str, b: str) -> int:
    """The Levenshtein distance: insertions, deletions and substitutions turning ``a`` into
    ``b`` (Levenshtein 1966).

    Example:
        >>> edit_distance("bais", "bias"), edit_distance("mask_token", "cls_token")
        (2, 3)
    """
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` when a choice is close to ``word``, else ``""``.

    Example:
        >>> did_you_mean("Linaer", ["Linear", "Conv2d"])
        " Did you mean 'Linear'?"
    """
    hit = closest(word, choices)
    return f" Did you mean '{hit}'?" if hit is not None else ""


def listing(items: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` of ``items``, comma-separated, and how many more there are.

    Example:
        >>> listing(["a", "b"])
        'a, b'
        >>> listing(["a", "b", "c", "d"], limit=2)
        'a, b, ... (2 more)'
    """
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def format_choices(choices: Iterable[str], *, limit: int = 40) -> str:
    """A sorted, comma-separated listing of the valid choices, shortened past ``limit``.

    Example:
        >>> format_choices(["b", "a"])
        'a, b'
    """
    return listing(sorted(dict.fromkeys(str(c) for c in choices)), limit)


def format_number(value: float | None, *, digits: int = 4, missing: str = "-") -> str:
    """``value`` with ``digits`` significant digits; ``missing`` for ``None`` and NaN.

    Example:
        >>> format_number(0.0441941738), format_number(1234567.0), format_number(None)
        ('0.04419', '1.235e+06', '-')
        >>> format_number(float("nan"), digits=3, missing="")
        ''
    """
    if value is None or math.isnan(value):
        return missing
    return f"{value:.{digits}g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned columns two spaces apart, a dashed rule under the header.

    Example:
        >>> print(table(["name", "std"], [["fc.weight", "0.02"], ["fc.bias", "0"]]))
        name       std
        ---------  ----
        fc.weight  0.02
        fc.bias    0
    """
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers).rstrip(), rule, *(line(row).rstrip() for row in rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (``|`` inside a cell is escaped).

    Example:
        >>> print(markdown_table(["name", "init"], [["fc.weight", "a|b"]]))
        | name | init |
        |---|---|
        | fc.weight | a\\|b |
    """
    def row_line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([row_line(headers), "|" + "---|" * len(headers),
                      *(row_line(row) for row in rows)])
