"""Database stores index a stale key per item, so a no-op re-run reads no state (#7, #6)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
import json
from pathlib import Path
import sqlite3
from typing import Any

import pytest

from pipekit.state.digest import text_hash
from pipekit.state.indexed import UNREADABLE
from pipekit.state.indexed import index_columns
from pipekit.state.indexed import summarize
from pipekit.state.open import open_store_url
from pipekit.state.sqlite import SqliteStore
from pipekit.state.stalekey import stale_key
from pipekit.state.store import StateStore
from pipekit.state.values import output_ref
from pipekit.testing import PipeTester


PIPELINE = '''
    from pipekit import phase

    def items():
        return ["a", "b", "c"]

    @phase(1)
    def one(item_id):
        return "x" * 20000 + item_id

    @phase(2)
    def two(one):
        return one[-1]
'''


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Documents read through any store, by item id."""
    counter: Counter[str] = Counter()
    load, load_many = StateStore.load_many, SqliteStore.load_many

    def counted(original: Any) -> Any:
        def wrapper(store: StateStore, item_ids: Any, *args: Any) -> Iterator[Any]:
            for item_id, document in original(store, item_ids, *args):
                counter[item_id] += 1
                yield item_id, document

        return wrapper

    monkeypatch.setattr(StateStore, "load_many", counted(load))
    monkeypatch.setattr(SqliteStore, "load_many", counted(load_many))
    original_load = SqliteStore.load

    def single(store: SqliteStore, item_id: str) -> Any:
        counter[item_id] += 1
        return original_load(store, item_id)

    monkeypatch.setattr(SqliteStore, "load", single)
    return counter


def test_a_no_op_rerun_reads_no_state_and_a_code_edit_reads_them_again(
    pipetester: PipeTester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: Counter[str]
) -> None:
    monkeypatch.setenv("PIPEKIT_STORE", f"sqlite:{tmp_path / 'state.db'}")
    pipetester.make_pipeline(PIPELINE)
    assert pipetester.run("pipeline.py", "--progress", "none").ret == 0
    reads.clear()

    again = pipetester.run("pipeline.py", "--progress", "none")

    assert again.ret == 0
    assert again.event_names() == ["run_start", "run_finish"]
    assert again.calls("pipekit_run_finish")[0]["run"].items_already_done == 3
    assert reads == {}

    pipetester.make_pipeline(PIPELINE.replace("return one[-1]", "return one[-2:]"))
    edited = pipetester.run("pipeline.py", "--progress", "none", "--rerun-stale")
    assert edited.ret == 0, edited
    assert reads.keys() == {"a", "b", "c"}
    assert edited.state("a").phase_outputs[2] == "xa"
    assert [c["phase"].num for c in edited.calls("pipekit_phase_start")] == [2, 2, 2]


