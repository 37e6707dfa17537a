"""Early-training diagnostics: weights, gradients, updates and activations, cheap enough to
leave on.

:class:`TrainingDiagnostics` is driven by ``InitCallback`` (which forwards Lightning's hooks to
it); :class:`DiagnosticsOptions` is what ``InitCallback(diagnostics=...)`` accepts.

Example:
    >>> from lightning_init.diagnostics import DiagnosticsOptions, TrainingDiagnostics
    >>> TrainingDiagnostics(DiagnosticsOptions.from_arg(True)).options.every_n_steps
    25
"""

from lightning_init.diagnostics._alerts import DiagnosticsWarning
from lightning_init.diagnostics._options import DiagnosticsOptionError, DiagnosticsOptions
from lightning_init.diagnostics._callback import TrainingDiagnostics

__all__ = [
    "DiagnosticsOptionError",
    "DiagnosticsOptions",
    "DiagnosticsWarning",
    "TrainingDiagnostics",
]
