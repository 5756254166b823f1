"""How `pipekit status` reads a big batch: rows straight from the saved documents,
and worker processes for a big JSON directory, each showing what the full
`PipelineState` way shows."""

from __future__ import annotations

from collections.abc import Callable
import copy
import json
import math
from pathlib import Path
import subprocess
import sys
from typing import Any

from batch_helpers import make_batch
from batch_helpers import state_dir
import pytest

from pipekit.cli.status import item_status
from pipekit.cli.status import last_note
from pipekit.cli.status import state_record
from pipekit.cli.statusrows import RowReader
from pipekit.cli.target import Target
from pipekit.outcomes import StateFileError
from pipekit.pipeline.loader import load
from pipekit.state.jsondir import JsonDirStore
from pipekit.testing import PipeTester


def _target(pipetester: PipeTester) -> Target:
    make_batch(pipetester, "a", "b-c", "bad-1", "meh")
    return Target(load(str(pipetester.path / "pipeline.py")), JsonDirStore(state_dir(pipetester)))


def _saved(target: Target, item_id: str) -> dict[str, Any]:
    document = target.store.load(item_id)
    assert document is not None
    return document


def _drop_phase_fields(document: dict[str, Any]) -> None:
    for phase in document["phases"].values():
        for name in ("fingerprint", "traceback", "executor", "completed_at"):
            phase.pop(name, None)


def _hand_skip(document: dict[str, Any]) -> None:
    document["phases"]["3"].update(status="skipped", reason="never works")


def _rename(document: dict[str, Any]) -> None:
    document["phases"]["2"]["name"] = "drafting"  # a phase renamed since: reconciled


#: Ways a saved document may differ from what this pipekit writes for this pipeline.
VARIANTS: dict[str, Callable[[dict[str, Any]], object]] = {
    "as saved": lambda d: None,
    "optional phase fields missing": _drop_phase_fields,
    "optional top-level fields missing": lambda d: [
        d.pop(k) for k in ("metadata", "total_tokens_in", "retired_phases", "phase_output_files")
    ],
    "an unknown field in a phase": lambda d: d["phases"]["1"].update(extra=1),
    "an unknown top-level field": lambda d: d.update(note="hand-edited"),
    "a phase renamed": _rename,
    "a phase missing": lambda d: d["phases"].pop("3"),
    "a phase number that disagrees with its key": lambda d: d["phases"]["1"].update(phase=7),
    "a phase without a status": lambda d: d["phases"]["2"].pop("status"),
    "metadata null": lambda d: d.update(metadata=None),
    "skipped by hand": _hand_skip,
}


def test_rows_show_what_the_full_state_shows(pipetester: PipeTester) -> None:
    target = _target(pipetester)
    for item_id in ("a", "b-c", "bad-1", "meh"):
        for variant, change in VARIANTS.items():
            document = _saved(target, item_id)
            change(document)
            state = target.from_document(item_id, copy.deepcopy(document))
            phases = target.pipeline.phases
            row = RowReader(target, full=True).row(item_id, copy.deepcopy(document))
            case = (item_id, variant)
            assert row.record() == state_record(state, phases), case
            assert row.json() == json.dumps(state_record(state, phases), ensure_ascii=False), case
            assert (row.status, row.last_note()) == (item_status(state, phases), last_note(state)), case
            slim = RowReader(target).row(item_id, copy.deepcopy(document))
            slim.forget_phases()
            assert (slim.status, slim.statuses, slim.last_note()) == (row.status, row.statuses, row.last_note()), case


