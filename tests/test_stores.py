"""The state stores behind --store: the same guarantees from each, and what is particular to each."""

from __future__ import annotations

from collections.abc import Iterator
import json
import os
from pathlib import Path
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from pipekit import PipelineStateManager
from pipekit.outcomes import StateFileError
from pipekit.outcomes import UsageError
from pipekit.state.indexed import FinishedItem
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.localdisk import check_local
from pipekit.state.localdisk import filesystem_type
from pipekit.state.model import INLINE_OUTPUT_LIMIT
from pipekit.state.model import PipelineState
from pipekit.state.open import open_store_url
from pipekit.state.sqlite import SqliteStore
from pipekit.state.store import StateStore
from pipekit.state.urls import mask_password
from pipekit.testing import PipeTester


PHASES = [(1, "research"), (2, "draft"), (3, "review")]

PIPELINE = '''
    import json, os
    from pipekit import phase

    def log(item_id, name):
        with open("executions.log", "a") as f:
            f.write(json.dumps([item_id, name]) + "\\n")

    @phase(1)
    def research(item_id):
        log(item_id, "research")
        return f"notes on {item_id}"

    @phase(2)
    def draft(item_id, research):
        log(item_id, "draft")
        return research.upper()
'''


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[StateStore]:
    """One store of each kind, opened directly."""
    opened = open_store_url(store_url or f"json:{tmp_path / 'state'}", pipeline="pipeline")
    yield opened
    opened.close()


def executions(tester: PipeTester) -> list[list[str]]:
    log = tester.path / "executions.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# -- the same guarantees from every store -------------------------------------------------


def test_state_round_trips_with_large_outputs_kept_apart(store: StateStore) -> None:
    manager = PipelineStateManager("book/1 é", store)
    assert manager.load_state() is False
    manager.create_state({"title": "Emma"}, PHASES)
    big = "é" * INLINE_OUTPUT_LIMIT
    manager.start_phase(1)
    manager.complete_phase(1, big, tokens_in=3, cost_usd=0.5)
    manager.start_phase(2)
    manager.fail_phase(2, "boom", critical=False)
    document = store.load("book/1 é")
    assert document is not None
    assert "1" not in document["phase_outputs"]  # by reference, not inline
    again = PipelineStateManager("book/1 é", store)
    assert again.load_state() is True
    assert again.state == manager.state
    assert again.state.phase_outputs[1] == big
    again.reset_phase(1)
    assert PipelineStateManager("book/1 é", store).load_state()
    assert 1 not in store.load("book/1 é")["phase_output_files"]  # type: ignore[index]


def test_what_is_left_and_what_is_finished(store: StateStore) -> None:
    for item_id in ("done", "half", "fresh"):
        manager = PipelineStateManager(item_id, store)
        manager.create_state({"n": item_id}, PHASES)
        if item_id != "fresh":
            for num, _ in PHASES[: 3 if item_id == "done" else 1]:
                manager.start_phase(num)
                manager.complete_phase(num, "ok")
    assert sorted(store.unfinished_item_ids()) == ["fresh", "half"]
    assert sorted(store.item_ids()) == ["done", "fresh", "half"]
    assert sorted(item_id for item_id, _ in store.load_all()) == ["done", "fresh", "half"]
    finished = store.finished_items(["research", "draft", "review"])
    if finished is not None:  # the JSON directory has no index: the runner reads each item
        # no phase has a fingerprint here: an empty stale key, nothing can be stale
        assert finished == {"done": FinishedItem({"n": "done"}, 0.0, "[]")}
        assert store.finished_items(["research", "draft", "review", "added later"]) == {}


def test_item_lock_is_exclusive_across_store_instances(store: StateStore, store_url: str | None) -> None:
    other = open_store_url(store_url or f"json:{store.location}", pipeline="pipeline")
    try:
        lock = store.try_lock("a")
        assert lock is not None
        assert store.try_lock("a") is None
        assert other.try_lock("a") is None
        assert other.try_lock("b") is not None
        lock.release()
        assert other.try_lock("a") is not None
    finally:
        other.close()


def test_another_process_reopens_the_same_store_by_its_url(store: StateStore) -> None:
    # What a worker process does to keep ctx.checkpoint results in the run's store.
    url = store.reopen_url()
    assert url is not None
    other = open_store_url(url)
    try:
        other.save_checkpoint("a", "summarise", "chapter 1", {"words": 3})
        assert dict(store.load_checkpoints("a", "summarise")) == {"chapter 1": {"words": 3}}
        manager = PipelineStateManager("a", store)
        manager.create_state({}, [(1, "summarise")])
        assert other.load("a") == store.load("a")
    finally:
        other.close()


