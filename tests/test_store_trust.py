"""Stores that read without creating, migrations that finish, and text every store keeps."""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pipekit import PipelineStateManager
from pipekit.state.escaping import MARKER
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.open import open_store_url
from pipekit.state.store import StateStore
from pipekit.testing import PipeTester


PIPELINE = '''
    from pipekit import phase

    @phase(1)
    def research(item_id):
        return f"notes on {item_id}"
'''


def test_status_of_a_missing_sqlite_store_names_it_and_creates_nothing(pipetester: PipeTester, tmp_path: Path) -> None:
    pipetester.make_pipeline(PIPELINE)
    missing = tmp_path / "typo" / "state.db"
    result = pipetester.run("status", "pipeline.py", "--store", f"sqlite:{missing}")
    assert result.ret == 4, result
    assert f"sqlite store {missing} does not exist" in result.stderr
    assert not missing.parent.exists()
    # a run still creates it, and then status reads it
    assert pipetester.run("pipeline.py", "--item", "a", "--store", f"sqlite:{missing}").ret == 0
    shown = pipetester.run("status", "pipeline.py", "--store", f"sqlite:{missing}")
    assert shown.ret == 0, shown


def test_status_of_a_postgres_database_without_pipekit_tables_creates_none(
    pipetester: PipeTester, postgres_store_url: str
) -> None:
    import psycopg

    pipetester.make_pipeline(PIPELINE)
    base = postgres_store_url.split("?")[0]
    with psycopg.connect(base, autocommit=True) as db:
        db.execute("CREATE SCHEMA IF NOT EXISTS empty_for_status")
    url = f"{base}?options=-csearch_path%3Dempty_for_status&pipeline=p"
    try:
        result = pipetester.run("status", "pipeline.py", "--store", url)
        assert result.ret == 4, result
        assert "holds no pipekit state" in result.stderr
        with psycopg.connect(base, autocommit=True) as db:
            tables = db.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'empty_for_status'"
            ).fetchone()
        assert tables == (0,)
    finally:
        with psycopg.connect(base, autocommit=True) as db:
            db.execute("DROP SCHEMA empty_for_status CASCADE")


# -- migrate ------------------------------------------------------------------------------------


