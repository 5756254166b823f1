"""The documentation site: it builds strictly, its code runs, and it covers the public API."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
from pathlib import Path
import re
import runpy
import subprocess
import sys
from types import ModuleType

import pytest

import pipekit
from pipekit import hookspecs
from pipekit.testing import PipeTester


ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def code_blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(page.read_text())]


# -- the public API ---------------------------------------------------------------


def _own_docstring(obj: object) -> str:
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        # dataclasses invent "Name(field: type, ...)" when a class has none
        return "" if doc.startswith(f"{obj.__name__}(") else doc
    return getattr(obj, "__doc__", None) or ""


def _attribute_docstring(name: str) -> str:
    """The string literal after ``name = ...`` in the module ``pipekit`` imports it from."""
    module = pipekit._LAZY.get(name)
    assert module, f"pipekit.{name} is not in pipekit._LAZY"
    spec = importlib.util.find_spec(module)
    assert spec and spec.origin
    body = ast.parse(Path(spec.origin).read_text()).body
    for statement, following in zip(body, body[1:], strict=False):
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in statement.targets
        ):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                return str(following.value.value)
    return ""


@pytest.mark.parametrize("name", pipekit.__all__)
def test_every_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(pipekit, name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        assert _own_docstring(obj).strip(), f"pipekit.{name} has no docstring"
    else:
        assert _attribute_docstring(name).strip(), f"pipekit.{name} has no docstring after its assignment"
    if inspect.isclass(obj):
        missing = []
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            # an override may inherit its base class's docstring
            if inspect.isroutine(func) and not (inspect.getdoc(getattr(obj, attr)) or "").strip():
                missing.append(attr)
        assert not missing, f"pipekit.{name}: public methods without a docstring: {missing}"


def test_api_page_has_an_entry_for_every_public_name() -> None:
    entries = re.findall(r"^### \w+ `pipekit\.(\w+)`$", (DOCS / "api.md").read_text(), re.M)
    assert sorted(entries) == sorted(pipekit.__all__)


# -- code in the docs is inline, and the same as in files the tests run ------------------

#: Folders whose files the test suite runs: examples/ (tests/test_examples.py) and
#: docs/snippets/ (this module).
TESTED_SOURCES = ("examples/", "docs/snippets/")


#: Generated pages with tests of their own: the hook reference (tests/test_hook_docs.py),
#: the API reference (tests/test_api_docs.py) and the plugin guide, checked beside its
#: generator.
SELF_TESTED_PAGES = ("api.md", "hooks.md", "plugins.md")


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


snippets = load_script("sync_doc_snippets")


def test_no_page_includes_code_from_elsewhere() -> None:
    # A page read as a file shows what it says: nothing is pulled in at build time.
    for page in pages():
        assert "--8<--" not in page.read_text(), f"{page.relative_to(ROOT)}: an include marker"


def test_python_in_the_docs_names_a_tested_source_and_equals_it() -> None:
    used = set()
    for page in pages():
        if page.relative_to(DOCS).as_posix() in SELF_TESTED_PAGES:
            continue
        text = page.read_text()
        titled = {block.start for block in snippets.blocks(text)}
        for match in _FENCE.finditer(text):
            if match.group(1) == "python":
                assert match.start(2) in titled, (
                    f"{page.relative_to(ROOT)}: a python block without title=\"PATH:REGION\" "
                    f"naming a tested source: {match.group(2)[:60]!r}"
                )
        for block in snippets.blocks(text):
            where = f"{page.relative_to(ROOT)}: the block from {block.path}:{block.name}"
            assert block.path.startswith(TESTED_SOURCES), f"{where}: not a file the tests run"
            assert block.body == snippets.region(block.path, block.name), (
                f"{where} differs from the source: run python scripts/sync_doc_snippets.py"
            )
            used.add(block.path)
    in_folder = {f"docs/snippets/{p.name}" for p in SNIPPETS.glob("*.py")}
    assert in_folder <= used | {"docs/snippets/concepts.py"}, "a snippet no page uses"


def test_the_snippet_check_fails_on_an_edited_source_and_sync_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "docs" / "snippets" / "s.py"
    source.parent.mkdir(parents=True)
    source.write_text("import os\n\n\n# --8<-- [start:one]\ndef one():\n    return 1\n\n\n# --8<-- [end:one]\n")
    page = tmp_path / "docs" / "p.md"
    block = '```python title="docs/snippets/s.py:one"\ndef one():\n    return {}\n```'
    page.write_text(f"Text.\n\n{block.format(1)}\n\nMore.\n")
    monkeypatch.setattr(snippets, "ROOT", tmp_path)
    monkeypatch.setattr(snippets, "DOCS", tmp_path / "docs")
    assert snippets.main(["--check"]) == 0
    source.write_text(source.read_text().replace("return 1", "return 2"))
    assert snippets.main(["--check"]) == 1
    assert "return 1" in page.read_text()  # --check writes nothing
    assert snippets.main([]) == 0
    assert page.read_text() == f"Text.\n\n{block.format(2)}\n\nMore.\n"
    page.write_text(page.read_text().replace("s.py:one", "s.py:two"))
    with pytest.raises(snippets.SnippetError, match=r"docs/snippets/s.py: no region 'two'"):
        snippets.synced(page.read_text())


def test_the_snippet_script_runs_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_doc_snippets.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# -- links work in the repository's file view and on the site ----------------------------

_LINK = re.compile(r"\]\((?P<target>[^)\s#]*)(?:#(?P<anchor>[^)\s]*))?\)")


def github_slug(heading: str) -> str:
    """The anchor a repository's file view gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def linked_pages() -> list[Path]:
    return [*pages(), *sorted((ROOT / "examples").glob("*/README.md"))]


