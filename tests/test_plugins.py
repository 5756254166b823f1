"""Plugins: where they load from, how they are blocked, and how their errors are contained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipekit.testing import PipeTester


SIMPLE = '''
    from pipekit import phase

    @phase(1)
    def one(item_id):
        return "1"

    @phase(2)
    def two(one):
        return one + "2"
'''

PLUGIN_MODULE = '''
    from pipekit import hookimpl
    import sys

    @hookimpl
    def pipekit_phase_complete(item, phase, result):
        print(f"[{__name__}] {item.id} {phase.name} -> {result.output}", file=sys.stderr)
'''


def make_distribution(root: Path, module: str, name: str = "pipekit-shout", version: str = "0.3") -> Path:
    """An installed distribution with a `pipekit` entry point, as pip would leave it."""
    site = root / "site"
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(PLUGIN_MODULE.replace("\n    ", "\n"))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[pipekit]\nshout = {module}\n")
    return site


@pytest.mark.slow
def test_entry_point_plugins_load_on_install_and_can_be_turned_off(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE)
    site = make_distribution(pipetester.path, "pipekit_shout")
    env = {"PYTHONPATH": str(site), "PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": ""}
    loaded = pipetester.run_subprocess("pipeline.py", "--item", "a", env=env)
    assert loaded.ret == 0, loaded
    assert "[pipekit_shout] a two -> 12" in loaded.stderr
    for extra_env, args in (
        ({"PIPEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}, ()),
        ({}, ("-p", "no:shout")),
    ):
        off = pipetester.run_subprocess("pipeline.py", "--item", "b", *args, env={**env, **extra_env})
        assert off.ret == 0, off
        assert "[pipekit_shout]" not in off.stderr
    listing = pipetester.run_subprocess("plugins", env=env)
    assert "shout 0.3  [entry point of pipekit-shout 0.3]" in listing.stdout
    assert "pipekit_phase_complete" in listing.stdout


def test_dash_p_and_env_var_load_plugin_modules(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    pipetester.make_pipeline(SIMPLE)
    pipetester.make_files({"loud.py": PLUGIN_MODULE, "louder.py": PLUGIN_MODULE})
    monkeypatch.syspath_prepend(str(pipetester.path))
    monkeypatch.setenv("PIPEKIT_PLUGINS", "louder")
    result = pipetester.run("pipeline.py", "--item", "a", "-p", "loud")
    assert result.ret == 0, result
    assert "[loud] a one -> 1" in result.stderr
    assert "[louder] a one -> 1" in result.stderr


def test_pipeline_module_hooks_are_called(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + PLUGIN_MODULE)
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 0, result
    assert "[pipeline] a two -> 12" in result.stderr


def test_unknown_plugin_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE)
    result = pipetester.run("pipeline.py", "--item", "a", "-p", "not_a_plugin_anywhere")
    assert result.ret == 4
    assert "error importing plugin 'not_a_plugin_anywhere'" in result.stderr


@pytest.mark.parametrize(
    ("hook_source", "message"),
    [
        ("@hookimpl\ndef pipekit_phase_strat(item, phase): ...\n", "pipekit_phase_strat"),
        ("def pipekit_phase_start(item, phase): ...\n", "not marked with @pipekit.hookimpl"),
        ("@hookimpl\ndef pipekit_phase_start(item, phase, bogus): ...\n", "bogus"),
    ],
)
def test_hook_mistakes_are_usage_errors(pipetester: PipeTester, hook_source: str, message: str) -> None:
    pipetester.make_pipeline(SIMPLE + "\n    from pipekit import hookimpl\n" + "".join(
        "    " + line + "\n" for line in hook_source.splitlines()
    ))
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 4, result
    assert message in result.stderr
    assert not (pipetester.path / "state").exists()


class Exploding:
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def _boom(self) -> None:
        self.calls += 1
        raise RuntimeError("plugin bug")

    from pipekit import hookimpl

    @hookimpl
    def pipekit_phase_start(self, item, phase) -> None:  # type: ignore[no-untyped-def]
        self._boom()

    @hookimpl
    def pipekit_item_finish(self, item) -> None:  # type: ignore[no-untyped-def]
        self._boom()

    @hookimpl
    def pipekit_run_finish(self, run, exitstatus) -> None:  # type: ignore[no-untyped-def]
        self._boom()


def test_a_plugin_that_raises_is_reported_once_per_hook_and_changes_nothing(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE)
    plugin = Exploding()
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", plugins=[plugin])
    assert result.ret == 0, result
    assert plugin.calls == 2 * 2 + 2 + 1
    assert result.stderr.count("plugin 'exploding' raised in pipekit_phase_start") == 1
    assert result.stderr.count("plugin 'exploding' raised in pipekit_item_finish") == 1
    assert "RuntimeError: plugin bug" in result.stderr
    # other observers still saw every event
    assert result.event_names().count("phase_complete") == 4
    assert result.state("b").phase_outputs == {1: "1", 2: "12"}


def test_blocking_progress_keeps_the_progress_option(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE)
    shown = pipetester.run("pipeline.py", "--item", "a", "--progress", "simple")
    assert "a phase 2/2 two done" in shown.stderr
    hidden = pipetester.run("pipeline.py", "--item", "b", "-p", "no:progress", "--progress", "simple")
    assert hidden.ret == 0, hidden
    assert "phase 2 two" not in hidden.stderr


def test_essential_plugin_cannot_be_blocked(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE)
    result = pipetester.run("pipeline.py", "--item", "a", "-p", "no:items")
    assert result.ret == 4
    assert "plugin 'items' is essential" in result.stderr


def test_plugins_command_lists_builtins_with_all(pipetester: PipeTester) -> None:
    hidden = pipetester.run("plugins")
    assert hidden.ret == 0
    assert "progress" not in hidden.stdout
    shown = pipetester.run("plugins", "--all")
    assert "progress  [built-in]" in shown.stdout
    assert "jsonl  [built-in]" in shown.stdout


def test_plugins_command_shows_the_pipeline_module(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + PLUGIN_MODULE)
    result = pipetester.run("plugins", "pipeline.py")
    assert f"pipeline module {os.path.join(str(pipetester.path), 'pipeline.py')}" in result.stdout


def test_old_style_hookwrappers_are_refused_with_the_new_style_named(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + '''
    from pipekit import hookimpl

    @hookimpl(hookwrapper=True)
    def pipekit_phase_complete(item, phase, result):
        yield
    ''')
    result = pipetester.run("pipeline.py", "--item", "a")
    assert result.ret == 4
    assert "hookwrapper=True" in result.stderr and "wrapper=True" in result.stderr


def test_new_style_wrappers_wrap_the_other_observers(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(SIMPLE + '''
    import sys
    from pipekit import hookimpl

    @hookimpl(wrapper=True)
    def pipekit_phase_complete(item, phase, result):
        print(f"before {phase.name}", file=sys.stderr)
        yield
        print(f"after {phase.name}", file=sys.stderr)
    ''')
    result = pipetester.run("pipeline.py", "--item", "a", "--progress", "simple")
    assert result.ret == 0, result
    result.fnmatch_lines(["before one", "*a phase 1/2 one done*", "after one"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "raise ValueError('NOTIFY_URL is not set')\n",
            "error importing plugin 'brokenplugin': ValueError: NOTIFY_URL is not set",
        ),
        ("import sys\nsys.exit(0)\n", "plugin 'brokenplugin' called sys.exit(0) while being imported"),
    ],
    ids=["raises", "exits"],
)
def test_a_plugin_module_failing_at_import_is_a_usage_error_naming_it(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    pipetester.make_pipeline(SIMPLE)
    pipetester.make_files({"brokenplugin.py": source})
    monkeypatch.syspath_prepend(str(pipetester.path))
    result = pipetester.run("pipeline.py", "--item", "a", "-p", "brokenplugin")
    assert result.ret == 4, result
    assert message in result.stderr
    assert "internal error" not in result.stderr
    assert not (pipetester.path / "state").exists()
