"""`pipekit export`: one phase's outputs out of the state, to files or JSON lines."""

from __future__ import annotations

import json

from batch_helpers import make_batch
from batch_helpers import state_dir

from pipekit.testing import PipeTester


def test_output_folder_gets_a_file_per_item_and_an_index(pipetester: PipeTester) -> None:
    make_batch(pipetester, "a", "b-c", "bad-1", "Odd/../Id ü")
    result = pipetester.run("export", "pipeline.py", "--phase", "draft", "-o", "out")
    assert result.ret == 0, result
    assert "exported 3 output(s) of phase 2 draft to out; 1 item(s) have none yet" in result.stderr
    index = [json.loads(line) for line in (pipetester.path / "out" / "index.jsonl").read_text().splitlines()]
    assert [entry["item_id"] for entry in index] == ["a", "b-c", "Odd/../Id ü"]
    for entry in index:
        path = pipetester.path / "out" / entry["file"]
        assert path.parent == pipetester.path / "out"
        assert path.read_text() in (f"draft from notes on {entry['item_id']}", f"cached draft of {entry['item_id']}")


def test_jsonl_streams_id_metadata_and_output(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(__import__("batch_helpers").BATCH)
    pipetester.make_items({"id": "a", "title": "Alpha"}, {"id": "bad-1", "title": "Broken"}, name="items.jsonl")
    pipetester.run("run", "pipeline.py", "--items", "items.jsonl", "--progress", "none")
    result = pipetester.run("export", "pipeline.py", "--phase", "3", "--jsonl")
    assert result.ret == 0, result
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {
            "item_id": "a",
            "metadata": {"title": "Alpha"},
            "phase": 3,
            "phase_name": "review",
            "output": "DRAFT FROM NOTES ON A",
        },
    ]


def test_large_outputs_kept_in_files_are_exported_whole(pipetester: PipeTester, monkeypatch) -> None:
    monkeypatch.setenv("DRAFT_SIZE", "200000")
    make_batch(pipetester, "big")
    assert list(state_dir(pipetester).glob("big.outputs/*.txt"))
    result = pipetester.run("export", "pipeline.py", "--phase", "2", "-o", "out")
    assert result.ret == 0, result
    assert (pipetester.path / "out" / "big.txt").read_text() == "x" * 200000


def test_bad_arguments_are_usage_errors(pipetester: PipeTester) -> None:
    make_batch(pipetester, "a")
    for args, message in [
        (["--phase", "nope", "--jsonl"], "unknown phase 'nope'"),
        (["--jsonl"], "--phase"),
        (["--phase", "1"], "exactly one of -o DIR and --jsonl"),
    ]:
        result = pipetester.run("export", "pipeline.py", *args)
        assert result.ret == 4 and message in result.stderr, result


def test_export_names_state_files_too_broken_to_read(pipetester) -> None:  # type: ignore[no-untyped-def]
    pipetester.make_pipeline("from pipekit import phase\n@phase(1)\ndef one(item_id):\n    return item_id\n")
    pipetester.run("pipeline.py", "--item", "a", "--progress", "none")
    state_dir = pipetester.path / "state" / "pipeline"
    (state_dir / "broken.json").write_text("{not json")
    result = pipetester.run("export", "pipeline.py", "--phase", "1", "--jsonl")
    assert result.ret == 4, result
    assert "broken.json" in result.stderr
    assert '"item_id": "a"' in result.stdout
