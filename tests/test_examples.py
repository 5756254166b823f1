"""Every example in ``examples/`` runs through the command line and leaves what its README promises."""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import shlex
import signal
import sys

import pytest

from pipekit import hookimpl
from pipekit.state import subitems
from pipekit.testing import PipeTester


try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pipekit depends on tomli there
    import tomli as tomllib


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Examples and what their test adds to the README's command (the books model needs no pause here).
EXTRA_ARGS: dict[str, list[str]] = {"hello": [], "books": ["--model-latency", "0"], "plugin": []}


def readme_command(name: str) -> list[str]:
    """The arguments of the first ``pipekit run`` in the example's README, run from the repository root."""
    readme = (EXAMPLES / name / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            if line.startswith("pipekit run "):
                return shlex.split(line)[2:]
    raise AssertionError(f"examples/{name}/README.md shows no pipekit run command")


def test_every_example_is_run_here_and_has_a_readme() -> None:
    found = {p.parent.name for p in EXAMPLES.glob("*/pipeline.py")}
    assert found == set(EXTRA_ARGS)
    for name in found:
        assert readme_command(name)[0] == f"examples/{name}/pipeline.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXTRA_ARGS))
def test_example_runs_as_its_readme_says(pipetester: PipeTester, name: str) -> None:
    (pipetester.path / "examples").symlink_to(EXAMPLES)  # the README's paths are relative to the repository
    args = ["run", *readme_command(name), *EXTRA_ARGS[name]]
    first = pipetester.run_subprocess(*args)
    assert first.ret == 0, first
    assert first.event_names().count("item_finish") >= 3
    failed = [(p["item_id"], p["phase"]) for n, p in first.events if n == "phase_fail"]
    again = pipetester.run_subprocess(*args)
    assert again.ret == 0, again
    # A second run redoes nothing but the (non-critical) phases that failed.
    assert [(p["item_id"], p["phase"]) for n, p in again.events if n == "phase_start"] == failed


# -- hello ----------------------------------------------------------------------


def test_hello_writes_greetings_and_survives_a_failed_review(pipetester: PipeTester) -> None:
    result = pipetester.run(
        str(EXAMPLES / "hello" / "pipeline.py"),
        "--items",
        str(EXAMPLES / "hello" / "items.txt"),
        "--state-dir",
        "st",
        "--output-dir",
        "out",
    )
    assert result.ret == 0, result
    assert (pipetester.path / "out/world/greeting.txt").read_text().startswith("Hello, world!")
    state = result.state("please-fail-review")
    assert state.phases[3].status == "failed"
    assert state.phases[4].status == "completed"


# -- books ----------------------------------------------------------------------

BOOKS = ["aesop", "andersen", "grimm"]


@pytest.fixture(autouse=True)
def _books_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The books pipeline passes its model choice on in the environment: undo it after each test."""
    monkeypatch.setenv("BOOKS_MODEL", "offline")
    monkeypatch.setenv("BOOKS_MODEL_LATENCY", "0")


def run_books(pipetester: PipeTester, *args: str):  # type: ignore[no-untyped-def]
    return pipetester.run(
        str(EXAMPLES / "books" / "pipeline.py"),
        "--model-latency",
        "0",
        "--state-dir",
        "st",
        "--output-dir",
        "out",
        *args,
    )


def test_books_writes_a_report_per_book_with_tokens_and_cost(pipetester: PipeTester) -> None:
    result = run_books(pipetester)
    assert result.ret == 0, result
    out = pipetester.path / "out"
    for book in BOOKS:
        chapters = json.loads((out / book / "chapters.json").read_text())
        report = (out / book / "report.md").read_text()
        assert report.startswith("# ")
        assert "## Review" in report
        assert report.count("\n### ") == len(chapters)
        assert sorted(p.name for p in (out / book / "summaries").iterdir()) == [
            f"{c['number']:02d}.md" for c in chapters
        ]
        state = result.state(book)
        assert state.status == "completed"
        assert state.phases[4].tokens_in > 0 and state.phases[4].cost_usd > 0
    # The review is a pydantic model: stored as its JSON, handed to assemble as an instance.
    review = result.state("aesop").phase_outputs[5]
    assert review == {"verdict": review["verdict"], "notes": [], "chapters": 12}
    assert review["verdict"].startswith("The 12 summaries of Aesop")
    aesop = (out / "aesop" / "report.md").read_text()
    assert f"## Review\n\n{review['verdict']}\n" in aesop
    assert "### 4. The Lion and the Mouse" in aesop
    assert "No act of kindness, however small, is ever wasted." in aesop
    # The header and footer of the shipped text are cleaned away, CRLF included.
    clean = (out / "grimm" / "clean.txt").read_text()
    assert "START OF" not in clean and "public" not in clean and "\r" not in clean
    result.fnmatch_lines(["books: 3 selected: 3 completed, 0 failed, 0 remaining", "*tokens * in / * out; cost $0.00*"])


def test_books_summarises_only_chapters_without_a_summary(pipetester: PipeTester) -> None:
    assert run_books(pipetester, "--item", "aesop").ret == 0
    summaries = pipetester.path / "out" / "aesop" / "summaries"
    kept = (summaries / "03.md").read_text()
    for number in range(7, 13):  # as if the run had died after chapter 6
        (summaries / f"{number:02d}.md").unlink()
    again = run_books(pipetester, "--item", "aesop", "--from-phase", "4")
    assert again.ret == 0, again
    state = again.state("aesop")
    assert state.phase_outputs[4] == "6 of 12 chapters summarised this run"
    assert (summaries / "03.md").read_text() == kept
    assert len(list(summaries.iterdir())) == 12


def test_books_status_shows_the_chapters_map(pipetester: PipeTester) -> None:
    assert run_books(pipetester, "--item", "aesop").ret == 0
    status = pipetester.run("status", str(EXAMPLES / "books" / "pipeline.py"), "--state-dir", "st", "--item", "aesop")
    assert status.ret == 0, status
    assert "    map summarise_chapter: 12 done, 0 failed, 12 in all\n" in status.stdout
    assert 'output: {"verdict":"The 12 summaries' in status.stdout


def _summarised(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [p["key"] for n, p in result.events if n == "subitem_finish" and p["status"] == "done"]


def _summaries_billed(bill: Path) -> float:
    calls = [json.loads(line) for line in bill.read_text().splitlines()]
    return sum(call["cost_usd"] for call in calls if call["call"] == "summarise")


@pytest.mark.slow
def test_books_rerun_after_a_kill_summarises_only_unfinished_chapters(pipetester: PipeTester) -> None:
    """The model's bill (each call it charges for, logged as it answers) against the cost recorded.

    The kill comes as the first chapter is stored, with three more in flight. Each of those
    either stored its usage before the kill (then it is counted once, also when the rerun
    asks again because its summary file was not written yet: paid twice, counted twice) or
    was cut between the model's answer and the store (paid, and no tool can count it).
    Nothing else may differ from the bill.
    """
    clean = run_books(pipetester, "--item", "aesop", "--state-dir", "clean", "--output-dir", "clean-out")
    args = [str(EXAMPLES / "books" / "pipeline.py"), "--state-dir", "st", "--output-dir", "out", "--item", "aesop"]
    bill = pipetester.path / "calls.jsonl"
    env = {"BOOKS_CALLS_LOG": str(bill)}
    killed = pipetester.run_subprocess(
        *args, "--model-latency", "0.3", kill_at=("subitem_finish", "aesop", 4), signal=signal.SIGKILL, env=env
    )
    assert killed.ret == -9, killed
    before = _summarised(killed)
    assert 1 <= len(before) < 12
    billed_before = _summaries_billed(bill)
    store = killed.open_store()
    try:
        stored = sum(record.cost_usd for record in subitems.load(store, "aesop", "summarise").values())
    finally:
        store.close()
    assert stored <= billed_before + 1e-12  # a record holds no more than its calls cost
    resumed = pipetester.run_subprocess(*args, "--model-latency", "0", env=env)
    assert resumed.ret == 0, resumed
    # The model is asked only about chapters not stored before the kill.
    asked = int(resumed.state("aesop").phase_outputs[4].split()[0])
    assert 1 <= asked <= 12 - len(before)
    billed = _summaries_billed(bill)
    cut = billed_before - stored
    assert resumed.state("aesop").phases[4].cost_usd == pytest.approx(billed - cut)
    assert clean.state("aesop").phases[4].cost_usd <= billed - cut + 1e-12
    report = (pipetester.path / "out/aesop/report.md").read_text()
    assert report == (pipetester.path / "clean-out/aesop/report.md").read_text()


@pytest.mark.slow
def test_books_resumes_after_ctrl_c(pipetester: PipeTester) -> None:
    args = [str(EXAMPLES / "books" / "pipeline.py"), "--state-dir", "st", "--output-dir", "out", "--item", "aesop"]
    stopped = pipetester.run_subprocess(
        *args, "--model-latency", "0.5", kill_at=("phase_start", "aesop", 4), signal=signal.SIGINT
    )
    assert stopped.ret == 2, stopped
    assert stopped.state("aesop").phases[4].status == "failed"
    assert stopped.state("aesop").phases[4].reason == "interrupted"
    assert not (pipetester.path / "out/aesop/report.md").exists()
    resumed = pipetester.run_subprocess(*args, "--model-latency", "0")
    assert resumed.ret == 0, resumed
    started = [p["phase"] for n, p in resumed.events if n == "phase_start"]
    assert started == [4, 5, 6]
    assert (pipetester.path / "out/aesop/report.md").exists()


def test_books_model_option_without_llm_is_a_usage_error(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llm", None)  # import llm fails, installed or not
    result = run_books(pipetester, "--model", "gpt-4o-mini")
    assert result.ret == 4, result
    assert "--model gpt-4o-mini needs the llm library: pip install llm" in result.stderr
    assert not (pipetester.path / "st").exists()


def test_books_without_pydantic_says_what_to_install(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # import pydantic fails, installed or not
    result = run_books(pipetester)
    assert result.ret == 4, result
    assert "the books example validates its review with pydantic: pip install 'pipekit[pydantic]'" in result.stderr
    assert not (pipetester.path / "st").exists()


FAKE_LLM = """
class Usage:
    input, output = 900, 60

class Response:
    def __init__(self, text):
        self._text = text
    def text(self):
        return self._text
    def usage(self):
        return Usage()

class Model:
    def prompt(self, text, system=None):
        if system.startswith("You review"):
            raise ConnectionError("the reviewer is down")
        return Response("A summary from " + MODELS[-1] + ".")

MODELS = []

def get_model(name):
    MODELS.append(name)
    return Model()
"""


class Pricer:
    """A pricing plugin, as pipekit-prices is: dollars for a model's tokens."""

    @hookimpl
    def pipekit_price_usage(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        return (tokens_in * 0.15 + tokens_out * 0.60) / 1e6 if model == "gpt-4o-mini" else None


def test_books_through_llm_with_a_failing_reviewer(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    (pipetester.path / "fakellm").mkdir()
    (pipetester.path / "fakellm" / "llm.py").write_text(FAKE_LLM)
    monkeypatch.syspath_prepend(str(pipetester.path / "fakellm"))
    result = pipetester.run(
        str(EXAMPLES / "books" / "pipeline.py"), "--state-dir", "st", "--output-dir", "out",
        "--model", "gpt-4o-mini", "--item", "andersen", plugins=[Pricer()],
    )  # fmt: skip
    # review is not critical: the report goes out without it and the run succeeds.
    assert result.ret == 0, result
    state = result.state("andersen")
    assert state.phases[5].status == "failed" and "the reviewer is down" in (state.phases[5].error or "")
    assert state.phases[6].status == "completed"
    assert state.phases[4].tokens_in == 900 * 3 and state.phases[4].tokens_out == 60 * 3
    assert state.phases[4].cost_usd == pytest.approx(3 * (900 * 0.15 + 60 * 0.60) / 1e6)
    report = (pipetester.path / "out/andersen/report.md").read_text()
    assert "## Review" not in report and "The review phase failed" in report
    assert "A summary from gpt-4o-mini." in report


# -- plugin ---------------------------------------------------------------------


@pytest.mark.slow
def test_plugin_example_both_ways(pipetester: PipeTester) -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(EXAMPLES / "plugin"), os.environ.get("PYTHONPATH", "")])}
    result = pipetester.run_subprocess(
        str(EXAMPLES / "plugin" / "pipeline.py"), "--state-dir", "st", "-p", "phase_timer",
        "--timings", "timings.json", "--audit-log", "audit.log", env=env,
    )  # fmt: skip
    assert result.ret == 0, result
    # The hooks in the pipeline module:
    lines = (pipetester.path / "audit.log").read_text().splitlines()
    assert [line.split()[1:] for line in lines] == [
        ["pluggy", "completed"],
        ["pytest", "completed"],
        ["pipekit", "completed"],
    ]
    # The plugin loaded with -p:
    timings = json.loads((pipetester.path / "timings.json").read_text())
    assert {name: t["runs"] for name, t in timings.items()} == {"measure": 3, "shout": 3}
    result.fnmatch_lines(["phase-timer: slowest phase: measure*"])


