"""lightning_init: declarative, checked and observable weight initialization for Lightning.

The few names users touch:

- :class:`InitPolicy` -- a YAML/dict policy mapping modules to initializers; ``apply``/``explain``.
- :class:`InitCallback` -- applies a policy at the right moment of a ``lightning.Trainer`` run,
  checks the init and logs early-training diagnostics.
- :func:`check_init` / :class:`InitCheckReport` -- one forward/backward pass that tells a good
  init from a bad one; :func:`lsuv_init` -- data-dependent LSUV init.
- :class:`PolicyError`, :class:`InitCheckError`, :class:`OptionError` -- the errors;
  :class:`PublishingWarning` -- a table, figure or file that could not be written.
- :func:`list_presets` -- the shipped presets.
- :func:`weights_fingerprint` -- a short, bit-exact digest of a model's weights.

Example:
    >>> import torch
    >>> from lightning_init import InitPolicy
    >>> policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"}, "bias": "zeros"}]})
    >>> report = policy.apply(torch.nn.Linear(4, 2))
    >>> float(torch.nn.Linear(4, 2).bias.detach().abs().sum()) > 0, report.records[0].qualified_name
    (True, 'bias')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_init.errors import InitCheckError, OptionError, PolicyError, PublishingWarning

__version__ = "0.1.0"

__all__ = [
    "InitCallback",
    "InitCheckError",
    "InitCheckReport",
    "InitPolicy",
    "OptionError",
    "PolicyError",
    "PublishingWarning",
    "__version__",
    "check_init",
    "list_presets",
    "lsuv_init",
    "weights_fingerprint",
]

# Imported on first use: `import lightning_init` (and the CLI) stays fast, and importing the
# policy engine does not import Lightning.
_LAZY = {
    "InitPolicy": "lightning_init.policy",
    "list_presets": "lightning_init.policy",
    "InitCallback": "lightning_init.callback",
    "check_init": "lightning_init.check",
    "InitCheckReport": "lightning_init.check",
    "lsuv_init": "lightning_init.check",
    "weights_fingerprint": "lightning_init.fingerprint",
}

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.callback import InitCallback
    from lightning_init.check import InitCheckReport, check_init, lsuv_init
    from lightning_init.fingerprint import weights_fingerprint
    from lightning_init.policy import InitPolicy, list_presets


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lightning_init' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