def test_a_consumer_of_a_changed_large_output_stays_stale_until_rerun(
    pipetester: PipeTester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPEKIT_STORE", f"sqlite:{tmp_path / 'state.db'}")
    pipetester.make_pipeline(PIPELINE)
    assert pipetester.run("pipeline.py", "--progress", "none").ret == 0
    changed = PIPELINE.replace("@phase(1)", '@phase(1, on_change="rerun")').replace('"x" * 20000', '"y" * 20000')
    pipetester.make_pipeline(changed)
    first = pipetester.run("pipeline.py", "--progress", "none")
    assert [c["phase"].num for c in first.calls("pipekit_phase_start")] == [1, 1, 1]

    for _ in range(2):  # reported on every run until it is re-run
        again = pipetester.run("pipeline.py", "--progress", "none")
        again.fnmatch_lines(["*3 completed cells are stale, not re-run: two (upstream re-run 3)*"], "stderr")
        assert again.calls("pipekit_phase_start") == []

    rerun = pipetester.run("pipeline.py", "--progress", "none", "--rerun-stale")
    assert [c["phase"].num for c in rerun.calls("pipekit_phase_start")] == [2, 2, 2]
    assert "stale" not in pipetester.run("pipeline.py", "--progress", "none").stderr


def test_the_key_holds_what_the_stale_check_needs() -> None:
    large = "x" * 20000

    def completed(name: str, code: str | None, version: str | None, input_: str | None, **consumed: str) -> Any:
        fingerprint = {"code": code, "version": version, "input": input_, "consumed": consumed}
        return {"name": name, "status": "completed", "fingerprint": fingerprint}

    document = {
        "phases": {
            "1": completed("one", "c1", None, None),
            "2": completed("two", "c2", "3", "i", one=text_hash(large)),
            "3": completed("three", None, None, None, two=text_hash("y")),
            "4": {"name": "four", "status": "skipped", "fingerprint": None},
            "5": {"name": "five", "status": "completed", "fingerprint": None},
        },
        "phase_outputs": {"2": "changed since three consumed it", "5": "z"},
        # a large output by reference: its name carries the hash of its text
        "phase_output_files": {"1": output_ref(1, large)},
    }
    for num, saved in document["phases"].items():
        saved["phase"] = int(num)
    stamp = "2026-01-01T00:00:00.000+00:00"
    document.update(schema_version=1, item_id="a", status="completed", current_phase=5)
    document.update(started_at=stamp, last_updated=stamp)
    assert json.loads(stale_key(document) or "") == [
        ["one", "c1", None, False, [], True],
        ["two", "c2", "3", True, ["one"], True],
        ["three", None, None, False, ["two"], False],
    ]
    # A save checks the document once for both of its index columns.
    assert index_columns(document) == (summarize(document), stale_key(document))
    document["phases"]["1"]["fingerprint"] = "broken"
    assert stale_key(document) is None
    assert stale_key(["not", "a", "state"]) is None
    assert index_columns(document) == (UNREADABLE, None) == (summarize(document), None)


def test_output_references_are_named_by_the_fingerprint_hash() -> None:
    # The stale key relies on it to check a consumed large output without reading it.
    text = "é\r\n" * 5000
    assert output_ref(2, text) == f"outputs/2.{text_hash(text)}.txt"


def test_a_database_made_before_the_stale_key_still_resumes(pipetester: PipeTester, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE items (item_id TEXT PRIMARY KEY, status TEXT, next_phase INTEGER,
            done_names TEXT NOT NULL DEFAULT '[]', metadata TEXT NOT NULL DEFAULT '{}',
            cost_usd REAL NOT NULL DEFAULT 0, rev INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL);
        CREATE INDEX items_next_phase ON items (next_phase, item_id, done_names, metadata, cost_usd);
        """
    )
    db.close()
    pipetester.make_pipeline(PIPELINE)
    assert pipetester.run("pipeline.py", "--store", f"sqlite:{path}", "--progress", "none").ret == 0
    store = open_store_url(f"sqlite:{path}")
    try:
        indexes = {row[1] for row in store._db.execute("PRAGMA index_list(items)")}  # type: ignore[attr-defined]
        assert "items_finished" in indexes and "items_next_phase" not in indexes
        finished = store.finished_items(["one", "two"])
        assert finished is not None and sorted(finished) == ["a", "b", "c"]
        assert all(item.stale_key and json.loads(item.stale_key)[1][4] == ["one"] for item in finished.values())
        # Keys are kept once, one per stage the items went through (no phase, one, both),
        # not one per item: the rows hold digests.
        db = store._db  # type: ignore[attr-defined]
        assert db.execute("SELECT count(*) FROM stale_keys").fetchone() == (3,)
        assert db.execute("SELECT count(DISTINCT stale_digest) FROM items").fetchone() == (1,)
    finally:
        store.close()
    again = pipetester.run("pipeline.py", "--store", f"sqlite:{path}", "--progress", "none")
    assert again.ret == 0
    assert again.calls("pipekit_run_finish")[0]["run"].items_already_done == 3
