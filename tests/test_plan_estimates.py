"""`pipekit plan`'s estimates and items, through the CLI: time divided by the
run's concurrency, stale cost marked as an upper bound, and the items the state
holds when no source names any (#10)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

from pipekit.display.format import estimate
from pipekit.testing import PipeTester


PIPELINE = '''
    import time
    from pipekit import phase, PhaseResult

    @phase(1)
    def draft(item_id):
        time.sleep(0.02)
        return PhaseResult(f"draft of {item_id}", cost_usd=0.01)

    @phase(2, concurrency=2)
    def check(item_id, draft):
        time.sleep(0.02)
        return f"checked {draft}"

    @phase(3)
    def archive(item_id):
        return f"archived {item_id}"
'''

NEW = [f"new-{n}" for n in range(8)]
AB = ("--item", "a", "--item", "b")


@pytest.fixture
def tester(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> PipeTester:
    """The pipeline (no items() of its own) run once over a and b."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", *AB, "--progress", "none")
    assert result.ret == 0, result
    return pipetester


def plan(tester: PipeTester, *args: str) -> dict[str, Any]:
    result = tester.run("plan", "pipeline.py", "--json", *args)
    assert result.ret == 0, result
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def edit(tester: PipeTester, old: str, new: str) -> None:
    path = tester.path / "pipeline.py"
    text = path.read_text()
    assert old in text, old
    mtime = path.stat().st_mtime
    path.write_text(text.replace(old, new))
    os.utime(path, (mtime + 2, mtime + 2))


def test_time_is_divided_by_the_concurrency_the_run_would_have(tester: PipeTester) -> None:
    items = [arg for item in NEW for arg in ("--item", item)]
    one = plan(tester, *items)
    assert [p["concurrency"] for p in one["phases"]] == [1, 1, 1]
    sequential = [p["estimated_seconds"] for p in one["phases"]]
    assert sequential[0] == pytest.approx(8 * one["phases"][0]["mean_duration_seconds"])

    # -j 4: four at once, but check allows two; -j 16: no more than the 8 items.
    for workers, expected in (("4", [4, 2, 4]), ("16", [8, 2, 8])):
        document = plan(tester, *items, "-j", workers)
        assert document["workers"] == int(workers)
        assert [p["concurrency"] for p in document["phases"]] == expected
        seconds = [p["estimated_seconds"] for p in document["phases"]]
        assert seconds == pytest.approx([s / n for s, n in zip(sequential, expected, strict=True)])
        assert document["total"]["estimated_seconds"] == pytest.approx(sum(seconds))
        # Money does not depend on how many run at once.
        assert document["total"]["estimated_cost_usd"] == pytest.approx(one["total"]["estimated_cost_usd"])
        text = tester.run("plan", "pipeline.py", *items, "-j", workers)
        text.fnmatch_lines(
            [f"total: 24 cells to run; estimated {estimate(sum(seconds))}, $0.0800"], "stdout"
        )


def test_stale_cost_through_downstream_cells_says_it_is_an_upper_bound(tester: PipeTester) -> None:
    edit(tester, '"archived {item_id}"', '"archived: {item_id}"')
    document = plan(tester, *AB)
    assert document["total"]["stale_not_included"] == 2
    assert document["total"]["stale_estimate_is_upper_bound"] is False
    exact = tester.run("plan", "pipeline.py", *AB)
    exact.fnmatch_lines(["2 stale cells not included (estimated *, $0.0000): add --rerun-stale*"], "stdout")

    # check follows draft only if draft's new output differs: counted, as the most it costs.
    edit(tester, 'f"draft of {item_id}"', 'f"a draft of {item_id}"')
    document = plan(tester, *AB)
    assert document["total"]["stale_not_included"] == 6
    assert document["total"]["stale_estimate_is_upper_bound"] is True
    text = tester.run("plan", "pipeline.py", *AB)
    text.fnmatch_lines(
        [
            "phase 2 check: stale 2, not included (upstream stale 2)",
            "6 stale cells not included (estimated at most *, $0.0200: "
            "assumes every downstream cell re-runs): add --rerun-stale to include them*",
        ],
        "stdout",
    )
    included = tester.run("plan", "pipeline.py", *AB, "--rerun-stale")
    included.fnmatch_lines(
        ["total: 6 cells to run; estimated at most *, $0.0200 (assumes every downstream cell re-runs)"], "stdout"
    )
    assert plan(tester, *AB, "--rerun-stale")["total"]["estimate_is_upper_bound"] is True

    # Once draft has run again with a new output, check's input really changed: no longer a bound.
    edit(tester, "@phase(1)", '@phase(1, on_change="rerun")')
    assert tester.run("pipeline.py", *AB, "--progress", "none").ret == 0
    document = plan(tester, *AB, "--rerun-stale")
    assert document["total"]["run"] == 4
    assert document["total"]["estimate_is_upper_bound"] is False


def test_plan_takes_the_items_the_state_holds_as_status_does(tester: PipeTester) -> None:
    status = tester.run("status", "pipeline.py")
    assert status.ret == 0, status
    result = tester.run("plan", "pipeline.py")
    assert result.ret == 0, result
    result.fnmatch_lines(
        ["plan for pipeline: 2 items, 3 phases", "phase 1 draft: skip 2", "total: 0 cells to run*"], "stdout"
    )
    assert plan(tester, "--limit", "1")["items"] == 1
    # An item source still wins over the state.
    assert plan(tester, "--item", "c")["items"] == 1


def test_plan_without_items_or_state_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("plan", "pipeline.py")
    assert result.ret == 4
    assert "no items for pipeline: give --item/--items, or define items()" in result.stderr
