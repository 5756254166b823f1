"""A failed non-critical phase run again is no edit: its consumers are stale only
when its output really changes (#10), end to end through the CLI."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from pipekit.testing import PipeTester


PIPELINE = '''
    from pathlib import Path
    from pipekit import phase, PhaseResult

    def items():
        return ["a", "b"]

    @phase(1)
    def fetch(item_id):
        return f"page {item_id}"

    @phase(2, critical=False)
    def review(item_id, fetch):
        """Fails for an item while its file says so; else reviews it."""
        verdict = Path(f"{item_id}.review").read_text().strip()
        if verdict == "fail":
            raise RuntimeError(f"the reviewer is out for {item_id}")
        return f"{verdict}: {fetch}"

    @phase(3)
    def publish(item_id, previous_outputs):
        with Path("published.log").open("a") as log:
            log.write(item_id + "\\n")
        return PhaseResult(f"published {previous_outputs[1]}", cost_usd=0.01)
'''


@pytest.fixture(autouse=True)
def every_store(any_store: str | None) -> str | None:
    """Each scenario in each store (database stores read the stale key)."""
    return any_store


@pytest.fixture
def tester(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> PipeTester:
    """A run in which review failed for "a" (non-critical: a's publish completed)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    pipetester.make_pipeline(PIPELINE)
    (pipetester.path / "a.review").write_text("fail")
    (pipetester.path / "b.review").write_text("fine")
    result = pipetester.run("pipeline.py", "--progress", "none")
    assert result.ret == 0, result
    assert result.state("a").phases[2].status == "failed"
    assert published(pipetester) == ["a", "b"]
    return pipetester


def published(tester: PipeTester) -> list[str]:
    return sorted((tester.path / "published.log").read_text().split())


def plan(tester: PipeTester, *args: str) -> dict[str, Any]:
    result = tester.run("plan", "pipeline.py", "--json", *args)
    assert result.ret == 0, result
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def cells(document: dict[str, Any], key: str) -> dict[str, dict[str, list[str]]]:
    return {p["name"]: {c["item_id"]: c["reasons"] for c in p[key]} for p in document["phases"] if p[key]}


def test_a_failed_upstream_about_to_run_again_leaves_its_consumer_up_to_date(tester: PipeTester) -> None:
    document = plan(tester)
    assert cells(document, "run") == {"review": {"a": ["failed"]}}
    assert cells(document, "stale") == {}
    assert cells(plan(tester, "--rerun-stale"), "run") == {"review": {"a": ["failed"]}}
    why = tester.run("why", "pipeline.py", "a", "publish")
    why.fnmatch_lines(["      review:  none -> none  same", "  up to date: a run skips it"], "stdout")

    # It fails again: nothing publish consumed changed, so no run calls it stale.
    for _ in range(2):
        again = tester.run("pipeline.py", "--progress", "none", "--rerun-stale")
        assert again.ret == 0, again
        assert "stale" not in again.stderr
        assert again.state("a").phases[2].status == "failed"
    assert published(tester) == ["a", "b"]


def test_a_failed_upstream_that_then_succeeds_makes_its_consumer_stale(tester: PipeTester) -> None:
    (tester.path / "a.review").write_text("fine")
    result = tester.run("pipeline.py", "--progress", "none")
    assert result.ret == 0, result
    assert "stale" not in result.stderr
    assert result.state("a").phases[2].status == "completed"
    assert published(tester) == ["a", "b"]

    # Now publish's input did change (review: none -> a value), and both verbs agree on it.
    assert cells(plan(tester), "stale") == {"publish": {"a": ["upstream re-run"]}}
    why = tester.run("why", "pipeline.py", "a", "publish")
    why.fnmatch_lines(["      review:  none -> *  CHANGED", "  stale: upstream re-run; *--rerun-stale"], "stdout")
    rerun = tester.run("pipeline.py", "--progress", "none", "--rerun-stale")
    assert rerun.ret == 0, rerun
    assert published(tester) == ["a", "a", "b"]
    assert plan(tester, "--rerun-stale")["total"]["run"] == 0
