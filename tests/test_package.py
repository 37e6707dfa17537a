"""The package's shape: a small public surface, lazy imports, one-way dependencies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_init

PACKAGE = Path(lightning_init.__file__).resolve().parent


def test_every_public_name_resolves_and_is_documented() -> None:
    for name in lightning_init.__all__:
        value = getattr(lightning_init, name)
        if name != "__version__":
            assert value.__doc__ and ">>>" in value.__doc__, f"{name} lacks a docstring example"


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        lightning_init.InitPolicyy  # noqa: B018
    except AttributeError as error:
        assert "InitPolicyy" in str(error)
    else:  # pragma: no cover
        raise AssertionError("no AttributeError")


def test_importing_the_package_and_the_policy_engine_does_not_import_lightning() -> None:
    code = (
        "import sys, lightning_init; from lightning_init.policy import InitPolicy, list_presets; "
        "from lightning_init.policy.initializers import resolve_initializer; "
        "print('lightning' in sys.modules, 'lightning.pytorch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_dependencies_point_one_way_nothing_imports_the_callback() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name in {"callback.py", "__init__.py"} and path.parent == PACKAGE:
            continue
        assert "lightning_init.callback" not in _imported_modules(path), path


def test_listing_the_presets_does_not_import_torch() -> None:
    code = (
        "import sys; from lightning_init.policy.presets import list_presets; "
        "print(len(list_presets()) >= 8, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_the_wheel_ships_the_type_marker_and_the_presets() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in config["package-data"]["lightning_init"]
    presets = PACKAGE / "policy" / "presets"
    assert "*.yaml" in config["package-data"]["lightning_init.policy.presets"]
    assert (presets / "__init__.py").is_file() and len(list(presets.glob("*.yaml"))) >= 8
    assert config["packages"]["find"]["include"] == ["lightning_init*"]