#: Documents ``PipelineState.from_document`` refuses.
BROKEN: dict[str, Callable[[dict[str, Any]], object]] = {
    "no schema_version": lambda d: d.pop("schema_version"),
    "a newer schema_version": lambda d: d.update(schema_version=99),
    "phases a list": lambda d: d.update(phases=[]),
    "a phase without a name": lambda d: d["phases"]["1"].pop("name"),
    "a phase that is a string": lambda d: d["phases"].update({"2": "done"}),
    "current_phase not a number": lambda d: d.update(current_phase="x"),
    "phase_output_files null": lambda d: d.update(phase_output_files=None),
    "metadata a string": lambda d: d.update(metadata="abc"),
    "no status": lambda d: d.pop("status"),
    "totals as text": lambda d: d.update(total_tokens_in="400", total_cost_usd="0.5"),
    "a phase cost as text": lambda d: d["phases"]["2"].update(cost_usd="x"),
    "attempts null": lambda d: d["phases"]["1"].update(attempts=None),
    "a status that is a list": lambda d: d["phases"]["1"].update(status=["completed"]),
    "a fingerprint that is a string": lambda d: d["phases"]["1"].update(fingerprint="abc"),
    "an output that is not JSON (NaN)": lambda d: d.update(phase_outputs={"1": math.nan}),
}


def test_a_broken_document_is_named_as_the_full_state_names_it(pipetester: PipeTester) -> None:
    target = _target(pipetester)
    for variant, change in BROKEN.items():
        document = _saved(target, "bad-1")
        change(document)
        with pytest.raises(StateFileError) as full:
            target.from_document("bad-1", copy.deepcopy(document))
        with pytest.raises(StateFileError) as row:
            RowReader(target).row("bad-1", copy.deepcopy(document))
        assert str(row.value) == str(full.value), variant
        assert str(state_dir(pipetester) / "bad-1.json") in str(row.value), variant


#: Runs ``pipekit status`` with the JSON directory read by worker processes from
#: the first file on, two files per task (or, with "one", by this process alone),
#: and leaves a mark when the workers were used.
RUNNER = """
import sys
from pathlib import Path
import pipekit.cli.statusrows as rows
from pipekit.cli.main import main

mode = sys.argv[1]
if mode == "workers":
    rows.PARALLEL_FILES, rows.CHUNK_FILES = 1, 2
    rows.worker_count = lambda files: 2
    used = rows.RowReader._rows_in_processes

    def marked(*args):
        Path("workers-used").touch()
        return used(*args)

    rows.RowReader._rows_in_processes = marked
else:
    rows.PARALLEL_FILES = 10**9
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_worker_processes_show_what_one_process_shows(pipetester: PipeTester) -> None:
    make_batch(pipetester, *[f"book-{i}" for i in range(9)], "bad-1", "meh", "b-c")
    folder = state_dir(pipetester)
    (folder / "book-3.json").write_text('{"schema_version": 1, "item_id": "book-3", "phases": ')
    (folder / "stray.json").write_text('{"schema_version": 1}')
    book = json.loads((folder / "book-5.json").read_text())
    book["phases"]["2"]["name"] = "drafting"
    (folder / "book-5.json").write_text(json.dumps(book))
    (pipetester.path / "runner.py").write_text(RUNNER)

    def status(mode: str, *args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "runner.py", mode, "status", "pipeline.py", "--state-dir", str(folder), *args],
            cwd=pipetester.path,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.returncode, done.stdout, done.stderr

    for args in ([], ["--max-rows", "3"], ["--json"], ["--failed", "--all"], ["--item", "book-*", "--json"]):
        alone = status("one", *args)
        assert not Path(pipetester.path, "workers-used").exists()
        shared = status("workers", *args)
        assert Path(pipetester.path, "workers-used").exists()
        assert shared == alone, args
        code, out, err = shared
        assert code == 4
        assert f"corrupt state file {folder / 'book-3.json'}: not valid JSON" in err
        assert f"corrupt state file {folder / 'stray.json'}: has no item_id" in err
        assert "book-3 " not in out and '"book-3"' not in out
        Path(pipetester.path, "workers-used").unlink()
    document = json.loads(status("workers", "--json")[1])
    assert len(document["items"]) == 11 and document["totals"]["failed"] == 1  # meh: completed with errors
    renamed = next(item for item in document["items"] if item["item_id"] == "book-5")
    assert [p["status"] for p in renamed["phases"]] == ["completed", "pending", "completed"]
