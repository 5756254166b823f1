"""`pipekit status`: what a person sees about a batch, on state from real runs."""

from __future__ import annotations

import json
import signal

from batch_helpers import make_batch
from batch_helpers import snapshot
from batch_helpers import state_dir
from batch_helpers import store_snapshot
import pytest

from pipekit.testing import PipeTester


@pytest.mark.usefixtures("any_store")
def test_matrix_shows_glyphs_costs_errors_and_totals(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    result = pipetester.run("status", "pipeline.py")
    assert result.ret == 0, result
    result.fnmatch_lines(
        [
            "pipeline: pipeline  (4 items x 3 phases)",
            "phases: 1 research, 2 draft, 3 review",
            "item   1 2 3 * cost  last error",
            "a      ✓ ✓ ✓ *$0.1100",
            "b-c    ✓ ↷ ✓ *$0.0100",
            "bad-1  ✓ ✗ · *$0.1100  2 draft: RuntimeError: draft broke on bad-1",
            "meh    ✓ ✓ ✗ *$0.1100  3 review: ValueError: review found nothing to say",
            "✓ completed  ✗ failed  ↷ skipped  ▶ in progress  · pending",
            "total: 4 items: 3 completed (1 with errors), 1 failed, 0 in progress, 0 pending; "
            "tokens 400 in / 40 out; cost $0.3400",
        ],
        stream="stdout",
    )
    assert result.stderr == ""


@pytest.mark.usefixtures("any_store")
def test_filters_select_rows(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    failed = pipetester.run("status", "pipeline.py", "--failed")
    rows = [line.split()[0] for line in failed.stdout.splitlines()[5:-3]]
    assert rows == ["bad-1", "meh"], failed
    globbed = pipetester.run("status", "pipeline.py", "--item", "b*")
    assert [line.split()[0] for line in globbed.stdout.splitlines()[5:-3]] == ["b-c", "bad-1"], globbed
    pending = pipetester.run("status", "pipeline.py", "--pending")
    assert [line.split()[0] for line in pending.stdout.splitlines()[5:-3]] == ["bad-1", "meh"], pending


@pytest.mark.usefixtures("any_store")
def test_many_items_are_summarised_unless_all(pipetester: PipeTester) -> None:
    make_batch(pipetester, *[f"book-{i}" for i in range(12)], "bad-1")
    summary = pipetester.run("status", "pipeline.py", "--max-rows", "5")
    assert summary.ret == 0, summary
    summary.fnmatch_lines(
        [
            "phase * completed * failed * skipped * in progress * pending * cost",
            "1 research * 13 * 0 * 0 * 0 * 0 * $0.1300",
            "2 draft * 12 * 1 * 0 * 0 * 0 * $1.3000",
            "failures (1 of 1*",
            "  bad-1  2 draft: RuntimeError: draft broke on bad-1",
            "(summary of 13 rows; --all shows every row)",
        ],
        stream="stdout",
    )
    assert "book-7 " not in summary.stdout
    full = pipetester.run("status", "pipeline.py", "--max-rows", "5", "--all")
    assert sum(line.startswith("book-") for line in full.stdout.splitlines()) == 12


@pytest.mark.usefixtures("any_store")
def test_json_is_the_full_picture(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    result = pipetester.run("status", "pipeline.py", "--json")
    document = json.loads(result.stdout)
    assert document["totals"] == {
        "items": 4,
        "completed": 3,
        "completed_with_errors": 1,
        "failed": 1,
        "in_progress": 0,
        "pending": 0,
        "interrupted": 0,
        "tokens_in": 400,
        "tokens_out": 40,
        "cost_usd": pytest.approx(0.34),
    }
    bad = next(i for i in document["items"] if i["item_id"] == "bad-1")
    assert bad["status"] == "failed"
    assert bad["phases"][1]["error"] == "RuntimeError: draft broke on bad-1"
    assert "Traceback (most recent call last)" in bad["phases"][1]["traceback"]
    cached = next(i for i in document["items"] if i["item_id"] == "b-c")
    assert cached["phases"][1]["status"] == "skipped" and cached["phases"][1]["reason"] == "cache"


def test_one_item_tells_its_whole_story(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    (pipetester.path / "items.txt").write_text("bad-1\n")
    pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    result = pipetester.run("status", "pipeline.py", "--item", "bad-1")
    assert result.ret == 0, result
    result.fnmatch_lines(
        [
            "item: bad-1   status: failed   cost: $0.2100*",
            "state: */bad-1.json",
            "✓ phase 1 research: completed",
            "    attempts 1 *tokens 100/10   cost $0.0100",
            "✗ phase 2 draft: failed (error)",
            "    attempts 2 *cost $0.2000",
            "    error: RuntimeError: draft broke on bad-1",
            "    | Traceback (most recent call last):",
            '    |   File "*pipeline.py", line *, in draft',
            "    | RuntimeError: draft broke on bad-1",
            "· phase 3 review: pending",
        ],
        stream="stdout",
    )


@pytest.mark.usefixtures("any_store")
def test_status_never_changes_state(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    before = (snapshot(state_dir(pipetester)), store_snapshot(pipetester))
    for args in ([], ["--json"], ["--item", "a"], ["--failed", "--all"]):
        assert pipetester.run("status", "pipeline.py", *args).ret == 0
    assert (snapshot(state_dir(pipetester)), store_snapshot(pipetester)) == before


def test_a_corrupt_state_file_is_named_and_left_alone(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    corrupt = state_dir(pipetester) / "meh.json"
    corrupt.write_text('{"schema_version": 1, "item_id": "meh", "phases": ')
    before = snapshot(state_dir(pipetester))
    result = pipetester.run("status", "pipeline.py")
    assert result.ret == 4, result
    assert f"corrupt state file {corrupt}: not valid JSON" in result.stderr
    assert "bad-1" in result.stdout and "meh" not in result.stdout
    one = pipetester.run("status", "pipeline.py", "--item", "meh")
    assert one.ret == 4 and str(corrupt) in one.stderr, one
    assert snapshot(state_dir(pipetester)) == before


@pytest.mark.usefixtures("any_store")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--item", "nope"], "unknown item 'nope'"),
        (["--item", "zz*"], "no saved item matches 'zz*'"),
        ([], "give the pipeline MODULE"),
    ],
)
def test_bad_input_is_a_usage_error(pipetester: PipeTester, args: list[str], message: str) -> None:
    make_batch(pipetester)
    module = ["pipeline.py"] if args else []
    result = pipetester.run("status", *module, *args)
    assert result.ret == 4, result
    assert message in result.stderr


def test_a_module_that_is_not_a_pipeline_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline("x = 1\n", name="notapipeline")
    result = pipetester.run("status", "notapipeline.py")
    assert result.ret == 4, result
    assert "notapipeline" in result.stderr


@pytest.mark.usefixtures("any_store")
@pytest.mark.slow
def test_status_after_kill_9_shows_the_phase_in_progress(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(__import__("batch_helpers").BATCH)
    (pipetester.path / "hang-b").touch()
    killed = pipetester.run_subprocess(
        "run",
        "pipeline.py",
        "--item",
        "a",
        "--item",
        "b",
        "--progress",
        "none",
        kill_at=("phase_start", "b", 1),
        signal=signal.SIGKILL,
    )
    assert killed.killed and killed.ret == -signal.SIGKILL, killed
    result = pipetester.run("status", "pipeline.py")
    result.fnmatch_lines(["a *✓ ✓ ✓ *", "b *▶ · · *"], stream="stdout")
    # Its process is gone: nothing runs the phase that still reads "in progress".
    assert "1 in progress (0 running, 1 interrupted: the next run resumes them)" in result.stdout, result
    story = pipetester.run("status", "pipeline.py", "--item", "b")
    assert "interrupted: no process runs it" in story.stdout, story
    document = json.loads(pipetester.run("status", "pipeline.py", "--json").stdout)
    assert (document["totals"]["in_progress"], document["totals"]["interrupted"]) == (1, 1)
    pending = pipetester.run("status", "pipeline.py", "--pending")
    assert [line.split()[0] for line in pending.stdout.splitlines()[5:-3]] == ["b"], pending
    (pipetester.path / "hang-b").unlink()
    assert pipetester.run("run", "pipeline.py", "--item", "a", "--item", "b", "--progress", "none").ret == 0
    assert "2 completed" in pipetester.run("status", "pipeline.py").stdout


@pytest.mark.usefixtures("any_store")
def test_phases_added_since_the_run_show_as_pending(pipetester: PipeTester) -> None:
    make_batch(pipetester, "a")
    source = (pipetester.path / "pipeline.py").read_text()
    (pipetester.path / "pipeline.py").write_text(
        source.replace("@phase(1)", "@phase(0)\ndef fetch():\n    return ''\n\n@phase(1)")
    )
    result = pipetester.run("status", "pipeline.py")
    assert result.ret == 0, result
    result.fnmatch_lines(["item  0 1 2 3 * cost  last error", "a     · ✓ ✓ ✓ *$0.1100"], stream="stdout")


@pytest.mark.usefixtures("any_store")
@pytest.mark.slow
def test_status_names_the_process_running_an_item(pipetester: PipeTester) -> None:
    import os
    import socket
    import time

    pipetester.make_pipeline(__import__("batch_helpers").BATCH)
    (pipetester.path / "hang-b").touch()
    running = pipetester.popen("run", "pipeline.py", "--item", "b", "--progress", "none")
    try:
        log = pipetester.path / "executions.log"
        deadline = time.monotonic() + 60
        while not (log.exists() and '"b"' in log.read_text()):
            assert running.poll() is None and time.monotonic() < deadline, "the run never started phase 1 of b"
            time.sleep(0.05)
        result = pipetester.run("status", "pipeline.py")
        assert "1 in progress (1 running, 0 interrupted" in result.stdout, result
        story = pipetester.run("status", "pipeline.py", "--item", "b")
        assert f"running: host {socket.gethostname()}, pid {running.pid}" in story.stdout, story
    finally:
        running.kill()
        running.wait()
    assert os.path.exists(pipetester.path / "hang-b")


@pytest.mark.usefixtures("any_store")
def test_items_that_never_started_count_as_pending(pipetester: PipeTester) -> None:
    make_batch(pipetester, "a", "b-c")
    (pipetester.path / "all.txt").write_text("a\nb-c\nnew-1\nnew-2\n")
    result = pipetester.run("status", "pipeline.py", "--items", "all.txt")
    assert result.ret == 0, result
    result.fnmatch_lines(
        [
            "pipeline: pipeline  (4 items x 3 phases)",
            "new-1  · · · *$0.0000",
            "new-2  · · · *$0.0000",
            "total: 4 items: 2 completed, 0 failed, 0 in progress, 2 pending; *",
        ],
        stream="stdout",
    )
    document = json.loads(pipetester.run("status", "pipeline.py", "--items", "all.txt", "--json").stdout)
    assert (document["totals"]["items"], document["totals"]["pending"]) == (4, 2)
    new = next(i for i in document["items"] if i["item_id"] == "new-1")
    assert new["status"] == "pending" and [p["status"] for p in new["phases"]] == ["pending"] * 3
    story = pipetester.run("status", "pipeline.py", "--items", "all.txt", "--item", "new-2")
    assert story.ret == 0 and "item: new-2   status: pending" in story.stdout, story
    # The module's items() is a source too, as for `run`; --item narrows it (globs allowed).
    with (pipetester.path / "pipeline.py").open("a") as module:
        module.write("\ndef items():\n    return ['a', 'b-c', 'new-1', 'new-2', 'new-3']\n")
    batch = pipetester.run("status", "pipeline.py")
    assert "total: 5 items: 2 completed, 0 failed, 0 in progress, 3 pending;" in batch.stdout, batch
    narrowed = pipetester.run("status", "pipeline.py", "--item", "new-*", "--pending")
    assert "total: 3 items: 0 completed, 0 failed, 0 in progress, 3 pending;" in narrowed.stdout, narrowed


def test_item_sources_take_the_errors_of_run(pipetester: PipeTester) -> None:
    make_batch(pipetester, "a")
    (pipetester.path / "all.txt").write_text("a\nnew-1\n")
    for verb in (["run", "-q"], ["status"], ["report", "-o", "r.html"], ["export", "--phase", "1", "--jsonl"]):
        missing = pipetester.run(*verb, "pipeline.py", "--items", "all.txt", "--item", "zz")
        assert missing.ret == 4 and "--item 'zz': not in the --items file(s) (all.txt)" in missing.stderr, missing
        unreadable = pipetester.run(*verb, "pipeline.py", "--items", "nope.txt")
        assert unreadable.ret == 4 and "cannot read items file nope.txt" in unreadable.stderr, unreadable
