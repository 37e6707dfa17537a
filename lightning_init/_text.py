"""Text shared by every message and table: did-you-mean suggestions and choice listings."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean", "format_choices"]


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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` when a choice is close to ``word``, else ``""``.

    Example:
        >>> did_you_mean("Linaer", ["Linear", "Conv2d"])
        " Did you mean 'Linear'?"
    """
    hit = closest(word, choices)
    return f" Did you mean '{hit}'?" if hit is not None else ""


def format_choices(choices: Iterable[str], *, limit: int = 40) -> str:
    """A sorted, comma-separated listing of the valid choices, shortened past ``limit``.

    Example:
        >>> format_choices(["b", "a"])
        'a, b'
    """
    items = sorted(dict.fromkeys(str(c) for c in choices))
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"
    return ", ".join(items)
