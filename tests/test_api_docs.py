"""docs/api.md is generated from the public API's signatures and docstrings, and is up to date."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
import re
import subprocess
import sys
from types import ModuleType

import pipekit


ROOT = Path(__file__).resolve().parents[1]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api_docs", ROOT / "scripts" / "gen_api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = load_generator()


def test_the_api_page_is_up_to_date() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    assert page == generator.render(), "docs/api.md is out of date: run python scripts/gen_api_docs.py"


def test_the_check_mode_fails_on_a_stale_page(tmp_path: Path) -> None:
    assert generator.main(["--check"]) == 0
    stale = tmp_path / "api.md"
    stale.write_text("# API reference\n")
    original = generator.TARGET
    generator.TARGET = stale
    try:
        assert generator.main(["--check"]) == 1
        assert stale.read_text() == "# API reference\n"
        assert generator.main([]) == 0
        assert stale.read_text() == generator.render()
    finally:
        generator.TARGET = original


def test_the_script_runs_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_api_docs.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_every_public_name_has_one_heading_with_a_unique_anchor() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    headings = re.findall(r"^### (\w+) `pipekit\.(\w+)`$", page, re.M)
    assert sorted(name for _, name in headings) == sorted(pipekit.__all__)
    anchors = [generator.anchor(name, pipekit) for name in pipekit.__all__]
    assert len(set(anchors)) == len(anchors)  # pipekit.run and pipekit.Run apart
    assert generator.anchor("run", pipekit) == "function-pipekitrun"
    assert generator.anchor("Run", pipekit) == "class-pipekitrun"


def test_a_public_docstring_and_signature_reach_the_page() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    entry = page.split("### function `pipekit.run`\n", 1)[1].split("\n### ", 1)[0]
    assert "def run(\n    module_or_path: str | PathLike[str] | ModuleType,\n" in entry
    assert "- **raises `pipekit.UsageError`**: for a bad module, bad items or bad options." in entry
    assert "Run a pipeline as `pipekit run` does and return its `RunResult`." in entry
    state = page.split("### class `pipekit.PhaseState`\n", 1)[1].split("\n### ", 1)[0]
    assert "    #: Executions of this phase, across runs.\n    attempts: int = 0\n" in state


def test_signatures_are_printed_as_the_source_writes_them() -> None:
    source = 'def f(a, /, b: "str" = "x", *args: int, c: dict[str, int] = {}, **kw: object) -> None:\n    ...\n'
    node = ast.parse(source).body[0]
    assert generator.function_signature(node, source) == [
        'def f(a, /, b: "str" = "x", *args: int, c: dict[str, int] = {}, **kw: object) -> None'
    ]
    long = "def g(" + ", ".join(f"argument_{n}: int = {n}" for n in range(6)) + ") -> str:\n    ...\n"
    lines = generator.function_signature(ast.parse(long).body[0], long)
    assert lines[0] == "def g(" and lines[1] == "    argument_0: int = 0," and lines[-1] == ") -> str"


def test_field_lists_become_markdown() -> None:
    text = generator.docstring_to_markdown(
        "Do it.\n\n:param item: the ``item``,\n    over two lines.\n:returns: dollars.\n"
        ":raises pipekit.UsageError: when not.\nAfter the list.\n\nAn example::\n\n    a\n      b\n"
    )
    assert "- **`item`**: the `item`, over two lines." in text
    assert "- **returns**: dollars." in text
    assert "- **raises `pipekit.UsageError`**: when not.\n\nAfter the list." in text
    assert "An example:\n\n```\na\n  b\n```" in text
