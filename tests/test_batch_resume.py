"""Batch phases resumed after a kill: what a killed run left in the store's batch
records decides what is sent again, and only the provider's own word (an ended
batch's results, as stored) makes a request go out a second time."""

from __future__ import annotations

import asyncio

import pytest

from pipekit.engine.batching.batcher import Batcher
from pipekit.pipeline.loader import load
from pipekit.state.batches import BatchRecords
from pipekit.state.store import StateStore
from pipekit.testing import FakeBatch
from pipekit.testing import PipeTester


PIPELINE = """
from pipekit import phase
from pipekit.testing import FakeBatch

BATCHES = {"fake": FakeBatch("fake.json")}

@phase(1, batch="fake")
def ask(item_id):
    return [{"custom_id": f"{item_id}-{k}", "body": {"k": k}} for k in range(2)]

@phase(2)
def merge(ask):
    return " | ".join(ask[k]["content"] for k in sorted(ask))
"""


def _collect_only(pipetester: PipeTester, store: StateStore) -> None:
    """Poll and collect the recorded batches as a run does at its start, and stop there:
    the store is left as by a run killed after it marked the batch collected and before
    any item took its answers."""
    pipeline = load(str(pipetester.path / "pipeline.py"))
    batcher = Batcher(pipeline.name, pipeline.batches, store, say=lambda text, level: None)
    asyncio.run(batcher.resume())
    assert [r["collected"] for r in BatchRecords(store).submissions().values()] == [True]


def test_a_kill_after_a_batch_is_collected_sends_nothing_again(pipetester: PipeTester, any_store: str | None) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a", "b", "c")
    first = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-p", "no:prices")
    assert first.ret == 6, first
    store = first.open_store()
    try:
        _collect_only(pipetester, store)
    finally:
        store.close()

    final = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-p", "no:prices")

    assert final.ret == 0, final
    fake = FakeBatch(pipetester.path / "fake.json")
    assert fake.submitted == [["a-0", "a-1", "b-0", "b-1", "c-0", "c-1"]]  # one batch, each request once
    for item in "abc":
        state = final.state(item)
        assert state.is_done
        assert state.phase_outputs[2] == f"answer to {item}-0 | answer to {item}-1"
        assert state.phases[1].tokens_in == (10 + len(f"{item}-0")) + (10 + len(f"{item}-1"))


def test_results_read_back_are_the_results_saved(pipetester: PipeTester, any_store: str | None) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a")
    store = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-p", "no:prices").open_store()
    try:
        records = BatchRecords(store)
        results = {"w-1": {"outcome": "succeeded", "body": {"n": 1}}, "w-2": {"outcome": "errored", "error": "no"}}
        records.save_results("k1", results)
        assert records.results("k1") == results
        assert records.results("k2") == {}
    finally:
        store.close()


def test_a_collected_batch_whose_stored_results_lack_a_request_is_fetched_again_not_resent(
    pipetester: PipeTester,
) -> None:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a", "b")
    first = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-p", "no:prices")
    assert first.ret == 6, first
    store = first.open_store()
    try:
        _collect_only(pipetester, store)
        records = BatchRecords(store)
        [key] = records.submissions()
        kept = records.results(key)
        del kept["b-1"]  # stored results that do not say what became of b-1
        records.save_results(key, kept)
    finally:
        store.close()

    final = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", "-p", "no:prices", "--wait")

    assert final.ret == 0, final
    fake = FakeBatch(pipetester.path / "fake.json")
    assert fake.submitted == [["a-0", "a-1", "b-0", "b-1"]]
    assert fake.calls["results"] == 2  # fetched again, by the run that found the gap
    assert final.state("b").phase_outputs[2] == "answer to b-0 | answer to b-1"


FINDING = """
import json, os
from pipekit import phase
from pipekit.testing import FakeBatch

class Logged(FakeBatch):
    def find(self, key, requests, known=()):
        with open("finds.log", "a") as log:
            log.write(json.dumps(sorted(known)) + "\\n")
        return super().find(key, requests, known)

class TwoArguments(FakeBatch):
    def find(self, key, requests):  # a provider written before ``known``
        with open("finds.log", "a") as log:
            log.write("two arguments\\n")
        return super().find(key, requests)

Provider = TwoArguments if os.environ.get("FIND") == "two" else Logged
BATCHES = {"fake": Provider("fake.json", crash_after_submit=bool(os.environ.get("CRASH")))}

@phase(1, batch="fake")
def ask(item_id):
    return [{"custom_id": f"{item_id}-{k}", "body": {"k": k}} for k in range(2)]
"""


@pytest.mark.parametrize(("find", "logged"), [("known", '["fakebatch-1"]'), ("two", "two arguments")])
def test_resume_tells_find_the_batches_the_state_recorded(pipetester: PipeTester, find: str, logged: str) -> None:
    pipetester.make_pipeline(FINDING)
    pipetester.make_items("a")
    assert pipetester.run_subprocess("pipeline.py", "--items", "items.txt", env={"FIND": find}).ret == 6
    pipetester.make_items("a", "b")
    killed = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", env={"FIND": find, "CRASH": "1"})
    assert killed.ret == -9, killed  # right after b's batch was stored at the provider, before its id was

    final = pipetester.run_subprocess("pipeline.py", "--items", "items.txt", env={"FIND": find})

    assert final.ret == 0, final
    assert (pipetester.path / "finds.log").read_text().splitlines() == [logged]
    assert FakeBatch(pipetester.path / "fake.json").submitted == [["a-0", "a-1"], ["b-0", "b-1"]]