def test_links_are_relative_paths_to_files_and_headings_that_exist() -> None:
    for page in linked_pages():
        text = _FENCE.sub("", page.read_text())
        for match in _LINK.finditer(text):
            target, anchor = match["target"], match["anchor"]
            where = f"{page.relative_to(ROOT)}: ({match[0][2:-1]})"
            if "://" in target:
                assert "github.com/search" not in target, f"{where}: link the file, not a search"
                continue
            linked = (page.parent / target).resolve() if target else page
            assert linked.is_file(), f"{where}: no such file in the repository"
            assert linked.is_relative_to(ROOT), where
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", _FENCE.sub("", linked.read_text()), re.M)
                assert anchor in {github_slug(h) for h in headings}, f"{where}: no such heading"


def test_site_links_follow_the_published_folders() -> None:
    hooks = runpy.run_path(str(ROOT / "tools" / "docs_hooks.py")) if importlib.util.find_spec("mkdocs") else None
    if hooks is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    site_link = hooks["site_link"]
    assert site_link("getting-started.md", "../examples/books/README.md") == "examples/books/README.md"
    assert site_link("recipes/llm.md", "../../examples/books/pipeline.py") == "../examples/books/pipeline.py"
    assert site_link("recipes/llm.md", "../hooks.md") == "../hooks.md"
    assert site_link("examples/plugin/README.md", "../../docs/hooks.md") == "../../hooks.md"
    assert site_link("examples/plugin/README.md", "pipeline.py") == "pipeline.py"
    assert site_link("index.md", "https://example.org/a.md") == "https://example.org/a.md"
    assert site_link("index.md", "../README.md") == "../README.md"  # not on the site: MkDocs says so


def test_getting_started_shows_the_readme_commands_verbatim() -> None:
    readme = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    page = (DOCS / "getting-started.md").read_text()
    for command in readme[:2]:
        assert f"```bash\n{command}```" in page


def test_lifecycle_diagram_names_every_hook_in_firing_order() -> None:
    specs = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("pipekit_")]
    specs.sort(key=lambda name: inspect.getsourcelines(getattr(hookspecs, name))[1])
    diagram = next(body for lang, body in code_blocks(DOCS / "lifecycle.md") if lang == "mermaid")
    drawn = list(dict.fromkeys(re.findall(r"pipekit_\w+", diagram)))
    assert sorted(drawn) == sorted(specs), "docs/lifecycle.md must draw exactly the hooks of pipekit/hookspecs.py"
    outer = [name for name in specs if not name.startswith("pipekit_phase_")]
    assert [name for name in drawn if name in outer] == outer


def test_reliability_page_cites_tests_that_exist() -> None:
    cited = re.findall(r"`(test_\w+\.py)(?:::(\w+))?`", (DOCS / "reliability.md").read_text())
    assert len(cited) >= 8
    for filename, test_name in cited:
        source = (ROOT / "tests" / filename).read_text()
        assert not test_name or re.search(rf"^(async )?def {test_name}\(", source, re.M), f"{filename}::{test_name}"


# -- the snippets run and do what the pages say -----------------------------------------


def test_concepts_pipeline_runs_as_the_page_says(pipetester: PipeTester) -> None:
    result = pipetester.run(str(SNIPPETS / "concepts.py"), "--state-dir", "st", "--output-dir", "out")
    assert result.ret == 0, result
    faq = result.state("faq")
    assert faq.status == "completed_with_errors"
    assert (faq.phases[3].status, faq.phases[3].error, faq.phases[3].attempts) == (
        "failed", "nothing to review in a FAQ", 1,
    )  # fmt: skip
    assert faq.metadata == {"words": 300}
    assert faq.phase_outputs[4] == "300 words on faq"
    intro = result.state("intro")
    assert intro.phases[3].attempts == 2  # the Retry did not use up a retry, and the item went on
    assert intro.phase_outputs[4] == "500 words on intro (looks good)"
    assert intro.phases[2].tokens_out == 500 and intro.phases[2].cost_usd == pytest.approx(0.001)
    again = pipetester.run(str(SNIPPETS / "concepts.py"), "--state-dir", "st", "--output-dir", "out", "--force")
    skips = [c["reason"] for c in again.calls("pipekit_phase_skip")]
    assert skips == []  # --force ignores the cache
    (pipetester.path / "st" / "intro.json").unlink()
    cached = pipetester.run(
        str(SNIPPETS / "concepts.py"), "--state-dir", "st", "--output-dir", "out", "--item", "intro"
    )
    assert [(c["phase"].name, c["reason"]) for c in cached.calls("pipekit_phase_skip")] == [("fetch", "cache")]

    # The JSON excerpt on the page has the shape of a real state file.
    excerpt = json.loads(next(b for lang, b in code_blocks(DOCS / "concepts.md") if lang == "json"))
    real = json.loads((pipetester.path / "st" / "faq.json").read_text())

    def same_shape(part: object, whole: object, where: str) -> None:
        if isinstance(part, dict):
            assert isinstance(whole, dict), where
            for key, value in part.items():
                assert key in whole, f"{where}.{key} is not in a real state file"
                same_shape(value, whole[key], f"{where}.{key}")

    same_shape(excerpt, real, "state")
    assert excerpt["phases"]["3"]["error"] == real["phases"]["3"]["error"]


