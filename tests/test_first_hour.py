"""A user's first hour: `pipekit new`, a run, a second project, item selection and small messages."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import tomllib

from pipekit.testing import PipeTester


ROOT = Path(__file__).resolve().parents[1]


def cli(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m pipekit ARGS`` in ``cwd``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipekit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def user_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment: no PIPEKIT_STATE_DIR, the platformdirs state dir under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKIT_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path), PIPEKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    return env


def new_project(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True)
    made = cli(folder, "new", "books", env=env)
    assert made.returncode == 0, made.stderr
    return made


def test_first_hour_a_second_project_with_the_same_name_runs_its_phases(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    new_project(tmp_path / "one", env)
    first = cli(tmp_path / "one", "run", "books.py", "--progress", "none", "--jsonl", env=env)
    assert first.returncode == 0, first.stderr
    new_project(tmp_path / "two", env)
    second = cli(tmp_path / "two", "run", "books.py", "--progress", "none", "--jsonl", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count('"event": "phase_complete"') == 9
    assert "already done before this run" not in second.stderr
    assert "in earlier runs" not in second.stderr
    states = sorted(p.name for p in (tmp_path / "xdg" / "pipekit").iterdir())
    assert len(states) == 2 and all(name.startswith("books-") for name in states)
    assert f"state: {tmp_path / 'xdg' / 'pipekit'}/books-" in second.stderr
    assert f"outputs: {tmp_path / 'xdg' / 'pipekit'}/books-" in second.stderr


def test_the_project_folder_is_the_nearest_pyproject(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    new_project(tmp_path / "proj" / "a", env)
    new_project(tmp_path / "proj" / "b", env)
    cli(tmp_path / "proj" / "a", "run", "books.py", "--progress", "none", env=env)
    again = cli(tmp_path / "proj" / "b", "run", "books.py", "--progress", "none", env=env)
    # One project, one state: the same pipeline run from another of its folders resumes (and says so).
    assert "3 already done before this run" in again.stderr
    assert "was written by" in again.stderr


def test_an_upgrade_keeps_the_state_in_the_old_default_folder(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    new_project(tmp_path / "one", env)
    old = tmp_path / "xdg" / "pipekit"
    # The old default: <user state dir>/<pipeline>, written by this module.
    cli(tmp_path / "one", "run", "books.py", "--progress", "none", env={**env, "PIPEKIT_STATE_DIR": str(old)})
    again = cli(tmp_path / "one", "run", "books.py", "--progress", "none", "--jsonl", env=env)
    assert again.returncode == 0, again.stderr
    assert '"event": "phase_start"' not in again.stdout
    assert f"using the state in {old / 'books'}" in again.stderr
    assert again.stderr.count("using the state in") == 1
    assert "3 already done before this run" in again.stderr


def test_state_of_another_module_warns_even_when_every_item_is_done(tmp_path: Path) -> None:
    env = {**user_env(tmp_path), "PIPEKIT_STATE_DIR": str(tmp_path / "shared")}
    new_project(tmp_path / "one", env)
    new_project(tmp_path / "two", env)
    cli(tmp_path / "one", "run", "books.py", "--progress", "none", env=env)
    second = cli(tmp_path / "two", "run", "books.py", "--progress", "none", env=env)
    assert second.returncode == 0
    line = f"was written by {tmp_path / 'one' / 'books.py'}; this run uses {tmp_path / 'two' / 'books.py'}"
    assert second.stderr.count(line) == 1, second.stderr


def test_new_says_how_to_install_what_its_test_needs(tmp_path: Path) -> None:
    made = new_project(tmp_path / "p", user_env(tmp_path))
    assert "pip install 'pipekit[testing]' && python -m pytest test_books.py" in made.stdout
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [dep.split(">")[0] for dep in extras["testing"]] == ["pytest"]


JSONL_ITEMS = '{"id": "a", "title": "A"}\n{"id": "b", "title": "B"}\n{"id": "c", "title": "C"}\n'

RECORDS = '''
from pipekit import phase

ITEM_NOUN = "books"

@phase(1)
def read(item_id, metadata, ctx):
    ctx.record_cost(cost_usd=0.01 if item_id < "m" else 0.03)
    return metadata.get("title", item_id)
'''


def test_item_with_items_selects_from_the_file_with_metadata(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RECORDS)
    pipetester.make_files({"items.jsonl": JSONL_ITEMS})
    result = pipetester.run("run", "pipeline.py", "--items", "items.jsonl", "--item", "b", "--progress", "none")
    assert result.ret == 0, result
    assert pipetester.run("status", "pipeline.py", "--item", "b", "--json").ret == 0
    assert result.state("b").phase_outputs[1] == "B"
    assert not result.has_state("a")


def test_an_item_not_in_the_items_file_is_named(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RECORDS)
    pipetester.make_files({"items.jsonl": JSONL_ITEMS})
    result = pipetester.run("run", "pipeline.py", "--items", "items.jsonl", "--item", "zz", "--progress", "none")
    assert result.ret == 4
    assert "--item 'zz': not in the --items file(s)" in result.stderr


def test_limit_takes_the_first_items(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RECORDS)
    pipetester.make_files({"items.jsonl": JSONL_ITEMS})
    result = pipetester.run("run", "pipeline.py", "--items", "items.jsonl", "--limit", "2", "--progress", "none")
    assert result.ret == 0, result
    assert [result.has_state(i) for i in "abc"] == [True, True, False]


def test_sample_is_seeded_printed_and_projects_the_whole_selection(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RECORDS)
    ids = [f"{letter}{n}" for letter in "az" for n in range(10)]
    pipetester.make_items(*ids)
    args = ("run", "pipeline.py", "--items", "items.txt", "--sample", "4", "--progress", "none")
    first = pipetester.run(*args, "--state-dir", "s1")
    assert first.ret == 0, first
    seed = first.stderr.split("--seed ")[1].split()[0]
    assert "sample: 4 of 20 books" in first.stderr
    again = pipetester.run(*args, "--seed", seed, "--state-dir", "s2")
    ran = sorted(p.name for p in (pipetester.path / "s1").glob("*.json"))
    assert ran == sorted(p.name for p in (pipetester.path / "s2").glob("*.json")) and len(ran) == 4
    line = next(line for line in again.stderr.splitlines() if "projection for all 20 books from 4 sampled" in line)
    # Every sampled item costs $0.01 or $0.03: the range is 20 x those, the mean between.
    assert "$0.2000" in line or "$0.6000" in line


def test_failed_only_after_reset_says_what_to_run(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import os
        from pipekit import phase

        @phase(1, retries=0)
        def flaky(item_id):
            if not os.path.exists("fixed"):
                raise RuntimeError("not yet")
            return "ok"
    ''')
    assert pipetester.run("run", "pipeline.py", "--item", "a", "--progress", "none").ret == 1
    assert pipetester.run("reset", "pipeline.py", "--failed").ret == 0
    result = pipetester.run("run", "pipeline.py", "--item", "a", "--failed-only", "--progress", "none")
    assert result.ret == 5
    assert "no items with a failed phase (reset ones are pending: run without --failed-only)" in result.stderr


def test_run_help_has_one_output_group_and_top_help_names_version(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RECORDS)
    run_help = pipetester.run("run", "pipeline.py", "--help").stdout
    assert run_help.count("\noutput:\n") == 1
    assert "--heartbeat" in run_help.split("\noutput:\n")[1].split("\n\n")[0]
    assert "--version" in pipetester.run("--help").stdout


def test_limits_are_written_as_people_write_numbers(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import pipekit
        from pipekit import phase

        LIMITS = {"api": pipekit.Limit(tpm=2_000_000)}

        @phase(1, limits={"api": 3_000_000})
        def call(item_id):
            return "x"
    ''')
    result = pipetester.run("run", "pipeline.py", "--item", "a", "--progress", "none")
    assert "3,000,000 tokens is more than 'api' allows per minute (tpm=2,000,000)" in result.stderr, result
    assert "2e+06" not in result.stderr


def test_one_item_is_counted_in_the_singular(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RECORDS)
    result = pipetester.run("run", "pipeline.py", "--item", "a", "--progress", "simple")
    assert ": 1 book x 1 phases" in result.stderr, result
    status = pipetester.run("status", "pipeline.py")
    assert "(1 book x 1 phases)" in status.stdout


def test_an_item_noun_in_es_is_counted_in_the_singular(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(RECORDS.replace('ITEM_NOUN = "books"', 'ITEM_NOUN = "batches"'))
    result = pipetester.run("run", "pipeline.py", "--item", "a", "--progress", "simple")
    assert ": 1 batch x 1 phases" in result.stderr, result
    assert "$0.0100 this batch" in result.stderr, result
    status = pipetester.run("status", "pipeline.py")
    assert "(1 batch x 1 phases)" in status.stdout
