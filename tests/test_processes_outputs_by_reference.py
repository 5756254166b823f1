"""``--executor processes`` keeps large outputs where the work is, as Dask does: the
worker process stores a large output in the run's store and reads a later phase's
inputs there, and the driver neither carries them through its pipes nor reads them
when a run resumes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from driver_io import driver_io
from driver_io import with_driver_io
import pytest

from pipekit.execution.processes import ProcessExecutor
from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.loader import load
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.stored import StoredOutput
from pipekit.testing import PipeTester


MEGABYTE = 1_000_000
ITEMS = 4

#: A 1 MB str, a 1.2 MB JSON value validated by a model, and a phase taking both (one
#: as the model) that says what it got; it fails while the flag file exists, so a
#: second run resumes every item there, after two large outputs.
PIPELINE = with_driver_io('''
    from pathlib import Path
    from pydantic import BaseModel
    from pipekit import phase

    FLAG = Path(__file__).parent / "fail-phase-3"

    class Doc(BaseModel):
        words: list[str]

    @phase(1)
    def text(item_id):
        return item_id + "x" * 1_000_000

    @phase(2, output=Doc)
    def doc(item_id, text):
        return Doc(words=[text[:20]] * 50_000)

    @phase(3)
    def check(item_id, text, doc: Doc, previous_outputs):
        if FLAG.exists():
            raise RuntimeError("not yet")
        return {
            "text": [type(text).__name__, len(text), text == item_id + "x" * 1_000_000],
            "doc": [type(doc).__name__, len(doc.words), doc.words[0]],
            "previous": [type(previous_outputs[1]).__name__, len(previous_outputs[1]),
                         type(previous_outputs[2]).__name__, len(previous_outputs[2]["words"])],
        }
''')


@pytest.mark.slow
def test_a_resumed_run_in_worker_processes_does_not_read_the_earlier_large_outputs_on_the_driver(
    pipetester: PipeTester, any_store: str | None
) -> None:
    # With SQLite whichever process checkpoints the WAL copies the workers' pages,
    # the driver's included: its bytes say nothing of who carried the outputs.
    counts_io = not (any_store or "").startswith("sqlite:")
    pipetester.make_pipeline(PIPELINE)
    flag = pipetester.path / "fail-phase-3"
    flag.touch()
    io_file = pipetester.path / "driver-io.txt"
    items = [f"item-{n}" for n in range(ITEMS)]
    args = [*[arg for item in items for arg in ("--item", item)], "-j", "2", "--executor", "processes"]
    env = {"DRIVER_IO_FILE": str(io_file)}
    first = pipetester.run_subprocess("pipeline.py", *args, env=env)
    assert first.ret == 1, first
    assert all(first.state(item).phases[3].status == "failed" for item in items)
    # Two large outputs per item (1 MB and 1.2 MB), each stored once, by its worker.
    produced = driver_io(io_file)
    assert produced < ITEMS * MEGABYTE // 4 or not counts_io, f"the first run's driver moved {produced:,} bytes"
    if any_store is None:
        assert len(list(pipetester.path.glob("state/pipeline/*.outputs/*"))) == 2 * ITEMS
    flag.unlink()

    resumed = pipetester.run_subprocess("pipeline.py", *args, env=env)
    assert resumed.ret == 0, resumed
    for item in items:
        outputs = resumed.state(item).phase_outputs
        assert outputs[1] == item + "x" * MEGABYTE
        assert outputs[2] == {"words": [(item + "x" * 20)[:20]] * 50_000}
        assert outputs[3] == {
            "text": ["str", len(item) + MEGABYTE, True],
            "doc": ["Doc", 50_000, (item + "x" * 20)[:20]],
            "previous": ["str", len(item) + MEGABYTE, "dict", 50_000],
        }
    # The states the resumed run loads refer to 8.8 MB: had the driver read them,
    # or sent them down its pipes to phase 3's workers, it would move over 2 MB per item.
    moved = driver_io(io_file)
    print(f"the resumed driver read and wrote {moved:,} bytes ({ITEMS} items, 2 large outputs each)")
    assert moved < ITEMS * MEGABYTE // 4 or not counts_io


class _Unreopenable(JsonDirStore):
    """A store no other process can open (as a plugin's store may be)."""

    def reopen_url(self) -> None:  # type: ignore[override]
        return None


def test_a_store_no_worker_can_open_has_the_driver_send_the_values(tmp_path: Path) -> None:
    module = tmp_path / "two.py"
    module.write_text(
        "from pipekit import phase\n\n"
        "@phase(1)\ndef big(item_id):\n    return 'x' * 1_000_000\n\n"
        "@phase(2)\ndef size(item_id, big, previous_outputs):\n    return [len(big), len(previous_outputs[1])]\n"
    )
    big, size = load(str(module)).phases
    store = _Unreopenable(tmp_path / "state")
    stored = StoredOutput("a", store.write_output("a", 1, "x" * MEGABYTE), None)
    ctx = PhaseContext("a", {}, size, 1, tmp_path / "out", checkpoints=Checkpoints(store, "a", size.name))
    executor = ProcessExecutor(str(module), 1)

    async def run() -> object:
        try:
            kwargs = {"item_id": "a", "big": stored, "previous_outputs": {1: stored}}
            return await executor.start(size, size.handler, kwargs, ctx)
        finally:
            await executor.aclose()

    assert asyncio.run(run()) == [MEGABYTE, MEGABYTE]
