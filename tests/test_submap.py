"""Durable sub-items: ``ctx.map`` calls ``fn`` once per finished element, across
kills, failures, reordered input and edited code, and counts what it paid.

The pipeline's ``fn`` appends the key of every call to ``calls.log``, so a test
counts the calls (and so what was paid) a run made. A file ``kill-at-N`` kills
the process inside the call for element N, after it recorded its cost; an
element named in ``fail.txt`` raises.
"""

from __future__ import annotations

import json

import pytest

from pipekit.testing import PipeTester


BOOK = '''
    import asyncio, json, os, signal
    from pathlib import Path
    from pipekit import phase

    def chapters():
        return json.loads(Path("chapters.json").read_text())

    def chapter(title, ctx):
        with open("calls.log", "a") as f:
            f.write(title + "\\n")
        ctx.record_cost(tokens_in=100, tokens_out=10, cost_usd=0.01)
        if Path(f"kill-at-{title}").exists():
            Path(f"kill-at-{title}").unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        if Path("fail.txt").exists() and title in Path("fail.txt").read_text().split():
            raise ValueError(f"no summary for {title}")
        return {"title": title, "words": len(title)}

    @phase(1, fingerprint=chapters)
    def summarise(item_id, ctx):
        parts = ctx.map(chapter, chapters(), key=KEY, concurrency=1, allow_failures=ALLOW)
        return MERGE
'''

MERGE = '[p["title"] if p else None for p in parts]'


def book(
    tester: PipeTester, *, key: str = "None", allow: str = "0", merge: str = MERGE, titles: int = 6
) -> None:
    tester.make_pipeline(BOOK.replace("KEY", key).replace("ALLOW", allow).replace("MERGE", merge))
    if not (tester.path / "chapters.json").exists():
        (tester.path / "chapters.json").write_text(json.dumps([f"c{n}" for n in range(titles)]))


def calls(tester: PipeTester) -> list[str]:
    log = tester.path / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


@pytest.mark.slow
def test_a_kill_after_three_of_six_calls_only_the_unfinished_on_the_rerun(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "kill-at-c3").touch()
    killed = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert killed.ret == -9, killed
    assert calls(pipetester) == ["c0", "c1", "c2", "c3"]

    resumed = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert resumed.ret == 0, resumed
    assert calls(pipetester) == ["c3", "c4", "c5"]  # the one in flight and the two never started
    assert resumed.state("a").phase_outputs[1] == ["c0", "c1", "c2", "c3", "c4", "c5"]


@pytest.mark.slow
def test_cost_a_sub_item_recorded_before_a_kill_is_counted_after_the_resume(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "kill-at-c3").touch()
    assert pipetester.run_subprocess("pipeline.py", "--item", "a").ret == -9
    resumed = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert resumed.ret == 0, resumed
    # Seven calls paid for: c0-c3 in the killed run (c3 died after paying), c3-c5 now.
    phase = resumed.state("a").phases[1]
    assert (phase.tokens_in, phase.tokens_out, round(phase.cost_usd, 6)) == (700, 70, 0.07)
    assert round(resumed.state("a").total_cost_usd, 6) == 0.07
    assert "cost $0.0700 this run" in resumed.stderr
    # Only the sub-items this run finished are reported: c0-c2 finished before the kill.
    finished = sorted(e["key"] for name, e in resumed.events if name == "subitem_finish")
    assert finished == ["3", "4", "5"], finished


def test_one_failing_element_fails_the_phase_naming_it_and_only_it_is_called_again(
    pipetester: PipeTester, any_store: str | None
) -> None:
    book(pipetester)
    (pipetester.path / "fail.txt").write_text("c4")
    failed = pipetester.run("pipeline.py", "--item", "a")
    assert failed.ret == 1, failed
    assert calls(pipetester) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    error = failed.state("a").phases[1].error or ""
    assert "1 of 6 sub-items failed" in error and "'4' (ValueError: no summary for c4)" in error

    (pipetester.path / "fail.txt").unlink()
    fixed = pipetester.run("pipeline.py", "--item", "a")
    assert fixed.ret == 0, fixed
    assert calls(pipetester) == ["c4"]
    assert fixed.state("a").phases[1].status == "completed"
    # The failed attempt's usage was saved with it: all seven calls are counted once.
    assert round(fixed.state("a").phases[1].cost_usd, 6) == 0.07


