"""A resume of finished items on a database store skips them by their index
columns: no document is parsed, and the run never walks them one by one."""

from __future__ import annotations

from collections import Counter
import gc
from typing import Any

import pytest

from pipekit.engine.runner import Run
from pipekit.outcomes import UsageError
from pipekit.pipeline.items import normalize_items
from pipekit.state import document as state_document
from pipekit.state.sqlite import SqliteStore
from pipekit.testing import PipeTester


PIPELINE = """
    from pipekit import phase

    VERSION = "{version}"

    @phase(1)
    def one(item_id, ctx):
        ctx.record_cost(cost_usd=0.25)
        return "1-" + item_id

    @phase(2, version=VERSION)
    def two(one, metadata):
        return one + str(metadata.get("n", ""))
"""

STORE = ("--store", "sqlite:state.sqlite")


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """What a run does per item: documents parsed, documents checked, and
    items the runner looked at one by one."""
    counter: Counter[str] = Counter()
    parse, read, look = SqliteStore._parse, state_document.read_document, Run._already_done

    def parsed(store: SqliteStore, item_id: str, raw: Any) -> dict[str, Any]:
        counter["parsed"] += 1
        return parse(store, item_id, raw)

    def checked(document: Any, where: Any) -> Any:
        counter["checked"] += 1
        return read(document, where)

    def looked_at(run: Run, item_id: str, metadata: dict[str, Any]) -> bool:
        counter["looked at"] += 1
        return look(run, item_id, metadata)

    monkeypatch.setattr(SqliteStore, "_parse", parsed)
    monkeypatch.setattr(state_document, "read_document", checked)
    monkeypatch.setattr(Run, "_already_done", looked_at)
    return counter


def test_a_finished_resume_parses_no_document_and_walks_no_item(pipetester: PipeTester, work: Counter[str]) -> None:
    pipetester.make_pipeline(PIPELINE.format(version="1"))
    pipetester.make_items(*[f"item-{n}" for n in range(40)])
    assert pipetester.run("pipeline.py", "--items", "items.txt", *STORE).ret == 0
    work.clear()

    again = pipetester.run("pipeline.py", "--items", "items.txt", *STORE)

    assert again.ret == 0
    assert again.event_names() == ["run_start", "run_finish"]
    run = again.calls("pipekit_run_finish")[0]["run"]
    assert (run.items_already_done, run.items_completed) == (40, 40)
    assert run.earlier_cost_usd == pytest.approx(40 * 0.25)
    # One document at most: the run checks which module its state belongs to.
    assert work["parsed"] <= 1 and work["checked"] <= 1
    assert work["looked at"] == 0, "the finished items were walked one by one"
    assert "40 already done before this run" in again.stderr
    assert "$10.00 in earlier runs" in again.stderr


def test_only_the_items_with_work_left_are_looked_at(pipetester: PipeTester, work: Counter[str]) -> None:
    pipetester.make_pipeline(PIPELINE.format(version="1"))
    pipetester.make_items(*[{"id": f"item-{n}"} for n in range(10)], name="items.jsonl")
    assert pipetester.run("pipeline.py", "--items", "items.jsonl", *STORE).ret == 0
    assert pipetester.run("reset", "pipeline.py", "--item", "item-3", "--phase", "2", *STORE).ret == 0
    entries: list[dict[str, Any]] = [{"id": f"item-{n}"} for n in range(10)]
    entries[7]["n"] = 7  # new metadata: looked at and saved, though no phase runs again
    pipetester.make_items(*entries, {"id": "new"}, name="items.jsonl")
    work.clear()

    again = pipetester.run("pipeline.py", "--items", "items.jsonl", *STORE)

    assert again.ret == 0
    assert sorted(c["item"].id for c in again.calls("pipekit_item_start")) == ["item-3", "new"]
    run = again.calls("pipekit_run_finish")[0]["run"]
    assert (run.items_already_done, run.items_completed) == (9, 11)
    assert run.earlier_cost_usd == pytest.approx(9 * 0.25 + 0.25)  # item-3 kept its phase 1
    assert work["looked at"] == 3
    saved = SqliteStore(pipetester.path / "state.sqlite").load("item-7")
    assert saved is not None and saved["metadata"] == {"n": 7}


def test_a_stale_phase_is_still_found_by_its_key(pipetester: PipeTester, work: Counter[str]) -> None:
    pipetester.make_pipeline(PIPELINE.format(version="1"))
    pipetester.make_items("a", "b")
    assert pipetester.run("pipeline.py", "--items", "items.txt", *STORE).ret == 0
    pipetester.make_pipeline(PIPELINE.format(version="2"))

    kept = pipetester.run("pipeline.py", "--items", "items.txt", *STORE)
    assert kept.ret == 0
    assert kept.calls("pipekit_phase_start") == []  # reported, not re-run, without --rerun-stale
    assert "stale" in kept.stderr

    rerun = pipetester.run("pipeline.py", "--items", "items.txt", "--rerun-stale", *STORE)
    assert rerun.ret == 0
    assert sorted((c["item"].id, c["phase"].num) for c in rerun.calls("pipekit_phase_start")) == [("a", 2), ("b", 2)]
    assert rerun.calls("pipekit_run_finish")[0]["run"].items_already_done == 0


def test_normalizing_items_leaves_the_garbage_collector_as_it_was() -> None:
    before = gc.get_threshold()
    assert normalize_items(["a", ("b", {"n": 1})], "items()") == [("a", {}), ("b", {"n": 1})]
    assert gc.get_threshold() == before
    with pytest.raises(UsageError, match="duplicate item id 'a'"):
        normalize_items(["a", "a"], "items()")
    assert gc.get_threshold() == before
