"""The distributions under plugins/: well-formed, installed by the test command, listed."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
import subprocess
import sys

import pytest


try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pipekit depends on tomli there
    import tomli as tomllib


PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
DISTRIBUTIONS = sorted(path for path in PLUGINS.iterdir() if (path / "pyproject.toml").exists())


def project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


def test_there_are_plugin_distributions() -> None:
    names = ["pipekit-batch", "pipekit-notify", "pipekit-otel", "pipekit-prices"]
    assert [path.name for path in DISTRIBUTIONS] == names


@pytest.mark.parametrize("path", DISTRIBUTIONS, ids=lambda p: p.name)
def test_a_distribution_is_complete_and_installed(path: Path) -> None:
    meta = project(path)
    assert meta["name"] == path.name
    assert "pipekit>=1.0.0.dev0" in meta["dependencies"]
    (entry_point,) = meta["entry-points"]["pipekit"].items()
    name, module = entry_point
    assert (path / module).is_dir(), f"{path.name}: its package {module}/ is missing"
    assert (path / "README.md").exists()
    assert list((path / "tests").glob("test_*.py")), f"{path.name} has no tests"
    try:
        installed = importlib.metadata.distribution(meta["name"])
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{meta['name']} is not installed: the README's test command installs plugins/*")
    assert installed.version == meta["version"]
    assert [(ep.name, ep.value) for ep in installed.entry_points if ep.group == "pipekit"] == [(name, module)]


@pytest.mark.slow
def test_pipekit_plugins_lists_them_with_their_versions(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pipekit", "plugins"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    for path in DISTRIBUTIONS:
        meta = project(path)
        (name,) = meta["entry-points"]["pipekit"]
        line = f"{name} {meta['version']}  [entry point of {meta['name']} {meta['version']}]"
        assert line in done.stdout.splitlines(), done.stdout
