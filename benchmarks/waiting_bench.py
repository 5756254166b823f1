"""One try of a driver waiting for items another driver holds, at many finished items.

    PIPEKIT_TEST_POSTGRES_URL=postgresql://... python benchmarks/waiting_bench.py \\
        [--finished 100000] [--waiting 1,64,1000] [--repeat 5] [--stores sqlite,postgresql]

Fills a new store with ``--finished`` finished items (3 phases each, the
document a run writes, saved with ``save_many``), then times what each try at
the waiting items asks the store (``pipekit.engine.finished.finished_among``)
for ``--waiting`` ids, half of them finished. Beside it, in the same run: the
path before ``StateStore.iter_fresh_finished_of`` (the store's whole finished
index streamed and filtered, which is also the default a store without the
method gets), and a plain query of those ids' rows alone (``sqlite3`` /
psycopg, no pipekit) as the floor. Prints the median milliseconds per try and
the rows each read, with the load average. The store is new and filled just
before: on PostgreSQL, a pipeline autovacuum has not analysed yet, which is
what the planner sees while drivers start on new items.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Iterator
import os
from pathlib import Path
import sqlite3
import statistics
import tempfile
import time
from typing import Any
import uuid

from pipekit import PipelineStateManager
from pipekit.engine.finished import finished_among
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.open import open_store_url
from pipekit.state.store import StateStore


PHASES = [(1, "one"), (2, "two"), (3, "three")]


def fill(store: StateStore, count: int) -> None:
    """``count`` finished items, ``done-0`` ... (the document of a run, copied)."""
    manager = PipelineStateManager("template", store)
    manager.create_state({"batch": "b1"}, PHASES)
    for num, _ in PHASES:
        manager.start_phase(num)
        manager.complete_phase(num, f"output of phase {num}", cost_usd=0.001)
    document = store.load("template")
    assert document is not None

    def copies() -> Iterator[tuple[str, dict[str, Any]]]:
        for n in range(count):
            yield f"done-{n}", {**document, "item_id": f"done-{n}"}

    store.save_many(copies())


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median milliseconds of ``call`` and its last value."""
    took, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = call()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), value


def streamed(store: StateStore, phases: list[PhaseDefinition], items: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The path before: every finished row streamed, those of ``items`` kept."""
    rows = StateStore.iter_fresh_finished_of(store, list(items), [p.name for p in phases], lambda key: True)
    assert rows is not None
    return {item_id: cost for item_id, cost, _ in rows}


class Plain:
    """The ids' finished rows by one query on a connection kept open, without pipekit: the floor."""

    def __init__(self, kind: str, store: Any) -> None:
        self.kind, self.store = kind, store
        if kind == "sqlite":
            self.db: Any = sqlite3.connect(store.path)
        else:
            import psycopg

            self.db = psycopg.connect(store.conninfo, autocommit=True)

    def rows(self, ids: list[str]) -> int:
        if self.kind == "sqlite":
            marks = ",".join("?" * len(ids))
            query = f"SELECT item_id, metadata, cost_usd FROM items WHERE next_phase IS NULL AND item_id IN ({marks})"
            return len(self.db.execute(query, ids).fetchall())
        # The pipeline out of the planner's sight, as the store asks (postgresschema.FINISHED_OF):
        # with "pipeline = %s" a pipeline not analysed yet is read whole.
        return len(self.db.execute(
            "SELECT i.item_id, i.metadata, i.cost_usd FROM (SELECT %s::text AS pipeline OFFSET 0) AS this"
            " JOIN pipekit_items i ON i.pipeline = this.pipeline WHERE i.item_id = ANY(%s) AND i.next_phase IS NULL",
            (self.store.pipeline, ids),
        ).fetchall())

    def close(self) -> None:
        self.db.close()


def measure(store: StateStore, plain: Plain, size: int, finished: int, repeat: int) -> str:
    """One line: ``size`` waiting ids, half of them finished (spread over the index)."""
    phases = [PhaseDefinition(num=num, name=name, handler=lambda: None) for num, name in PHASES]
    ids = [f"done-{n * (finished // size)}" for n in range(size // 2 or 1)]
    ids += [f"new-{n}" for n in range(size - len(ids))]
    items: dict[str, dict[str, Any]] = {item_id: {"batch": "b1"} for item_id in ids}
    counts = getattr(store, "_statements", None)
    if counts is not None:
        counts.clear()
    fast, found = timed(lambda: finished_among(store, phases, items), repeat)
    rows = f"{counts['finished_rows'] // repeat:,} vs {finished + 1:,}" if counts is not None else ""
    slow, before = timed(lambda: streamed(store, phases, items), repeat)
    floor, _ = timed(lambda: plain.rows(ids), repeat)
    assert found == before, "the two paths must find the same items"
    return f"{plain.kind:<11} {size:>7,} {fast:>12.2f} {slow:>12.1f} {floor:>9.2f} {rows:>16}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--waiting", default="1,64,1000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"{args.finished:,} finished items x {len(PHASES)} phases; median of {args.repeat} tries;"
          f" load average {os.getloadavg()[0]:.2f}")
    print(f"{'store':<11} {'waiting':>7} {'ids only ms':>12} {'streamed ms':>12} {'plain ms':>9} {'rows read':>16}")
    with tempfile.TemporaryDirectory(prefix="waiting-bench-") as folder:
        for kind in args.stores.split(","):
            if kind == "sqlite":
                url = f"sqlite:{Path(folder) / 'state.db'}"
            else:
                base = os.environ.get("PIPEKIT_TEST_POSTGRES_URL")
                if not base:
                    print("postgresql: skipped (set PIPEKIT_TEST_POSTGRES_URL)")
                    continue
                url = f"{base}{'&' if '?' in base else '?'}pipeline=waiting_{uuid.uuid4().hex[:8]}"
            store = open_store_url(url)
            try:
                started = time.perf_counter()
                fill(store, args.finished)
                print(f"{kind:<11} filled in {time.perf_counter() - started:.1f} s")
                plain = Plain(kind, store)
                try:
                    for size in map(int, args.waiting.split(",")):
                        print(measure(store, plain, size, args.finished, args.repeat))
                finally:
                    plain.close()
            finally:
                if kind == "postgresql":
                    store._query("DELETE FROM pipekit_items WHERE pipeline = %s", (store.pipeline,))  # type: ignore[attr-defined]
                store.close()


if __name__ == "__main__":
    main()