def test_library_snippet_runs(pipetester: PipeTester, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(SNIPPETS / "library.py"), run_name="__main__")
    assert capsys.readouterr().out.splitlines() == ["concepts ['fetch', 'draft', 'review', 'publish']", "0 failed"]
    assert (pipetester.path / "concepts-state" / "faq.json").exists()


def test_first_pipeline_from_getting_started(pipetester: PipeTester) -> None:
    source = (SNIPPETS / "first_pipeline.py").read_text()
    pipetester.make_pipeline(source, name="words")
    pipetester.make_files({"a.txt": "one three fifteen\n", "b.txt": "pipekit resumes\n"})
    result = pipetester.run("words.py", "--state-dir", "state")
    assert result.ret == 0, result
    assert result.state("a.txt").phase_outputs[2] == "fifteen (of 3 words)"
    pipetester.make_files({"c.txt": "new\n"})
    again = pipetester.run("words.py", "--state-dir", "state")
    assert {c["item"].id for c in again.calls("pipekit_item_start")} == {"c.txt"}


def test_llm_recipe_retries_rate_limits_and_records_cost(pipetester: PipeTester) -> None:
    result = pipetester.run(str(SNIPPETS / "llm_recipe.py"), "--state-dir", "st", "-j", "3")
    assert result.ret == 0, result
    for item_id in ("why is the sky blue", "why do cats purr"):
        answer = result.state(item_id).phases[1]
        assert answer.status == "completed" and answer.attempts == 2
        assert answer.executor == "example-model" and answer.cost_usd > 0
    assert len(result.calls("pipekit_phase_retry")) == 3


def test_llm_recipe_stops_at_max_cost_and_continues_with_a_higher_cap(pipetester: PipeTester) -> None:
    args = [str(SNIPPETS / "llm_recipe.py"), "--state-dir", "st"]
    capped = pipetester.run(*args, "--max-cost", "0.00001")
    assert capped.ret == 1, capped
    assert len(capped.calls("pipekit_budget_reached")) == 1
    done = [c["item"].id for c in capped.calls("pipekit_item_finish") if c["item"].state.status == "completed"]
    assert len(done) == 1
    resumed = pipetester.run(*args, "--max-cost", "1")
    assert resumed.ret == 0, resumed
    assert len(resumed.calls("pipekit_item_start")) == 2  # the finished one is not paid for again


@pytest.mark.slow
def test_testing_page_tests_pass(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PIPEKIT_"))}
    check = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(SNIPPETS),
         str(SNIPPETS / "test_words.py")],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "3 passed" in check.stdout


# -- the site builds ---------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_is_strict_and_clean(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed in CI: pip install -e '.[docs]'")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    assert "WARNING" not in build.stderr, build.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "usage: pipekit run" in cli  # the help text was generated from the program
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    generator = load_script("gen_api_docs")
    for name in pipekit.__all__:
        assert f'id="{generator.anchor(name, pipekit)}"' in api, name
    books = (tmp_path / "site" / "getting-started" / "index.html").read_text()
    assert 'href="../examples/books/"' in books  # ../examples/books/README.md, published
    assert (tmp_path / "site" / "examples" / "books" / "pipeline.py").is_file()


def test_the_exit_code_pages_list_every_code_and_the_order_the_code_applies() -> None:
    """README and the command-line page say what CONTRACT §4 says: every exit code, and
    which wins when several apply (``pipekit.outcomes.EXIT_PRIORITY``, then 5, then 0)."""
    from pipekit.outcomes import EXIT_PRIORITY
    from pipekit.outcomes import ExitCode

    order = ", ".join(str(int(code)) for code in EXIT_PRIORITY)
    cli = (DOCS / "cli.md").read_text()
    table = cli.split("## Exit codes", 1)[1]
    assert [int(n) for n in re.findall(r"^\| (\d) \|", table, re.M)] == sorted(int(code) for code in ExitCode)
    assert f"the first of {order} wins, then 5, then 0" in " ".join(table.split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"the first of {order} wins, then 5, then 0" in readme
    sentence = readme.split("Exit codes:", 1)[1].split("When several apply", 1)[0]
    assert [int(n) for n in re.findall(r"(?:^ |, )(\d) [a-z]", sentence)] == sorted(int(code) for code in ExitCode)
