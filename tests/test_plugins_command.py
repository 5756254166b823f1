"""`pipekit plugins`: every plugin with its version, its source and its hooks."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from pipekit.testing import PipeTester


PLUGIN = """
    from pipekit import hookimpl

    __version__ = "{version}"

    @hookimpl
    def pipekit_run_finish(run, exitstatus):
        pass

    @hookimpl
    def pipekit_phase_fail(item, phase, error):
        pass
"""


#: A pipeline module that is also a plugin (as a conftest.py is).
HOOKED_PIPELINE = """
    from pipekit import hookimpl, phase

    @phase(1)
    def one():
        return "1"

    @hookimpl
    def pipekit_item_finish(item):
        pass
"""


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution that exists only in memory, with entry points."""

    def __init__(self, name: str, version: str, entry_points: dict[str, str]) -> None:
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": "[pipekit]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()),
        }

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path: str | object) -> Path:
        return Path(str(path))


def listing(stdout: str) -> list[str]:
    """The printed lines without pipetester's own recorder plugin."""
    lines = stdout.splitlines()
    out = []
    for index, line in enumerate(lines):
        if line.startswith("pipetester-recorder") or (index and lines[index - 1].startswith("pipetester-recorder")):
            continue
        out.append(line)
    return out


@pytest.fixture
def fake_entry_points(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install (in memory) pipekit-fancy 2.5 with an entry point ``fancy`` -> fancy_plugin."""
    pipetester.make_files({"fancy_plugin.py": PLUGIN.format(version="0")})
    monkeypatch.syspath_prepend(str(pipetester.path))
    monkeypatch.delenv("PIPEKIT_DISABLE_PLUGIN_AUTOLOAD")
    dist = FakeDistribution("pipekit-fancy", "2.5", {"fancy": "fancy_plugin"})
    monkeypatch.setattr(importlib.metadata, "distributions", lambda **kwargs: iter([dist]))


@pytest.mark.usefixtures("fake_entry_points")
def test_entry_point_plugins_show_distribution_version_and_hooks(pipetester: PipeTester) -> None:
    result = pipetester.run("plugins")
    assert result.ret == 0, result
    assert listing(result.stdout) == [
        "fancy 2.5  [entry point of pipekit-fancy 2.5]",
        "    hooks: pipekit_phase_fail, pipekit_run_finish",
    ]
    everything = pipetester.run("plugins", "--all")
    assert "items  [built-in]" in everything.stdout
    assert "fancy 2.5  [entry point of pipekit-fancy 2.5]" in everything.stdout
    blocked = pipetester.run("plugins", "-p", "no:fancy")
    assert "fancy" not in blocked.stdout


def test_each_source_is_named(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    pipetester.make_files(
        {
            "by_flag.py": PLUGIN.format(version="1.1"),
            "by_env.py": PLUGIN.format(version="3.0"),
        }
    )
    monkeypatch.syspath_prepend(str(pipetester.path))
    monkeypatch.setenv("PIPEKIT_PLUGINS", "by_env")
    pipeline = pipetester.make_pipeline(HOOKED_PIPELINE)
    result = pipetester.run("plugins", "pipeline.py", "-p", "by_flag")
    assert result.ret == 0, result
    assert listing(result.stdout) == [
        "by_env 3.0  [PIPEKIT_PLUGINS]",
        "    hooks: pipekit_phase_fail, pipekit_run_finish",
        "by_flag 1.1  [-p]",
        "    hooks: pipekit_phase_fail, pipekit_run_finish",
        f"pipeline:pipeline  [pipeline module {pipeline.resolve()}]",
        "    hooks: pipekit_item_finish",
    ]


@pytest.mark.usefixtures("fake_entry_points")
def test_hook_filters_plugins(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(HOOKED_PIPELINE)
    only_fail = pipetester.run("plugins", "pipeline.py", "--hook", "phase_fail")
    assert [line for line in listing(only_fail.stdout) if not line.startswith(" ")] == [
        "fancy 2.5  [entry point of pipekit-fancy 2.5]"
    ]
    only_item = pipetester.run("plugins", "pipeline.py", "--hook", "pipekit_item_finish")
    assert listing(only_item.stdout)[0].startswith("pipeline:pipeline  [pipeline module ")
    builtin = pipetester.run("plugins", "--hook", "collect_items", "--all")
    assert listing(builtin.stdout) == ["items  [built-in]", "    hooks: pipekit_collect_items"]
    nothing = pipetester.run("plugins", "--hook", "collect_items")
    assert nothing.stdout == "no plugins (built-ins hidden; --all shows them)\n"


def test_an_unknown_hook_is_a_usage_error(pipetester: PipeTester) -> None:
    result = pipetester.run("plugins", "--hook", "phase_strat")
    assert result.ret == 4, result
    assert "unknown hook 'phase_strat'" in result.stderr and "pipekit_phase_start" in result.stderr


@pytest.mark.slow
def test_an_installed_distribution_is_found_by_its_entry_point(pipetester: PipeTester) -> None:
    import os
    import subprocess
    import sys

    site = pipetester.path / "site"
    pipetester.make_files(
        {
            "site": {
                "fancy_plugin.py": PLUGIN.format(version="0"),
                "pipekit_fancy-2.5.dist-info": {
                    "METADATA": "Metadata-Version: 2.1\nName: pipekit-fancy\nVersion: 2.5\n",
                    "entry_points.txt": "[pipekit]\nfancy = fancy_plugin\n",
                },
            }
        }
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PIPEKIT_DISABLE_PLUGIN_AUTOLOAD")
    proc = subprocess.run(
        [sys.executable, "-m", "pipekit", "plugins", "--hook", "run_finish"],
        cwd=pipetester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fancy 2.5  [entry point of pipekit-fancy 2.5]" in proc.stdout.splitlines()
