"""A save encodes and checks only the phase records that changed, and writes the same bytes.

Documents the manager builds carry each phase's JSON text and check from one save
to the next (``pipekit.state.encoded``). Whatever the transitions, every store
must write exactly what encoding the whole document writes, index the same
columns, and refuse the same documents.
"""

from __future__ import annotations

import json
from pathlib import Path
import sqlite3
from typing import Any

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pipekit.state.digest import output_hash
from pipekit.state.encoded import Document
from pipekit.state.encoded import document_jsonb_text
from pipekit.state.encoded import document_text
from pipekit.state.encoded import phase_records
from pipekit.state.encoded import phases_texts
from pipekit.state.escaping import MARKER
from pipekit.state.escaping import escape
from pipekit.state.escaping import json_text
from pipekit.state.escaping import json_value
from pipekit.state.escaping import jsonb_text
from pipekit.state.indexed import UNREADABLE
from pipekit.state.indexed import index_columns
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.manager import PipelineStateManager
from pipekit.state.sqlite import SqliteStore
from pipekit.state.store import StateStore
from pipekit.state.store import encode_document


class _Unwritten:
    """A writer that leaves every save pending, so the test takes each write itself."""

    def changed(self, manager: Any) -> None:
        pass


def _manager(store: StateStore | Path, phases: int = 3) -> PipelineStateManager:
    manager = PipelineStateManager("item-1", store)
    manager.save_through(_Unwritten())
    manager.create_state({"source": "a.txt"}, [(n, f"p{n}") for n in range(1, phases + 1)])
    return manager


def _plain(document: dict[str, Any]) -> Any:
    """The document as JSON reads it back."""
    return json.loads(json.dumps(document))


def _same_everywhere(document: dict[str, Any]) -> None:
    plain = dict(document)  # the same values, without the records
    assert document_text(document) == json_text(plain)
    assert document_jsonb_text(document) == jsonb_text(plain)
    assert encode_document(document, phases_texts(document)) == encode_document(plain)
    assert index_columns(document) == index_columns(plain)
    assert json_value(document_text(document)) == _plain(document)


TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "plain", "é", "\x00nul", "\ud800lone", MARKER + "x", "\\u0000", "x" * 9000]),
)

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["start", "complete", "fail", "retry", "skip", "reset", "fingerprint", "same"]),
        st.integers(min_value=1, max_value=3),
        TEXTS,
        st.sampled_from([0, 0.0, 0.25, 3]),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS)
def test_every_save_writes_what_the_whole_document_encodes(tmp_path_factory: Any, steps: list[Any]) -> None:
    manager = _manager(tmp_path_factory.mktemp("state"))
    documents = [manager.take_pending_write().document]
    for action, num, text, amount in steps:
        if action == "start":
            manager.start_phase(num)
        elif action == "complete":
            manager.complete_phase(num, text, tokens_in=1, cost_usd=amount, duration_seconds=amount)
        elif action == "fail":
            manager.fail_phase(num, text, traceback=text, cost_usd=amount)
        elif action == "retry":
            manager.record_failed_attempt(num, text, cost_usd=amount)
        elif action == "skip":
            manager.skip_phase(num, "cache", text)
        elif action == "reset":
            manager.reset_phase(num)
        elif action == "fingerprint":
            consumed = {"p1": output_hash(manager.state.phase_outputs.get(1))} if amount else {}
            manager.state.phases[num].fingerprint = {"code": text, "version": None, "input": None, "consumed": consumed}
        else:
            manager.save_state()
        documents.append(manager.take_pending_write().document)
    for document in documents:  # older documents too: a later save must not change them
        _same_everywhere(document)


