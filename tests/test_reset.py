"""`pipekit reset`, `pipekit skip` and `pipekit run --failed-only` on state from real runs."""

from __future__ import annotations

import json

from batch_helpers import executions
from batch_helpers import forget_executions
from batch_helpers import make_batch
from batch_helpers import snapshot
from batch_helpers import state_dir
import pytest

from pipekit.store import JsonDirStore
from pipekit.testing import PipeTester


def statuses(tester: PipeTester, item_id: str) -> list[str]:
    document = json.loads((state_dir(tester) / f"{item_id}.json").read_text())
    return [p["status"] for _, p in sorted(document["phases"].items())]


def run_again(tester: PipeTester, *args: str) -> int:
    return tester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none", *args).ret


def test_no_selector_is_a_usage_error_that_says_all(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    before = snapshot(state_dir(pipetester))
    result = pipetester.run("reset", "pipeline.py")
    assert result.ret == 4, result
    assert "say --all" in result.stderr
    assert snapshot(state_dir(pipetester)) == before


def test_failed_resets_only_failed_phases_and_the_next_run_redoes_them(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    result = pipetester.run("reset", "pipeline.py", "--failed")
    assert result.ret == 0, result
    assert result.stdout.splitlines() == [
        "reset bad-1: 2 draft (failed)",
        "reset meh: 3 review (failed)",
        "reset 2 phase(s) of 2 item(s)",
    ]
    assert statuses(pipetester, "bad-1") == ["completed", "pending", "pending"]
    assert statuses(pipetester, "a") == ["completed"] * 3
    forget_executions(pipetester)
    run_again(pipetester)
    assert executions(pipetester) == [("bad-1", "draft"), ("meh", "review")]


def test_phase_is_exact_and_downstream_takes_the_later_ones(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    exact = pipetester.run("reset", "pipeline.py", "--item", "a", "--phase", "1")
    assert exact.ret == 0, exact
    assert statuses(pipetester, "a") == ["pending", "completed", "completed"]
    assert "warning: phase 2 draft stays completed but used the output of 1 research" in exact.stdout
    down = pipetester.run("reset", "pipeline.py", "--item", "meh", "--phase", "draft", "--downstream")
    assert down.stdout.splitlines()[0] == "reset meh: 2 draft (completed), 3 review (failed)"
    assert "warning" not in down.stdout
    assert statuses(pipetester, "meh") == ["completed", "pending", "pending"]


def test_globs_dry_run_and_all(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    before = snapshot(state_dir(pipetester))
    dry = pipetester.run("reset", "pipeline.py", "--item", "b*", "--dry-run")
    assert dry.ret == 0, dry
    assert dry.stdout.splitlines() == [
        "would reset b-c: 1 research (completed), 2 draft (skipped), 3 review (completed)",
        "would reset bad-1: 1 research (completed), 2 draft (failed)",
        "would reset 5 phase(s) of 2 item(s) (dry run: nothing changed)",
    ]
    assert snapshot(state_dir(pipetester)) == before
    everything = pipetester.run("reset", "pipeline.py", "--all")
    assert everything.ret == 0, everything
    assert all(statuses(pipetester, i) == ["pending"] * 3 for i in ("a", "b-c", "bad-1", "meh"))
    assert pipetester.run("reset", "pipeline.py", "--all").stdout == "nothing to reset\n"


def test_reset_keeps_what_was_spent(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    pipetester.run("reset", "pipeline.py", "--item", "a", "--phase", "1")
    document = json.loads((state_dir(pipetester) / "a.json").read_text())
    assert document["phases"]["1"]["attempts"] == 1
    assert document["total_cost_usd"] == pytest.approx(0.11)
    assert "1" not in document["phase_outputs"]


def test_an_item_another_process_holds_is_left_alone(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    lock = JsonDirStore(state_dir(pipetester)).try_lock("bad-1")
    assert lock is not None
    try:
        result = pipetester.run("reset", "pipeline.py", "--failed")
    finally:
        lock.release()
    assert result.ret == 1, result
    assert "item 'bad-1' is being run by another pipekit process; left alone" in result.stderr
    assert statuses(pipetester, "bad-1") == ["completed", "failed", "pending"]
    assert statuses(pipetester, "meh") == ["completed", "completed", "pending"]


def test_a_corrupt_file_is_left_alone_unless_named(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    corrupt = state_dir(pipetester) / "meh.json"
    corrupt.write_text("{not json")
    result = pipetester.run("reset", "pipeline.py", "--all")
    assert result.ret == 4, result
    assert f"corrupt state file {corrupt}" in result.stderr and "--item ID" in result.stderr
    assert corrupt.read_text() == "{not json"
    named = pipetester.run("reset", "pipeline.py", "--item", "meh")
    assert named.ret == 0, named
    assert "reset meh: its state was corrupt" in named.stdout
    backups = list(state_dir(pipetester).glob("meh.json.corrupt-*"))
    assert [b.read_text() for b in backups] == ["{not json"]
    assert statuses(pipetester, "meh") == ["pending"] * 3
    forget_executions(pipetester)
    assert run_again(pipetester) == 1  # bad-1 still fails
    assert ("meh", "research") in executions(pipetester)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phase", "7"], "unknown phase '7' in pipeline (phases: 1 research, 2 draft, 3 review)"),
        (["--item", "ghost"], "unknown item 'ghost'"),
        (["--downstream", "--all"], "--downstream needs --phase N"),
    ],
)
def test_bad_selectors_are_usage_errors(pipetester: PipeTester, args: list[str], message: str) -> None:
    make_batch(pipetester)
    result = pipetester.run("reset", "pipeline.py", *args)
    assert result.ret == 4, result
    assert message in result.stderr


def test_skip_by_hand_stops_retries_and_reset_undoes_it(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    skipped = pipetester.run("skip", "pipeline.py", "--item", "bad-1", "--reason", "the scan is unreadable")
    assert skipped.ret == 0, skipped
    assert skipped.stdout.splitlines() == ["skipped bad-1: 2 draft, 3 review", "skipped 2 phase(s)"]
    status = pipetester.run("status", "pipeline.py", "--item", "bad-1")
    assert "✓ phase 1 research: completed" in status.stdout
    assert "phase 2 draft: skipped (by hand: the scan is unreadable)" in status.stdout
    matrix = pipetester.run("status", "pipeline.py")
    assert "2 draft skipped: by hand: the scan is unreadable" in matrix.stdout
    forget_executions(pipetester)
    (pipetester.path / "items.txt").write_text("a\nb-c\nbad-1\n")
    assert run_again(pipetester) == 0
    assert executions(pipetester) == []
    pipetester.run("reset", "pipeline.py", "--item", "bad-1", "--phase", "2", "--downstream")
    assert statuses(pipetester, "bad-1") == ["completed", "pending", "pending"]
    assert run_again(pipetester) == 1
    assert executions(pipetester) == [("bad-1", "draft")]


def test_skip_one_phase_and_refuse_finished_ones(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    result = pipetester.run("skip", "pipeline.py", "--item", "meh", "--phase", "1", "--phase", "3", "--reason", "meh")
    assert result.ret == 0, result
    assert "meh: phase 1 research is already completed; reset it first to skip it" in result.stdout
    assert statuses(pipetester, "meh") == ["completed", "completed", "skipped"]
    missing = pipetester.run("skip", "pipeline.py", "--item", "meh")
    assert missing.ret == 4 and "--reason" in missing.stderr


def test_run_failed_only_retries_just_the_failed_items(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    pipetester.run("reset", "pipeline.py", "--item", "a", "--phase", "3")
    forget_executions(pipetester)
    result = pipetester.run("run", "pipeline.py", "--items", "items.txt", "--failed-only", "--progress", "none")
    assert result.ret == 1, result
    # a has work left but no failure: not run; bad-1 and meh are retried
    assert executions(pipetester) == [("bad-1", "draft"), ("meh", "review")]
    assert statuses(pipetester, "a") == ["completed", "completed", "pending"]
    pipetester.run("skip", "pipeline.py", "--item", "bad-1", "--reason", "broken")
    pipetester.run("skip", "pipeline.py", "--item", "meh", "--reason", "broken")
    none_left = pipetester.run("run", "pipeline.py", "--items", "items.txt", "--failed-only", "--progress", "none")
    assert none_left.ret == 5, none_left
    assert "no items with a failed phase" in none_left.stderr


@pytest.mark.slow
def test_reset_and_skip_leave_an_item_a_live_run_holds(pipetester: PipeTester) -> None:
    import json as jsonlib

    pipetester.make_pipeline(__import__("batch_helpers").BATCH)
    (pipetester.path / "hang-b").touch()
    proc = pipetester.popen("run", "pipeline.py", "--item", "b", "--progress", "none")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if jsonlib.loads(line).get("event") == "phase_start":
                break
        reset = pipetester.run("reset", "pipeline.py", "--item", "b")
        skip = pipetester.run("skip", "pipeline.py", "--item", "b", "--reason", "x")
    finally:
        proc.kill()
        proc.communicate()
    for result in (reset, skip):
        assert result.ret == 1, result
        assert "item 'b' is being run by another pipekit process; left alone" in result.stderr
    assert statuses(pipetester, "b") == ["in_progress", "pending", "pending"]
    # once the run is gone (kill -9), reset takes the lock and the phase is pending again
    after = pipetester.run("reset", "pipeline.py", "--item", "b", "--phase", "1")
    assert after.ret == 0 and after.stdout.startswith("reset b: 1 research (in_progress)"), after
    assert statuses(pipetester, "b") == ["pending"] * 3
