"""Tests of the Getting started pipeline, as the Testing page shows them.

tests/test_docs.py runs this file with pytest (conftest.py beside it enables ``pipetester``).
"""

from __future__ import annotations

from pathlib import Path
import signal


PIPELINE = (Path(__file__).parent / "first_pipeline.py").read_text()


# --8<-- [start:unit]
def test_count_is_a_plain_function(tmp_path, monkeypatch):
    from first_pipeline import count  # @phase returns the function itself

    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("three little words")
    assert count("a.txt") == "3"


# --8<-- [end:unit]


# --8<-- [start:run]
def test_every_file_is_counted_once(pipetester):
    pipetester.make_pipeline(PIPELINE, name="words")
    pipetester.make_files({"a.txt": "one two\n", "b.txt": "three\n"})

    result = pipetester.run("words.py")

    assert result.ret == 0
    assert result.state("a.txt").phase_outputs[1] == "2"
    result.assert_outcomes(completed=4)
    assert len(result.calls("pipekit_item_finish")) == 2
    assert pipetester.run("words.py").calls("pipekit_phase_start") == []  # nothing left to do


# --8<-- [end:run]


# --8<-- [start:crash]
def test_a_killed_run_resumes(pipetester):
    pipetester.make_pipeline(PIPELINE, name="words")
    pipetester.make_files({"a.txt": "one two\n", "b.txt": "three\n"})

    killed = pipetester.run_subprocess("words.py", kill_at=("phase_start", "b.txt", 1), signal=signal.SIGKILL)
    assert killed.killed

    resumed = pipetester.run_subprocess("words.py")
    assert resumed.ret == 0
    # a.txt was finished before the kill: only b.txt's unfinished phases run again.
    assert {p["item_id"] for name, p in resumed.events if name == "phase_start"} <= {"b.txt"}
    assert resumed.state("a.txt").phases[1].attempts == 1
    assert resumed.state("b.txt").status == "completed"


# --8<-- [end:crash]
