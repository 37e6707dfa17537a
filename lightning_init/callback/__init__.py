"""InitCallback: apply an init policy at the right moment of a Lightning ``fit``.

The public name is :class:`InitCallback`; the modules behind it are private.

Example:
    >>> from lightning_init.callback import InitCallback
    >>> InitCallback(check=False, diagnostics=False).check_report is None
    True
"""

from __future__ import annotations

from lightning_init.callback._callback import InitCallback

__all__ = ["InitCallback"]
