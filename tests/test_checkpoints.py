"""``ctx.checkpoint``: work inside a phase survives a crash, a retry and a resume."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipekit.pipeline.checkpoints import CheckpointError
from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.manager import PipelineStateManager
from pipekit.state.store import StateStore
from pipekit.testing import PipeTester


CHAPTERS = '''
    import json, os, signal
    from pathlib import Path
    from pipekit import phase

    def summarise(number):
        with open("calls.log", "a") as f:
            f.write(json.dumps(number) + "\\n")
        return {"chapter": number, "summary": f"summary {number}"}

    @phase(1)
    def book(item_id, ctx):
        summaries = []
        for number in range(5):
            summaries.append(ctx.checkpoint(f"chapter-{number}", summarise, number))
            if number == 2 and Path("kill-after-3").exists():
                Path("kill-after-3").unlink()
                os.kill(os.getpid(), signal.SIGKILL)
        return " / ".join(s["summary"] for s in summaries)
'''


def calls(tester: PipeTester) -> list[Any]:
    log = tester.path / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_a_phase_killed_after_3_of_5_checkpoints_pays_only_for_the_last_2(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(CHAPTERS)
    (pipetester.path / "kill-after-3").touch()
    killed = pipetester.run_subprocess("pipeline.py", "--item", "war and peace")
    assert killed.ret == -9, killed
    assert calls(pipetester) == [0, 1, 2]
    assert killed.state("war and peace").phases[1].status == "in_progress"

    resumed = pipetester.run_subprocess("pipeline.py", "--item", "war and peace")
    assert resumed.ret == 0, resumed
    assert calls(pipetester) == [0, 1, 2, 3, 4]
    state = resumed.state("war and peace")
    assert state.phase_outputs[1] == " / ".join(f"summary {n}" for n in range(5))
    assert state.phases[1].attempts == 2
    # Dropped once the phase completed.
    assert not list(resumed.state_dir.glob("*.checkpoints"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executor", "store"), [("processes", None), ("processes", "sqlite"), ("dask", None)]
)
def test_a_worker_process_killed_after_3_of_5_checkpoints_kept_them(
    pipetester: PipeTester, executor: str, store: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker keeps its checkpoints in the run's store itself: the kill takes
    # the worker (the phase fails as worker_lost) and the next run pays for 2.
    pipetester.make_pipeline(CHAPTERS)
    (pipetester.path / "kill-after-3").touch()
    options = ["--executor", executor, "--item", "war and peace"]
    if store is not None:
        monkeypatch.setenv("PIPEKIT_STORE", f"sqlite:{pipetester.path / 'state.db'}")
    killed = pipetester.run_subprocess("pipeline.py", *options)
    assert killed.ret == 1, killed
    assert calls(pipetester) == [0, 1, 2]

    resumed = pipetester.run_subprocess("pipeline.py", *options)
    assert resumed.ret == 0, resumed
    assert calls(pipetester) == [0, 1, 2, 3, 4]
    assert resumed.state("war and peace").phases[1].attempts == 2
    if store is None:
        assert not list(resumed.state_dir.glob("*.checkpoints"))  # dropped once it completed


def test_checkpoints_live_beside_the_state_not_inside_it(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        @phase(1)
        async def fetch(ctx):
            for n in range(3):
                ctx.checkpoint(f"page {n}", lambda: "x" * 1000)  # a sync function: no await
            raise RuntimeError("network down")
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1, result
    folder = result.state_dir / "a.checkpoints" / "fetch"
    assert sorted(p.name for p in folder.iterdir()) == ["page%200.json", "page%201.json", "page%202.json"]
    assert json.loads((folder / "page%201.json").read_text()) == {"key": "page 1", "value": "x" * 1000}
    assert "x" * 1000 not in (result.state_dir / "a.json").read_text()


ASYNC_RETRY = '''
    import json
    from pathlib import Path
    from pipekit import phase

    async def translate(text):
        with open("calls.log", "a") as f:
            f.write(json.dumps(text) + "\\n")
        return (text.upper(), len(text))

    @phase(1, retries=1, retry_backoff=0.01)
    async def translate_all(ctx):
        first = await ctx.checkpoint("one", translate, "one")
        second = await ctx.checkpoint("two", translate, "two")
        if not Path("second-time").exists():
            Path("second-time").touch()
            raise RuntimeError("rate limited")
        third = await ctx.checkpoint("three", translate, "three")
        return json.dumps([first, second, third])
'''


def test_a_retried_attempt_gets_the_stored_results_of_async_functions(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ASYNC_RETRY)
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    assert calls(pipetester) == ["one", "two", "three"]
    # As JSON reads it back, on the first attempt too: the tuple is a list.
    assert json.loads(result.state("a").phase_outputs[1]) == [["ONE", 3], ["TWO", 3], ["THREE", 5]]


def test_force_drops_the_checkpoints_of_an_unfinished_phase(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ASYNC_RETRY.replace("retries=1", "retries=0"))
    first = pipetester.run("pipeline.py", "--item", "a")
    assert first.ret == 1, first
    assert calls(pipetester) == ["one", "two"]
    forced = pipetester.run("pipeline.py", "--item", "a", "--force")
    assert forced.ret == 0, forced
    assert calls(pipetester) == ["one", "two", "one", "two", "three"]


def test_a_result_that_is_not_json_fails_the_phase_naming_the_key(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(
        """
        from pipekit import phase

        @phase(1)
        def embed(ctx):
            return str(ctx.checkpoint("vectors of chapter 7", lambda: {1, 2, 3}))
        """
    )
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 1, result
    error = result.state("a").phases[1].error or ""
    assert error.startswith("CheckpointError: checkpoint 'vectors of chapter 7' of phase 'embed'")
    assert "not JSON-serialisable (set:" in error
    assert not (result.state_dir / "a.checkpoints").exists()


def test_reset_drops_checkpoints_and_complete_drops_them_after_saving(tmp_path: Any) -> None:
    store = JsonDirStore(tmp_path)
    manager = PipelineStateManager("a", store)
    manager.create_state({}, [(1, "one"), (2, "two")])
    for phase in ("one", "two"):
        Checkpoints(store, "a", phase).store_result("k", [1])
    manager.start_phase(1)
    manager.complete_phase(1, "done")
    assert store.load_checkpoints("a", "one") == {}
    assert store.load_checkpoints("a", "two") == {"k": [1]}
    manager.reset_phase(2)
    assert store.load_checkpoints("a", "two") == {}
    assert not (tmp_path / "a.checkpoints").exists()


class MemoryOnlyStore(StateStore):
    """A store that implements only the abstract methods (as a third-party one might)."""

    location = "memory"

    def load(self, item_id: str) -> dict[str, Any] | None:
        return None

    def save(self, item_id: str, document: dict[str, Any]) -> None:
        pass

    def describe(self, item_id: str) -> str:
        return item_id

    def write_output(self, item_id: str, phase_num: int, text: str) -> str:
        return ""

    def read_output(self, item_id: str, ref: str) -> str:
        return ""

    def delete_output(self, item_id: str, phase_num: int) -> None:
        pass

    def try_lock(self, item_id: str) -> Any:
        return None

    def item_ids(self) -> Any:
        return iter(())


def test_a_store_without_checkpoint_support_keeps_them_in_memory() -> None:
    store = MemoryOnlyStore()
    book = Checkpoints(store, "a", "p")
    assert book.checkpoint("k", lambda: 41) == 41
    assert Checkpoints(store, "a", "p").checkpoint("k", lambda: 42) == 41
    store.drop_checkpoints("a", "p")
    assert Checkpoints(store, "a", "p").checkpoint("k", lambda: 43) == 43
    with pytest.raises(CheckpointError, match="checkpoint 'nan'"):
        book.checkpoint("nan", lambda: float("nan"))
    with pytest.raises(TypeError, match="non-empty str"):
        book.checkpoint("", lambda: 1)


def test_pipekit_reset_drops_the_checkpoints(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ASYNC_RETRY.replace("retries=1", "retries=0"))
    assert pipetester.run("pipeline.py", "--item", "a").ret == 1
    assert (pipetester.path / "state" / "pipeline" / "a.checkpoints").is_dir()
    reset = pipetester.run("reset", "pipeline.py", "--all")
    assert reset.ret == 0, reset
    assert not (pipetester.path / "state" / "pipeline" / "a.checkpoints").exists()
    assert pipetester.run("pipeline.py", "--item", "a").ret == 0
    assert calls(pipetester) == ["one", "two", "one", "two", "three"]
