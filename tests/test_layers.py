"""Data flows one way: every module imports only its own layer or the layers below it, and no import
chain anywhere comes back to where it started.

An AST scan of every import in textitsr/, pages/ and app.py (module level, inside functions and
under TYPE_CHECKING alike), checked against the layer order of ../shared/ARCHITECTURE.md:

    base (config, errors, atomic, escape, safe_read, ...) -> data -> synth -> models -> embedding
    -> evaluation -> training -> index -> active -> service -> app helpers -> api -> demo, cli

pages/ and app.py import only `textitsr.app`, `textitsr.service` and the base modules errors,
escape and config. The HTTP API is a second front end over the service, beside the Streamlit
helpers, not on top of them: it never imports `textitsr.app` (that would load Streamlit into the
API server), and the app helpers never import the API. Training sits above evaluation because the
train loop scores its validation split with `evaluation.evaluate_cache`; evaluation never imports
training.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "textitsr"

#: Lowest first. A module's layer is the entry naming it or its package ("textitsr" alone is the
#: package root, `from textitsr import __version__`); a module in no layer fails the test.
LAYERS: list[tuple[str, ...]] = [
    ("textitsr", "textitsr.config", "textitsr.errors", "textitsr.atomic", "textitsr.escape",
     "textitsr.outputs", "textitsr.api_discovery", "textitsr.safe_read"),
    ("textitsr.data",),
    ("textitsr.synth",),
    ("textitsr.models",),
    ("textitsr.embedding",),
    ("textitsr.evaluation",),
    ("textitsr.training",),
    ("textitsr.index",),
    ("textitsr.active",),
    ("textitsr.service",),
    ("textitsr.app",),
    ("textitsr.api",),
    ("textitsr.demo", "textitsr.cli"),
]

#: What the Streamlit scripts (pages/*.py, app.py) may import: the app helpers, the service facade
#: and the base modules; never a lower layer directly.
UI_ALLOWED = ("textitsr.app", "textitsr.service", "textitsr.errors", "textitsr.escape", "textitsr.config")

#: Imports the layer order alone would allow but the design forbids: (importer, imported) prefixes.
FORBIDDEN: list[tuple[str, str]] = [("textitsr.api", "textitsr.app")]

Graph = Mapping[str, list[tuple[int, str]]]


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


def is_ui(module: str) -> bool:
    """A Streamlit script: app.py or a page."""
    return module == "app" or module.startswith("pages.")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (REPO / rel.with_suffix(".py")).is_file() or (REPO / rel / "__init__.py").is_file()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every textitsr import in the file, relative imports resolved;
    `from package import name` counts as importing the submodule when `name` is one."""
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
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if _is_module(sub) else base))
    return [(line, mod) for line, mod in found if mod == "textitsr" or mod.startswith("textitsr.")]


def source_files() -> list[Path]:
    return [*sorted(PACKAGE.rglob("*.py")), *sorted((REPO / "pages").glob("*.py")), REPO / "app.py"]


def import_graph() -> dict[str, list[tuple[int, str]]]:
    """module -> [(line, imported textitsr module)] over the package, the pages and app.py."""
    return {module_name(p): imported_modules(p) for p in source_files()}


def layer_violations(graph: Graph) -> list[str]:
    """Every import that goes up a layer, or from a Streamlit script past the app helpers."""
    bad = []
    for here, targets in sorted(graph.items()):
        for line, target in targets:
            if is_ui(here):
                if not any(target == ok or target.startswith(ok + ".") for ok in UI_ALLOWED):
                    bad.append(f"{here}:{line}: a Streamlit script imports {target} "
                               f"(only {', '.join(UI_ALLOWED)})")
            elif layer_of(target) > layer_of(here):
                bad.append(f"{here}:{line}: {here} imports {target}, a layer above it")
            elif any(_within(here, a) and _within(target, b) for a, b in FORBIDDEN):
                bad.append(f"{here}:{line}: {here} imports {target}, a front end beside it")
    return bad


