"""Writes to the console, the loggers and the log directory that must never stop training.

Every write the library makes outside the diagnostics (the check's console table, TensorBoard
text and figure, ``init_check.json``, the hyperparameters, the policy's table, the auto
policy's ``init_policy.yaml``) goes through
:func:`guarded_writes`: a write that raises is recorded, the others still run, and the round
ends with ONE warning naming what could not be written and why.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

from lightning_init.errors import PublishingWarning

__all__ = ["PublishingWarning", "guarded_writes"]  # the warning lives in errors


def _why(error: BaseException) -> str:
    """The error's type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


@contextlib.contextmanager
def guarded_writes(what: str) -> Iterator[Callable[[str], contextlib.AbstractContextManager[None]]]:
    """A round of writes; yields ``attempt(name)``, a context in which one write runs.

    An ``Exception`` inside an ``attempt`` is recorded and swallowed (``KeyboardInterrupt``
    and ``SystemExit`` pass); when the round ends, one :class:`PublishingWarning` lists every
    write that failed, with its error.

    Args:
        what: what the round publishes, for the warning (``"the init check's report"``).

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     with guarded_writes("the init check's report") as attempt:
        ...         with attempt("init_check.json"):
        ...             raise OSError(28, "No space left on device")
        ...         with attempt("the console table"):
        ...             pass
        >>> print(caught[0].message)
        lightning_init could not write the init check's report: init_check.json (OSError: [Errno 28] No space left on device); training goes on without it.
    """  # noqa: E501
    failed: list[str] = []

    @contextlib.contextmanager
    def attempt(name: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # a log write never stops training
            failed.append(f"{name} ({_why(error)})")

    yield attempt
    if failed:
        warnings.warn(
            f"lightning_init could not write {what}: {'; '.join(failed)}; training goes on"
            " without it.",
            PublishingWarning,
            stacklevel=3,
        )
