"""Write ``docs/api.md``, the API reference, from the signatures and docstrings
of everything in ``pipekit.__all__``.

    python scripts/gen_api_docs.py          # rewrite docs/api.md
    python scripts/gen_api_docs.py --check  # exit 1 if it is out of date

Signatures are printed from the source (``ast``), as written there, so the page
is the same on every Python version. Docstrings use Sphinx field lists
(``:param name:``, ``:returns:``, ``:raises X:``); this turns them into
Markdown. Each name gets a heading such as ``class `pipekit.Run` ``, whose
anchor (``#class-pipekitrun``, see ``anchor``) is the same on the site and in
a repository's file view, and tells ``pipekit.Run`` from ``pipekit.run``.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import importlib
import inspect
from pathlib import Path
import re
import sys
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "api.md"
WIDTH = 88

#: The page's sections and the public names in each, in the order shown.
SECTIONS: list[tuple[str, str, list[str]]] = [
    ("Declaring phases", "", ["phase", "PhaseResult", "PhaseContext", "Limit", "PhaseDefinition", "Retry", "Fail"]),
    (
        "Batch phases",
        "What a provider's batch API gives pipekit (`@phase(batch=...)`; docs/batches.md).",
        ["BatchProvider", "BatchRequest", "BatchStatus", "BatchResult"],
    ),
    ("Running", "", ["run", "arun", "load", "Pipeline", "RunResult", "ExitCode"]),
    ("What hooks see", "", ["hookimpl", "hookspec", "Run", "Item", "PhaseOutcome"]),
    ("State", "", ["PipelineState", "PhaseState", "PipelineStateManager", "PhaseRunner"]),
    (
        "Progress",
        "The seed's progress classes, for showing progress without the command line\n"
        "(the `progress` plugin drives them during a run).",
        ["create_progress_tracker", "ProgressTracker", "SimpleProgress", "ProgressState"],
    ),
    ("Errors", "", ["UsageError", "StateFileError", "PhaseTimeoutError"]),
]


def _pipekit() -> Any:
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module("pipekit")
    finally:
        sys.path.remove(str(ROOT))


# -- docstrings ------------------------------------------------------------------------

_FIELD = re.compile(r":(?:(?P<kind>param|raises) (?P<name>[\w.]+)|(?P<returns>returns)):\s*(?P<text>.*)")


def _inline(text: str) -> str:
    return re.sub(r"``(.+?)``", r"`\1`", text)


def docstring_to_markdown(text: str) -> str:
    """The reStructuredText of a docstring as Markdown: field lists become
    lists, ``literal`` becomes `literal`, ``::`` blocks become fenced blocks."""
    out: list[str] = []
    lines = text.strip().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        field = _FIELD.match(line)
        if field:
            body = [field["text"]]
            index += 1
            while index < len(lines) and lines[index].startswith(" "):
                body.append(lines[index].strip())
                index += 1
            label = "returns" if field["returns"] else f"`{field['name']}`"
            if field["kind"] == "raises":
                label = f"raises {label}"
            out.append(f"- **{label}**: {_inline(' '.join(body))}")
            continue
        if line.rstrip().endswith("::"):
            out.append(_inline(line.rstrip()[:-1]))
            index += 1
            block = []
            while index < len(lines) and (not lines[index].strip() or lines[index].startswith("    ")):
                block.append(lines[index][4:])
                index += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            out += ["", "```", *block, "```", ""]
            continue
        if out and out[-1].startswith("- **") and line.strip():
            out.append("")  # a paragraph after a field list is not part of it
        out.append(_inline(line))
        index += 1
    return "\n".join(out).strip() + "\n"


# -- signatures, from the source -------------------------------------------------------


def _definition(obj: Any) -> tuple[ast.AST, str]:
    """The top-level ``def``/``class`` (or assignment) of ``obj``'s name in its
    module, and the module's source."""
    module = sys.modules[getattr(obj, "__module__", "")]
    source = Path(inspect.getfile(module)).read_text()
    name = getattr(obj, "__name__", None)
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node, source
    raise LookupError(f"{obj!r}: no definition in {module.__name__}")


@functools.cache
def _lines(source: str) -> list[bytes]:
    return [line.encode() for line in source.splitlines()]


def _text(node: ast.AST, source: str) -> str:
    """``node`` as written in ``source``, on one line. (``ast.get_source_segment``
    splits the whole module on every call: seconds for this page.)"""
    lines = _lines(source)
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1  # type: ignore[attr-defined]
    start, end = node.col_offset, node.end_col_offset  # type: ignore[attr-defined]  # UTF-8 offsets
    if first == last:
        segment = lines[first][start:end]
    else:
        segment = b"\n".join([lines[first][start:], *lines[first + 1 : last], lines[last][:end]])
    return " ".join(segment.decode().split())


