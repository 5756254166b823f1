"""Typed outputs: a handler returns any JSON value or a pydantic model; downstream
handlers get an equal value of the same type, in the same run and after a restart."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
import subprocess
import sys
from typing import Any

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from pipekit.testing import PipeTester


#: Values whose type a careless store would lose: each is one item's phase-1 output.
VALUES: list[Any] = [
    None, '{"a": 1}', "42", "null", "", 0, 0.0, False, True, 1, 3, 3.0, [], {}, -0.5, 10**30,
    {"nested": [1, 2.5, {"deep": None, "flag": False}], "text": "é 📚"}, [[], {}, ""],
    {"big": "x" * 20000}, ["y" * 10000, 1], "z" * 20000, 1e300, {"f": 1e16}, "nul\x00inside",
]

PIPELINE = '''
import json, os
from pipekit import phase

VALUES = {values}

@phase(1)
def produce(item_id):
    return VALUES[int(item_id[1:])]

@phase(2)
def check(item_id, produce, previous_outputs):
    if os.environ.get("STOP_AT_2"):
        raise RuntimeError("stopped before phase 2")
    assert type(previous_outputs[1]) is type(produce) and previous_outputs[1] == produce
    seen = {{"type": type(produce).__name__, "json": json.dumps(produce)}}
    if isinstance(produce, dict):
        produce["changed by check"] = True  # a copy: phase 3 and the state must not see it
    return seen

@phase(3)
def again(produce):
    return {{"type": type(produce).__name__, "json": json.dumps(produce)}}
'''


def _expected(value: Any) -> dict[str, str]:
    return {"type": type(value).__name__, "json": json.dumps(value)}


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down (``3 == 3.0`` and ``True == 1`` are not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def _typed_pipeline(pipetester: PipeTester) -> list[str]:
    pipetester.make_pipeline(PIPELINE.format(values=repr(VALUES)))
    ids = [f"v{index}" for index in range(len(VALUES))]
    pipetester.make_items(*ids)
    return ids


def test_values_keep_their_type_in_one_run(pipetester: PipeTester) -> None:
    ids = _typed_pipeline(pipetester)
    result = pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    assert result.ret == 0, result
    for item_id, value in zip(ids, VALUES, strict=True):
        state = result.state(item_id)
        assert same(state.phase_outputs[1], value), (item_id, value)
        assert state.phase_outputs[2] == _expected(value) == state.phase_outputs[3], item_id


def test_values_keep_their_type_across_a_process_restart(pipetester: PipeTester) -> None:
    ids = _typed_pipeline(pipetester)
    first = pipetester.run_subprocess("run", "pipeline.py", "--items", "items.txt", env={"STOP_AT_2": "1"})
    assert first.ret == 1, first
    second = pipetester.run_subprocess("run", "pipeline.py", "--items", "items.txt")
    assert second.ret == 0, second
    assert [e for e, r in second.events if e == "phase_start" and r.get("phase") == 1] == []  # not re-run
    for item_id, value in zip(ids, VALUES, strict=True):
        state = second.state(item_id)
        assert same(state.phase_outputs[1], value), (item_id, value)
        assert state.phase_outputs[2] == _expected(value) == state.phase_outputs[3], item_id
    big = first.state_dir / "v18.outputs"
    assert [p.suffix for p in big.glob("1.*")] == [".json"]  # a large dict: JSON in the outputs folder
    assert [p.suffix for p in (first.state_dir / "v20.outputs").glob("1.*")] == [".txt"]  # a large str: as it was
    document = json.loads((first.state_dir / "v16.json").read_text())
    assert document["phase_outputs"]["1"] == VALUES[16]  # inline, as JSON: not a string holding JSON


def test_export_writes_values_as_json(pipetester: PipeTester) -> None:
    ids = _typed_pipeline(pipetester)
    assert pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none").ret == 0
    result = pipetester.run("export", "pipeline.py", "--phase", "produce", "--jsonl")
    assert result.ret == 0, result
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["item_id"] for line in lines] == ids
    for line, value in zip(lines, VALUES, strict=True):
        assert same(line["output"], value), line
    result = pipetester.run("export", "pipeline.py", "--phase", "1", "-o", "out")
    assert result.ret == 0, result
    out = pipetester.path / "out"
    assert (out / "v1.txt").read_text() == '{"a": 1}'  # a str stays a str, even one that looks like JSON
    assert json.loads((out / "v16.json").read_text()) == VALUES[16]
    assert (out / "v0.json").read_text() == "null\n"
    assert json.loads((out / "v11.json").read_text()) == 3.0 and "3.0" in (out / "v11.json").read_text()


MODEL_PIPELINE = '''
import json
from pathlib import Path
from pydantic import BaseModel
from pipekit import phase

class Answer(BaseModel):
    title: str
    score: int
{extra}

REPLIES = [{{"title": "t"}}, '{{"title": "t", "score": "high"}}', Answer(title="t", score=3)]

@phase(1, output=Answer, retries={retries}, retry_backoff=0)
def ask(item_id, ctx):
    with Path("asked.jsonl").open("a") as log:
        log.write(json.dumps({{"attempt": ctx.attempt, "last_error": ctx.last_error}}) + "\\n")
    return REPLIES[min(ctx.attempt, 3) - 1]

@phase(2)
def use(item_id, ask: Answer, previous_outputs):
    assert isinstance(ask, Answer), type(ask)
    assert type(previous_outputs[1]) is dict
    return f"{{ask.title}} scored {{ask.score}}"
'''


def _model_pipeline(pipetester: PipeTester, retries: int = 2, extra: str = "") -> None:
    pipetester.make_pipeline(MODEL_PIPELINE.format(retries=retries, extra=extra))
    pipetester.make_items("a")


def _asked(pipetester: PipeTester) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (pipetester.path / "asked.jsonl").read_text().splitlines()]


def test_an_invalid_output_is_retried_with_the_error_in_ctx_last_error(pipetester: PipeTester) -> None:
    _model_pipeline(pipetester)
    result = pipetester.run_subprocess("run", "pipeline.py", "--items", "items.txt")
    assert result.ret == 0, result
    asked = _asked(pipetester)
    assert [a["attempt"] for a in asked] == [1, 2, 3]
    assert asked[0]["last_error"] is None
    assert "invalid Answer" in asked[1]["last_error"] and "score: Field required" in asked[1]["last_error"]
    assert "score: Input should be a valid integer" in asked[2]["last_error"]
    state = result.state("a")
    assert state.phase_outputs[1] == {"title": "t", "score": 3}
    assert state.phase_outputs[2] == "t scored 3"
    assert "invalid outputs (attempts): 2 x ask" in result.stderr


def test_an_invalid_output_fails_with_its_reason_and_fields(pipetester: PipeTester) -> None:
    _model_pipeline(pipetester, retries=0)
    result = pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    assert result.ret == 1, result
    phase = result.state("a").phases[1]
    assert (phase.status, phase.reason) == ("failed", "invalid_output")
    assert phase.error == "InvalidOutput: phase 'ask' returned an invalid Answer: score: Field required"
    assert 1 not in result.state("a").phase_outputs
    assert "invalid outputs (attempts): 1 x ask" in result.stderr
    # the next run is the second attempt, and is told what went wrong with the first
    pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    assert _asked(pipetester)[1] == {"attempt": 2, "last_error": phase.error}


def test_changing_the_output_model_makes_completed_cells_stale(pipetester: PipeTester) -> None:
    _model_pipeline(pipetester)
    assert pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none").ret == 0
    result = pipetester.run("plan", "pipeline.py", "--items", "items.txt")
    assert result.ret == 0, result
    result.fnmatch_lines(["phase 1 ask: skip 1", "phase 2 use: skip 1"], "stdout")
    _model_pipeline(pipetester, extra="    reason: str = ''")
    result = pipetester.run("plan", "pipeline.py", "--items", "items.txt")
    assert result.ret == 0, result
    result.fnmatch_lines(
        [
            "phase 1 ask: stale 1, not included (code changed 1)",
            "phase 2 use: stale 1, not included (upstream stale 1)",
        ],
        "stdout",
    )
    why = pipetester.run("why", "pipeline.py", "a", "ask")
    assert "reason" in why.stdout, why


def test_an_unstorable_value_fails_its_item_only_naming_phase_and_type(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import math
        from pipekit import phase

        BAD = {"set": {1, 2}, "key": {1: "one"}, "nan": [1.0, math.nan], "tuple": {"a": (1, 2)}}

        @phase(1)
        def make(item_id):
            return BAD.get(item_id, {"fine": item_id})
    ''')
    pipetester.make_items("set", "key", "nan", "tuple", "good")
    result = pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    assert result.ret == 1, result
    assert result.state("good").phase_outputs[1] == {"fine": "good"}
    errors = {item_id: result.state(item_id).phases[1].error for item_id in ("set", "key", "nan", "tuple")}
    assert errors["set"].startswith("OutputError: phase 'make' returned builtins.set, which cannot be stored")
    assert errors["key"] == "OutputError: phase 'make' returned a int key 1: JSON object keys are str"
    assert errors["nan"] == "OutputError: phase 'make' returned nan at output[1]: JSON has no NaN or infinity"
    assert errors["tuple"].startswith("OutputError: phase 'make' returned builtins.tuple at output['a']")


def test_a_phase_result_carries_any_value_and_a_none_is_an_output(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import PhaseResult, phase

        @phase(1)
        def one(item_id):
            return PhaseResult(output={"n": 1}, cost_usd=0.5)

        @phase(2)
        def two(one):
            return None

        @phase(3)
        def three(one, two, previous_outputs):
            return [one, two, 2 in previous_outputs]
    ''')
    pipetester.make_items("a")
    result = pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    assert result.ret == 0, result
    state = result.state("a")
    assert state.phase_outputs == {1: {"n": 1}, 2: None, 3: [{"n": 1}, None, True]}
    assert state.total_cost_usd == 0.5


def test_output_must_be_a_model_class(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1, output=dict)
        def one(item_id):
            return {}
    ''')
    pipetester.make_items("a")
    result = pipetester.run("run", "pipeline.py", "--items", "items.txt")
    assert result.ret == 4, result
    assert "@phase(1): output must be a pydantic model class, not <class 'dict'>" in result.stderr


def test_pydantic_is_not_imported_unless_a_model_is_used(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text(
        "from pipekit import phase\n\n@phase(1)\ndef one(item_id):\n    return {'a': [1]}\n"
    )
    (tmp_path / "items.txt").write_text("a\n")
    code = (
        "import sys; from pipekit.cli.main import main; "
        "ret = main(['run', 'pipeline.py', '--items', 'items.txt', '-q']); "
        "print(ret, 'pydantic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["0", "False"], done


@pytest.mark.parametrize("old", ["plain text", '{"a": 1}'])
def test_a_state_file_with_str_outputs_reads_unchanged(pipetester: PipeTester, old: str) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1)
        def one(item_id):
            raise AssertionError("completed before: never run again")

        @phase(2)
        def two(one):
            return [type(one).__name__, one]
    ''')
    pipetester.make_items("a")
    folder = pipetester.path / "state" / "pipeline"
    folder.mkdir(parents=True)
    stamp = "2026-01-01T00:00:00+00:00"
    (folder / "a.json").write_text(json.dumps({
        "schema_version": 1, "item_id": "a", "metadata": {}, "status": "in_progress", "current_phase": 2,
        "started_at": stamp, "last_updated": stamp,
        "phases": {
            "1": {"phase": 1, "name": "one", "status": "completed", "attempts": 1},
            "2": {"phase": 2, "name": "two", "status": "pending"},
        },
        "phase_outputs": {"1": old},
    }))
    result = pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none")
    assert result.ret == 0, result
    assert result.state("a").phase_outputs == {1: old, 2: ["str", old]}


# -- every store, any JSON value ------------------------------------------------------------------

def tagged(value: Any) -> Any:
    """The value with every type spelled out and keys sorted (the subprocess below runs this too)."""
    if isinstance(value, dict):
        return ["dict", sorted([k, tagged(v)] for k, v in value.items())]
    if isinstance(value, list):
        return ["list", [tagged(v) for v in value]]
    return [type(value).__name__, repr(value)]


_TEXT = st.text(st.characters(codec=None, min_codepoint=0), max_size=8)  # NUL and lone surrogates included
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)

READ_BACK = '''
import json, sys
from pipekit.state.manager import PipelineStateManager
from pipekit.state.open import open_store_url
for url, count in json.loads(sys.argv[1]):
    store = open_store_url(url, pipeline="typed")
    for index in range(count):
        manager = PipelineStateManager(f"item-{index}", store)
        assert manager.load_state()
        print(json.dumps(tagged(manager.state.phase_outputs[1])))
    store.close()
'''


def test_every_store_keeps_any_json_value_across_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    from store_urls import store_url_fixture

    from pipekit.state.manager import PipelineStateManager
    from pipekit.state.open import open_store_url

    made = [store_url_fixture("sqlite", tmp_path_factory), store_url_fixture("postgresql")]
    urls = [f"json:{tmp_path_factory.mktemp('json')}", *(str(next(generator)) for generator in made)]
    written: list[Any] = []
    try:
        stores = [open_store_url(url, pipeline="typed") for url in urls]

        @settings(max_examples=80, deadline=None)
        @given(value=JSON_VALUES, large=st.booleans())
        def round_trip(value: Any, large: bool) -> None:
            value = [value, "x" * 9000] if large else value
            item_id = f"item-{len(written)}"
            for store in stores:
                manager = PipelineStateManager(item_id, store)
                manager.create_state({}, [(1, "one")])
                manager.complete_phase(1, value)
                again = PipelineStateManager(item_id, store)
                assert again.load_state()
                assert tagged(again.state.phase_outputs[1]) == tagged(value), store.location
            written.append(value)

        round_trip()
        for store in stores:
            store.close()
        # a new process reads back what the last example of each item left: the last value written
        plan = json.dumps([[url, len(written)] for url in urls])
        code = "from typing import Any\n" + inspect.getsource(tagged) + READ_BACK
        done = subprocess.run([sys.executable, "-c", code, plan], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        expected = [json.dumps(tagged(value)) for value in written] * len(urls)
        assert done.stdout.splitlines() == expected
    finally:
        for generator in made:
            next(generator, None)


@pytest.mark.parametrize("text", ["a\x00b", "x\udcff"])
def test_a_small_str_no_store_holds_as_text_is_still_saved(any_store: str | None, text: str) -> None:
    # Inline, PostgreSQL refused NUL and SQLite and PostgreSQL a lone surrogate: the completed phase was lost.
    from pipekit.state.manager import PipelineStateManager
    from pipekit.state.open import open_store_url

    store = open_store_url(any_store or f"json:{Path.cwd() / 'state'}", pipeline="typed")
    try:
        PipelineStateManager("a", store).create_state({}, [(1, "one")])
        manager = PipelineStateManager("a", store)
        assert manager.load_state()
        manager.complete_phase(1, text)
        again = PipelineStateManager("a", store)
        assert again.load_state() and again.state.phase_outputs[1] == text
    finally:
        store.close()


def test_status_of_one_item_previews_each_output(pipetester: PipeTester) -> None:
    _typed_pipeline(pipetester)
    assert pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none").ret == 0
    result = pipetester.run("status", "pipeline.py", "--item", "v16")
    assert result.ret == 0, result
    assert '    output: {"nested":[1,2.5,{"deep":null,"flag":false}],"text":"é 📚"}' in result.stdout
    result = pipetester.run("status", "pipeline.py", "--item", "v20")
    assert f"    output: {'z' * 59}…" in result.stdout
