"""Group commit keeps the promise: a transition is durable before anyone hears of it.

The writer commits the transitions of many items together; these tests look
from outside the run (another connection, another process) at the moment a
phase's start or completion is announced, and after a kill right at it.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
import signal

import pytest
from store_urls import store_url_fixture

from pipekit.state.open import open_store_url
from pipekit.testing import PipeTester


PIPELINE = """
from pipekit import phase

@phase(1)
def fetch(item_id):
    return item_id

@phase(2)
def parse(fetch):
    return fetch.upper()

@phase(3)
def store(parse):
    return parse + "!"

def items():
    return [f"item{n:02d}" for n in range(40)]
"""

# A plugin that reads the item's state through a store of its own (its own
# connection, or its own reads of the files) in the hooks that announce a
# transition, and says so on stderr when the transition is not there yet.
OBSERVER = """
import os
import sys

from pipekit import hookimpl
from pipekit.state.open import open_store_url

_store = None


def _seen(item_id, num):
    global _store
    if _store is None:
        _store = open_store_url(os.environ["OBSERVED_STORE"], pipeline="pipeline")
    document = _store.load(item_id)
    return None if document is None else document["phases"][str(num)]["status"]


def _check(event, item_id, num, expected):
    seen = _seen(item_id, num)
    if seen != expected:
        print(f"NOT DURABLE at {event}: {item_id} phase {num} is {seen}, not {expected}", file=sys.stderr)
    else:
        print(f"observed {event} {item_id} {num}", file=sys.stderr)


@hookimpl
def pipekit_phase_start(item, phase):
    _check("start", item.id, phase.num, "in_progress")


@hookimpl
def pipekit_phase_complete(item, phase, result):
    _check("complete", item.id, phase.num, "completed")
"""


@pytest.fixture(params=["json", "sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "json":
        yield f"json:{tmp_path_factory.mktemp('json')}"
    else:
        for found in store_url_fixture(request.param, tmp_path_factory):
            assert found is not None
            yield found


def test_every_announced_transition_is_already_in_the_store(pipetester: PipeTester, url: str) -> None:
    pipetester.make_pipeline(PIPELINE)
    (pipetester.path / "observer.py").write_text(OBSERVER)
    env = {"OBSERVED_STORE": url, "PYTHONPATH": str(pipetester.path)}

    result = pipetester.run_subprocess("pipeline.py", "--store", url, "-j", "16", "-p", "observer", env=env)

    assert result.ret == 0, result.stderr
    assert "NOT DURABLE" not in result.stderr, result.stderr
    assert result.stderr.count("observed complete") == 40 * 3
    assert result.stderr.count("observed start") == 40 * 3


def test_a_kill_right_after_a_completion_is_printed_never_loses_it(pipetester: PipeTester, url: str) -> None:
    """Each JSONL completion event up to a kill -9 is in the store afterwards, for
    any of the items in flight: the event went out only after its commit."""
    pipetester.make_pipeline(PIPELINE)

    result = pipetester.run_subprocess(
        "pipeline.py", "--store", url, "-j", "16", kill_at=("phase_complete", None, 2), signal=signal.SIGKILL
    )

    assert result.killed
    completed = [(record["item_id"], record["phase"]) for event, record in result.events if event == "phase_complete"]
    assert completed
    store = open_store_url(url, pipeline="pipeline")
    try:
        for item_id, num in completed:
            document = store.load(item_id)
            assert document is not None, item_id
            assert document["phases"][str(num)]["status"] == "completed", json.dumps(document["phases"])
    finally:
        store.close()
