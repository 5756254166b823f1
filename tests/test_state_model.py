"""Model-based tests of ``PipelineStateManager`` and properties of the id encoding."""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
import time
from typing import Any

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import initialize
from hypothesis.stateful import invariant
from hypothesis.stateful import rule
import pytest

from pipekit import PipelineStateManager
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.model import INLINE_OUTPUT_LIMIT
from pipekit.state.store import encode_item_id
from pipekit.state.values import kept_apart


PHASES = [(1, "one"), (2, "two"), (5, "five"), (7, "seven")]
NUMS = st.sampled_from([num for num, _ in PHASES])
#: Small outputs stay inline; large ones go to files beside the state.
OUTPUTS = st.one_of(
    st.text(max_size=20),
    st.text(min_size=1, max_size=3).map(lambda t: t * (INLINE_OUTPUT_LIMIT // len(t) + 1)),
)


class StateMachine(RuleBasedStateMachine):
    """Random transitions against a dict model; saving and loading in between."""

    @initialize(item_id=st.text(min_size=1, max_size=30))
    def create(self, item_id: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pipekit-model-"))
        self.item_id = item_id
        # durable=False: fsync is not what this tests, and it is slow.
        self.manager = PipelineStateManager(item_id, JsonDirStore(self.dir, durable=False))
        self.manager.create_state({"k": "v"}, PHASES)
        #: num -> (status, output or None, attempts)
        self.model: dict[int, list[Any]] = {num: ["pending", None, 0] for num, _ in PHASES}
        self.spent = [0, 0, 0.0]

    def teardown(self) -> None:
        import shutil

        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(num=NUMS)
    def start(self, num: int) -> None:
        self.manager.start_phase(num)
        self.model[num][0] = "in_progress"
        self.model[num][2] += 1

    @rule(num=NUMS, output=OUTPUTS, tokens=st.integers(0, 1000), cost=st.floats(0, 5))
    def complete(self, num: int, output: str, tokens: int, cost: float) -> None:
        self.manager.complete_phase(num, output, tokens, tokens * 2, cost)
        self.model[num][:2] = ["completed", output]
        self.spent[0] += tokens
        self.spent[1] += tokens * 2
        self.spent[2] += cost

    @rule(num=NUMS, error=st.text(max_size=30), critical=st.booleans())
    def fail(self, num: int, error: str, critical: bool) -> None:
        self.manager.fail_phase(num, error, critical=critical)
        self.model[num][0] = "failed"

    @rule(num=NUMS, output=st.one_of(st.none(), OUTPUTS))
    def skip(self, num: int, output: str | None) -> None:
        self.manager.skip_phase(num, "cache", output=output)
        self.model[num][:2] = ["skipped", output]

    @rule(nums=st.lists(NUMS, max_size=3))
    def reset(self, nums: list[int]) -> None:
        self.manager.reset_phases(nums)
        for num in nums:
            self.model[num][:2] = ["pending", None]

    @rule()
    def save_and_load(self) -> None:
        before = self.manager.state
        self.manager.save_state()
        fresh = PipelineStateManager(self.item_id, JsonDirStore(self.dir, durable=False))
        assert fresh.load_state()
        after = fresh.state
        after.last_updated = before.last_updated
        assert after == before
        self.manager = fresh

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "manager"):
            return
        state = self.manager.state
        for num, (status, output, attempts) in self.model.items():
            phase = state.phases[num]
            assert (phase.status, phase.attempts) == (status, attempts)
            assert state.phase_outputs.get(num) == output
        assert [state.total_tokens_in, state.total_tokens_out] == self.spent[:2]
        assert state.total_cost_usd == pytest.approx(self.spent[2])

    @invariant()
    def totals_are_the_sum_of_the_phases(self) -> None:
        if not hasattr(self, "manager"):
            return
        state = self.manager.state
        assert state.total_tokens_in == sum(p.tokens_in for p in state.phases.values())
        assert state.total_tokens_out == sum(p.tokens_out for p in state.phases.values())
        assert state.total_cost_usd == pytest.approx(sum(p.cost_usd for p in state.phases.values()))

    @invariant()
    def resume_phase_is_the_first_unfinished(self) -> None:
        if not hasattr(self, "manager"):
            return
        unfinished = [n for n, m in sorted(self.model.items()) if m[0] not in ("completed", "skipped")]
        assert self.manager.get_resume_phase() == (unfinished[0] if unfinished else 8)
        pending = [n for n, m in sorted(self.model.items()) if m[0] == "pending"]
        assert self.manager.get_next_pending_phase() == (pending[0] if pending else None)
        assert self.manager.state.is_done == (not unfinished)

    @invariant()
    def no_output_file_without_a_reference(self) -> None:
        if not hasattr(self, "manager"):
            return
        folder = self.dir / f"{encode_item_id(self.item_id)}.outputs"
        files = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        large = sorted(
            num for num, m in self.model.items()
            if m[1] is not None and kept_apart(m[1])
        )
        # one file per output kept apart (large, or NUL or a lone surrogate in it),
        # named "<num>." + whatever the store chooses; no strays
        assert sorted(int(name.split(".")[0]) for name in files) == large


TestStateMachine = StateMachine.TestCase
TestStateMachine.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_crash_between_reset_and_save_keeps_the_output_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resetting a phase deletes its output file only after the state stops referring to it."""
    manager = PipelineStateManager("a", tmp_path)
    manager.create_state({}, PHASES)
    manager.start_phase(1)
    manager.complete_phase(1, "x" * (INLINE_OUTPUT_LIMIT + 1))
    store = manager.store

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("killed here")

    monkeypatch.setattr(store, "save", crash)
    with pytest.raises(OSError):
        manager.reset_phase(1)
    monkeypatch.undo()
    reloaded = PipelineStateManager("a", tmp_path)
    assert reloaded.load_state()
    assert reloaded.state.phase_outputs[1] == "x" * (INLINE_OUTPUT_LIMIT + 1)


# -- the id -> file name encoding ---------------------------------------------------

#: Every name pipekit derives from an encoded id, with the longest extras it adds.
SUFFIXES = [".json", ".outputs", ".lock", ".json.4194304.18446744073709551615.tmp"]
IDS = st.text(
    alphabet=st.characters(blacklist_categories=()), min_size=1, max_size=400
) | st.sampled_from(["..", ".", "/", "a/../b", "\x00", "\n", "A", "a", "%41", "~", "x" * 1000])


@given(IDS)
def test_encoded_ids_stay_one_safe_name_inside_the_dir(item_id: str) -> None:
    name = encode_item_id(item_id)
    assert name not in ("", ".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\x00" not in name and "\n" not in name
    for suffix in SUFFIXES:
        full = "." + name + suffix if suffix.endswith(".tmp") else name + suffix
        assert len(full.encode("utf-8")) <= 255
    root = Path("/state")
    assert (root / f"{name}.json").resolve().parent == root


@given(IDS, IDS)
def test_encoding_is_injective_even_ignoring_case(first: str, second: str) -> None:
    if first != second:
        assert encode_item_id(first) != encode_item_id(second)
        assert encode_item_id(first).lower() != encode_item_id(second).lower()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40, deadline=None)
@given(st.lists(IDS, min_size=1, max_size=5, unique=True))
def test_every_id_round_trips_through_its_own_file(tmp_path: Path, item_ids: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    for item_id in item_ids:
        PipelineStateManager(item_id, JsonDirStore(folder, durable=False)).create_state({}, PHASES[:1])
    assert sorted(JsonDirStore(folder).item_ids()) == sorted(item_ids)
    assert [p for p in folder.rglob("*") if folder not in p.parents] == []
    assert not any(p.name.startswith(".") for p in folder.iterdir())


def test_temporary_files_of_killed_writes_are_removed_once_stale(tmp_path: Path) -> None:
    """A kill during a write leaves a hidden temp file; a later run removes it once old."""
    manager = PipelineStateManager("a", tmp_path)
    manager.create_state({}, PHASES)
    outputs = tmp_path / "a.outputs"
    outputs.mkdir()
    stale = [tmp_path / ".a.json.123.0.tmp", outputs / ".1.txt.123.0.tmp"]
    fresh = tmp_path / ".b.json.456.0.tmp"  # a write in flight in another process
    for path in (*stale, fresh):
        path.write_text("{")
    for path in stale:
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    again = PipelineStateManager("a", tmp_path)
    assert again.load_state()
    again.start_phase(1)
    again.complete_phase(1, "x" * (INLINE_OUTPUT_LIMIT + 1))
    assert [p.exists() for p in stale] == [False, False]
    assert fresh.exists()
    assert again.state.phase_outputs[1] == "x" * (INLINE_OUTPUT_LIMIT + 1)
