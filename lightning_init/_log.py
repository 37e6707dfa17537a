"""The ``lightning_init`` logger, and where a warning the user must act on points.

Messages go through :mod:`logging` under the ``lightning_init`` logger (level INFO). When the
application has configured no logging (the root logger has no handler), a fallback handler
writes the bare message to ``sys.stderr``, without a source-path prefix; once a handler is
configured anywhere up the tree, records propagate to it and the fallback stays silent.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["LOGGER", "user_stacklevel", "warn_user"]

LOGGER = logging.getLogger("lightning_init")

# Frames in these folders are not the user's: a warning points at the first frame outside them.
_PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))


class _Fallback(logging.Handler):
    """Writes ``record.getMessage()`` to the current ``sys.stderr`` when nothing else would.

    Example:
        >>> import io, contextlib
        >>> stream = io.StringIO()
        >>> with contextlib.redirect_stderr(stream):
        ...     _Fallback().emit(logging.makeLogRecord({"msg": "hello", "levelno": 20}))
        >>> stream.getvalue() == "hello\\n" or logging.getLogger().hasHandlers()
        True
    """

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().hasHandlers():
            return  # the record propagates to the application's handlers
        try:
            sys.stderr.write(record.getMessage() + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - a closed stream must not stop training
            self.handleError(record)


if not any(isinstance(handler, _Fallback) for handler in LOGGER.handlers):
    LOGGER.addHandler(_Fallback())
if LOGGER.level == logging.NOTSET:
    LOGGER.setLevel(logging.INFO)


def user_stacklevel() -> int:
    """The ``stacklevel`` of ``warnings.warn`` (called by the caller of this function) that
    points at the first frame outside this package, Lightning and torch: the user's line.

    Example:
        >>> def library_function():
        ...     return user_stacklevel()
        >>> library_function() >= 2
        True
    """
    skipped = (_PACKAGE_ROOT, *_third_party_roots())
    frame = sys._getframe(2)  # the caller of our caller: stacklevel 2 of warnings.warn
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(skipped):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 2


def _third_party_roots() -> tuple[str, ...]:
    roots = []
    for name in ("lightning", "pytorch_lightning", "torch"):
        module = sys.modules.get(name)
        if module is not None and module.__file__:
            roots.append(os.path.dirname(os.path.abspath(module.__file__)))
    return tuple(roots)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the user's line (see :func:`user_stacklevel`).

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_user("act on this")
        >>> str(caught[0].message)
        'act on this'
    """
    warnings.warn(message, category, stacklevel=user_stacklevel())