@pytest.mark.slow
def test_plugin_example_installed_loads_from_its_entry_point(pipetester: PipeTester) -> None:
    # What `pip install examples/plugin` leaves in site-packages: a dist-info with the entry points.
    project = tomllib.loads((EXAMPLES / "plugin" / "pyproject.toml").read_text())["project"]
    site = pipetester.path / "site"
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["pipekit"].items())
    (info / "entry_points.txt").write_text("[pipekit]\n" + entry_points)
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLES / "plugin")]),
        "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "",
    }
    listed = pipetester.run_subprocess("plugins", env=env)
    assert listed.ret == 0, listed
    listed.fnmatch_lines(["phase-timer*pipekit-phase-timer 0.1.0*"], stream="stdout")
    ran = pipetester.run_subprocess(str(EXAMPLES / "plugin" / "pipeline.py"), "--state-dir", "st", env=env)
    assert ran.ret == 0, ran
    ran.fnmatch_lines(["phase-timer: slowest phase: *"])
    blocked = pipetester.run_subprocess(
        str(EXAMPLES / "plugin" / "pipeline.py"), "--state-dir", "st2", "-p", "no:phase-timer", env=env
    )
    assert blocked.ret == 0, blocked
    assert "phase-timer" not in blocked.stderr


@pytest.mark.slow
def test_books_model_choice_reaches_worker_processes(pipetester: PipeTester) -> None:
    (pipetester.path / "fakellm").mkdir()
    (pipetester.path / "fakellm" / "llm.py").write_text(FAKE_LLM)
    result = pipetester.run_subprocess(
        str(EXAMPLES / "books" / "pipeline.py"), "--state-dir", "st", "--output-dir", "out",
        "--item", "grimm", "--executor", "processes", "-j", "2", "--model", "gpt-4o-mini",
        env={"PYTHONPATH": str(pipetester.path / "fakellm")},
    )  # fmt: skip
    assert result.ret == 0, result
    report = (pipetester.path / "out/grimm/report.md").read_text()
    assert report.count("A summary from gpt-4o-mini.") == 4
    assert result.state("grimm").phases[4].executor == "gpt-4o-mini"
