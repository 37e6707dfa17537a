"""Where the shipped presets live (no torch import: ``lightning-init presets`` stays fast)."""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path

__all__ = ["preset_paths"]


def preset_paths() -> dict[str, Path]:
    """Preset name -> YAML file: the installed ``lightning_init.configs`` package first, then the
    repository's ``configs/`` next to the package (a source tree on ``PYTHONPATH``).

    Example:
        >>> "gpt2" in preset_paths()
        True
    """
    dirs: list[Path] = []
    with contextlib.suppress(ModuleNotFoundError, TypeError):
        dirs.append(Path(str(resources.files("lightning_init.configs"))))
    dirs.append(Path(__file__).resolve().parent.parent / "configs")
    found: dict[str, Path] = {}
    for directory in dirs:
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found
