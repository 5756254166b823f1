"""The one parser of saved state documents: a hand-edited field of the wrong type
is a corrupt state file naming the file and the field, in every command, and never
a crash."""

from __future__ import annotations

import copy
from dataclasses import fields
import json
import math
from pathlib import Path
import types
import typing
from typing import Any

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pipekit.outcomes import StateFileError
from pipekit.state.document import PHASE_CHECKS
from pipekit.state.document import STATUSES
from pipekit.state.document import is_json_value
from pipekit.state.document import read_document
from pipekit.state.indexed import summarize
from pipekit.state.model import PhaseState
from pipekit.state.model import PipelineState
from pipekit.state.stalekey import stale_key
from pipekit.state.store import encode_document
from pipekit.testing import PipeTester


STAMP = "2026-01-01T00:00:00.000+00:00"


def _valid() -> dict[str, Any]:
    """A document as pipekit writes it: a completed phase with a fingerprint, a
    failed one, a pending one, a large output by reference and a retired phase."""
    fingerprint = {"code": "c1", "version": None, "input": None, "consumed": {}}
    phases = {
        1: PhaseState(1, "one", "completed", started_at=STAMP, completed_at=STAMP, duration_seconds=1.5,
                      tokens_in=10, tokens_out=5, cost_usd=0.25, attempts=1, fingerprint=fingerprint),
        2: PhaseState(2, "two", "failed", error="boom", reason="error", traceback="Traceback ...", attempts=2),
        3: PhaseState(3, "three"),
    }
    retired = {"old": {"state": dict(vars(PhaseState(4, "old", "completed", cost_usd=1))), "output": "kept"}}
    state = PipelineState("a", {"title": "A"}, "failed", 2, STAMP, STAMP, phases, {1: "one a"}, 10, 5, 1.25,
                          "/p/pipeline.py", retired)
    return state.to_document({2: "a.outputs/2.abc.txt"})


#: Where a field lives in the document, for every field of PipelineState and PhaseState.
TOP_PATHS = [[f.name] for f in fields(PipelineState)] + [["schema_version"], ["phase_output_files"]]
PHASE_PATHS = [["phases", num, f.name] for num in ("1", "2") for f in fields(PhaseState)]
INNER_PATHS = [
    ["phase_outputs", "1"],
    ["phase_output_files", "2"],
    ["phases", "1", "fingerprint", "code"],
    ["phases", "1", "fingerprint", "consumed"],
    ["retired_phases", "old"],
    ["retired_phases", "old", "output"],
    *(["retired_phases", "old", "state", f.name] for f in fields(PhaseState)),
]
PATHS = TOP_PATHS + PHASE_PATHS + INNER_PATHS
MISSING = object()
#: Values of the wrong type or range for most fields (and the right one for some).
WRONG = st.one_of(
    st.sampled_from([
        None, "", "x", "many", "1", [], ["completed"], {}, {"a": 1}, -1, -0.5, 0, 1.5, True,
        math.nan, math.inf, -math.inf, 2**63, 10**400, "2026-13-45", MISSING,
    ]),
    st.text(max_size=5),
    st.integers(),
    st.floats(),
)


def _set(document: dict[str, Any], path: list[str], value: Any) -> None:
    holder = document
    for key in path[:-1]:
        holder = holder[key]
    if value is MISSING:
        holder.pop(path[-1], None)
    else:
        holder[path[-1]] = value


