"""A batch of finished sub-items is one write on every store (``save_checkpoints``),
and the newest batch holding a key wins, over older batches and the key's own write."""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pipekit.state.open import open_store_url
from pipekit.state.store import StateStore


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[StateStore]:
    opened = open_store_url(store_url or f"json:{tmp_path / 'state'}", pipeline="pipeline")
    yield opened
    opened.close()


def reopened(store: StateStore, store_url: str | None) -> StateStore:
    return open_store_url(store_url or f"json:{store.location}", pipeline="pipeline")


def test_a_batch_is_stored_whole_or_not_at_all(store: StateStore) -> None:
    # One write: a value that cannot be stored fails the batch before any of it lands.
    with pytest.raises(Exception):  # noqa: B017, PT011  (each store says it its own way)
        store.save_checkpoints("a", "summarise:sub", {"first": 1, "bad": object(), "last": 3})
    assert store.load_checkpoints("a", "summarise:sub") == {}


def test_the_newest_batch_holding_a_key_wins(store: StateStore, store_url: str | None) -> None:
    store.save_checkpoint("a", "p:sub", "k1", "single, before")
    store.save_checkpoint("a", "p:sub", "progress", "single")
    store.save_checkpoints("a", "p:sub", {"k1": "batch 1", "k2": "batch 1", "k3": "batch 1"})
    store.save_checkpoints("a", "p:sub", {"k3": "batch 2", "k4": "batch 2"})
    store.save_checkpoints("a", "p:sub", {"k4": "batch 3"})
    again = reopened(store, store_url)
    try:
        assert again.load_checkpoints("a", "p:sub") == {
            "k1": "batch 1", "k2": "batch 1", "k3": "batch 2", "k4": "batch 3", "progress": "single",
        }
        again.drop_checkpoints("a", "p:sub")
        assert store.load_checkpoints("a", "p:sub") == {}
    finally:
        again.close()


def test_a_json_batch_is_one_file(tmp_path: Path) -> None:
    store = open_store_url(f"json:{tmp_path / 'state'}", pipeline="pipeline")
    store.save_checkpoints("a", "p:sub", {f"k{n}": {"n": n} for n in range(100)})
    files = [path for path in (tmp_path / "state").rglob("*") if path.is_file() and path.suffix == ".json"]
    assert len(files) == 1, files
    assert len(store.load_checkpoints("a", "p:sub")) == 100


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sets(st.sampled_from("abcdef"), min_size=1), st.booleans()), min_size=1, max_size=12))
def test_json_batches_keep_the_newest_record_of_each_key_in_files_that_count(
    tmp_path_factory: pytest.TempPathFactory, writes: list[tuple[set[str], bool]]
) -> None:
    # ``look``: read the records after that write (a read rebuilds what the store knows of the files).
    state = tmp_path_factory.mktemp("state")
    store = open_store_url(f"json:{state}", pipeline="pipeline")
    newest: dict[str, int] = {}
    for n, (keys, look) in enumerate(writes):
        store.save_checkpoints("a", "p:sub", {key: n for key in sorted(keys)})
        newest.update(dict.fromkeys(keys, n))
        batches = [json.loads(p.read_text()) for p in state.rglob("~batch-*.json")]
        # Each file still on disk holds the newest record of some key; no two files hold the same one.
        winners = [key for batch in batches for key, m in batch["values"].items() if newest[key] == m]
        assert len(batches) <= len(set(winners)) == len(winners) == len(newest)
        if look:
            assert store.load_checkpoints("a", "p:sub") == newest
    assert store.load_checkpoints("a", "p:sub") == newest
