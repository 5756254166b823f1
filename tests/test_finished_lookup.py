"""The finished rows of a few items, read without the rest: what a driver waiting
for items another driver holds asks the store at every try."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipekit import PipelineStateManager
from pipekit.engine.finished import finished_among
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.open import open_store_url
from pipekit.state.store import StateStore


PHASES = [(1, "research"), (2, "draft")]


def definitions() -> list[PhaseDefinition]:
    return [PhaseDefinition(num=num, name=name, handler=lambda: None) for num, name in PHASES]


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[StateStore]:
    opened = open_store_url(store_url or f"json:{tmp_path / 'state'}", pipeline="pipeline")
    try:
        yield opened
    finally:
        opened.close()


def finished_document(
    store: StateStore, item_id: str, metadata: dict[str, Any], cost_usd: float = 0.0
) -> dict[str, Any]:
    """The saved document of an item whose two phases completed."""
    manager = PipelineStateManager(item_id, store)
    manager.create_state(metadata, PHASES)
    for num, _ in PHASES:
        manager.start_phase(num)
        manager.complete_phase(num, "ok", cost_usd=cost_usd)
    document = store.load(item_id)
    assert document is not None
    return document


def copies(document: dict[str, Any], item_ids: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for item_id in item_ids:
        yield item_id, {**document, "item_id": item_id}


def test_a_waiting_driver_reads_the_finished_rows_of_the_items_it_waits_for_only(postgres_store_url: str) -> None:
    store = open_store_url(postgres_store_url)
    try:
        document = finished_document(store, "template", {"lang": "en"})
        others = [f"done-{n:04d}" for n in range(3000)]
        store.save_many(copies(document, others))
        PipelineStateManager("half", store).create_state({"lang": "en"}, PHASES)
        store._statements.clear()  # type: ignore[attr-defined]
        waiting = {"done-0042": {"lang": "en"}, "done-0043": {"lang": "fr"}, "half": {"lang": "en"}, "new": {}}
        found = finished_among(store, definitions(), waiting)
        # done-0043 is finished with other metadata: another item of the same id, not this one
        assert found == {"done-0042": 0.0}
        counted = store._statements  # type: ignore[attr-defined]
        assert counted["finished_rows"] <= len(waiting), counted  # not the 3,000 rows of the others
        assert counted["finished"] == 1, counted
    finally:
        store.close()


def test_a_new_pipelines_finished_rows_are_looked_up_by_primary_key_before_any_analyze(
    postgres_store_url: str,
) -> None:
    # Until autovacuum's ANALYZE sees a new pipeline, the planner takes it for about one
    # row, and a plan through the (pipeline, next_phase) or (pipeline, status) index then
    # reads every row of the pipeline at each try of the waiting driver.
    other, store = open_store_url(f"{postgres_store_url}_other"), open_store_url(postgres_store_url)
    try:
        document = finished_document(store, "template", {"lang": "en"})
        other.save_many(copies(document, [f"done-{n:04d}" for n in range(5000)]))
        store._query("ANALYZE pipekit_items")  # type: ignore[attr-defined]  # knows the other pipeline only
        store.save_many(copies(document, [f"done-{n:04d}" for n in range(3000)]))
        sent: list[tuple[str, tuple[Any, ...]]] = []
        query = store._query  # type: ignore[attr-defined]

        def recorded(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            sent.append((sql, params))
            return query(sql, params)  # type: ignore[no-any-return]

        store._query = recorded  # type: ignore[attr-defined]
        waiting = [f"done-{n:04d}" for n in range(0, 3000, 100)] + [f"new-{n}" for n in range(30)]
        found = store.iter_fresh_finished_of(waiting, [name for _, name in PHASES], lambda key: True)
        assert found is not None and len(list(found)) == 30
        ((sql, params),) = sent
        plan = "\n".join(row[0] for row in query("EXPLAIN " + sql, params))
        assert "pipekit_items_pkey" in plan, plan
        assert "pipekit_items_status" not in plan and "pipekit_items_next_phase" not in plan, plan
    finally:
        other._query("DELETE FROM pipekit_items WHERE pipeline = %s", (other.pipeline,))  # type: ignore[attr-defined]
        other.close()
        store.close()


def test_every_store_finds_the_finished_rows_of_the_ids_asked_for_only(store: StateStore, tmp_path: Path) -> None:
    names = [name for _, name in PHASES]
    document = finished_document(store, "done", {"lang": "en"}, cost_usd=0.25)
    store.save_many(copies(document, ["twin", "not-asked"]))
    PipelineStateManager("half", store).create_state({"lang": "en"}, PHASES)
    store.save("odd", {"item_id": "odd", "phases": {}})  # no state document: never finished
    asked = ["done", "twin", "half", "odd", "missing", "done"]
    everything = lambda key: True  # noqa: E731
    rows = store.iter_fresh_finished_of(asked, names, everything)
    assert rows is not None
    assert sorted(rows) == [("done", 0.5, {"lang": "en"}), ("twin", 0.5, {"lang": "en"})]
    # a phase the items never ran, or a stale key the run refuses: not finished
    assert list(store.iter_fresh_finished_of(asked, [*names, "added later"], everything) or ()) == []
    keys: list[str | None] = []
    assert list(store.iter_fresh_finished_of(asked, names, lambda key: keys.append(key) or False) or ()) == []
    assert len(keys) == 1  # one stale key, asked once
    # the same rows as the stream of every finished row, where the store keeps one
    streamed = StateStore.iter_fresh_finished_of(store, asked, names, everything)
    if streamed is not None:
        assert sorted(streamed) == [("done", 0.5, {"lang": "en"}), ("twin", 0.5, {"lang": "en"})]


def test_the_json_store_reads_only_the_state_files_asked_for(tmp_path: Path) -> None:
    store = open_store_url(f"json:{tmp_path / 'state'}")
    finished_document(store, "done", {})
    (tmp_path / "state" / "broken.json").write_text("{ not json")
    assert list(store.iter_fresh_finished_of(["done", "broken"], ["research", "draft"], lambda key: True) or ()) == [
        ("done", 0.0, {})
    ]
