"""Large outputs stay where the work is: a downstream phase on a worker reads its
inputs from the run's store, and neither the driver nor the scheduler carries them."""

from __future__ import annotations

from pathlib import Path
import pickle

from dask_cluster import DaskCluster
from driver_io import driver_io
from driver_io import with_driver_io
import pytest

from pipekit.engine.arguments import handler_arguments
from pipekit.execution.remote import OutputRoute
from pipekit.execution.remote import RemoteCall
from pipekit.execution.remote import build_call
from pipekit.execution.remote import execute_call
from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.loader import load
from pipekit.state.manager import PipelineStateManager
from pipekit.state.sqlite import SqliteStore
from pipekit.state.stored import StoredOutput
from pipekit.testing import PipeTester


MEGABYTE = 1_000_000
ITEMS = 8

#: A str, a large JSON value validated by a model, and a phase taking both (one as
#: the model) that says what it got; the driver counts the bytes it reads and writes.
PIPELINE = with_driver_io('''
    from pydantic import BaseModel
    from pipekit import phase

    class Doc(BaseModel):
        words: list[str]

    @phase(1)
    def text(item_id):
        return item_id + "x" * 1_000_000

    @phase(2, output=Doc)
    def doc(item_id, text):
        return {"words": [text[:20]] * 50_000}

    @phase(3)
    def check(item_id, text, doc: Doc, previous_outputs):
        return {
            "text": [type(text).__name__, len(text), text.startswith(item_id)],
            "doc": [type(doc).__name__, len(doc.words), doc.words[0]],
            "previous": [type(previous_outputs[2]).__name__, len(previous_outputs[1])],
        }
''')


