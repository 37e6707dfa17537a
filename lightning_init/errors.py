"""The library's exception bases: one per concern, each subclassing a builtin; and
:class:`PublishingWarning`, the warning of every part that publishes (callback, check)."""

from __future__ import annotations

__all__ = ["InitCheckError", "OptionError", "PolicyError", "PublishingWarning"]


class PolicyError(ValueError):
    """A policy that cannot be loaded, validated or applied.

    The message names the culprit in the user's words: the YAML key or value, the file and
    line where known, the parameter's qualified name, the valid choices and a did-you-mean.
    A policy that raises it has changed no weight.

    Attributes:
        where: the place in the policy (``"rules[0].weight.init"``), if known.
        source: the file the policy came from, if any.
        line: the 1-based line in ``source``, if known.

    Example:
        >>> err = PolicyError("unknown initializer 'kaiming_normall'", where="rules[0].weight")
        >>> isinstance(err, ValueError), err.where
        (True, 'rules[0].weight')
    """

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.where = where
        self.source = source
        self.line = line
        self.bare_message = message
        super().__init__(self._format(message))

    def _format(self, message: str) -> str:
        location = []
        if self.source is not None:
            location.append(f"{self.source}" + (f", line {self.line}" if self.line else ""))
        elif self.line is not None:
            location.append(f"line {self.line}")
        if self.where:
            location.append(self.where)
        return f"{': '.join(location)}: {message}" if location else message


class InitCheckError(RuntimeError):
    """The init check found problems and was asked to raise (``check={"on_fail": "raise"}``).

    Attributes:
        report: the :class:`~lightning_init.InitCheckReport` whose problems are listed in the
            message, or ``None``.

    Example:
        >>> isinstance(InitCheckError("net.3: output no longer depends on the input"), RuntimeError)
        True
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class OptionError(ValueError):
    """An unknown or invalid option of the check or the diagnostics (``check={...}``,
    ``diagnostics={...}`` or a keyword argument).

    The message names the option, the valid choices or range, and a did-you-mean.

    Attributes:
        option: the option's name, when the error is about one.

    Example:
        >>> error = OptionError("unknown check option 'on_fial'", option="on_fial")
        >>> isinstance(error, ValueError), error.option
        (True, 'on_fial')
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class PublishingWarning(UserWarning):
    """Something the library meant to write (a table, a figure, a file) could not be written;
    training goes on without it.

    Example:
        >>> issubclass(PublishingWarning, UserWarning)
        True
    """


# Shown under their public path (``lightning_init.PolicyError``) in tracebacks and reprs.
for _error in (PolicyError, InitCheckError, OptionError, PublishingWarning):
    _error.__module__ = "lightning_init"
del _error

