"""Fingerprints, stale cells, `pipekit plan` and `pipekit why`, end to end through the CLI (#10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from pipekit.state.open import open_store_url
from pipekit.testing import PipeTester


PIPELINE = '''
    import json
    from pathlib import Path
    from pipekit import phase, PhaseResult

    def items():
        return ["a", "b", "c"]

    def log(item_id, name):
        with Path("executions.log").open("a") as f:
            f.write(json.dumps([item_id, name]) + "\\n")

    @phase(1)
    def research(item_id):
        log(item_id, "research")
        return f"notes on {item_id}"

    @phase(2)
    def summarize(item_id, research):
        """Summarise the notes."""
        log(item_id, "summarize")
        return PhaseResult(f"summary of {research}", cost_usd=0.01)

    def prompt_file():
        return Path("prompt.txt").read_text()

    @phase(3, fingerprint=prompt_file)
    def report(item_id, summarize):
        log(item_id, "report")
        return f"{Path('prompt.txt').read_text().strip()}: {summarize}"

    @phase(4)
    def archive(item_id):
        log(item_id, "archive")
        return f"archived {item_id}"
'''

ITEMS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def every_store(any_store: str | None) -> str | None:
    """Each scenario in each store: database stores skip finished items by an indexed stale key."""
    return any_store


@pytest.fixture
def tester(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> PipeTester:
    """A pipeline that has run once over a, b and c, with an empty execution log."""
    # Edited pipelines are re-imported in this process: no stale bytecode.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    pipetester.make_pipeline(PIPELINE)
    (pipetester.path / "prompt.txt").write_text("Report\n")
    result = pipetester.run("pipeline.py", "--progress", "none")
    assert result.ret == 0, result
    assert len(executions(pipetester)) == 12
    (pipetester.path / "executions.log").unlink()
    return pipetester


def executions(tester: PipeTester) -> list[tuple[str, str]]:
    log = tester.path / "executions.log"
    if not log.exists():
        return []
    return [tuple(json.loads(line)) for line in log.read_text().splitlines()]  # type: ignore[misc]


def edit(tester: PipeTester, old: str, new: str) -> None:
    """Replace ``old`` in the pipeline; the file's mtime moves on so no cache sees the old text."""
    path = tester.path / "pipeline.py"
    text = path.read_text()
    assert old in text, old
    mtime = path.stat().st_mtime
    path.write_text(text.replace(old, new))
    os.utime(path, (mtime + 2, mtime + 2))


def plan(tester: PipeTester, *args: str) -> dict[str, Any]:
    result = tester.run("plan", "pipeline.py", "--json", *args)
    assert result.ret == 0, result
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def cells(document: dict[str, Any], key: str) -> dict[str, dict[str, list[str]]]:
    """``{phase name: {item id: reasons}}`` for the cells under ``key`` (run or stale)."""
    return {
        p["name"]: {c["item_id"]: c["reasons"] for c in p[key]} for p in document["phases"] if p[key]
    }


def every(reasons: list[str]) -> dict[str, list[str]]:
    return {item: reasons for item in ITEMS}


def test_fresh_state_plans_nothing(tester: PipeTester) -> None:
    document = plan(tester)
    assert cells(document, "run") == {}
    assert cells(document, "stale") == {}
    assert [p["skipped"] for p in document["phases"]] == [3, 3, 3, 3]


def test_code_edit_makes_that_phase_and_its_consumers_stale(tester: PipeTester) -> None:
    edit(tester, 'f"summary of {research}"', 'f"better summary of {research}"')

    document = plan(tester)
    assert cells(document, "run") == {}
    assert cells(document, "stale") == {
        "summarize": every(["code changed"]),
        "report": every(["upstream stale"]),
    }
    text = tester.run("plan", "pipeline.py")
    assert text.ret == 0
    text.fnmatch_lines(
        [
            "phase 1 research: skip 3",
            "phase 2 summarize: stale 3, not included (code changed 3)",
            "phase 3 report: stale 3, not included (upstream stale 3)",
            "phase 4 archive: skip 3",
            "6 stale cells not included*add --rerun-stale*",
        ],
        stream="stdout",
    )

    included = plan(tester, "--rerun-stale")
    assert cells(included, "run") == {
        "summarize": every(["code changed"]),
        "report": every(["upstream re-run"]),
    }
    assert cells(included, "stale") == {}

    # A plain run re-executes nothing and says why, with the cost and the way to include them.
    result = tester.run("pipeline.py", "--progress", "none")
    assert result.ret == 0, result
    assert executions(tester) == []
    result.fnmatch_lines(
        ["pipekit: 6 completed cells are stale, not re-run: summarize (code changed 3); "
         "report (upstream stale 3); estimated $0.0300*add --rerun-stale*"]
    )

    result = tester.run("pipeline.py", "--progress", "none", "--rerun-stale")
    assert result.ret == 0, result
    assert sorted(executions(tester)) == sorted(
        [(item, name) for item in ITEMS for name in ("summarize", "report")]
    )
    assert result.state("a").phase_outputs[3] == "Report: better summary of notes on a"
    assert plan(tester, "--rerun-stale")["total"]["run"] == 0