def test_a_migrate_killed_half_way_finishes_when_run_again(pipetester: PipeTester, tmp_path: Path) -> None:
    pipetester.make_pipeline(PIPELINE)
    source, target = tmp_path / "source", tmp_path / "target"
    assert pipetester.run("pipeline.py", "--item", "seed", "--store", f"json:{source}").ret == 0
    store = JsonDirStore(source, durable=False)
    seed = store.load("seed")
    assert seed is not None
    ids = [f"item-{n:04d}" for n in range(600)]
    store.save_many((item_id, {**seed, "item_id": item_id}) for item_id in ids)
    command = [sys.executable, "-m", "pipekit", "migrate", "--from", f"json:{source}", "--to", f"json:{target}"]
    killed = subprocess.Popen(command, cwd=pipetester.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (target.is_dir() and sum(1 for p in target.iterdir() if p.suffix == ".json") >= 20):
        assert killed.poll() is None and time.monotonic() < deadline, "migrate ended before it was killed"
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    left = sum(1 for p in target.iterdir() if p.suffix == ".json")
    assert 20 <= left < 601, left  # half way
    again = subprocess.run(command, cwd=pipetester.path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"migrated {601 - left} items from " in again.stdout
    assert f"kept {left} items an earlier migrate had copied" in again.stdout
    assert "verified: 601 items, sha256 " in again.stdout
    copy = open_store_url(f"json:{target}")
    assert sorted(copy.item_ids()) == sorted([*ids, "seed"])
    # an item changed in the target since is never overwritten
    copy.save("item-0000", {**seed, "item_id": "item-0000", "total_cost_usd": 99.0})
    refused = subprocess.run(command, cwd=pipetester.path, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 4
    assert "already holds 1 of the items with other contents (e.g. 'item-0000')" in refused.stderr
    assert copy.load("item-0000") == {**seed, "item_id": "item-0000", "total_cost_usd": 99.0}


# -- text every store keeps ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def every_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[StateStore]]:
    from store_urls import store_url_fixture

    urls = [f"json:{tmp_path_factory.mktemp('json')}"]
    made = [store_url_fixture("sqlite", tmp_path_factory), store_url_fixture("postgresql")]
    urls += [str(next(generator)) for generator in made]
    stores = [open_store_url(url, pipeline="outputs") for url in urls]
    yield stores
    for store in stores:
        store.close()
    for generator in made:
        next(generator, None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec=None, min_codepoint=0), min_size=0, max_size=40), pad=st.booleans())
def test_every_store_keeps_any_large_output_text(every_store: list[StateStore], text: str, pad: bool) -> None:
    # NUL and lone surrogates included: an LLM's output is whatever str the handler returns
    output = ("x" * 9000 if pad else "") + text + "\x00\udcff"
    for store in every_store:
        ref = store.write_output("item", 1, output)
        assert store.read_output("item", ref) == output, store.location
        store.delete_output("item", ref)


# -- text a store cannot hold as it is: NUL (PostgreSQL) and lone surrogates (UTF-8) ------------

ODD_TEXT = '''
    import json
    from pathlib import Path
    from pipekit import phase

    def items():
        return [("nul", {"note": "a\\x00b", "k\\x00": "\\ud800"}), ("surrogate", {"note": "\\udcff"})]

    @phase(1)
    def research(item_id):
        with Path("calls.txt").open("a") as log:
            log.write(f"{item_id}\\n")
        return "a\\x00b" if item_id == "nul" else "x\\ud800y"

    @phase(2)
    def fail_oddly(item_id, previous_outputs):
        assert previous_outputs[1] == ("a\\x00b" if item_id == "nul" else "x\\ud800y")
        raise RuntimeError("bad \\x00 and \\udfff")
'''


@pytest.mark.usefixtures("any_store")
def test_outputs_metadata_and_errors_with_nul_or_a_lone_surrogate_are_kept(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(ODD_TEXT)
    first = pipetester.run_subprocess("run", "pipeline.py")
    assert first.ret == 1, first  # phase 2 fails, on purpose; nothing crashed
    assert "Traceback" not in first.stderr
    assert (pipetester.path / "calls.txt").read_text().split() == ["nul", "surrogate"]
    for item_id, output in (("nul", "a\x00b"), ("surrogate", "x\ud800y")):
        state = first.state(item_id)
        assert state.phase_outputs[1] == output
        assert state.phases[1].status == "completed"
        assert state.phases[2].status == "failed"
        assert state.phases[2].error is not None and "bad \x00 and \udfff" in state.phases[2].error
    assert first.state("nul").metadata == {"note": "a\x00b", "k\x00": "\ud800"}
    assert first.state("surrogate").metadata == {"note": "\udcff"}
    again = pipetester.run_subprocess("run", "pipeline.py")
    assert again.ret == 1, again
    assert (pipetester.path / "calls.txt").read_text().split() == ["nul", "surrogate"]  # never paid twice


@pytest.mark.usefixtures("any_store")
def test_export_writes_outputs_with_nul_or_a_lone_surrogate(pipetester: PipeTester, tmp_path: Path) -> None:
    pipetester.make_pipeline(ODD_TEXT)
    assert pipetester.run_subprocess("run", "pipeline.py").ret == 1
    out = tmp_path / "out"
    export = [sys.executable, "-m", "pipekit", "export", "pipeline.py", "--phase", "1"]
    exported = subprocess.run([*export, "-o", str(out)], cwd=pipetester.path, capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    assert "Traceback" not in exported.stderr
    # the file holds the text's UTF-8, a lone surrogate as "surrogatepass" writes it
    assert (out / "nul.txt").read_bytes() == b"a\x00b"
    assert (out / "surrogate.txt").read_bytes() == b"x\xed\xa0\x80y"
    assert (out / "surrogate.txt").read_text("utf-8", "surrogatepass") == "x\ud800y"
    index = [json.loads(line) for line in (out / "index.jsonl").read_text("utf-8").splitlines()]
    assert index == [
        {"item_id": "nul", "metadata": {"note": "a\x00b", "k\x00": "\ud800"}, "file": "nul.txt"},
        {"item_id": "surrogate", "metadata": {"note": "\udcff"}, "file": "surrogate.txt"},
    ]
    printed = subprocess.run([*export, "--jsonl"], cwd=pipetester.path, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert [json.loads(line)["output"] for line in printed.stdout.splitlines()] == ["a\x00b", "x\ud800y"]


@pytest.mark.usefixtures("any_store")
@pytest.mark.parametrize("source", ["items.jsonl", "items()"])
def test_an_item_id_holding_nul_is_a_usage_error_naming_it(pipetester: PipeTester, source: str) -> None:
    if source == "items()":
        pipetester.make_pipeline(PIPELINE + '\n    def items():\n        return ["fine", "a\\x00b"]\n')
        args: tuple[str, ...] = ()
    else:
        pipetester.make_pipeline(PIPELINE)
        pipetester.make_items({"id": "fine"}, {"id": "a\x00b"}, name="items.jsonl")
        args = ("--items", "items.jsonl")
    result = pipetester.run_subprocess("run", "pipeline.py", *args)
    assert result.ret == 4, result
    assert "item id 'a\\x00b'" in result.stderr and "NUL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not result.events or result.event_names().count("phase_start") == 0


_ODD = st.sampled_from(["\x00", "\ud800", "\udfff", "\udcff", MARKER, f'{MARKER}"x"', "\\u0000", "é", "📚"])
_TEXT = st.lists(st.one_of(_ODD, st.text(st.characters(codec=None, min_codepoint=0), max_size=8)), max_size=6).map(
    "".join
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(output=_TEXT, pad=st.sampled_from([0, 3000, 9000]), metadata=st.dictionaries(_TEXT, _JSON), error=_TEXT)
def test_every_store_keeps_whole_documents_of_any_text(
    every_store: list[StateStore], output: str, pad: int, metadata: dict[str, Any], error: str
) -> None:
    # outputs inline and large, metadata keys and values, error texts: any str, the marker too
    output = "y" * pad + output
    for store in every_store:
        for item_id, finish in (("done", True), ("failed", False)):
            manager = PipelineStateManager(item_id, store)
            manager.create_state(metadata, [(1, "write"), (2, "check")])
            manager.start_phase(1)
            manager.complete_phase(1, output, cost_usd=0.5)
            if finish:
                manager.skip_phase(2, error, output=error)
            else:
                manager.start_phase(2)
                manager.fail_phase(2, error, traceback=f"Traceback\n{error}")
            again = PipelineStateManager(item_id, store)
            assert again.load_state(), store.location
            state = again.state
            assert state.metadata == metadata, store.location
            assert state.phase_outputs[1] == output, store.location
            if finish:
                assert (state.phases[2].reason, state.phase_outputs[2]) == (error, error), store.location
            else:
                assert (state.phases[2].error, state.phases[2].traceback) == (error, f"Traceback\n{error}")
        finished = store.finished_items(["write", "check"])
        assert finished is None or finished["done"].metadata == metadata, store.location