def _within(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


def circles(graph: Graph) -> list[list[str]]:
    """The import circles of the graph: strongly connected components of more than one module, or
    a module importing itself (Tarjan's algorithm, iterative)."""
    edges = {m: sorted({t for _, t in ts if t in graph}) for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    found.append(sorted(component))
    return found


def with_edge(graph: Graph, module: str, target: str) -> dict[str, list[tuple[int, str]]]:
    """A copy of `graph` where `module` also imports `target` (line 0)."""
    out = {m: list(ts) for m, ts in graph.items()}
    out.setdefault(module, []).append((0, target))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[int, str]]]:
    return import_graph()


def test_no_module_imports_a_layer_above_it(graph) -> None:
    assert layer_violations(graph) == []


def test_no_import_circle_anywhere(graph) -> None:
    assert circles(graph) == []


def test_every_module_has_a_layer(graph) -> None:
    for module in graph:
        if not is_ui(module):
            layer_of(module)
    with pytest.raises(AssertionError, match="not in any layer"):
        layer_of("textitsr.somewhere_new")


def test_the_scan_sees_the_pages_app_and_function_level_imports(graph) -> None:
    assert "app" in graph and "pages.5_Annotate" in graph and "pages.2_Map_query" in graph
    # imports inside functions count: `Archive._build` imports nothing lazily, `cli.index` does
    assert any(t == "textitsr.index.archive" for _, t in graph["textitsr.cli"])
    assert any(t == "textitsr.app.services" for _, t in graph["app"])


@pytest.mark.parametrize(
    ("module", "target", "expected"),
    [
        ("textitsr.api", "textitsr.app", "a front end beside it"),
        ("textitsr.api", "textitsr.app.services", "a front end beside it"),
        ("textitsr.app.maps", "textitsr.api", "a layer above it"),
        ("textitsr.api", "textitsr.cli", "a layer above it"),
        ("pages.5_Annotate", "textitsr.active", "Streamlit script imports textitsr.active"),
        ("pages.5_Annotate", "textitsr.active.anneal", "Streamlit script imports textitsr.active.anneal"),
        ("app", "textitsr.index.store", "Streamlit script imports textitsr.index.store"),
        ("textitsr.data.registry", "textitsr.synth.world", "a layer above it"),
        ("textitsr.evaluation.evaluate", "textitsr.training.train", "a layer above it"),
    ],
)
def test_the_check_fails_on_a_forbidden_import(graph, module: str, target: str, expected: str) -> None:
    """Run the checker on the real graph plus one forbidden edge: it must report exactly that edge."""
    bad = layer_violations(with_edge(graph, module, target))
    assert len(bad) == 1 and expected in bad[0] and module in bad[0]


@pytest.mark.parametrize(
    ("module", "target"),
    [("pages.1_Text_search", "textitsr.service"), ("app", "textitsr.escape"),
     ("textitsr.cli", "textitsr.api"), ("textitsr.api", "textitsr.service"),
     ("textitsr.synth.world", "textitsr.data.pairs"), ("textitsr.api", "textitsr.api_discovery")],
)
def test_the_check_allows_a_downward_import(graph, module: str, target: str) -> None:
    assert layer_violations(with_edge(graph, module, target)) == []


def test_the_circle_check_finds_circles_within_a_layer(graph) -> None:
    # two modules of one layer importing each other (the encoders registry and a backbone, say)
    looped = with_edge(graph, "textitsr.models.backbone", "textitsr.models.encoders")
    looped = with_edge(looped, "textitsr.models.encoders", "textitsr.models.backbone")
    found = circles(looped)
    assert len(found) == 1 and {"textitsr.models.backbone", "textitsr.models.encoders"} <= set(found[0])
    # a longer chain, and a module importing itself
    chain = {"a": [(1, "b")], "b": [(1, "c")], "c": [(1, "a")], "d": [(1, "d")], "e": [(1, "a")]}
    assert sorted(circles(chain)) == [["a", "b", "c"], ["d"]]
    assert circles({"a": [(1, "b")], "b": [], "c": [(1, "a"), (2, "b")]}) == []


def _names(found: Iterable[tuple[int, str]]) -> set[str]:
    return {t for _, t in found}


def test_from_package_import_submodule_is_an_import_of_the_submodule() -> None:
    found = _names(imported_modules(REPO / "pages" / "3_Inspector.py"))
    assert "textitsr.app.services" in found and "textitsr.app" not in found