def test_version_bump_is_its_own_reason(tester: PipeTester) -> None:
    edit(tester, "@phase(2)", '@phase(2, version="2")')
    assert cells(plan(tester, "--rerun-stale"), "run") == {
        "summarize": every(["version bumped"]),
        "report": every(["upstream re-run"]),
    }


def test_fingerprint_input_change(tester: PipeTester) -> None:
    (tester.path / "prompt.txt").write_text("Shorter report\n")
    assert cells(plan(tester), "stale") == {"report": every(["input changed"])}

    result = tester.run("pipeline.py", "--progress", "none", "--rerun-stale")
    assert result.ret == 0, result
    assert sorted(executions(tester)) == [(item, "report") for item in ITEMS]
    assert result.state("b").phase_outputs[3] == "Shorter report: summary of notes on b"


def test_formatting_and_comment_edits_do_not_count_but_docstrings_do(tester: PipeTester) -> None:
    edit(
        tester,
        '    log(item_id, "summarize")\n',
        '\n    # a comment, and odd spacing\n    log( item_id,"summarize" )\n\n',
    )
    assert cells(plan(tester), "stale") == {}

    edit(tester, "Summarise the notes.", "Summarise the notes briefly.")
    assert cells(plan(tester), "stale")["summarize"] == every(["code changed"])


def test_rerun_with_the_same_output_leaves_consumers_alone(tester: PipeTester) -> None:
    edit(tester, 'log(item_id, "summarize")', 'name = "summarize"\n    log(item_id, name)')
    result = tester.run("pipeline.py", "--progress", "none", "--rerun-stale")
    assert result.ret == 0, result
    # report consumed an output that did not change: it is not re-executed.
    assert sorted(executions(tester)) == [(item, "summarize") for item in ITEMS]
    assert plan(tester, "--rerun-stale")["total"]["run"] == 0


def test_on_change_rerun_runs_without_the_flag(tester: PipeTester) -> None:
    edit(tester, "@phase(4)", '@phase(4, version="2", on_change="rerun")')
    assert cells(plan(tester), "run") == {"archive": every(["version bumped"])}
    result = tester.run("pipeline.py", "--progress", "none")
    assert result.ret == 0, result
    assert sorted(executions(tester)) == [(item, "archive") for item in ITEMS]
    result.fnmatch_lines(["pipekit: 3 completed cells are stale, re-run: archive (version bumped 3)*"])


def test_a_changed_upstream_output_makes_consumers_stale(tester: PipeTester) -> None:
    edit(tester, "@phase(2)", '@phase(2, on_change="rerun")')
    edit(tester, 'f"summary of {research}"', 'f"new summary of {research}"')
    result = tester.run("pipeline.py", "--progress", "none")
    assert result.ret == 0, result
    assert sorted(executions(tester)) == [(item, "summarize") for item in ITEMS]
    # report consumed the old summary: now stale, reported, not re-run by default.
    assert cells(plan(tester), "stale") == {"report": every(["upstream re-run"])}
    (tester.path / "executions.log").unlink()
    again = tester.run("pipeline.py", "--progress", "none")
    again.fnmatch_lines(["*3 completed cells are stale, not re-run: report (upstream re-run 3)*"], "stderr")
    assert executions(tester) == []
    assert tester.run("pipeline.py", "--progress", "none", "--rerun-stale").ret == 0
    assert sorted(executions(tester)) == [(item, "report") for item in ITEMS]