def test_reordered_input_with_key_calls_nothing_again(pipetester: PipeTester) -> None:
    book(pipetester, key="lambda title: title")
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    assert len(calls(pipetester)) == 6
    (pipetester.path / "chapters.json").write_text(json.dumps(["c5", "c4", "c3", "c2", "c1", "c0"]))

    rerun = pipetester.run("pipeline.py", "--item", "a", "--rerun-stale")
    assert rerun.ret == 0, rerun
    assert calls(pipetester) == []
    assert rerun.state("a").phase_outputs[1] == ["c5", "c4", "c3", "c2", "c1", "c0"]  # in the new order


def test_a_changed_element_is_called_again_and_no_other(pipetester: PipeTester) -> None:
    book(pipetester, key="lambda title: title[:2]")
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    calls(pipetester)
    (pipetester.path / "chapters.json").write_text(json.dumps(["c0", "c1", "c2-revised", "c3", "c4", "c5"]))
    rerun = pipetester.run("pipeline.py", "--item", "a", "--rerun-stale")
    assert rerun.ret == 0, rerun
    assert calls(pipetester) == ["c2-revised"]


def test_editing_the_merge_step_reruns_the_phase_without_calling_fn(pipetester: PipeTester) -> None:
    book(pipetester)
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    calls(pipetester)
    book(pipetester, merge='" + ".join(p["title"] for p in parts)')

    rerun = pipetester.run("pipeline.py", "--item", "a", "--rerun-stale")
    assert rerun.ret == 0, rerun
    assert rerun.state("a").phase_outputs[1] == "c0 + c1 + c2 + c3 + c4 + c5"  # the phase did run again
    assert calls(pipetester) == []


def test_editing_fn_calls_it_again_for_every_element(pipetester: PipeTester) -> None:
    book(pipetester)
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    calls(pipetester)
    # fn is not the handler: its edit alone leaves the phase fresh; with the merge edited too it re-runs.
    book(pipetester, merge="[p['title'] for p in parts]")
    source = (pipetester.path / "pipeline.py").read_text()
    (pipetester.path / "pipeline.py").write_text(source.replace('"words": len(title)', '"words": 2 * len(title)'))
    assert pipetester.run("pipeline.py", "--item", "a", "--rerun-stale").ret == 0
    assert len(calls(pipetester)) == 6


def test_force_and_reset_drop_the_sub_items(pipetester: PipeTester) -> None:
    book(pipetester)
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    calls(pipetester)
    assert pipetester.run("pipeline.py", "--item", "a", "--force").ret == 0
    assert len(calls(pipetester)) == 6
    assert pipetester.run("reset", "pipeline.py", "--item", "a").ret == 0
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    assert len(calls(pipetester)) == 6


def test_allow_failures_completes_with_none_at_the_failed_positions(pipetester: PipeTester) -> None:
    book(pipetester, allow="1")
    (pipetester.path / "fail.txt").write_text("c1")
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    assert result.state("a").phase_outputs[1] == ["c0", None, "c2", "c3", "c4", "c5"]

    (pipetester.path / "fail.txt").write_text("c1 c2")
    book(pipetester, allow="0.2")  # a fifth of six: one failure at most
    assert pipetester.run("pipeline.py", "--item", "a", "--force").ret == 1


def test_a_duplicate_key_is_an_error_naming_it(pipetester: PipeTester) -> None:
    book(pipetester, key="lambda title: title[0]")
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1
    assert "duplicate key 'c'" in (result.state("a").phases[1].error or "")
    assert calls(pipetester) == []


CAPPED = '''
    import asyncio
    from pathlib import Path
    from pipekit import phase

    running = 0
    highest = 0

    async def call(n):
        global running, highest
        running += 1
        highest = max(highest, running)
        await asyncio.sleep(0.02)
        running -= 1
        return n

    @phase(1)
    async def fan_out(item_id, ctx):
        results = await ctx.map(call, range(20), concurrency=3)
        Path(f"highest-{item_id}").write_text(str(highest))
        return sum(results)
'''


