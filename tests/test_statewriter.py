"""State writes off the event loop: one write per change, in order, before observers hear of it."""

from __future__ import annotations

import asyncio
from collections import Counter
import json
from pathlib import Path
import threading
import time
from typing import Any

import pytest

import pipekit
from pipekit import hookimpl
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.manager import PipelineStateManager
from pipekit.state.store import encode_document
from pipekit.state.writer import StateWriter


PIPELINE = """
import asyncio
from pipekit import phase

@phase(1)
async def fetch(item_id):
    await asyncio.sleep(0.01)
    return "f-" + item_id

@phase(2)
def parse(fetch):
    return fetch.upper()

@phase(3)
async def store(parse):
    return parse + "!"
"""


class Recorder:
    """Counts saves per item and the threads that made them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.saves: Counter[str] = Counter()
        self.threads: set[str] = set()
        self.statuses: dict[str, list[str]] = {}
        original = JsonDirStore.save

        def save(store: JsonDirStore, item_id: str, document: dict[str, Any]) -> None:
            self.saves[item_id] += 1
            self.threads.add(threading.current_thread().name)
            self.statuses.setdefault(item_id, []).append(
                ",".join(p["status"] for p in document["phases"].values())
            )
            original(store, item_id, document)

        monkeypatch.setattr(JsonDirStore, "save", save)


class DiskReader:
    """An observer that reads the state file the moment it is told of a change."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.seen: list[tuple[str, str, int, str]] = []

    def _on_disk(self, item: Any, phase: Any) -> str:
        document = json.loads((self.state_dir / f"{item.id}.json").read_text())
        return str(document["phases"][str(phase.num)]["status"])

    @hookimpl
    def pipekit_phase_start(self, item: Any, phase: Any) -> None:
        self.seen.append(("start", item.id, phase.num, self._on_disk(item, phase)))

    @hookimpl
    def pipekit_phase_complete(self, item: Any, phase: Any, result: Any) -> None:
        self.seen.append(("complete", item.id, phase.num, self._on_disk(item, phase)))


@pytest.mark.parametrize("workers", [1, 8])
def test_every_change_is_on_disk_before_observers_hear_or_a_handler_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    (tmp_path / "pipe.py").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)
    recorder = Recorder(monkeypatch)
    reader = DiskReader(tmp_path / "state")
    items = [f"item{n}" for n in range(12)]

    result = pipekit.run("pipe.py", items, state_dir="state", workers=workers, plugins=[reader], progress="none")

    assert result.exit_status == 0
    # One write per phase boundary: a new item's state goes with its first start,
    # and a phase's end goes with the next phase's start (nothing is acted on between).
    assert recorder.saves == {item: 4 for item in items}
    assert recorder.statuses["item0"] == [
        "in_progress,pending,pending",
        "completed,in_progress,pending",
        "completed,completed,in_progress",
        "completed,completed,completed",
    ]
    expected = {"start": "in_progress", "complete": "completed"}
    assert len(reader.seen) == 12 * 3 * 2
    assert all(on_disk == expected[event] for event, _, _, on_disk in reader.seen)
    on_disk = json.loads((tmp_path / "state" / "item3.json").read_text())
    assert on_disk["phase_outputs"] == {"1": "f-item3", "2": "F-ITEM3", "3": "F-ITEM3!"}
    assert on_disk["pipeline_module"].endswith("pipe.py")
    if workers > 1:
        assert any(name.startswith("pipekit-save") for name in recorder.threads)
    else:
        assert recorder.threads == {"MainThread"}


def test_a_finished_run_writes_nothing_when_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pipe.py").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)
    assert pipekit.run("pipe.py", ["a", "b"], state_dir="state", progress="none").exit_status == 0
    recorder = Recorder(monkeypatch)
    assert pipekit.run("pipe.py", ["a", "b"], state_dir="state", workers=4, progress="none").exit_status == 0
    assert recorder.saves == {}


def test_the_manager_api_saves_synchronously_unless_a_runner_defers(tmp_path: Path) -> None:
    store = JsonDirStore(tmp_path)
    manager = PipelineStateManager("x", store)
    manager.create_state({}, [(1, "one")])
    assert store.load("x")["phases"]["1"]["status"] == "pending"

    writer = StateWriter(threads=2)
    assert writer.hold(manager) and not writer.hold(manager)
    manager.start_phase(1)
    manager.complete_phase(1, "out")
    assert store.load("x")["phases"]["1"]["status"] == "pending"  # not written yet
    asyncio.run(writer.flush(manager))
    assert store.load("x")["phase_outputs"] == {"1": "out"}
    manager.reset_phase(1)
    asyncio.run(writer.release(manager))  # what is left is written at once
    writer.close()
    assert store.load("x")["phases"]["1"]["status"] == "pending"
    manager.start_phase(1)
    assert store.load("x")["phases"]["1"]["status"] == "in_progress"


def test_state_files_stay_readable_json_one_phase_per_line(tmp_path: Path) -> None:
    document = {"item_id": "é", "metadata": {}, "phases": {"1": {"status": "completed"}, "2": {"status": "pending"}}}
    text = encode_document(document).decode("utf-8")
    assert json.loads(text) == document
    assert text.splitlines() == [
        "{",
        '  "item_id": "é",',
        '  "metadata": {},',
        '  "phases": {',
        '    "1": {"status": "completed"},',
        '    "2": {"status": "pending"}',
        "  }",
        "}",
    ]


