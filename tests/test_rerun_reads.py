"""A re-run of finished items reads each state once and writes nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pipekit.state.jsondir import JsonDirStore
from pipekit.testing import PipeTester


PIPELINE = """
    from pipekit import phase

    @phase(1)
    def one(item_id):
        return "1-" + item_id

    @phase(2)
    def two(one, metadata):
        return one + str(metadata.get("n", ""))
"""


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counter: Counter[str] = Counter()
    original = JsonDirStore.load

    def load(store: JsonDirStore, item_id: str) -> dict[str, Any] | None:
        counter[item_id] += 1
        return original(store, item_id)

    monkeypatch.setattr(JsonDirStore, "load", load)
    return counter


def test_finished_items_are_read_once_and_fire_no_hooks(pipetester: PipeTester, reads: Counter[str]) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a", "b", "c")
    assert pipetester.run("pipeline.py", "--items", "items.txt").ret == 0
    reads.clear()

    again = pipetester.run("pipeline.py", "--items", "items.txt")

    assert again.ret == 0
    assert again.event_names() == ["run_start", "run_finish"]
    assert again.calls("pipekit_run_finish")[0]["run"].items_completed == 3
    assert reads == {"a": 1, "b": 1, "c": 1}


def test_a_reset_item_or_new_metadata_is_not_taken_for_finished(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items({"id": "a"}, {"id": "b"}, {"id": "c"}, name="items.jsonl")
    assert pipetester.run("pipeline.py", "--items", "items.jsonl").ret == 0
    assert pipetester.run("reset", "pipeline.py", "--item", "c", "--phase", "2").ret == 0
    pipetester.make_items({"id": "a"}, {"id": "b", "n": 7}, {"id": "c"}, name="items.jsonl")

    again = pipetester.run("pipeline.py", "--items", "items.jsonl")

    assert again.ret == 0
    started = sorted(call["item"].id for call in again.calls("pipekit_item_start"))
    assert started == ["c"]
    assert again.state("b").metadata["n"] == 7  # saved: not skipped as finished
    assert [c["phase"].num for c in again.calls("pipekit_phase_start")] == [2]
    assert again.calls("pipekit_run_finish")[0]["run"].items_completed == 3


def test_the_forecast_shares_the_start_of_run_read(pipetester: PipeTester, reads: Counter[str]) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a", "b")
    assert pipetester.run("pipeline.py", "--items", "items.txt").ret == 0
    assert pipetester.run("reset", "pipeline.py", "--item", "b", "--phase", "2").ret == 0
    reads.clear()

    again = pipetester.run("pipeline.py", "--items", "items.txt")

    assert again.ret == 0
    again.fnmatch_lines(["pipekit: forecast: ~$0.00 to finish 1 items (mean cost per phase of 3 completed executions)"])
    # a: the start-of-run read only; b: that read, then under its lock to run it.
    assert reads == {"a": 1, "b": 2}
    assert [c["phase"].num for c in again.calls("pipekit_phase_start")] == [2]
