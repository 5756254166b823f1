"""Meta-tests: every hook is documented, and docs/hooks.md is generated from those docs."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
import subprocess
import sys
from types import ModuleType

import pytest

from pipekit.manager import PipekitPluginManager


ROOT = Path(__file__).resolve().parents[1]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_hook_docs", ROOT / "scripts" / "gen_hook_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = sorted(name for name in dir(PipekitPluginManager().hook) if name.startswith("pipekit_"))


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented_to_the_template(name: str) -> None:
    caller = getattr(PipekitPluginManager().hook, name)
    spec = caller.spec
    assert spec is not None
    doc = inspect.getdoc(spec.function) or ""
    assert doc.startswith("Called "), f"{name}: the first sentence says when it is called"
    for argument in spec.argnames:
        assert f":param {argument}:" in doc, f"{name}: no ':param {argument}:' line"
    assert ".. versionadded::" in doc, f"{name}: no '.. versionadded::'"
    if spec.opts.get("firstresult"):
        assert "first non-None result" in doc, f"{name}: say that it stops at the first non-None result"
        assert ":returns:" in doc, f"{name}: say what the result means"
    if spec.opts.get("historic"):
        assert "Historic" in doc, f"{name}: say that late plugins are called too"


def test_every_hook_is_in_the_reference_page() -> None:
    generator = load_generator()
    page = (ROOT / "docs" / "hooks.md").read_text()
    documented = [func.__name__ for _, func, _ in generator.hookspecs()]
    assert sorted(documented) == HOOKS
    for _, func, _ in generator.hookspecs():
        assert f"### `{generator.signature(func)}`" in page


def test_the_reference_page_is_up_to_date() -> None:
    generator = load_generator()
    page = (ROOT / "docs" / "hooks.md").read_text()
    assert page == generator.render(), "docs/hooks.md is out of date: run python scripts/gen_hook_docs.py"


def test_the_check_mode_fails_on_a_stale_page(tmp_path: Path) -> None:
    generator = load_generator()
    assert generator.main(["--check"]) == 0
    stale = tmp_path / "hooks.md"
    stale.write_text("# Hook reference\n")
    generator.TARGET = stale
    assert generator.main(["--check"]) == 1


def test_rst_fields_become_markdown() -> None:
    generator = load_generator()
    text = generator.rst_to_markdown(
        "Called when.\n\n:param item: the ``item``,\n    over two lines.\n:returns: dollars.\n\n"
        "A diagram::\n\n    a\n      b\n\n.. versionadded:: 1.0"
    )
    assert "- **`item`**: the `item`, over two lines." in text
    assert "- **returns**: dollars." in text
    assert "A diagram:\n\n```\na\n  b\n```" in text
    assert "*Added in pipekit 1.0.*" in text


def test_the_script_runs_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_hook_docs.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
