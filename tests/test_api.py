"""Driving pipekit from Python: load, run, arun."""

from __future__ import annotations

import asyncio

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
