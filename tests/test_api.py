"""Driving pipekit from Python: load, run, arun."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import pipekit
from pipekit.testing import PipeTester


PIPELINE = '''
    from pipekit import phase, PhaseResult

    @phase(1)
    def cost(item_id):
        return PhaseResult(output=item_id * 2, tokens_in=3, cost_usd=0.25)
'''


def test_run_returns_states_and_totals(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(PIPELINE)
    result = pipekit.run(str(path), ["a", ("b", {"k": "v"})], state_dir=pipetester.path / "st", progress="none")
    assert result.exit_status == pipekit.ExitCode.OK
    assert result.states["a"].phase_outputs == {1: "aa"}
    assert result.states["b"].metadata == {"k": "v"}
    assert (result.items_total, result.items_completed, result.tokens_in, result.cost_usd) == (2, 2, 6, 0.5)
    assert (pipetester.path / "st" / "a.json").exists()


def test_a_run_result_prints_its_totals_not_every_state(pipetester: PipeTester) -> None:
    # (asyncio.run also formats it when it restores the SIGINT handler: a full
    # repr of 100,000 states cost seconds at the end of every pipekit.run)
    path = pipetester.make_pipeline(PIPELINE)
    result = pipekit.run(str(path), ["a", "b"], state_dir=pipetester.path / "st", progress="none")
    assert len(result.states) == 2
    assert "items_completed=2" in repr(result)
    assert "PipelineState" not in repr(result) and "'a'" not in repr(result)


def test_arun_works_inside_a_running_event_loop(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(PIPELINE)

    async def notebook_cell() -> pipekit.RunResult:
        return await pipekit.arun(str(path), ["x"], state_dir=pipetester.path / "st", progress="none")

    result = asyncio.run(notebook_cell())
    assert result.exit_status == 0
    assert result.states["x"].phase_outputs[1] == "xx"


def test_usage_errors_raise(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline("x = 1\n")
    with pytest.raises(pipekit.UsageError, match="no phases"):
        pipekit.run(str(path), ["a"])
    good = pipetester.make_pipeline(PIPELINE, name="good")
    with pytest.raises(pipekit.UsageError, match="duplicate item id 'a'"):
        pipekit.run(str(good), ["a", "a"])


def test_help_and_version(pipetester: PipeTester) -> None:
    top = pipetester.run("--help")
    assert top.ret == 0 and "pipekit [run] MODULE" in top.stdout
    version = pipetester.run("--version")
    assert version.stdout.strip() == f"pipekit {pipekit.__version__}"
    pipetester.make_pipeline(PIPELINE + '''
    from pipekit import hookimpl

    @hookimpl
    def pipekit_addoption(parser):
        parser.getgroup("books").addoption("--model", default="small", help="which model writes drafts")
    ''')
    run_help = pipetester.run("run", "pipeline.py", "--help")
    assert run_help.ret == 0
    assert "--from-phase" in run_help.stdout and "--model" in run_help.stdout


def test_plugin_options_reach_configure(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE + '''
    from pipekit import hookimpl
    import sys

    @hookimpl
    def pipekit_addoption(parser):
        parser.addoption("--model", default="small")

    @hookimpl
    def pipekit_configure(config):
        print("model is", config.getoption("model"), file=sys.stderr)
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--model", "large")
    assert result.ret == 0, result
    assert "model is large" in result.stderr


def test_unwritable_state_dir_is_a_clear_error_not_a_traceback(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    blocker = pipetester.path / "not-a-dir"
    blocker.write_text("a file where the state dir should be")
    result = pipetester.run("pipeline.py", "--item", "a", "--state-dir", str(blocker / "state"))
    assert result.ret == 3, result
    assert "cannot write state" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_works_from_inside_a_running_event_loop_as_in_a_notebook_cell(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(PIPELINE)

    async def notebook_cell() -> pipekit.RunResult:
        return pipekit.run(str(path), ["x", "y"], state_dir=pipetester.path / "st", progress="none")

    result = asyncio.run(notebook_cell())
    assert result.exit_status == pipekit.ExitCode.OK
    assert result.states["y"].phase_outputs[1] == "yy"
    assert result.cost_usd == 0.5
    assert (pipetester.path / "st" / "x.json").exists()


# -- the command line's options, as keywords ------------------------------------

TOGETHER = '''
    import threading
    from pipekit import phase

    meet = threading.Barrier(2, timeout=5)

    @phase(1)
    def together(item_id):
        meet.wait()  # only returns once two items run at the same time
        return item_id
'''


def test_workers_run_items_at_the_same_time(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(TOGETHER)
    result = pipekit.run(str(path), ["a", "b"], workers=2, progress="none")
    assert result.exit_status == pipekit.ExitCode.OK
    assert result.items_completed == 2


def test_project_defaults_apply_to_options_the_call_leaves_out(pipetester: PipeTester) -> None:
    (pipetester.path / "pyproject.toml").write_text('[tool.pipekit]\nworkers = 2\nprogress = "none"\n')
    path = pipetester.make_pipeline(TOGETHER)
    result = pipekit.run(str(path), ["a", "b"])
    assert result.exit_status == pipekit.ExitCode.OK, result


def test_store_is_where_state_lives(pipetester: PipeTester, capfd: pytest.CaptureFixture[str]) -> None:
    path = pipetester.make_pipeline(PIPELINE)
    db = pipetester.path / "runs.db"
    result = pipekit.run(str(path), ["a", "b"], store=f"sqlite:{db}", state_dir=pipetester.path / "st")
    assert result.exit_status == pipekit.ExitCode.OK
    assert db.exists() and not (pipetester.path / "st").exists()
    assert f"state: sqlite:{db}" in capfd.readouterr().err
    again = pipekit.run(str(path), ["a", "b"], store=f"sqlite:{db}", progress="none")
    assert again.cost_usd == 0  # finished there: nothing runs or is paid again


def test_executor_runs_phases_elsewhere(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline('''
    import os
    from pipekit import phase

    @phase(1)
    def where(item_id):
        return str(os.getpid())
    ''')
    result = pipekit.run(str(path), ["a"], executor="processes", progress="none")
    assert result.exit_status == pipekit.ExitCode.OK
    assert result.states["a"].phase_outputs[1] != str(os.getpid())
    with pytest.raises(pipekit.UsageError, match="unknown --executor 'nowhere'"):
        pipekit.run(str(path), ["a"], executor="nowhere", progress="none")


def test_max_cost_stops_and_a_higher_cap_continues(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(PIPELINE)
    items = ["a", "b", "c", "d"]
    capped = pipekit.run(str(path), items, max_cost=0.5, progress="none")
    assert capped.exit_status == pipekit.ExitCode.ITEMS_FAILED
    assert (capped.items_completed, capped.cost_usd) == (2, 0.5)
    rest = pipekit.run(str(path), items, max_cost=1.0, progress="none")
    assert rest.exit_status == pipekit.ExitCode.OK
    assert rest.cost_usd == 0.5  # only c and d were paid for
    with pytest.raises(pipekit.UsageError, match="--max-cost"):
        pipekit.run(str(path), items, max_cost=-1)


FLAKY = '''
    from pipekit import phase

    @phase(1)
    def first(item_id):
        if item_id.startswith("bad"):
            raise ValueError("no good")
        return item_id

    @phase(2)
    def second(first):
        return first + "!"
'''


def test_maxfail_stops_after_failed_items(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(FLAKY)
    result = pipekit.run(str(path), ["bad1", "bad2", "ok"], maxfail=1, progress="none")
    assert result.exit_status == pipekit.ExitCode.ITEMS_FAILED
    assert result.states["bad1"].phases[1].status == "failed"
    assert "ok" not in result.states or result.states["ok"].phases[1].status == "pending"
    same = pipekit.run(str(path), ["bad1", "bad2", "bad3", "ok"], maxfail_same=2, force=True, progress="none")
    assert same.exit_status == pipekit.ExitCode.ITEMS_FAILED
    assert "ok" not in same.states or same.states["ok"].phases[1].status == "pending"


def test_failed_only_and_from_phase_choose_what_runs_again(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(FLAKY)
    pipekit.run(str(path), ["bad", "ok"], progress="none")
    retry = pipekit.run(str(path), ["bad", "ok"], failed_only=True, progress="none")
    assert set(retry.states) == {"bad"}
    assert retry.states["bad"].phases[1].attempts == 2
    again = pipekit.run(str(path), ["ok"], from_phase=2, progress="none")
    assert (again.states["ok"].phases[1].attempts, again.states["ok"].phases[2].attempts) == (1, 2)


def test_sample_and_limit_pick_from_the_items_given(pipetester: PipeTester, capfd: pytest.CaptureFixture[str]) -> None:
    path = pipetester.make_pipeline(PIPELINE)
    items = [f"i{n}" for n in range(10)]
    first = pipekit.run(str(path), items, sample=3, seed=7, state_dir=pipetester.path / "one")
    assert first.items_total == 3 and len(first.states) == 3
    assert "sample: 3 of 10 items (--seed 7 draws it again)" in capfd.readouterr().err
    second = pipekit.run(str(path), items, sample=3, seed=7, state_dir=pipetester.path / "two", progress="none")
    assert set(second.states) == set(first.states)
    limited = pipekit.run(str(path), items, limit=2, state_dir=pipetester.path / "three", progress="none")
    assert set(limited.states) == {"i0", "i1"}


def test_sample_picks_from_the_modules_items(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(PIPELINE + '''
    def items():
        return [f"m{n}" for n in range(10)]
    ''')
    result = pipekit.run(str(path), sample=4, seed=1, progress="none")
    assert result.items_total == 4 and all(item.startswith("m") for item in result.states)


def test_plugins_by_name_load_and_block_as_p_does(
    pipetester: PipeTester, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(pipetester.path))
    path = pipetester.make_pipeline(PIPELINE)
    pipetester.make_files({"shout.py": '''
    import sys
    from pipekit import hookimpl

    @hookimpl
    def pipekit_item_start(item):
        print("SHOUT", item.id, file=sys.stderr)
    '''})
    pipekit.run(str(path), ["a"], plugins=["shout"], progress="none")
    err = capfd.readouterr().err
    assert "SHOUT a" in err and "summary of pipeline" in err
    pipekit.run(str(path), ["b"], plugins=["no:summary"], progress="none")
    assert "summary of pipeline" not in capfd.readouterr().err


def test_args_carry_plugin_options(pipetester: PipeTester, capfd: pytest.CaptureFixture[str]) -> None:
    path = pipetester.make_pipeline(PIPELINE + '''
    from pipekit import hookimpl
    import sys

    @hookimpl
    def pipekit_addoption(parser):
        parser.addoption("--model", default="small")

    @hookimpl
    def pipekit_configure(config):
        print("model is", config.getoption("model"), file=sys.stderr)
    ''')
    pipekit.run(str(path), ["a"], args=["--model", "large"], progress="none")
    assert "model is large" in capfd.readouterr().err
    with pytest.raises(pipekit.UsageError, match="--nonsense"):
        pipekit.run(str(path), ["a"], args=["--nonsense"])


def test_output_dir_is_where_handlers_write(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline('''
    from pipekit import phase

    @phase(1)
    def write(item_id, output_dir):
        (output_dir / "out.txt").write_text(item_id)
    ''')
    outputs = pipetester.path / "elsewhere"
    result = pipekit.run(str(path), ["a"], output_dir=outputs, progress="none")
    assert result.exit_status == pipekit.ExitCode.OK
    assert [p.read_text() for p in outputs.rglob("out.txt")] == ["a"]


def test_rerun_stale_reruns_a_phase_whose_code_changed(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(PIPELINE, name="stale1")
    pipekit.run(str(path), ["a"], progress="none")
    path.write_text(path.read_text().replace("item_id * 2", "item_id * 3"))
    kept = pipekit.run(str(path), ["a"], progress="none")
    assert kept.states["a"].phase_outputs[1] == "aa" and kept.cost_usd == 0
    rerun = pipekit.run(str(path), ["a"], rerun_stale=True, progress="none")
    assert rerun.states["a"].phase_outputs[1] == "aaa" and rerun.cost_usd == 0.25


def test_ctrl_c_in_a_notebook_cell_records_the_phase_in_flight(pipetester: PipeTester) -> None:
    # A kernel runs cells on a loop it drives itself and turns SIGINT into KeyboardInterrupt.
    pipetester.make_pipeline('''
    import pathlib
    import time
    from pipekit import phase

    @phase(1)
    def slow(item_id):
        pathlib.Path("started").write_text("yes")
        time.sleep(60)
        return item_id
    ''')
    (pipetester.path / "cell.py").write_text(
        "import asyncio\n"
        "import pipekit\n"
        "async def cell():\n"
        "    try:\n"
        "        pipekit.run('pipeline.py', ['a'], state_dir='st', progress='none')\n"
        "    except KeyboardInterrupt:\n"
        "        print('KeyboardInterrupt raised', flush=True)\n"
        "asyncio.new_event_loop().run_until_complete(cell())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "cell.py"], cwd=pipetester.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (pipetester.path / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "KeyboardInterrupt raised" in out, err
    state = json.loads((pipetester.path / "st" / "a.json").read_text())
    assert state["phases"]["1"]["status"] == "failed" and state["phases"]["1"]["reason"] == "interrupted", state


def test_on_state_streams_each_final_state_and_keep_states_false_holds_none(pipetester: PipeTester) -> None:
    path = pipetester.make_pipeline(PIPELINE)
    store = f"sqlite:{pipetester.path / 'st.sqlite'}"
    pipekit.run(str(path), ["a"], store=store, progress="none")
    seen: list[tuple[str, dict[int, object]]] = []
    result = pipekit.run(
        str(path), ["a", "b"], store=store, progress="none", keep_states=False,
        on_state=lambda state: seen.append((state.item_id, dict(state.phase_outputs))),
    )
    assert result.exit_status == pipekit.ExitCode.OK
    # "a" was finished (skipped unread by the index, loaded only for the callback); "b" ran now.
    assert sorted(seen) == [("a", {1: "aa"}), ("b", {1: "bb"})]
    assert result.states == {}
    assert (result.items_total, result.items_completed) == (2, 2)


def test_a_resume_streams_the_finished_rows_of_the_index(pipetester: PipeTester) -> None:
    from pipekit.state.sqlite import SqliteStore

    path = pipetester.make_pipeline(PIPELINE)
    store = f"sqlite:{pipetester.path / 'st.sqlite'}"
    pipekit.run(str(path), [f"i{n}" for n in range(50)], store=store, progress="none")
    # The whole dict of finished rows is never built on a resume: only the stream is read.
    original = SqliteStore.finished_items
    SqliteStore.finished_items = lambda self, names: pytest.fail("finished_items loads every row at once")  # type: ignore[method-assign]
    try:
        result = pipekit.run(str(path), [f"i{n}" for n in range(50)], store=store, progress="none", keep_states=False)
    finally:
        SqliteStore.finished_items = original  # type: ignore[method-assign]
    assert (result.exit_status, result.items_completed) == (pipekit.ExitCode.OK, 50)