def test_a_reopened_sqlite_store_keeps_its_synchronous_setting(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db", synchronous="normal")
    other = open_store_url(store.reopen_url())
    try:
        assert isinstance(other, SqliteStore) and other.synchronous == "NORMAL"
    finally:
        other.close()
        store.close()


def test_save_many_writes_every_document(store: StateStore) -> None:
    source = PipelineStateManager("x", store)
    source.create_state({}, PHASES)
    document = store.load("x")
    assert document is not None
    documents = ((f"item-{n}", {**document, "item_id": f"item-{n}"}) for n in range(25))
    # database stores write in batches, one transaction each: make several
    count = store.save_many(documents) if isinstance(store, JsonDirStore) else store.save_many(documents, batch=7)  # type: ignore[call-arg]
    assert count == 25
    assert len(list(store.item_ids())) == 26
    assert PipelineStateManager("item-24", store).load_state()


def test_corrupt_row_is_named_and_isolated(pipetester: PipeTester, any_store: str | None) -> None:
    pipetester.make_pipeline(PIPELINE)
    first = pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    assert first.ret == 0, first
    store = first.open_store()
    try:
        corrupt(store, "a")
        (pipetester.path / "executions.log").unlink()
        manager = PipelineStateManager("b", store)
        manager.load_state()
        manager.reset_phase(2)
    finally:
        store.close()
    again = pipetester.run("pipeline.py", "--item", "a", "--item", "b")
    assert again.ret == 4, again
    assert "corrupt state file" in again.stderr, again
    assert "item 'a'" in again.stderr or "a.json" in again.stderr, again
    assert executions(pipetester) == [["b", "draft"]]  # the other item still ran
    store = again.open_store()
    try:
        with pytest.raises(StateFileError):
            PipelineStateManager("a", store).load_state()  # left as it was
    finally:
        store.close()


def corrupt(store: StateStore, item_id: str) -> None:
    """Break ``item_id``'s saved state the way each store can break."""
    location = store.location
    if location.startswith("sqlite:"):
        db = sqlite3.connect(location[len("sqlite:"):])
        with db:
            db.execute("UPDATE items SET state = '{\"schema_version\": 1, ' WHERE item_id = ?", (item_id,))
        db.close()
    elif location.startswith("postgresql:"):
        store._query(  # type: ignore[attr-defined]
            "UPDATE pipekit_items SET state = '[]'::jsonb WHERE pipeline = %s AND item_id = %s",
            (store.pipeline, item_id),  # type: ignore[attr-defined]
        )
    else:
        Path(store.describe(item_id)).write_text('{"schema_version": 1, ')


# -- SQLite ---------------------------------------------------------------------------------


def test_sqlite_refuses_a_network_file_system(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        f"server:/export {tmp_path}/shared nfs4 rw,relatime 0 0\n"
        f"//nas/x {tmp_path}/my\\040share cifs rw 0 0\n"
    )
    (tmp_path / "shared").mkdir()
    assert filesystem_type(tmp_path / "shared" / "sub", str(mounts)) == "nfs4"
    assert filesystem_type(tmp_path / "my share", str(mounts)) == "cifs"
    assert filesystem_type(tmp_path / "sharedx", str(mounts)) == "ext4"
    with pytest.raises(UsageError, match=r"network file system \(nfs4\).*local disk"):
        check_local(tmp_path / "shared", str(mounts))
    check_local(tmp_path, str(mounts))


def test_sqlite_database_is_wal_synchronous_full_with_indexed_columns(tmp_path: Path) -> None:
    store = open_store_url(f"sqlite:{tmp_path}/s.db")
    PipelineStateManager("a", store).create_state({"k": 1}, PHASES)
    db = store._db  # type: ignore[attr-defined]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    query = "EXPLAIN QUERY PLAN SELECT item_id FROM items WHERE next_phase IS NOT NULL"
    plan = " ".join(str(row) for row in db.execute(query))
    assert "items_finished" in plan
    assert db.execute("SELECT status, next_phase FROM items").fetchone() == ("pending", 1)
    store.close()
    with pytest.raises(UsageError, match="synchronous must be"):
        open_store_url(f"sqlite:{tmp_path}/s.db?synchronous=SOMETIMES")


def write_locked_new_database(path: Path) -> sqlite3.Connection:
    """A new database, still in rollback-journal mode, write-locked by another connection."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO unrelated VALUES (1)")
    return other


def test_sqlite_new_database_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    # Switching such a database to WAL gets SQLITE_BUSY at once (no busy handler), as when
    # several processes start on one new database together. Opening waits instead of failing.
    other = write_locked_new_database(tmp_path / "s.db")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        store = SqliteStore(tmp_path / "s.db", busy_timeout=30)
    finally:
        release.join()
        other.close()
    PipelineStateManager("a", store).create_state({}, PHASES)
    assert store.load("a") is not None
    store.close()
    # Held for longer than the busy timeout: a clear error, not a wait without end.
    held = write_locked_new_database(tmp_path / "t.db")
    with pytest.raises(UsageError, match="t.db cannot be opened: database is locked"):
        SqliteStore(tmp_path / "t.db", busy_timeout=0.2)
    held.close()


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--items", "items.txt"],
        ["status"],
        ["plan", "--items", "items.txt"],
        ["why", "a", "draft"],
        ["export", "--phase", "draft", "--jsonl"],
        ["report", "-o", "report.html"],
        ["skip", "--item", "a", "--reason", "checked by hand"],
        ["reset", "--item", "a"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_run_in_process_closes_the_store_it_opened(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    # In a notebook or under pipekit.testing a command must not leave a database connection open.
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a", "b")
    url = f"sqlite:{pipetester.path}/state.db"
    assert pipetester.run("pipeline.py", "--items", "items.txt", "--store", url).ret == 0
    opened: list[SqliteStore] = []
    closed: list[SqliteStore] = []
    original_init, original_close = SqliteStore.__init__, SqliteStore.close

    def recording_init(self: SqliteStore, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        opened.append(self)

    def recording_close(self: SqliteStore) -> None:
        closed.append(self)
        original_close(self)

    monkeypatch.setattr(SqliteStore, "__init__", recording_init)
    monkeypatch.setattr(SqliteStore, "close", recording_close)
    name, *options = command
    result = pipetester.run(name, "pipeline.py", *options, "--store", url)
    assert result.ret == 0, result
    assert opened and all(store in closed for store in opened)


@pytest.mark.slow
def test_sqlite_shared_by_processes_never_runs_an_item_twice(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE + "\n    import time\n    time.sleep(0)\n")
    ids = [f"item-{n}" for n in range(30)]
    pipetester.make_items(*ids)
    url = f"sqlite:{pipetester.path}/state.db"
    env = {**os.environ, "PIPEKIT_STORE": url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipekit", "pipeline.py", "--items", "items.txt", "-j", "3", "-q"],
            cwd=pipetester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    runs = executions(pipetester)
    assert sorted(map(tuple, runs)) == sorted({(i, n) for i in ids for n in ("research", "draft")})


# -- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_url_password_is_masked(pipetester: PipeTester, postgres_store_url: str) -> None:
    store_url = postgres_store_url
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", "--item", "a", "--store", store_url)
    assert result.ret == 0, result
    password = store_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password not in result.stderr
    result.fnmatch_lines(["pipekit: state: postgresql://*:***@127.0.0.1:*?pipeline=t_*"])
    assert mask_password("postgresql://u:pw@h/db?password=x&sslmode=require") == (
        "postgresql://u:***@h/db?password=***&sslmode=require"
    )


def test_postgres_lease_of_a_dead_driver_expires(postgres_store_url: str) -> None:
    store = open_store_url(postgres_store_url)
    try:
        check_leases(store)
    finally:
        store.close()


def check_leases(store: Any) -> None:
    holder = "other-host:1:dead"
    insert = """INSERT INTO pipekit_leases (pipeline, item_id, owner, host, pid, expires_at)
                VALUES (%s, %s, %s, 'other-host', 1, now() + %s::interval)"""
    store._query(insert, (store.pipeline, "alive", holder, "1 hour"))  # type: ignore[attr-defined]
    store._query(insert, (store.pipeline, "expired", holder, "-1 second"))  # type: ignore[attr-defined]
    assert store.try_lock("alive") is None  # another host's live lease is respected
    lease = store.try_lock("expired")
    assert lease is not None  # its driver stopped renewing: the item is taken over
    rows = store._query(  # type: ignore[attr-defined]
        "SELECT owner, host, pid FROM pipekit_leases WHERE pipeline = %s AND item_id = 'expired'", (store.pipeline,)
    )
    assert rows == [(store.owner, socket.gethostname(), os.getpid())]  # type: ignore[attr-defined]
    lease.release()
    # a live driver keeps renewing its lease well past the lease time
    short = open_store_url(postgres_url_of(store) + "&lease=1.5")
    rival = open_store_url(postgres_url_of(store) + "&lease=1.5")
    try:
        held = short.try_lock("renewed")
        assert held is not None
        time.sleep(3)
        assert rival.try_lock("renewed") is None
        held.release()
        assert rival.try_lock("renewed") is not None
    finally:
        short.close()
        rival.close()
    assert store._query(  # type: ignore[attr-defined]
        "SELECT count(*) FROM pipekit_leases WHERE pipeline = %s AND item_id = 'expired'", (store.pipeline,)
    ) == [(0,)]


# -- migrate ------------------------------------------------------------------------------------


def test_migrate_copies_and_verifies_between_every_store(
    pipetester: PipeTester, store_url: str | None, tmp_path: Path
) -> None:
    pipetester.make_pipeline(PIPELINE.replace('f"notes on {item_id}"', '"n" * 20000 + item_id'))
    source = f"sqlite:{tmp_path}/source.db"
    first = pipetester.run("pipeline.py", "--item", "a", "--item", "b/ü", "--store", source)
    assert first.ret == 0, first
    target = store_url or f"json:{tmp_path}/json-target"
    moved = pipetester.run("migrate", "--from", source, "--to", target)
    assert moved.ret == 0, moved
    moved.fnmatch_lines(["migrated 2 items from sqlite:*source.db to *", "verified: 2 items, sha256 *"], "stdout")
    (pipetester.path / "executions.log").unlink()
    resumed = pipetester.run("pipeline.py", "--item", "a", "--item", "b/ü", "--store", target)
    assert resumed.ret == 0, resumed
    assert executions(pipetester) == []  # nothing left to do in the copy
    assert saved_state(target, "b/ü").phase_outputs[1] == "n" * 20000 + "b/ü"
    again = pipetester.run("migrate", "--from", source, "--to", target)  # a verified no-op
    assert again.ret == 0, again
    again.fnmatch_lines(["migrated 0 items from *", "kept 2 items *", "verified: 2 items, sha256 *"], "stdout")
    done = PipelineStateManager("a", open_store_url(target, pipeline="pipeline"))
    assert done.load_state()
    done.state.total_cost_usd += 1
    done.save_state()
    changed = pipetester.run("migrate", "--from", source, "--to", target)
    assert changed.ret == 4 and "migrate into an empty store" in changed.stderr, changed


def saved_state(url: str, item_id: str) -> PipelineState:
    store = open_store_url(url, pipeline="pipeline")
    try:
        manager = PipelineStateManager(item_id, store)
        assert manager.load_state()
        return manager.state
    finally:
        store.close()


def postgres_url_of(store: Any) -> str:
    """The URL of ``store`` with its password, for a second driver on the same pipeline."""
    return f"{store.conninfo}{'&' if '?' in store.conninfo else '?'}pipeline={store.pipeline}"


def test_load_many_reads_in_order_with_missing_and_corrupt_items(store: StateStore) -> None:
    for item_id in ("a", "b", "c"):
        PipelineStateManager(item_id, store).create_state({}, PHASES)
    corrupt(store, "b")
    found = list(store.load_many(["c", "nope", "b", "a"]))
    assert [item_id for item_id, _ in found] == ["c", "nope", "b", "a"]
    assert isinstance(found[0][1], dict) and found[0][1]["item_id"] == "c"
    assert found[1][1] is None
    assert isinstance(found[2][1], StateFileError)  # named, and the others still read


def test_checkpoints_are_durable_in_every_store(store: StateStore, store_url: str | None) -> None:
    store.save_checkpoint("a/1", "draft", "chapter 1", {"words": 10})
    store.save_checkpoint("a/1", "draft", "chapter 1", {"words": 12})
    store.save_checkpoint("a/1", "draft", "chapter 2", "done")
    store.save_checkpoint("a/1", "review", "x", 1)
    reopened = open_store_url(store_url or f"json:{store.location}", pipeline="pipeline")
    try:
        assert reopened.load_checkpoints("a/1", "draft") == {"chapter 1": {"words": 12}, "chapter 2": "done"}
        reopened.drop_checkpoints("a/1", "draft")
        assert store.load_checkpoints("a/1", "draft") == {}
        assert store.load_checkpoints("a/1", "review") == {"x": 1}
    finally:
        reopened.close()
