"""Large outputs of a worker go to the run's store from the worker; only a reference comes back."""

from __future__ import annotations

from pathlib import Path
import pickle

from pipekit.execution.remote import OutputRoute
from pipekit.execution.remote import apply_outcome
from pipekit.execution.remote import build_call
from pipekit.execution.remote import execute_call
from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.loader import load
from pipekit.state.sqlite import SqliteStore


def test_a_1_mb_output_comes_back_as_a_reference_when_the_worker_reaches_the_store(tmp_path: Path) -> None:
    module = tmp_path / "big.py"
    module.write_text("from pipekit import phase\n\n@phase(1)\ndef big(item_id):\n    return 'x' * 1_000_000\n")
    phase = load(str(module)).phases[0]
    store = SqliteStore(tmp_path / "state.db")
    ctx = PhaseContext("a", {}, phase, 1, tmp_path / "out", checkpoints=Checkpoints(store, "a", phase.name))
    url = store.reopen_url()
    marker = tmp_path / ".reach"

    before = execute_call(build_call(str(module), phase, phase.handler, {"item_id": "a"}))
    routed = build_call(str(module), phase, phase.handler, {"item_id": "a"})
    routed.output_route, routed.inputs_by_reference = OutputRoute(url, "a", 1, str(marker)), True
    unseen = execute_call(routed)  # the marker is missing: another file system, so the bytes come back
    marker.touch()
    after = execute_call(routed)

    print(f"outcome pickled: {len(pickle.dumps(before))} bytes before, {len(pickle.dumps(after))} after")
    assert len(pickle.dumps(before)) > 1_000_000
    assert len(pickle.dumps(unseen)) > 1_000_000 and unseen.output_stored is None
    assert len(pickle.dumps(after)) < 2_000 and after.output_stored is not None
    stored = apply_outcome(after, ctx)
    assert stored == after.output_stored  # the driver does not read it back
    assert store.read_output("a", stored.ref) == "x" * 1_000_000
