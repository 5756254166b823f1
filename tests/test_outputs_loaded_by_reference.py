"""The start of a run, and a run whose workers read the store, load a large
output as its reference (``StoredOutput``); whatever needs its value still gets it."""

from __future__ import annotations

import json
from pathlib import Path
import sys
from typing import Any

import pytest

from pipekit.state.digest import output_hash
from pipekit.state.manager import PipelineStateManager
from pipekit.state.open import open_store_url
from pipekit.state.stored import StoredOutput
from pipekit.testing import PipeTester


LARGE_VALUES: list[Any] = [
    "x" * 100_000,
    {"words": ["w"] * 30_000},
    "nul \x00 " * 20_000,  # kept apart as JSON (.json): no store holds NUL inline
    ["é"] * 40_000,
]


@pytest.mark.parametrize("value", LARGE_VALUES, ids=["str", "dict", "nul", "list"])
def test_a_reference_loaded_stands_for_its_value(tmp_path: Path, store_url: str | None, value: Any) -> None:
    store = open_store_url(store_url or f"json:{tmp_path / 'state'}", pipeline="p")
    manager = PipelineStateManager("a", store)
    manager.create_state({}, [(1, "big"), (2, "next")])
    manager.complete_phase(1, value)
    manager.write_pending()

    by_value, by_reference = PipelineStateManager("a", store), PipelineStateManager("a", store)
    assert by_value.load_state() and by_reference.load_state(by_reference=True)
    assert by_value.state.phase_outputs[1] == value
    stored = by_reference.state.phase_outputs[1]
    assert type(stored) is StoredOutput
    # Fingerprints and stale checks compare hashes: the reference's is the value's.
    assert output_hash(stored) == output_hash(value)
    assert stored.read_from(store) == value

    # Saved again (a phase completes on the worker), it still refers to the same output.
    by_reference.complete_phase(2, "done")
    by_reference.write_pending()
    again = PipelineStateManager("a", store)
    assert again.load_state() and again.state.phase_outputs == {1: value, 2: "done"}
    store.close()


def test_a_phase_retired_from_a_state_loaded_by_reference_keeps_its_value(tmp_path: Path) -> None:
    store = open_store_url(f"json:{tmp_path / 'state'}", pipeline="p")
    manager = PipelineStateManager("a", store)
    manager.create_state({}, [(1, "big"), (2, "next")])
    manager.complete_phase(1, "x" * 100_000)
    manager.write_pending()

    loaded = PipelineStateManager("a", store)
    assert loaded.load_state(by_reference=True)
    assert loaded.reconcile([(1, "next")])  # "big" left the pipeline
    loaded.write_pending()

    document = json.loads((tmp_path / "state" / "a.json").read_text())
    assert document["retired_phases"]["big"]["output"] == "x" * 100_000
    assert not any((tmp_path / "state").glob("a.outputs/*"))  # kept inline among the retired now
    back = PipelineStateManager("a", store)
    assert back.load_state() and back.reconcile([(1, "next"), (2, "big")])
    assert back.state.phase_outputs[2] == "x" * 100_000


STALE_BY_A_LARGE_INPUT = '''
    from pathlib import Path
    from pipekit import phase

    @phase(1)
    def text(item_id):
        return Path("text.txt").read_text() * 100_000

    def tail_of(text):
        return text[-3:] + Path("prompt.txt").read_text()

    @phase(2, fingerprint=tail_of)
    def size(item_id, text):
        with open("size.log", "a") as log:
            log.write(item_id + "\\n")
        return len(text)
'''


def test_a_fingerprint_callable_at_the_start_of_a_run_gets_the_large_value(
    pipetester: PipeTester, any_store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    pipetester.make_pipeline(STALE_BY_A_LARGE_INPUT)
    (pipetester.path / "text.txt").write_text("abc")
    (pipetester.path / "prompt.txt").write_text("one")
    assert pipetester.run("pipeline.py", "--item", "a", "--progress", "none").ret == 0
    (pipetester.path / "size.log").unlink()
    # The callable's value changes only if it is given the text: a reference has no tail.
    (pipetester.path / "prompt.txt").write_text("two")
    result = pipetester.run("pipeline.py", "--item", "a", "--rerun-stale", "--progress", "none")
    assert result.ret == 0, result
    assert (pipetester.path / "size.log").read_text() == "a\n"
    assert result.state("a").phase_outputs[2] == 300_000