def _conforms(value: Any, hint: Any) -> bool:
    """``value`` is of the annotated type (one level deep) and, if a number, finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        kind = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if kind is float and type(value) in (int, float):
            return True
        if kind is not type(None) and type(value) is kind:
            return True
    return False


def _assert_well_typed(state: PipelineState) -> None:
    """What every reader may rely on once the parser accepted a document."""
    for owner in (state, *state.phases.values()):
        hints = typing.get_type_hints(type(owner))
        for f in fields(owner):
            value = getattr(owner, f.name)
            assert _conforms(value, hints[f.name]), (f.name, value)
            if isinstance(value, (int, float)) and f.name not in ("phase", "current_phase"):
                assert value >= 0, (f.name, value)
    for phase in state.phases.values():
        assert phase.status in STATUSES
    assert all(is_json_value(value) for value in state.phase_outputs.values())


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(PATHS), value=WRONG)
def test_a_mutated_field_is_refused_by_name_or_read_as_well_typed(path: list[str], value: Any) -> None:
    document = _valid()
    _set(document, path, value)
    try:
        state, refs = PipelineState.from_document(copy.deepcopy(document), "/state/a.json")
    except StateFileError as exc:
        message = str(exc)
        assert message.startswith("corrupt state file /state/a.json: "), message
        if path != ["schema_version"]:
            named = ".".join(path)
            # the field, or the object holding it when the field is its key
            assert any(f"'{'.'.join(path[:n])}" in message for n in range(1, len(path) + 1)), (named, message)
        assert summarize(document).next_phase is None and summarize(document).done_names == ()
        assert stale_key(document) is None
        return
    _assert_well_typed(state)
    assert all(type(ref) is str for ref in refs.values())
    again, _ = PipelineState.from_document(json.loads(encode_document(state.to_document(refs))), "again")
    assert again == state
    summarize(document)
    stale_key(document)


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (["phases", "2", "attempts"], None, "'phases.2.attempts': None is not an integer >= 0"),
        (["phases", "2", "cost_usd"], "x", "'phases.2.cost_usd': 'x' is not a finite number >= 0"),
        (["phases", "1", "status"], ["completed"], "'phases.1.status': ['completed'] is not one of"),
        (["phases", "1", "fingerprint"], "abc", "'phases.1.fingerprint': 'abc' is not an object or null"),
        (["phase_outputs", "1"], math.nan, "'phase_outputs.1': nan is not a JSON value"),
        (["total_cost_usd"], math.nan, "'total_cost_usd': nan is not a finite number >= 0"),
        (["status"], MISSING, "'status': missing"),
    ],
)
def test_the_message_names_the_field_and_what_it_should_be(path: list[str], value: Any, named: str) -> None:
    document = _valid()
    _set(document, path, value)
    with pytest.raises(StateFileError) as caught:
        read_document(document, "/state/a.json")
    assert f"corrupt state file /state/a.json: missing or malformed field {named}" in str(caught.value)


def test_what_pipekit_writes_is_read_back_unchanged() -> None:
    document = _valid()
    assert read_document(document, "x") is document
    assert summarize(document).done_names == ("one",)
    assert json.loads(stale_key(document) or "") == [["one", "c1", None, False, [], True]]


# -- every command, on a hand-edited file ------------------------------------------------


PIPELINE = '''
    import os
    from pipekit import phase, PhaseResult

    @phase(1)
    def one(item_id):
        return PhaseResult(output=f"one {item_id}", cost_usd=0.5)

    @phase(2)
    def two(item_id, one):
        if os.environ.get("FAIL_TWO"):
            raise RuntimeError("not yet")
        return PhaseResult(output=one + " two", cost_usd=0.25)
'''

#: (field path in b.json, bad value, the field as the message names it)
EDITS = [
    (["phases", "2", "attempts"], None, "phases.2.attempts"),
    (["phases", "2", "attempts"], "many", "phases.2.attempts"),
    # phase 2 is pending: before, it was executed, paid, and the run crashed losing its result
    (["phases", "2", "cost_usd"], "x", "phases.2.cost_usd"),
    (["phase_outputs", "1"], math.nan, "phase_outputs.1"),
    (["phases", "2", "status"], ["failed"], "phases.2.status"),
    (["phases", "1", "fingerprint"], "abc", "phases.1.fingerprint"),
]


def _damaged(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, path: list[str], value: Any) -> Path:
    pipetester.make_pipeline(PIPELINE)
    pipetester.make_items("a", "b", "c")
    monkeypatch.setenv("FAIL_TWO", "1")
    first = pipetester.run("pipeline.py", "--items", "items.txt")
    assert first.ret == 1, first
    monkeypatch.delenv("FAIL_TWO")
    broken = first.state_dir / "b.json"
    document = json.loads(broken.read_text())
    _set(document, path, value)
    broken.write_text(json.dumps(document, indent=2))
    return broken


@pytest.mark.parametrize(("path", "value", "named"), EDITS)
def test_run_names_the_file_and_field_and_runs_the_others(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, path: list[str], value: Any, named: str
) -> None:
    broken = _damaged(pipetester, monkeypatch, path, value)
    content = broken.read_bytes()
    result = pipetester.run("pipeline.py", "--items", "items.txt")
    assert result.ret == 4, result
    assert f"corrupt state file {broken}: missing or malformed field '{named}'" in result.stderr
    assert "item 'b' not run" in result.stderr and "Traceback" not in result.stderr
    assert broken.read_bytes() == content
    for item_id in "ac":
        assert result.state(item_id).status == "completed"
    assert [c["phase"].num for c in result.calls("pipekit_phase_start")] == [2, 2]


@pytest.mark.parametrize(("path", "value", "named"), EDITS)
def test_status_and_reset_name_the_file_and_field(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, path: list[str], value: Any, named: str
) -> None:
    broken = _damaged(pipetester, monkeypatch, path, value)
    content = broken.read_bytes()
    expected = f"corrupt state file {broken}: missing or malformed field '{named}'"
    for args in (["status", "pipeline.py"], ["status", "pipeline.py", "--json"], ["reset", "pipeline.py", "--failed"]):
        result = pipetester.run(*args)
        assert result.ret == 4, (args, result)
        assert expected in result.stderr, args
        assert "Traceback" not in result.stderr
        assert broken.read_bytes() == content
    status = pipetester.run("status", "pipeline.py", "--json")
    assert {item["item_id"] for item in json.loads(status.stdout)["items"]} == {"a", "c"}


def test_every_command_reports_the_file_in_a_subprocess(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _damaged(pipetester, monkeypatch, ["phases", "2", "cost_usd"], "x")
    content = broken.read_bytes()
    expected = f"corrupt state file {broken}: missing or malformed field 'phases.2.cost_usd'"
    commands = {
        ("pipeline.py", "--items", "items.txt"): 4,
        ("status", "pipeline.py"): 4,
        ("skip", "pipeline.py", "--item", "b", "--phase", "2", "--reason", "by hand"): 4,
        ("export", "pipeline.py", "--phase", "1", "-o", "exported"): 4,
        ("report", "pipeline.py", "-o", "report.html"): 4,
        ("plan", "pipeline.py", "--items", "items.txt"): 0,
        ("why", "pipeline.py", "b", "1"): None,
    }
    for args, code in commands.items():
        result = pipetester.run_subprocess(*args)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert expected in result.stderr + result.stdout, (args, result)
        assert code is None or result.ret == code, (args, result.ret, result.stderr)
        assert broken.read_bytes() == content
    # Naming the item is how a person recovers: the file is set aside, byte for byte.
    recovered = pipetester.run_subprocess("reset", "pipeline.py", "--item", "b")
    assert recovered.ret == 0 and "'phases.2.cost_usd'" in recovered.stdout, recovered
    (aside,) = broken.parent.glob("b.json.corrupt-*")
    assert aside.read_bytes() == content
    again = pipetester.run_subprocess("pipeline.py", "--items", "items.txt")
    assert again.ret == 0, again


def _refused_field(phase: dict[str, Any]) -> str | None:
    """The first field of ``phase`` that ``PHASE_CHECKS`` refuses, checked one
    by one with no shortcut (the reference the quick pass must agree with)."""
    for field in ("phase", "name"):
        if field not in phase:
            return field
    return next((f for f, v in phase.items() if f in PHASE_CHECKS and PHASE_CHECKS[f](v) is not None), None)


@settings(max_examples=400, deadline=None)
@given(field=st.sampled_from([f.name for f in fields(PhaseState)]), value=WRONG, first=st.booleans())
def test_a_phase_record_of_a_shape_already_seen_is_still_checked_value_by_value(
    field: str, value: Any, first: bool
) -> None:
    # Two records of the same keys in one document, and in the one before: the
    # shape is known when the edited one comes, so only a value check can refuse it.
    document = _valid()
    good = document["phases"]["1"]
    edited = dict(good, phase=4)
    _set(edited, [field], value)
    read_document(copy.deepcopy(document), "before")
    document["phases"] = {"1": good, "4": edited} if first else {"4": edited, "1": good}
    refused = _refused_field(edited)
    try:
        read_document(document, "/state/a.json")
    except StateFileError as exc:
        assert refused is not None, f"{field}={value!r} refused though every check accepts it: {exc}"
        assert f"'phases.4.{refused}'" in str(exc)
    else:
        assert refused is None, f"{field}={value!r} let through by a known shape"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", "many"), ("attempts", True), ("attempts", -1), ("tokens_in", 2**63), ("cost_usd", math.nan),
        ("cost_usd", math.inf), ("duration_seconds", -0.5), ("name", ""), ("status", "done"), ("phase", 2**63),
        ("started_at", "2026-13-45"), ("completed_at", 5), ("fingerprint", {"code": 1}), ("error", 3),
    ],
)
def test_a_second_record_of_the_same_keys_with_a_wrong_value_is_refused(field: str, value: Any) -> None:
    document = _valid()
    good = document["phases"]["1"]
    read_document(copy.deepcopy(document), "before")
    document["phases"]["4"] = {**good, "phase": 4, field: value}
    with pytest.raises(StateFileError, match=rf"'phases\.4\.{field}'"):
        read_document(document, "/state/a.json")
