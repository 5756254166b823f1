"""`[tool.pipekit]` in pyproject.toml: defaults for run options; the command line wins."""

from __future__ import annotations

from batch_helpers import BATCH

from pipekit.testing import PipeTester


def write_config(tester: PipeTester, body: str) -> None:
    (tester.path / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.pipekit]\n{body}")


def test_state_dir_and_workers_come_from_the_nearest_pyproject(pipetester: PipeTester) -> None:
    write_config(pipetester, 'state_dir = "var/state"\nworkers = 3\nprogress = "none"\nexecutor = "local"\n')
    pipetester.make_pipeline(BATCH)
    sub = pipetester.path / "sub"
    sub.mkdir()
    result = pipetester.run("run", "pipeline.py", "--item", "a")
    assert result.ret == 0, result
    assert result.state_dir == pipetester.path / "var" / "state"
    assert result.calls("pipekit_run_start")[0]["run"].workers == 3
    # status, from a subfolder, finds the same state through the same table
    status = pipetester.run("status", str(pipetester.path / "pipeline.py"))
    assert "state: " + str(pipetester.path / "var" / "state") in status.stdout
    assert "a  " in status.stdout


def test_the_command_line_wins(pipetester: PipeTester) -> None:
    write_config(pipetester, 'state-dir = "var/state"\nworkers = 3\n')
    pipetester.make_pipeline(BATCH)
    result = pipetester.run(
        "run", "pipeline.py", "--item", "a", "-j", "1", "--state-dir", "elsewhere", "--progress", "none"
    )
    assert result.ret == 0, result
    assert result.state_dir.resolve() == (pipetester.path / "elsewhere").resolve()
    assert result.calls("pipekit_run_start")[0]["run"].workers == 1


def test_plugins_listed_in_the_table_are_loaded(pipetester: PipeTester, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(pipetester.path))
    # A module name no other test imports: an in-process run keeps it in sys.modules.
    write_config(pipetester, 'plugins = ["shout_at_finish"]\n')
    pipetester.make_files(
        {
            "shout_at_finish.py": """
        import sys
        from pipekit import hookimpl

        @hookimpl
        def pipekit_run_finish(run, exitstatus):
            print("SHOUT done", file=sys.stderr)
    """
        }
    )
    pipetester.make_pipeline(BATCH)
    result = pipetester.run("run", "pipeline.py", "--item", "a", "--progress", "none")
    assert "SHOUT done" in result.stderr, result
    blocked = pipetester.run("run", "pipeline.py", "--item", "a", "--progress", "none", "-p", "no:shout_at_finish")
    assert "SHOUT" not in blocked.stderr, blocked


def test_an_unknown_key_is_a_usage_error_naming_it(pipetester: PipeTester) -> None:
    write_config(pipetester, "wokers = 3\n")
    pipetester.make_pipeline(BATCH)
    for command in (["run"], ["status"]):
        result = pipetester.run(*command, "pipeline.py", "--item", "a")
        assert result.ret == 4, result
        assert "unknown key 'wokers' in [tool.pipekit]" in result.stderr
        assert str(pipetester.path / "pyproject.toml") in result.stderr


def test_an_unknown_executor_from_the_table_is_a_usage_error(pipetester: PipeTester) -> None:
    write_config(pipetester, 'executor = "nope"\n')
    pipetester.make_pipeline(BATCH)
    result = pipetester.run("run", "pipeline.py", "--item", "a")
    assert result.ret == 4 and "unknown --executor 'nope'" in result.stderr, result


def test_a_bad_value_is_a_usage_error(pipetester: PipeTester) -> None:
    write_config(pipetester, 'workers = "many"\n')
    pipetester.make_pipeline(BATCH)
    result = pipetester.run("run", "pipeline.py", "--item", "a")
    assert result.ret == 4, result
    assert "[tool.pipekit] workers must be an integer of at least 1, not 'many'" in result.stderr
