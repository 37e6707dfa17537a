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


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """``(module, name)`` for every ``lightning_init`` import in ``path``, lazy ones (inside a
    function) included, ``if TYPE_CHECKING:`` blocks left out; ``name`` is ``None`` for a plain
    ``import`` and for a name that is a module itself (``from pkg import _module``)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full, None) if full in MODULES else (node.module, alias.name))
    return [(module, name) for module, name in found if module.startswith("lightning_init")]


def _graph() -> dict[str, set[str]]:
    return {
        name: {module for module, _ in _imports(path) if module in MODULES and module != name}
        for name, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


# The one lazy import allowed to close a cycle: the report's suggest_policy() facade runs a
# second check (suggest -> run -> report), documented where it is imported.
_DOCUMENTED_LAZY = {("lightning_init.check.report", "lightning_init.check.suggest")}


def _package_of(module: str) -> str:
    """The (sub)package a module belongs to: ``lightning_init.check`` for ``...check.run``."""
    parts = module.split(".")
    return module if MODULES[module].name == "__init__.py" else ".".join(parts[:-1])


def _owner_if_private(module: str) -> str | None:
    """The package that owns ``module`` when it is private (an underscored part), else None."""
    parts = module.split(".")
    for depth, part in enumerate(parts[1:], start=1):
        if part.startswith("_"):
            return ".".join(parts[:depth])
    return None


def test_the_cycle_finder_finds_a_cycle_and_the_graph_is_real() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = _graph()
    assert "lightning_init.check.report" in graph["lightning_init.check.run"]
    assert "lightning_init.check.suggest" in graph["lightning_init.check.report"]  # lazy
    assert "lightning_init.policy.auto" not in graph["lightning_init.policy.init_policy"]


def test_no_import_cycle_lazy_imports_included() -> None:
    graph = _graph()
    for importer, imported in _DOCUMENTED_LAZY:
        graph[importer].discard(imported)
    assert _cycles(graph) == []


def test_check_init_does_not_import_the_auto_policy() -> None:
    code = (
        "import sys; from lightning_init import check_init; "
        "print('lightning_init.policy.auto' in sys.modules, "
        "'lightning_init.policy._auto_rules' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_no_module_imports_another_packages_private_module_or_name() -> None:
    crossings = []
    for name, path in MODULES.items():
        package = _package_of(name)
        for module, imported in _imports(path):
            if module not in MODULES:
                continue
            owner = _owner_if_private(module)
            inside = name == owner or name.startswith(f"{owner}.")
            if owner not in (None, "lightning_init") and not inside:
                crossings.append(f"{name} imports {module}")
            if imported and imported.startswith("_") and _package_of(module) != package:
                crossings.append(f"{name} imports {module}.{imported}")
    assert crossings == [], crossings


def test_the_root_holds_at_most_eight_modules_beside_its_subpackages() -> None:
    root = [path.stem for path in PACKAGE.glob("*.py") if path.stem not in {"__init__", "__main__"}]
    assert len(root) <= 8, sorted(root)


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("lightning_init.policy", ("check", "diagnostics", "callback")),
        ("lightning_init.check", ("diagnostics", "callback")),
        ("lightning_init.diagnostics", ("check", "callback")),
        ("lightning_init.runtime", ("anatomy", "policy", "check", "diagnostics", "callback")),
        ("lightning_init.anatomy", ("policy", "check", "diagnostics", "callback")),
    ],
)
def test_dependencies_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    for name, path in MODULES.items():
        if name == package or name.startswith(package + "."):
            for module, _ in _imports(path):
                top = ".".join(module.split(".")[:2])
                assert top not in {f"lightning_init.{other}" for other in forbidden}, (
                    f"{name} imports {module}"
                )


def test_subpackages_depend_on_each_other_without_a_cycle() -> None:
    """Package level: anatomy -> policy -> ... may not come back (a module-level DAG can still
    hide a cycle between two packages)."""
    packages: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        top = ".".join(name.split(".")[:2])
        for module, _ in _imports(path):
            other = ".".join(module.split(".")[:2])
            if other != top and other in MODULES and MODULES[other].name == "__init__.py":
                packages.setdefault(top, set()).add(other)
    packages.pop("lightning_init", None)  # the root's lazy public names
    for edges in packages.values():
        edges.discard("lightning_init")
    assert _cycles(packages) == [], packages


def test_dependencies_point_one_way_nothing_imports_the_callback() -> None:
    for name, path in MODULES.items():
        if name in {"lightning_init", "lightning_init.callback"} or name.startswith(
            "lightning_init.callback."
        ):
            continue
        imported = {module for module, _ in _imports(path)}
        assert not any(module.startswith("lightning_init.callback") for module in imported), name


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
