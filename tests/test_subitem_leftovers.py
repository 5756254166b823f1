"""A map run again leaves on disk only what its records refer to: the JSON
store deletes a batch file once every record in it is superseded, and a large
result's file goes once the record refers to the new one; a kill at any write
loses no finished sub-item and leaves only the files of the write in flight."""

from __future__ import annotations

import json
import os
from pathlib import Path
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from pipekit.state.jsondir import BATCH_PREFIX
from pipekit.state.open import open_store_url
from pipekit.state.store import StateStore
from pipekit.state.store import encode_item_id
from pipekit.state.subitems import DONE
from pipekit.state.subitems import drop
from pipekit.state.subitems import load
from pipekit.state.subitems import namespace
from pipekit.testing import PipeTester


BIG = 70_000  # characters: a result over the inline threshold (64 KiB) is kept in the outputs folder

MAP = '''
    from pipekit import phase

    @phase(1)
    def summarise(item_id, ctx):
        def chapter(n):
            version = "VERSION"
            return {"n": n, "text": (version + " ") * (BIG // 3 if n % 2 else 1)}

        parts = ctx.map(chapter, list(range(12)), concurrency=1)
        return sum(len(p["text"]) for p in parts)
'''


def winners(folder: Path) -> tuple[dict[str, tuple[int, str, Any]], list[str]]:
    """The record that counts per key in a JSON checkpoint folder (the newest
    batch holding it), and every batch file's name."""
    found: dict[str, tuple[int, str, Any]] = {}
    batches = []
    for path in folder.glob(f"{BATCH_PREFIX}*.json"):
        batch = json.loads(path.read_text())
        batches.append(path.name)
        for key, value in batch["values"].items():
            if key not in found or found[key][0] < batch["stamp"]:
                found[key] = (batch["stamp"], path.name, value)
    return found, batches


def sub_folder(state: Path, item: str, phase: str) -> Path:
    return state / f"{encode_item_id(item)}.checkpoints" / encode_item_id(namespace(phase))


def leftovers(state: Path, item: str) -> tuple[list[str], list[str]]:
    """The batch files of ``item``'s map that hold no record that counts, and
    the files of its outputs folder that nothing refers to."""
    found, batches = winners(sub_folder(state, item, "summarise"))
    live = {name for _, name, _ in found.values()}
    dead = [name for name in batches if name not in live]
    referenced = {value["result_ref"] for _, _, value in found.values() if value.get("result_ref")}
    document = json.loads((state / f"{item}.json").read_text())
    referenced |= set(document.get("phase_output_files", {}).values())
    outputs = state / f"{item}.outputs"
    files = {str(path.relative_to(state)) for path in outputs.iterdir()} if outputs.is_dir() else set()
    return sorted(dead), sorted(files - referenced)


