"""`pipekit new NAME`: a runnable pipeline, an items file and a passing test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipekit.testing import PipeTester


def test_new_writes_three_files_and_the_pipeline_runs_as_is(pipetester: PipeTester) -> None:
    result = pipetester.run("new", "books")
    assert result.ret == 0, result
    assert result.stdout.splitlines()[:3] == ["wrote books.py", "wrote books_items.txt", "wrote test_books.py"]
    run = pipetester.run("run", "books.py", "--progress", "none")
    assert run.ret == 0, run
    state = run.state("second")
    assert [p.status for p in state.phases.values()] == ["completed"] * 3
    assert round(state.total_cost_usd, 6) == 0.0024
    # the draft phase's cache finds the file the first run wrote
    pipetester.run("reset", "books.py", "--all")
    again = pipetester.run("run", "books.py", "--progress", "none")
    assert again.state("first").phases[2].reason == "cache"


def test_new_refuses_to_overwrite(pipetester: PipeTester) -> None:
    (pipetester.path / "test_books.py").write_text("# mine\n")
    result = pipetester.run("new", "books")
    assert result.ret == 4, result
    assert "refusing to overwrite test_books.py" in result.stderr
    assert not (pipetester.path / "books.py").exists()
    assert (pipetester.path / "test_books.py").read_text() == "# mine\n"


@pytest.mark.parametrize("name", ["", "9lives", "my-pipe", "test_x"])
def test_new_needs_a_module_name(pipetester: PipeTester, name: str) -> None:
    result = pipetester.run("new", *([name] if name else []))
    assert result.ret == 4, result
    assert "not a usable module name" in result.stderr


@pytest.mark.slow
def test_the_generated_test_passes(pipetester: PipeTester) -> None:
    assert pipetester.run("new", "sub/books").ret == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the generated test names the one plugin it needs
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_books.py"],
        cwd=pipetester.path / "sub",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