def test_a_database_store_commits_the_states_queued_meanwhile_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipekit.state.sqlite import SqliteStore

    (tmp_path / "pipe.py").write_text(PIPELINE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPEKIT_STORE", f"sqlite:{tmp_path / 'state.db'}")
    batches: list[int] = []
    threads: set[str] = set()
    original = SqliteStore.save_group

    def save_group(store: SqliteStore, documents: Any, drops: Any) -> None:
        batches.append(len(documents))
        threads.add(threading.current_thread().name)
        original(store, documents, drops)

    monkeypatch.setattr(SqliteStore, "save_group", save_group)
    monkeypatch.setattr(SqliteStore, "save", lambda *args: pytest.fail("a single save at -j 8"))
    items = [f"item{n}" for n in range(12)]

    result = pipekit.run("pipe.py", items, workers=8, progress="none")

    assert result.exit_status == 0
    assert sum(batches) == 12 * 4  # every write of every item, none lost or doubled
    assert max(batches) > 1 and len(batches) < 12 * 4  # group commit happened
    assert threads and all(name.startswith("pipekit-save") for name in threads)  # off the event loop
    store = SqliteStore(tmp_path / "state.db")
    assert all(store.load(item)["status"] == "completed" for item in items)
    store.close()


def test_an_item_lock_that_arrives_after_its_waiter_gave_up_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JsonDirStore(tmp_path)
    taking = threading.Event()
    go_on = threading.Event()
    original = JsonDirStore.try_lock

    def slow_try_lock(self: JsonDirStore, item_id: str) -> Any:
        taking.set()
        go_on.wait(10)
        return original(self, item_id)

    monkeypatch.setattr(JsonDirStore, "try_lock", slow_try_lock)
    writer = StateWriter(threads=2)

    async def give_up_while_locking() -> bool:
        locking = asyncio.ensure_future(writer.lock_item(store, "a"))
        await asyncio.to_thread(taking.wait, 10)
        locking.cancel()
        go_on.set()
        for _ in range(500):  # until the lock has landed on the loop and been let go
            lock = original(JsonDirStore(tmp_path), "a")
            if lock is not None:
                lock.release()
                return True
            await asyncio.sleep(0.01)
        return False

    try:
        assert asyncio.run(give_up_while_locking()), "the lock nobody waited for is still held"
    finally:
        writer.close()


LARGE = """
from pipekit import phase

@phase(1)
def write(item_id):
    return item_id * 5000

@phase(2)
def shorten(write):
    return write[:10]
"""


def test_a_large_output_is_stored_by_the_writer_before_the_document_that_refers_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pipe.py").write_text(LARGE)
    monkeypatch.chdir(tmp_path)
    output_threads: set[str] = set()
    dangling: list[str] = []
    original_output, original_save = JsonDirStore.write_output, JsonDirStore.save

    def write_output(store: JsonDirStore, item_id: str, phase_num: int, text: str) -> str:
        output_threads.add(threading.current_thread().name)
        return original_output(store, item_id, phase_num, text)

    def save(store: JsonDirStore, item_id: str, document: dict[str, Any]) -> None:
        dangling.extend(ref for ref in document["phase_output_files"].values() if not (store.state_dir / ref).exists())
        original_save(store, item_id, document)

    monkeypatch.setattr(JsonDirStore, "write_output", write_output)
    monkeypatch.setattr(JsonDirStore, "save", save)
    items = [f"item{n}" for n in range(8)]

    result = pipekit.run("pipe.py", items, state_dir="state", workers=8, progress="none")

    assert result.exit_status == 0
    assert output_threads and all(name.startswith("pipekit-save") for name in output_threads)  # off the loop
    assert dangling == []
    store = JsonDirStore(tmp_path / "state")
    manager = PipelineStateManager("item3", store)
    assert manager.load_state()
    assert manager.state.phase_outputs == {1: "item3" * 5000, 2: "item3item3"}
    assert list(store.load("item3")["phase_output_files"]) == ["1"]
    assert len(list((tmp_path / "state").rglob("*.txt"))) == len(items)  # stored once each


def test_a_batch_that_lost_some_leases_saved_the_others(postgres_store_url: str) -> None:
    from pipekit.state.holder import LeaseLostError
    from pipekit.state.open import open_store_url

    base = f"{postgres_store_url}&lease=0.5"
    mine, rival = open_store_url(base), open_store_url(base)
    writer = StateWriter(threads=2)
    try:
        managers = {}
        for item_id in ("first", "lost", "kept"):
            assert mine.try_lock(item_id) is not None
            managers[item_id] = PipelineStateManager(item_id, mine)
            managers[item_id].create_state({}, [(1, "one")])
        mine._stop.set()  # type: ignore[attr-defined]  # stop renewing, as a paused process does
        time.sleep(1)
        assert rival.try_lock("lost") is not None
        for manager in managers.values():
            writer.hold(manager)
            manager.start_phase(1)

        async def flush_all() -> list[Any]:
            # "first" goes alone; "lost" and "kept", queued meanwhile, go in one batch after it
            flushes = [writer.flush(managers[name]) for name in ("first", "lost", "kept")]
            return await asyncio.gather(*flushes, return_exceptions=True)

        first, lost, kept = asyncio.run(flush_all())
        assert isinstance(lost, LeaseLostError) and lost.item_ids == ["lost"]
        assert first is None and kept is None  # written: the runner goes on with them
        assert rival.load("kept")["phases"]["1"]["status"] == "in_progress"
        assert rival.load("lost")["phases"]["1"]["status"] == "pending"
    finally:
        writer.close()
        mine.close()
        rival.close()