def test_concurrency_caps_the_calls_in_flight_even_with_one_worker(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(CAPPED)
    result = pipetester.run("pipeline.py", "--item", "a", "-j", "1")
    assert result.ret == 0, result
    assert result.state("a").phase_outputs[1] == sum(range(20))
    assert (pipetester.path / "highest-a").read_text() == "3"


def test_sub_items_in_worker_processes_are_kept_by_the_worker(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "fail.txt").write_text("c2")
    failed = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert failed.ret == 1, failed
    assert len(calls(pipetester)) == 6
    (pipetester.path / "fail.txt").unlink()
    fixed = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert fixed.ret == 0, fixed
    assert calls(pipetester) == ["c2"]
    assert round(fixed.state("a").phases[1].cost_usd, 6) == 0.07


def test_the_summary_counts_sub_items_and_jsonl_has_their_events(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "fail.txt").write_text("c4")
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--progress", "simple")
    assert result.ret == 1, result
    assert "sub-items: 5 done, 1 failed" in result.stderr, result.stderr
    finished = [(e["key"], e["status"]) for name, e in result.events if name == "subitem_finish"]
    assert sorted(finished) == [(str(n), "failed" if n == 4 else "done") for n in range(6)]
    failed = next(e for name, e in result.events if name == "subitem_finish" and e["status"] == "failed")
    assert failed["label"] == "chapter" and failed["error"] == "ValueError: no summary for c4"


def test_status_item_shows_the_map_counts_and_the_failed_keys(pipetester: PipeTester) -> None:
    book(pipetester)
    (pipetester.path / "fail.txt").write_text("c4")
    assert pipetester.run("pipeline.py", "--item", "a").ret == 1
    status = pipetester.run("status", "pipeline.py", "--item", "a")
    assert "map chapter: 5 done, 1 failed, 6 in all" in status.stdout, status.stdout
    assert "4: ValueError: no summary for c4" in status.stdout


LARGE = '''
    import os, signal
    from pathlib import Path
    from pipekit import phase

    def chapter(n):
        with open("calls.log", "a") as f:
            f.write(f"{n}\\n")
        if Path(f"kill-at-{n}").exists():
            Path(f"kill-at-{n}").unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"n": n, "text": str(n) * 200_000}

    @phase(1)
    def summarise(item_id, ctx):
        parts = ctx.map(chapter, range(4), concurrency=1)
        assert all(p["text"] == str(n) * 200_000 for n, p in enumerate(parts)), "a result came back changed"
        return len(parts)
'''


@pytest.mark.slow
def test_a_large_sub_item_result_is_kept_in_the_outputs_folder_and_read_back_after_a_kill(
    pipetester: PipeTester, any_store: str | None
) -> None:
    pipetester.make_pipeline(LARGE)
    (pipetester.path / "kill-at-2").touch()
    assert pipetester.run_subprocess("pipeline.py", "--item", "a").ret == -9
    assert calls(pipetester) == ["0", "1", "2"]
    resumed = pipetester.run_subprocess("pipeline.py", "--item", "a")
    assert resumed.ret == 0, resumed
    assert calls(pipetester) == ["2", "3"]  # 0 and 1 read back from where they were kept
    assert resumed.state("a").phase_outputs[1] == 4
    store = resumed.open_store()
    try:
        stored = store.load_checkpoints("a", "summarise:sub")
    finally:
        store.close()
    records = [value for key, value in stored.items() if key.startswith("[")]
    assert len(records) == 4 and all(r["result"] is None and r["result_ref"] for r in records), records
    assert max(len(json.dumps(r)) for r in records) < 64 * 1024  # the records stay small

    # --force drops the sub-items and their results' files.
    forced = pipetester.run("pipeline.py", "--item", "a", "--force")
    assert forced.ret == 0, forced
    assert len(calls(pipetester)) == 4