@pytest.mark.slow
def test_a_map_run_again_leaves_no_superseded_batch_or_result_file(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    state = pipetester.path / "state"
    for version in ("one", "two", "three"):
        pipetester.make_pipeline(MAP.replace("VERSION", version).replace("BIG", str(BIG)))
        result = pipetester.run("pipeline.py", "--item", "a", "--rerun-stale", "--state-dir", str(state),
                                "--progress", "none")
        assert result.ret == 0, result
        assert result.state("a").phase_outputs[1] == 6 * (len(version) + 1) * (1 + BIG // 3)
        assert leftovers(state, "a") == ([], []), version
    # Twelve records and six large results, each in its one place.
    store = open_store_url(f"json:{state}", pipeline="pipeline")
    records = load(store, "a", "summarise")
    assert len(records) == 12 and all(r.status == DONE and "three" in r.result["text"] for r in records.values())
    assert len(list((state / "a.outputs").iterdir())) == 6
    store.close()


#: Writes ``ROUNDS`` versions of six sub-items, two per batch, as ``ctx.map`` does
#: (load, a new result per record, save); says each batch once its save returned.
WRITER = """
    import sys
    from pipekit.state.open import open_store_url
    from pipekit.state.subitems import DONE, SubItem, load, save

    store = open_store_url(sys.argv[1], pipeline="pipeline")
    for round in range(ROUNDS):
        records = load(store, "a", "p")
        for start in range(0, 6, 2):
            batch = []
            for n in range(start, start + 2):
                record = records.get(("fn", str(n))) or SubItem("fn", str(n))
                record.set_result(f"{round}:{n}:" + "x" * (BIG if n % 2 == 0 else 10))
                record.status = DONE
                batch.append(record)
            save(store, "a", "p", batch, 1)
            print(round, start, flush=True)
    store.close()
"""

#: Kills this process (SIGKILL) just before its KILL_AT-th write: a rename or an
#: unlink (the JSON store's files), or a database store's write of an output, of
#: a batch of records or of a deletion.
KILLER = """
    import os, signal

    left = [int(os.environ.get("KILL_AT", "0"))]

    def counted(real):
        def call(*args, **kwargs):
            left[0] -= 1
            if left[0] == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return call

    os.replace = counted(os.replace)
    os.unlink = counted(os.unlink)
    if os.environ.get("KILL_IN_DATABASE"):
        from pipekit.state.postgres import PostgresStore
        from pipekit.state.sqlite import SqliteStore

        for store in (SqliteStore, PostgresStore):
            for name in ("write_output", "save_checkpoints", "delete_output"):
                setattr(store, name, counted(getattr(store, name)))
"""

ROUNDS = 2
#: The writer's batches in order: (round, first sub-item of the two).
SEQUENCE = [(round, start) for round in range(ROUNDS) for start in range(0, 6, 2)]


def result(round: int, n: int) -> str:
    return f"{round}:{n}:" + "x" * (BIG if n % 2 == 0 else 10)


def run_writer(tmp_path: Path, url: str, kill_at: int) -> tuple[int, int]:
    """Run the writer, killed at its ``kill_at``-th write: its exit code and how many batches it finished."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(KILLER))
    script = textwrap.dedent(WRITER).replace("ROUNDS", str(ROUNDS)).replace("BIG", str(BIG))
    env = {**os.environ, "PYTHONPATH": str(hooks), "KILL_AT": str(kill_at)}
    if not url.startswith("json:"):
        env["KILL_IN_DATABASE"] = "1"
    done = subprocess.run([sys.executable, "-c", script, url], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, -9), done.stderr
    lines = done.stdout.splitlines()
    assert [tuple(map(int, line.split())) for line in lines] == SEQUENCE[: len(lines)]
    return done.returncode, len(lines)


def stray_outputs(store: StateStore, url: str, records: dict[tuple[str, str], Any]) -> list[str]:
    """The stored outputs of item a that no record refers to."""
    if url.startswith("json:"):
        folder = Path(url[5:]) / "a.outputs"
        refs = {str(path.relative_to(folder.parent)) for path in folder.iterdir()} if folder.is_dir() else set()
    elif url.startswith("sqlite:"):
        with sqlite3.connect(url[7:].partition("?")[0]) as db:
            refs = {row[0] for row in db.execute("SELECT ref FROM outputs WHERE item_id = 'a'")}
    else:
        rows = store._query(  # type: ignore[attr-defined]
            "SELECT ref FROM pipekit_outputs WHERE pipeline = %s AND item_id = 'a'", (store.pipeline,)  # type: ignore[attr-defined]
        )
        refs = {row[0] for row in rows}
    return sorted(refs - {record.result_ref for record in records.values()})


@pytest.mark.slow
def test_a_kill_at_any_write_loses_no_sub_item_and_leaves_only_the_write_in_flight(
    tmp_path: Path, store_url: str | None
) -> None:
    kill_at = 0
    while True:
        kill_at += 1
        url = store_url or f"json:{tmp_path / f'state-{kill_at}'}"
        store = open_store_url(url, pipeline="pipeline")
        drop(store, "a", "p")  # a database store is shared by the attempts: start afresh
        code, finished = run_writer(tmp_path, url, kill_at)
        records = load(store, "a", "p")
        flight = SEQUENCE[finished] if code else None
        for n in range(6):
            last = max((r for r, start in SEQUENCE[:finished] if n in (start, start + 1)), default=None)
            allowed = {result(r, n) for r in (last, flight[0] if flight and n - flight[1] in (0, 1) else None)
                       if r is not None}
            record = records.get(("fn", str(n)))
            if last is not None:  # saved: it must be there, with that result or the newer one in flight
                assert record is not None and record.status == DONE, (kill_at, n)
            if record is not None:
                assert record.result in allowed, (kill_at, n, record.result[:8])
        # Left behind: at most the files of the write in flight (the JSON batch it superseded,
        # and the large result it replaced or had just written), never one of a finished write.
        stray = stray_outputs(store, url, records)
        assert len(stray) <= 1, (kill_at, stray)
        if url.startswith("json:"):
            found, batches = winners(sub_folder(Path(url[5:]), "a", "p"))
            dead = set(batches) - {name for _, name, _ in found.values()}
            assert len(dead) <= 1, (kill_at, sorted(dead))
        store.close()
        if code == 0:
            assert not stray
            break
    print(f"killed the writer at each of its {kill_at - 1} writes")
    # Each batch writes its record and a large result; the second round deletes three.
    assert kill_at - 1 >= 2 * len(SEQUENCE) + 3