@pytest.mark.slow
def test_the_driver_never_carries_a_large_output_between_phases_on_the_cluster(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    pipetester.make_pipeline(PIPELINE)
    io_file = pipetester.path / "driver-io.txt"
    items = [f"item-{n}" for n in range(ITEMS)]
    result = pipetester.run_subprocess(
        "pipeline.py",
        *[arg for item in items for arg in ("--item", item)],
        "-j",
        "2",
        "--executor",
        "dask",
        "--dask-scheduler",
        dask_cluster.address,
        env={"DRIVER_IO_FILE": str(io_file)},
        timeout=180,
    )
    assert result.ret == 0, result
    for item in items:
        assert result.state(item).phase_outputs[3] == {
            "text": ["str", len(item) + MEGABYTE, True],
            "doc": ["Doc", 50_000, (item + "x" * 20)[:20]],
            "previous": ["dict", len(item) + MEGABYTE],
        }
    # Two large outputs per item (1 MB and 1.2 MB): had the driver read them back, or sent
    # them to the next phase, or stored them again, it would have moved over 2 MB per item.
    # (The JSON store: SQLite's checkpoints would copy the workers' pages in whichever
    # process commits, the driver's included.)
    moved = driver_io(io_file)
    print(f"driver read and wrote {moved:,} bytes during the run ({ITEMS} items, 2 large outputs each)")
    assert moved < ITEMS * MEGABYTE // 4



@pytest.mark.slow
def test_the_library_gets_the_values_and_small_models_reach_the_workers(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    from distributed import Client

    import pipekit

    pipetester.make_pipeline("""
        from pydantic import BaseModel
        from pipekit import phase

        class Tag(BaseModel):
            name: str

        @phase(1)
        def big(item_id):
            return {"lines": [item_id] * 30_000}

        @phase(2, output=Tag)
        def tag(item_id):
            return Tag(name=item_id)

        @phase(3)
        def both(big, tag: Tag):
            return [len(big["lines"]), type(tag).__name__, tag.name]
    """)
    with Client(dask_cluster.address) as client:
        result = pipekit.run(pipetester.path / "pipeline.py", ["a"], state_dir=pipetester.path / "state",
                             client=client, progress="none")
    assert result.exit_status == 0
    outputs = result.states["a"].phase_outputs
    assert outputs == {1: {"lines": ["a"] * 30_000}, 2: {"name": "a"}, 3: [30_000, "Tag", "a"]}
    assert any(pipetester.path.glob("state/*.outputs/1.*.json"))  # kept apart, by the worker


def two_phases(tmp_path: Path) -> tuple[Path, list]:
    module = tmp_path / "two.py"
    module.write_text(
        "from pipekit import phase\n\n"
        "@phase(1)\ndef big(item_id):\n    return 'x' * 1_000_000\n\n"
        "@phase(2)\ndef size(item_id, big):\n    return len(big)\n"
    )
    return module, load(str(module)).phases


class ReadsTheStore:
    """An executor whose workers read large outputs from the store themselves."""

    takes_stored_outputs = True


def test_a_downstream_call_carries_the_reference_not_the_megabyte(tmp_path: Path, store_url: str | None) -> None:
    from pipekit.state.open import open_store_url

    module, (big, size) = two_phases(tmp_path)
    store = open_store_url(store_url or f"json:{tmp_path / 'state'}", pipeline="two")
    manager = PipelineStateManager("a", store)
    manager.create_state({}, [big, size])
    route = OutputRoute(store.reopen_url() or "", "a", 1, None)
    produced = build_call(str(module), big, big.handler, {"item_id": "a"})
    produced.output_route, produced.inputs_by_reference = route, True
    outcome = execute_call(produced)
    assert isinstance(outcome.output_stored, StoredOutput)
    manager.complete_phase(1, outcome.output_stored)
    ctx = PhaseContext("a", {}, size, 1, tmp_path / "out", checkpoints=Checkpoints(store, "a", size.name))

    def payload(executor: object) -> RemoteCall:
        kwargs = handler_arguments([big, size], manager.state, size, ctx, size.handler, {}, executor)
        call = build_call(str(module), size, size.handler, kwargs)
        call.output_route = OutputRoute(route.store_url, "a", 2, None)
        call.inputs_by_reference = executor is not None
        return call

    before, after = payload(None), payload(ReadsTheStore())
    print(f"task payload of the downstream phase: {len(pickle.dumps(before)):,} bytes before, "
          f"{len(pickle.dumps(after)):,} after")
    assert len(pickle.dumps(before)) > MEGABYTE
    assert len(pickle.dumps(after)) < 2_000
    assert execute_call(after).value == execute_call(before).value == MEGABYTE
    manager.write_pending()  # the state refers to the output the worker stored, as if the driver had
    again = PipelineStateManager("a", store)
    assert again.load_state() and again.state.phase_outputs[1] == "x" * MEGABYTE
    store.close()


def test_a_worker_that_cannot_see_the_store_runs_nothing_and_gets_the_values(tmp_path: Path) -> None:
    from pipekit.execution.remote import InputsUnreachable
    from pipekit.pipeline.outputs import inline_stored

    module, (big, size) = two_phases(tmp_path)
    store = SqliteStore(tmp_path / "state.db")
    marker = tmp_path / ".reach"
    marker.touch()
    produced = build_call(str(module), big, big.handler, {"item_id": "a"})
    produced.output_route = OutputRoute(store.reopen_url() or "", "a", 1, str(marker))
    produced.inputs_by_reference = True
    stored = execute_call(produced).output_stored
    assert isinstance(stored, StoredOutput)

    marker.unlink()  # as a worker on another machine sees it
    call = build_call(str(module), size, size.handler, {"item_id": "a", "big": stored})
    call.output_route = OutputRoute(store.reopen_url() or "", "a", 2, str(marker))
    call.inputs_by_reference = True
    unreachable = execute_call(call)
    assert isinstance(unreachable.error, InputsUnreachable) and unreachable.value is None

    call.kwargs = inline_stored(call.kwargs, lambda s: store.read_output(s.item_id, s.ref))
    assert execute_call(call).value == MEGABYTE


#: Phase 1 writes a megabyte; phase 2 fails while the flag file exists, so a
#: second run resumes every item at phase 2, whose worker reads the megabyte itself.
RESUMED = with_driver_io('''
    from pathlib import Path
    from pipekit import phase

    FLAG = Path(__file__).parent / "fail-phase-2"

    @phase(1)
    def text(item_id):
        return item_id + "x" * 1_000_000

    @phase(2)
    def size(text):
        if FLAG.exists():
            raise RuntimeError("not yet")
        return len(text)
''')


@pytest.mark.slow
def test_a_resumed_run_on_the_cluster_does_not_read_the_earlier_large_outputs_on_the_driver(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    pipetester.make_pipeline(RESUMED)
    flag = pipetester.path / "fail-phase-2"
    flag.touch()
    io_file = pipetester.path / "driver-io.txt"
    items = [f"item-{n}" for n in range(ITEMS)]
    args = [*[arg for item in items for arg in ("--item", item)], "-j", "2", "--executor", "dask",
            "--dask-scheduler", dask_cluster.address]
    first = pipetester.run_subprocess("pipeline.py", *args, env={"DRIVER_IO_FILE": str(io_file)}, timeout=180)
    assert first.ret != 0, first
    assert all(first.state(item).phases[2].status == "failed" for item in items)
    flag.unlink()

    resumed = pipetester.run_subprocess("pipeline.py", *args, env={"DRIVER_IO_FILE": str(io_file)}, timeout=180)
    assert resumed.ret == 0, resumed
    for item in items:
        assert resumed.state(item).phase_outputs == {1: item + "x" * MEGABYTE, 2: len(item) + MEGABYTE}
    # The states the resumed run loads refer to eight megabytes; reading them
    # (had the driver loaded the values) moves over a megabyte per item.
    moved = driver_io(io_file)
    print(f"the resumed driver read and wrote {moved:,} bytes ({ITEMS} items, 1 MB stored by a worker each)")
    assert moved < ITEMS * MEGABYTE // 4