def test_force_from_phase_failed_and_new_items(tester: PipeTester) -> None:
    assert cells(plan(tester, "--force"), "run")["research"] == every(["--force"])
    document = plan(tester, "--from-phase", "3")
    assert cells(document, "run") == {"report": every(["--from-phase"]), "archive": every(["--from-phase"])}

    document = plan(tester, "--item", "a", "--item", "new")
    run = cells(document, "run")
    assert run == {name: {"new": ["pending"]} for name in ("research", "summarize", "report", "archive")}
    summarize = document["phases"][1]
    assert summarize["mean_cost_usd"] == pytest.approx(0.01)
    assert summarize["estimated_cost_usd"] == pytest.approx(0.01)


def test_estimates_are_unknown_without_history(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("plan", "pipeline.py")
    assert result.ret == 0, result
    result.fnmatch_lines(
        ["phase 1 research: run 3 (pending 3; est. unknown, unknown)", "total: 12 cells to run; estimated unknown*"],
        stream="stdout",
    )
    assert not (pipetester.path / "state").exists()


def test_plan_changes_nothing(tester: PipeTester) -> None:
    state_dir = tester.path / "state" / "pipeline"
    before = {p: p.read_bytes() for p in state_dir.rglob("*") if p.is_file()}
    edit(tester, "@phase(2)", '@phase(2, version="3")')
    plan(tester, "--rerun-stale")
    tester.run("why", "pipeline.py", "a", "summarize")
    after = {p: p.read_bytes() for p in state_dir.rglob("*") if p.is_file()}
    assert after == before


def test_state_without_fingerprints_is_unknown_not_stale(tester: PipeTester) -> None:
    store = open_store_url(os.environ.get("PIPEKIT_STORE") or f"json:{tester.path / 'state' / 'pipeline'}")
    for item_id, document in list(store.load_all()):
        for phase in document["phases"].values():
            del phase["fingerprint"]
        store.save(item_id, document)
    store.close()
    edit(tester, 'f"summary of {research}"', 'f"other summary of {research}"')
    result = tester.run("plan", "pipeline.py", "--rerun-stale")
    assert result.ret == 0, result
    result.fnmatch_lines(["total: 0 cells to run*", "12 completed cells have no fingerprint*not checked"], "stdout")
    assert tester.run("pipeline.py", "--progress", "none", "--rerun-stale").ret == 0
    assert executions(tester) == []


def test_why_shows_the_story_and_the_code_diff(tester: PipeTester) -> None:
    edit(tester, 'f"summary of {research}"', 'f"better summary of {research}"')
    result = tester.run("why", "pipeline.py", "a", "summarize")
    assert result.ret == 0, result
    result.fnmatch_lines(
        [
            "item 'a', phase 2 summarize",
            "  status: completed",
            "  attempts: 1",
            "  spent (all attempts): $0.0100*",
            "  fingerprint (then -> now):",
            "    code: * -> *  CHANGED",
            "    version: * none -> none  same",
            "      research: * -> *  same",
            "  stale: code changed; a run re-executes it with --rerun-stale",
            "    --- summarize (then)",
            "    +++ summarize (now)",
            '    -    return PhaseResult(f"summary of {research}", cost_usd=0.01)',
            '    +    return PhaseResult(f"better summary of {research}", cost_usd=0.01)',
        ],
        stream="stdout",
    )
    by_num = tester.run("why", "pipeline.py", "a", "3")
    by_num.fnmatch_lines(
        [
            "item 'a', phase 3 report",
            "    input: * -> *  same",
            "      summarize: * -> *  same",
            "  stale: upstream stale; a run re-executes it with --rerun-stale",
        ],
        "stdout",
    )
    assert "up to date: a run skips it" in tester.run("why", "pipeline.py", "a", "archive").stdout


def test_why_on_failures_and_mistakes(tester: PipeTester) -> None:
    edit(tester, '    log(item_id, "archive")\n', '    log(item_id, "archive")\n    raise ValueError("disk full")\n')
    assert tester.run("pipeline.py", "--progress", "none", "--item", "a", "--rerun-stale").ret == 1
    result = tester.run("why", "pipeline.py", "a", "archive")
    assert result.ret == 0, result
    result.fnmatch_lines(
        ["  status: failed (error)", "  attempts: 2", "  last error: *disk full*", "  a run would execute it (failed)"],
        "stdout",
    )
    assert tester.run("why", "pipeline.py", "nobody", "1").stdout.endswith("a run would execute it (pending)\n")
    missing = tester.run("why", "pipeline.py", "a", "9")
    assert missing.ret == 4
    assert "no phase '9'" in missing.stderr


def test_fingerprint_errors_fail_the_phase(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        def broken():
            raise OSError("no prompt file")

        @phase(1, fingerprint=broken)
        def one():
            return "x"
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a", "--progress", "none")
    assert result.ret == 1, result
    assert result.state("a").phases[1].error == "fingerprint: OSError: no prompt file"


def test_bad_on_change_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        @phase(1, on_change="always")
        def one():
            return "x"
        """
    )
    result = pipetester.run("plan", "pipeline.py", "--item", "a")
    assert result.ret == 4
    assert "on_change must be one of" in result.stderr


@pytest.mark.slow
def test_edit_plan_rerun_through_the_console_script(tester: PipeTester) -> None:
    edit(tester, 'f"summary of {research}"', 'f"better summary of {research}"')
    planned = subprocess.run(
        [sys.executable, "-m", "pipekit", "plan", "pipeline.py", "--rerun-stale", "--json"],
        cwd=tester.path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert planned.returncode == 0, planned.stderr
    document = json.loads(planned.stdout)
    assert document["total"]["run"] == 6
    assert document["total"]["estimated_cost_usd"] == pytest.approx(0.03)
    ran = tester.run_subprocess("pipeline.py", "--progress", "none", "--rerun-stale")
    assert ran.ret == 0, ran
    assert [(p["item_id"], p["phase"]) for name, p in ran.events if name == "phase_complete"] == [
        (item, num) for item in ITEMS for num in (2, 3)
    ]
    assert sorted(executions(tester)) == sorted((item, name) for item in ITEMS for name in ("summarize", "report"))


def test_fingerprint_reads_the_metadata_a_run_would_save(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        def model(metadata):
            return metadata["model"]

        @phase(1, fingerprint=model)
        def answer(item_id, metadata):
            return f"{metadata['model']} on {item_id}"
        """
    )
    pipetester.make_items({"id": "a", "model": "small"}, {"id": "b", "model": "small"}, name="items.jsonl")
    assert pipetester.run("pipeline.py", "--items", "items.jsonl", "--progress", "none").ret == 0
    pipetester.make_items({"id": "a", "model": "large"}, {"id": "b", "model": "small"}, name="items.jsonl")
    document = plan(pipetester, "--items", "items.jsonl")
    assert cells(document, "stale") == {"answer": {"a": ["input changed"]}}
    result = pipetester.run("pipeline.py", "--items", "items.jsonl", "--progress", "none", "--rerun-stale")
    assert result.ret == 0, result
    assert result.state("a").phase_outputs[1] == "large on a"


def test_a_slow_fingerprint_does_not_block_other_items(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import asyncio, time
        from pipekit import phase

        def slow_for_a(item_id):
            if item_id == "a":
                time.sleep(2)
            return item_id

        @phase(1, fingerprint=slow_for_a, timeout=1)
        async def one(item_id):
            await asyncio.sleep(0.1)
            return item_id
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "-j", "2")
    assert result.state("b").phases[1].status == "completed"
    a = result.state("a").phases[1]
    assert (a.status, a.reason) == ("failed", "timeout")
    assert "fingerprint: " in (a.error or "")


def test_renaming_an_upstream_phase_makes_its_consumers_stale(pipetester: PipeTester) -> None:
    source = '''
        from pipekit import phase

        @phase(1)
        def one(item_id):
            return "v1:" + item_id

        @phase(2)
        def two(previous_outputs):
            return f"two({previous_outputs[1]})"
    '''
    pipetester.make_pipeline(source)
    pipetester.run("pipeline.py", "--item", "a", "--progress", "none")
    pipetester.make_pipeline(source.replace("def one(item_id):", "def first(item_id):").replace('"v1:"', '"v2:"'))
    result = pipetester.run("pipeline.py", "--item", "a", "--rerun-stale", "--progress", "none")
    assert result.ret == 0, result
    assert result.state("a").phase_outputs == {1: "v2:a", 2: "two(v2:a)"}