def test_an_unchanged_phase_keeps_its_record_and_a_changed_one_gets_a_new_one(tmp_path: Path) -> None:
    manager = _manager(tmp_path, phases=5)
    first = manager.take_pending_write().document
    manager.start_phase(1)
    second = manager.take_pending_write().document
    first_records, second_records = phase_records(first), phase_records(second)
    assert first_records is not None and second_records is not None
    assert second_records["1"] is not first_records["1"]
    assert all(second_records[key] is first_records[key] for key in "2345")
    assert first["phases"]["1"]["status"] == "pending"  # the earlier snapshot is untouched
    _same_everywhere(first)
    _same_everywhere(second)


def test_a_document_whose_phases_were_replaced_is_encoded_whole(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    document = manager.take_pending_write().document
    document["phases"] = {**document["phases"], "1": {**document["phases"]["1"], "status": "completed"}}
    assert phase_records(document) is None
    assert json.loads(document_text(document))["phases"]["1"]["status"] == "completed"
    _same_everywhere(document)


def test_a_bad_record_is_refused_at_every_save_not_only_the_first(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    manager.take_pending_write()
    manager.state.phases[2].tokens_in = -1  # no count pipekit writes
    manager.start_phase(1)
    bad = manager.take_pending_write().document
    assert index_columns(bad) == (UNREADABLE, None)
    manager.start_phase(3)  # phase 2's record is unchanged, and still never checked out
    again = manager.take_pending_write().document
    assert index_columns(again) == (UNREADABLE, None)
    manager.state.phases[2].tokens_in = 0
    manager.save_state()
    assert index_columns(manager.take_pending_write().document)[0].status == "in_progress"


@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_the_saved_file_or_row_holds_the_bytes_of_a_whole_encoding(tmp_path: Path, kind: str) -> None:
    store: StateStore = JsonDirStore(tmp_path / "state") if kind == "json" else SqliteStore(tmp_path / "s.db")
    manager = _manager(store)
    manager.write_pending()
    manager.start_phase(1)
    manager.complete_phase(1, "é\ud800" + MARKER)
    manager.start_phase(2)
    manager.write_pending()
    expected = manager.state.to_document(manager._output_refs)
    assert type(expected) is dict  # no records: encoded whole
    if kind == "json":
        assert (tmp_path / "state" / "item-1.json").read_bytes() == encode_document(_escaped(expected))
    else:
        assert isinstance(store, SqliteStore)
        assert _sqlite_text(store) == json_text(expected)
    again = PipelineStateManager("item-1", store)
    assert again.load_state()
    assert again.state == manager.state
    assert type(manager.state.to_document({}, records={})) is Document


def _escaped(document: dict[str, Any]) -> dict[str, Any]:
    escaped: dict[str, Any] = escape(document)
    return escaped


def _sqlite_text(store: SqliteStore) -> str:
    with sqlite3.connect(store.path) as db:
        (text,) = db.execute("SELECT state FROM items WHERE item_id = 'item-1'").fetchone()
    return str(text)


def test_the_stale_key_sees_a_consumed_output_change_though_the_consumer_did_not(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    manager.complete_phase(1, "first")
    manager.complete_phase(2, "second")
    consumed = {"p1": output_hash("first")}
    manager.state.phases[2].fingerprint = {"code": "c2", "version": None, "input": None, "consumed": consumed}
    manager.save_state()
    before = manager.take_pending_write().document
    assert json.loads(index_columns(before)[1] or "")[0][-1] is True
    manager.complete_phase(1, "edited")  # phase 2's record is the same, its input is not
    after = manager.take_pending_write().document
    assert json.loads(index_columns(after)[1] or "")[0][-1] is False
    _same_everywhere(after)


def test_a_value_equal_to_the_phases_placeholder_is_written_as_it_is(tmp_path: Path) -> None:
    from pipekit.state import encoded

    manager = _manager(tmp_path)
    manager.state.metadata["note"] = encoded._PLACE
    manager.save_state()
    document = manager.take_pending_write().document
    assert json.loads(document_text(document))["metadata"]["note"] == encoded._PLACE
    _same_everywhere(document)
