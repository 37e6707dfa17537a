"""The shipped presets: one YAML policy per file in this folder, each citing its source.

This module imports neither torch nor the rest of the policy engine, so that
``lightning-init presets`` answers at once.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["list_presets", "preset_paths"]

_FOLDER = Path(__file__).resolve().parent


def preset_paths() -> dict[str, Path]:
    """Preset name -> its YAML file, sorted by name.

    Example:
        >>> paths = preset_paths()
        >>> paths["gpt2"].name, list(paths) == sorted(paths)
        ('gpt2.yaml', True)
    """
    return {path.stem: path for path in sorted(_FOLDER.glob("*.yaml"))}


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted.

    Example:
        >>> {"kaiming_relu", "gpt2", "pytorch_default"} <= set(list_presets())
        True
    """
    return sorted(preset_paths())
