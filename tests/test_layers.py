"""Data flows one way: every textitsr module imports only its own layer or the layers below it.

An AST scan of every import in textitsr/ (module level, inside functions and under TYPE_CHECKING
alike), checked against the layer order of ../shared/ARCHITECTURE.md:

    base (config, errors, atomic, safe_read) -> data -> models -> embedding -> evaluation -> training
    -> index -> active -> service -> api, app, cli, demo, map_assets

Training sits above evaluation because the train loop scores its validation split with
`evaluation.evaluate_cache`; evaluation never imports training.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "textitsr"

#: Lowest first. A module's layer is the entry naming it or its package ("textitsr" alone is the
#: package root, `from textitsr import __version__`); a module in no layer fails the test.
LAYERS: list[tuple[str, ...]] = [
    # base utilities
    ("textitsr", "textitsr.config", "textitsr.errors", "textitsr.atomic", "textitsr.escape",
     "textitsr.outputs", "textitsr.api_discovery", "textitsr.safe_read"),
    ("textitsr.data",),
    ("textitsr.models",),
    ("textitsr.embedding",),
    ("textitsr.evaluation",),
    ("textitsr.training",),
    ("textitsr.index",),
    ("textitsr.active",),
    ("textitsr.service",),
    (
        "textitsr.api",
        "textitsr.app",
        "textitsr.cli",
        "textitsr.demo",
        "textitsr.map_assets",
    ),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of the most specific entry naming `module` or one of its packages."""
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            inside = module.startswith(name + ".") and name != "textitsr"
            if (module == name or inside) and len(name) > best_len:
                best, best_len = i, len(name)
    if best is None:
        raise AssertionError(f"{module}: not in any layer; add it to LAYERS in {__file__}")
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every textitsr import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # `from textitsr import app` imports a submodule; `import __version__`, the root
            found += [(node.lineno, _from_root(a.name) if base == "textitsr" else base) for a in node.names]
    return [(line, mod) for line, mod in found if mod == "textitsr" or mod.startswith("textitsr.")]


def _from_root(name: str) -> str:
    is_module = (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()
    return f"textitsr.{name}" if is_module else "textitsr"


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for line, target in imported_modules(path):
            if layer_of(target) > layer_of(here):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {target}")
    return bad


def test_no_module_imports_a_layer_above_it() -> None:
    assert upward_imports() == []


def test_every_package_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))
    with pytest.raises(AssertionError, match="not in any layer"):
        layer_of("textitsr.somewhere_new")


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("textitsr.index.build", "textitsr.embedding.encode", True),
        ("textitsr.embedding.cache", "textitsr.training.train", False),
        ("textitsr.evaluation.evaluate", "textitsr.training.train", False),
        ("textitsr.data.folder", "textitsr.models", False),
        ("textitsr.service", "textitsr.cli", False),
        ("textitsr.cli", "textitsr.service", True),
        ("textitsr.models.checkpoint", "textitsr", True),
    ],
)
def test_the_layer_rule_itself(module: str, target: str, allowed: bool) -> None:
    """The check would catch an upward import (guards against a LAYERS table that allows anything)."""
    assert (layer_of(target) <= layer_of(module)) is allowed
