"""Early-training diagnostics: weights, gradients, updates and activations, cheap enough to
leave on.

:class:`TrainingDiagnostics` is a Lightning ``Callback``: give it to a ``Trainer`` on its own,
or let ``InitCallback(diagnostics=...)`` hold one. :class:`DiagnosticsOptions` is what both
accept.

Example:
    >>> from lightning_init.diagnostics import DiagnosticsOptions, TrainingDiagnostics
    >>> TrainingDiagnostics(DiagnosticsOptions.from_arg(True)).options.every_n_steps
    25
"""

from lightning_init.diagnostics._alerts import DiagnosticsWarning, NonFiniteError
from lightning_init.diagnostics._callback import TrainingDiagnostics
from lightning_init.diagnostics._options import DiagnosticsOptionError, DiagnosticsOptions

__all__ = [
    "DiagnosticsOptionError",
    "DiagnosticsOptions",
    "DiagnosticsWarning",
    "NonFiniteError",
    "TrainingDiagnostics",
]