def _arguments(args: ast.arguments, source: str) -> list[str]:
    def one(arg: ast.arg, default: ast.expr | None) -> str:
        text = arg.arg
        if arg.annotation is not None:
            text += f": {_text(arg.annotation, source)}"
        if default is not None:
            value = _text(default, source)
            text += f" = {value}" if arg.annotation is not None else f"={value}"
        return text

    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    out = [one(arg, default) for arg, default in zip(positional, defaults, strict=True)]
    if args.posonlyargs:
        out.insert(len(args.posonlyargs), "/")
    if args.vararg is not None:
        out.append("*" + one(args.vararg, None))
    elif args.kwonlyargs:
        out.append("*")
    out += [one(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    if args.kwarg is not None:
        out.append("**" + one(args.kwarg, None))
    return out


def function_signature(node: ast.FunctionDef | ast.AsyncFunctionDef, source: str, indent: str = "") -> list[str]:
    """``def name(args) -> returns``, its decorators above it, one argument a
    line when it is too long for one."""
    lines = [f"{indent}@{_text(decorator, source)}" for decorator in node.decorator_list]
    head = f"{indent}{'async def' if isinstance(node, ast.AsyncFunctionDef) else 'def'} {node.name}"
    tail = f" -> {_text(node.returns, source)}" if node.returns is not None else ""
    arguments = _arguments(node.args, source)
    one_line = f"{head}({', '.join(arguments)}){tail}"
    if len(one_line) <= WIDTH:
        return [*lines, one_line]
    return [*lines, f"{head}(", *(f"{indent}    {a}," for a in arguments), f"{indent}){tail}"]


def class_signature(cls: type, node: ast.ClassDef, source: str) -> list[str]:
    """``class Name(bases)`` with what constructs it: a dataclass's fields, an
    enum's members, or its own ``__init__``."""
    lines = [f"@{_text(decorator, source)}" for decorator in node.decorator_list]
    bases = ", ".join(_text(base, source) for base in node.bases)
    lines.append(f"class {node.name}({bases}):" if bases else f"class {node.name}:")
    body = []
    source_lines = source.splitlines()
    for statement in node.body:
        if dataclasses.is_dataclass(cls) and isinstance(statement, ast.AnnAssign) or (
            issubclass(cls, enum.Enum) and isinstance(statement, ast.Assign)
        ):
            first = statement.lineno - 1
            while first > 0 and source_lines[first - 1].strip().startswith("#:"):
                first -= 1  # the attribute's documentation comment
            body += [f"    {line.strip()}" for line in source_lines[first : statement.end_lineno]]
        elif isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
            body += function_signature(statement, source, indent="    ")
    return lines + (body or ["    ..."])


def attribute_source(name: str, module_name: str) -> tuple[str, str]:
    """``(statement, docstring)`` of a module-level ``name = ...`` and the string after it."""
    module = importlib.import_module(module_name)
    source = Path(inspect.getfile(module)).read_text()
    body = ast.parse(source).body
    for statement, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in statement.targets
        ):
            doc = ""
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                doc = inspect.cleandoc(str(following.value.value))
            return _text(statement, source), doc
    raise LookupError(f"{module_name}: no assignment to {name}")


# -- the page --------------------------------------------------------------------------


def _own_doc(obj: Any) -> str:
    doc = (vars(obj).get("__doc__") if inspect.isclass(obj) else inspect.getdoc(obj)) or ""
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # a dataclass's invented "Name(field: type, ...)"
    return inspect.cleandoc(doc)


def _block(lines: list[str]) -> list[str]:
    return ["```python", *lines, "```", ""]


def members(cls: type, node: ast.ClassDef, source: str) -> list[str]:
    """The public methods and properties the class defines, in source order."""
    parts: list[str] = []
    for statement in node.body:
        if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) or statement.name.startswith("_"):
            continue
        if any(_text(d, source).endswith((".setter", ".deleter")) for d in statement.decorator_list):
            continue
        value = getattr(cls, statement.name)
        parts += [f"#### `{cls.__name__}.{statement.name}`", ""]
        parts += _block(function_signature(statement, source))
        parts.append(docstring_to_markdown(inspect.getdoc(value) or ""))
    return parts


def kind(obj: Any) -> str:
    """What the heading calls ``obj``: ``class``, ``function`` or ``decorator``."""
    if inspect.isclass(obj):
        return "class"
    return "function" if inspect.isroutine(obj) else "decorator"


def anchor(name: str, pipekit: Any) -> str:
    """The anchor of ``pipekit.NAME``'s heading: ``class-pipekitrun``. Both
    Python-Markdown's and GitHub's slugs drop the dot and the backticks."""
    return f"{kind(getattr(pipekit, name))}-pipekit{name.lower()}"


def entry(name: str, pipekit: Any) -> list[str]:
    """The heading, signature and documentation of ``pipekit.NAME``."""
    obj = getattr(pipekit, name)
    parts = [f"### {kind(obj)} `pipekit.{name}`", ""]
    if inspect.isclass(obj):
        node, source = _definition(obj)
        assert isinstance(node, ast.ClassDef)
        parts += _block(class_signature(obj, node, source))
        parts.append(docstring_to_markdown(_own_doc(obj)))
        parts += members(obj, node, source)
    elif inspect.isroutine(obj):
        node, source = _definition(inspect.unwrap(obj))
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        parts += _block(function_signature(node, source))
        parts.append(docstring_to_markdown(_own_doc(obj)))
    else:
        statement, doc = attribute_source(name, pipekit._LAZY[name])
        parts += _block([statement])
        parts.append(docstring_to_markdown(doc))
    return parts


def render() -> str:
    """The whole page."""
    pipekit = _pipekit()
    listed = [name for _, _, names in SECTIONS for name in names]
    if sorted(listed) != sorted(pipekit.__all__):
        missing = sorted(set(pipekit.__all__) - set(listed))
        extra = sorted(set(listed) - set(pipekit.__all__))
        raise SystemExit(f"scripts/gen_api_docs.py: SECTIONS lacks {missing} and lists unknown {extra}")
    parts = [
        "# API reference",
        "",
        "<!-- Generated by scripts/gen_api_docs.py from pipekit's docstrings: edit them there. -->",
        "",
        "Everything importable from `pipekit` (its `__all__`), with the signatures as",
        "written in the source. The test suite checks that every public name has a",
        "docstring and that this page is up to date.",
        "",
    ]
    for title, intro, names in SECTIONS:
        parts += [f"## {title}", ""]
        if intro:
            parts += [intro, ""]
        parts.append(" · ".join(f"[`{name}`](#{anchor(name, pipekit)})" for name in names))
        parts.append("")
        for name in names:
            parts += entry(name, pipekit)
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
