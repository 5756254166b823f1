"""The package's shape: no import circles at any depth, no module too long to read.

Every import counts: at the top of a module, inside a function, under
``TYPE_CHECKING``, and ``importlib.import_module`` with a literal name. A
package's ``__init__`` counts as importing what it re-exports; importing
``pipekit.a.b`` counts as importing ``pipekit.a.b`` only (not its parents'
``__init__``, which must then stay free of the children that import it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parent.parent / "pipekit"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(tree: ast.AST, known: set[str], current: str) -> set[str]:
    """The pipekit modules ``tree`` imports, anywhere in it."""
    found: set[str] = set()

    def add(name: str) -> None:
        # ``from pipekit.a import b`` may import the module pipekit.a.b or a name of pipekit.a
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != current:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                add(f"{node.module}.{alias.name}")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(ast.parse(path.read_text()), known, name) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_inside_pipekit() -> None:
    graph = _graph()
    circles = _circles(graph)
    described = [
        " -> ".join(circle) + "\n    " + "\n    ".join(f"{a} imports {sorted(graph[a] & set(circle))}" for a in circle)
        for circle in circles
    ]
    assert not circles, "import circles:\n" + "\n".join(described)


def test_the_circle_finder_sees_function_level_and_type_checking_imports() -> None:
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import pipekit.b\n"
        "def f():\n    from pipekit.c import x\n"
    )
    imported = _imported(ast.parse(code), {"pipekit.b", "pipekit.c"}, "pipekit.a")
    assert imported == {"pipekit.b", "pipekit.c"}
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_over_500_lines(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES}): split it by what its parts do"


#: The packages from the bottom up: each imports only from its own layer and
#: the layers below. ``docs/architecture.md`` draws the same picture (tested below).
LAYERS = [
    {"outcomes"},
    {"state", "display"},
    {"pipeline"},
    {"stale"},
    {"execution"},
    {"config", "notify"},
    {"engine"},
    {"hookspecs", "manager"},
    {"builtin"},
    {"cli"},
    {"api", "testing", "executor", "__main__", "__init__"},
]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def test_every_package_has_a_layer() -> None:
    packages = {_package(name) for name in _modules()}
    assert packages <= set().union(*LAYERS), f"add {sorted(packages - set().union(*LAYERS))} to LAYERS"


def test_packages_import_only_from_their_layer_and_below() -> None:
    upward = sorted(
        f"{a} imports {b}"
        for a, targets in _graph().items()
        for b in targets
        if _rank(_package(b)) > _rank(_package(a))
    )
    assert not upward, "imports that go up a layer (see docs/architecture.md):\n" + "\n".join(upward)


def test_the_architecture_page_draws_these_layers() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    picture = page.split("```text\n", 1)[1].split("```", 1)[0]
    drawn = []
    for line in picture.splitlines():
        words = [word for word in line.split() if word.startswith("pipekit/")]
        names = {word[len("pipekit/") :].strip("/").removesuffix(".py") for word in words}
        if names:
            drawn.append(names)
    assert drawn == list(reversed(LAYERS)), "docs/architecture.md draws other layers than tests/test_structure.py"


MAX_FUNCTION_LINES = 60
#: What a function over ``MAX_FUNCTION_LINES`` says, in a comment, to explain why.
LONG_REASON = "# Over 60 lines:"


def _long_functions() -> list[str]:
    """Functions over 60 lines (their docstring not counted) that give no reason."""
    found = []
    for name, path in _modules().items():
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                length -= body[0].end_lineno - body[0].lineno + 1  # type: ignore[operator]
            text = "\n".join(source.splitlines()[node.lineno - 1 : node.end_lineno])
            if length > MAX_FUNCTION_LINES and LONG_REASON not in text:
                found.append(f"{name}.{node.name} ({length} lines)")
    return sorted(found)


def test_a_function_over_60_lines_says_why() -> None:
    long = _long_functions()
    assert not long, f"split these, or say why beside them ({LONG_REASON} ...):\n" + "\n".join(long)
