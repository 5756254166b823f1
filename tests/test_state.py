"""The seed's PipelineStateManager and the JSON files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipekit import PipelineStateManager
from pipekit import StateFileError
from pipekit.outcomes import StateWriteError
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.model import INLINE_OUTPUT_LIMIT


PHASES = [(0, "research"), (1, "curate"), (2, "draft")]


def test_seed_operations_and_the_file_a_person_reads(tmp_path: Path) -> None:
    manager = PipelineStateManager("book-1", tmp_path)
    assert manager.load_state() is False
    manager.create_state({"title": "Emma"}, PHASES)
    assert manager.get_resume_phase() == 0
    manager.start_phase(0)
    manager.complete_phase(0, "notes", tokens_in=100, tokens_out=20, cost_usd=0.5)
    manager.start_phase(1)
    manager.fail_phase(1, "RuntimeError: boom", critical=False)
    manager.skip_phase(2, "not needed")
    assert manager.get_next_pending_phase() is None
    assert manager.get_resume_phase() == 1  # the failed phase is where work resumes

    document = json.loads((tmp_path / "book-1.json").read_text())
    assert document["schema_version"] == 1
    assert set(document) >= {
        "item_id", "metadata", "status", "current_phase", "started_at", "last_updated",
        "phases", "phase_outputs", "total_tokens_in", "total_tokens_out", "total_cost_usd",
    }
    research = document["phases"]["0"]
    assert set(research) >= {
        "phase", "name", "status", "executor", "started_at", "completed_at", "duration_seconds",
        "tokens_in", "tokens_out", "cost_usd", "output_file", "error", "attempts", "reason",
    }
    assert research["started_at"].endswith("+00:00")
    assert document["phases"]["1"]["error"] == "RuntimeError: boom"
    assert document["phases"]["2"]["reason"] == "not needed"
    assert document["total_cost_usd"] == 0.5

    again = PipelineStateManager("book-1", tmp_path)
    assert again.load_state() is True
    assert again.state == manager.state
    again.reset_phase(0)
    assert again.get_next_pending_phase() == 0
    assert again.get_resume_phase() == 0
    assert again.state.total_cost_usd == 0.5  # what was spent stays spent
    assert 0 not in again.state.phase_outputs


def test_large_outputs_are_written_once_beside_the_state(tmp_path: Path) -> None:
    manager = PipelineStateManager("big", tmp_path)
    manager.create_state({}, PHASES)
    big = "é" * INLINE_OUTPUT_LIMIT  # twice the limit in UTF-8 bytes
    manager.start_phase(0)
    manager.complete_phase(0, big)
    state_file = tmp_path / "big.json"
    assert state_file.stat().st_size < 4096
    [output_file] = (tmp_path / "big.outputs").iterdir()
    assert output_file.read_text() == big
    written = output_file.stat().st_mtime_ns
    manager.start_phase(1)
    manager.complete_phase(1, "small")
    assert output_file.stat().st_mtime_ns == written  # not rewritten by later saves
    reloaded = PipelineStateManager("big", tmp_path)
    reloaded.load_state()
    assert reloaded.state.phase_outputs == {0: big, 1: "small"}
    reloaded.reset_phase(0)
    assert not output_file.exists()


class FailingSaves(JsonDirStore):
    """A store whose state writes fail, as on a full disk, after its output writes."""

    fail = False

    def save(self, item_id: str, document: dict) -> None:  # type: ignore[type-arg]
        if self.fail:
            raise StateWriteError(self.path_for(item_id), "No space left on device")
        super().save(item_id, document)


def test_a_failed_save_never_leaves_the_state_pointing_at_a_missing_output(tmp_path: Path) -> None:
    store = FailingSaves(tmp_path)
    manager = PipelineStateManager("x", store)
    manager.create_state({}, PHASES)
    big = "A" * (INLINE_OUTPUT_LIMIT + 1)
    manager.start_phase(0)
    manager.complete_phase(0, big)
    store.fail = True
    with pytest.raises(StateWriteError):
        manager.reset_phase(0)
    reloaded = PipelineStateManager("x", tmp_path)
    assert reloaded.load_state()
    assert reloaded.state.phase_outputs[0] == big


def test_renumbered_phases_keep_their_own_large_outputs_even_if_a_save_fails(tmp_path: Path) -> None:
    store = FailingSaves(tmp_path)
    manager = PipelineStateManager("x", store)
    manager.create_state({}, [(1, "a"), (2, "b")])
    for num, letter in ((1, "A"), (2, "B")):
        manager.start_phase(num)
        manager.complete_phase(num, letter * (INLINE_OUTPUT_LIMIT + 1))
    swapped = PipelineStateManager("x", store)
    swapped.load_state()
    assert swapped.reconcile([(1, "b"), (2, "a")])
    swapped.state.phases[1].error = "touch"
    store.fail = True
    with pytest.raises(StateWriteError):
        swapped.save_state()
    reloaded = PipelineStateManager("x", tmp_path)
    reloaded.load_state()
    assert reloaded.state.phase_outputs[1].startswith("A") and reloaded.state.phase_outputs[2].startswith("B")
    store.fail = False
    swapped.save_state()
    again = PipelineStateManager("x", tmp_path)
    again.load_state()
    assert again.state.phase_outputs[1].startswith("B") and again.state.phase_outputs[2].startswith("A")


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    manager = PipelineStateManager("a", tmp_path)
    manager.create_state({}, PHASES)
    for num, _ in PHASES:
        manager.start_phase(num)
        manager.complete_phase(num, "x" * 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"schema_version": 1, "item_id": "a"', "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"item_id": "a"}', "no schema_version"),
        ('{"schema_version": 99, "item_id": "a"}', "schema_version 99 is newer"),
        ('{"schema_version": 1, "item_id": "a"}', "missing or malformed field"),
    ],
)
def test_unreadable_state_names_the_file(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "a.json").write_text(content)
    with pytest.raises(StateFileError) as info:
        PipelineStateManager("a", tmp_path).load_state()
    assert str(tmp_path / "a.json") in str(info.value)
    assert problem in str(info.value)
    assert (tmp_path / "a.json").read_text() == content


def test_store_lists_item_ids(tmp_path: Path) -> None:
    for item_id in ("a/b", "Ünï", "x" * 300):
        PipelineStateManager(item_id, tmp_path).create_state({}, PHASES)
    assert sorted(JsonDirStore(tmp_path).item_ids()) == sorted(["a/b", "Ünï", "x" * 300])



def test_large_outputs_come_back_byte_for_byte(tmp_path: Path) -> None:
    text = "line\r\nold mac\rend\n" * (INLINE_OUTPUT_LIMIT // 10)
    manager = PipelineStateManager("crlf", tmp_path)
    manager.create_state({}, PHASES)
    manager.start_phase(0)
    manager.complete_phase(0, text)
    reloaded = PipelineStateManager("crlf", tmp_path)
    reloaded.load_state()
    assert reloaded.state.phase_outputs[0] == text


def test_timestamps_are_utc_iso_8601_with_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime
    from datetime import timezone
    import time

    from pipekit.state.model import utc_now

    for moment in (0.0, 1_780_000_000.9999, 1_780_000_001.0, 1_780_000_001.5, time.time()):
        monkeypatch.setattr(time, "time", lambda moment=moment: moment)
        expected = datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds")
        assert utc_now() == expected
        assert datetime.fromisoformat(utc_now()).tzinfo == timezone.utc
