"""The names of what the diagnostics write: every tag under ``lightning_init/``.

One namespace keeps the diagnostics in one collapsible group of TensorBoard's Scalars and Time
Series pages, apart from the user's own ``train/...`` tags.
"""

from __future__ import annotations

__all__ = ["NAMESPACE", "log10_tag", "tag"]

NAMESPACE = "lightning_init"


def tag(statistic: str, name: str) -> str:
    """The tag of one statistic of one parameter or module.

    Example:
        >>> tag("grad_norm", "net.0.weight")
        'lightning_init/grad_norm/net.0.weight'
    """
    return f"{NAMESPACE}/{statistic}/{name}"


def log10_tag(statistic: str, name: str) -> str:
    """The tag of the base-10 logarithm of a statistic (the Custom Scalars charts draw these:
    their axes are linear).

    Example:
        >>> log10_tag("update_ratio", "net.0.weight")
        'lightning_init/log10_update_ratio/net.0.weight'
    """
    return tag(f"log10_{statistic}", name)
