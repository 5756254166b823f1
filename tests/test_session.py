"""The skeleton around a run: set-up and teardown mistakes of plugins and modules,
and the one exit code a run ends with (CONTRACT §4, §7)."""

from __future__ import annotations

import textwrap

import pytest

import pipekit
from pipekit.engine.exitcode import decide_exit_code
from pipekit.outcomes import ExitCode
from pipekit.outcomes import StateWriteError
from pipekit.outcomes import UsageError
from pipekit.testing import PipeTester


SIMPLE = textwrap.dedent('''
    from pipekit import phase

    @phase(1)
    def one(item_id):
        return "1"
''')

FAILING = textwrap.dedent('''
    from pipekit import phase

    @phase(1)
    def one(item_id):
        raise RuntimeError("phase broke")
''')

RAISES_IN = textwrap.dedent('''
    from pipekit import hookimpl

    @hookimpl
    def {hook}(config):
        raise ValueError("no API key in NOTIFY_URL")
''')


def _plugin(pipetester: PipeTester, hook: str) -> None:
    pipetester.make_files({"badplugin.py": RAISES_IN.format(hook=hook)})


# -- pipekit_configure -------------------------------------------------------------


@pytest.mark.slow
def test_a_plugin_raising_in_configure_is_a_usage_error_naming_it(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE)
    _plugin(pipetester, "pipekit_configure")
    env = {"PYTHONPATH": str(pipetester.path)}
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "-p", "badplugin", env=env)
    assert result.ret == 4, result
    assert "plugin 'badplugin' raised in pipekit_configure: ValueError: no API key in NOTIFY_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (pipetester.path / "state").exists()
    verbose = pipetester.run_subprocess("pipeline.py", "--item", "a", "-p", "badplugin", "-v", env=env)
    assert verbose.ret == 4, verbose
    assert "Traceback" in verbose.stderr
    assert 'badplugin.py", line 6, in pipekit_configure' in verbose.stderr


def test_the_pipeline_module_raising_in_configure_is_named(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + RAISES_IN.format(hook="pipekit_configure"))
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 4, result
    assert "plugin 'pipeline:pipeline' raised in pipekit_configure: ValueError" in result.stderr
    assert result.calls("pipekit_run_start") == []


def test_the_library_raises_a_usage_error_naming_a_plugin_that_fails_configure(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + RAISES_IN.format(hook="pipekit_configure"))
    with pytest.raises(pipekit.UsageError, match="plugin 'pipeline:pipeline' raised in pipekit_configure"):
        pipekit.run(pipetester.path / "pipeline.py", ["a"], state_dir=pipetester.path / "state", progress="none")


def test_plan_names_a_plugin_that_fails_configure_as_run_does(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + RAISES_IN.format(hook="pipekit_configure"))
    result = pipetester.run("plan", "pipeline.py", "--item", "a")
    assert result.ret == 4, result
    assert "plugin 'pipeline:pipeline' raised in pipekit_configure: ValueError" in result.stderr
    assert result.stdout == ""


# -- pipekit_unconfigure -------------------------------------------------------------


@pytest.mark.parametrize(("source", "code"), [(SIMPLE, 0), (FAILING, 1)], ids=["finished", "failed"])
def test_a_plugin_raising_in_unconfigure_leaves_the_exit_status(
    pipetester: PipeTester, source: str, code: int
) -> None:
    pipetester.make_pipeline(source + RAISES_IN.format(hook="pipekit_unconfigure"))
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == code, result
    assert "plugin 'pipeline:pipeline' raised in pipekit_unconfigure" in result.stderr
    assert "no API key in NOTIFY_URL" in result.stderr
    assert "internal error" not in result.stderr
    assert result.state("a").phases[1].status == ("completed" if code == 0 else "failed")


def test_a_plugin_raising_in_unconfigure_does_not_hide_the_others(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + RAISES_IN.format(hook="pipekit_unconfigure"))
    seen = []

    class Tidy:
        name = "tidy"

        @pipekit.hookimpl(trylast=True)
        def pipekit_unconfigure(self, config: object) -> None:
            seen.append("tidy")

    result = pipetester.run("pipeline.py", "--item", "a", plugins=[Tidy()])
    assert result.ret == 0, result
    assert seen == ["tidy"]


# -- the exit code ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_status", "error", "no_items", "expected"),
    [
        (ExitCode.ITEMS_FAILED, StateWriteError("s.json", "disk full"), False, ExitCode.INTERNAL_ERROR),
        (ExitCode.INTERRUPTED, UsageError("bad"), False, ExitCode.INTERRUPTED),
        (ExitCode.ITEMS_FAILED, KeyboardInterrupt(), False, ExitCode.INTERRUPTED),
        (ExitCode.ITEMS_FAILED, UsageError("bad"), False, ExitCode.USAGE_ERROR),
        (None, UsageError("bad"), False, ExitCode.USAGE_ERROR),
        (None, RuntimeError("bug"), False, ExitCode.INTERNAL_ERROR),
        (None, None, True, ExitCode.NO_ITEMS),
        (ExitCode.OK, BrokenPipeError(), False, ExitCode.OK),
        (ExitCode.OK, None, False, ExitCode.OK),
    ],
)
def test_the_first_of_3_2_4_1_wins(
    run_status: ExitCode | None, error: BaseException | None, no_items: bool, expected: ExitCode
) -> None:
    assert decide_exit_code(run_status, error, no_items=no_items) == expected


def test_no_items_is_exit_5_for_the_command_line_and_the_library(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + "\ndef items():\n    return []\n")
    assert pipetester.run("pipeline.py").ret == 5
    result = pipekit.run(pipetester.path / "pipeline.py", state_dir=pipetester.path / "state", progress="none")
    assert result.exit_status == 5
