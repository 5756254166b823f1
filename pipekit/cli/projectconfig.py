"""``[tool.pipekit]`` in the nearest ``pyproject.toml``: defaults for run options.

Found like pytest finds its configuration: the nearest ``pyproject.toml``
upwards from the current folder that has a ``[tool.pipekit]`` table. The
command line always wins. Relative paths are relative to that file's folder.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from dataclasses import field
import os
from pathlib import Path
import sys
from typing import Any


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from pipekit.cli.parsing import PROGRESS_MODES
from pipekit.outcomes import UsageError


#: Keys of ``[tool.pipekit]`` (``-`` and ``_`` are interchangeable).
KNOWN_KEYS = ("workers", "state_dir", "output_dir", "store", "plugins", "progress", "executor")
_PATH_KEYS = ("state_dir", "output_dir")


@dataclass
class ProjectConfig:
    """The ``[tool.pipekit]`` table that applies here (empty when none does)."""

    #: The ``pyproject.toml`` it came from, or None.
    path: Path | None = None
    #: Validated values by option name (paths made absolute).
    values: dict[str, Any] = field(default_factory=dict)

    def plugin_args(self) -> list[str]:
        """``-p NAME`` for every configured plugin (command-line ``-p no:NAME`` still blocks)."""
        args: list[str] = []
        for name in self.values.get("plugins", []):
            args += ["-p", name]
        return args

    def apply(self, parser: argparse.ArgumentParser) -> None:
        """Make the configured values the parser's defaults (the command line wins)."""
        defaults = {k: v for k, v in self.values.items() if k != "plugins"}
        known = {action.dest for action in parser._actions}
        parser.set_defaults(**{k: v for k, v in defaults.items() if k in known})
        # Remembered so that a command-line --state-dir can beat a configured store.
        parser.set_defaults(configured_defaults=dict(defaults))


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.pipekit]`` table, from ``start`` upwards."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            text = candidate.read_text("utf-8", errors="replace")
        except OSError:
            continue
        # A broken pyproject.toml of some other project up the tree is not ours to judge.
        if "tool.pipekit" in text and "pipekit" in _read(candidate).get("tool", {}):
            return candidate
    return None


def load_project_config(start: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """Read and validate ``[tool.pipekit]``; raises ``UsageError`` naming a bad key or value."""
    path = find_pyproject(Path(start or os.getcwd()).resolve())
    if path is None:
        return ProjectConfig()
    table = _read(path)["tool"]["pipekit"]
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [tool.pipekit] must be a table")
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key not in KNOWN_KEYS:
            raise UsageError(f"{path}: unknown key {raw_key!r} in [tool.pipekit] (known: {', '.join(KNOWN_KEYS)})")
        values[key] = _validate(path, key, value)
    return ProjectConfig(path, values)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def _validate(path: Path, key: str, value: Any) -> Any:
    where = f"{path}: [tool.pipekit] {key}"
    if key == "workers":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{where} must be an integer of at least 1, not {value!r}")
        return value
    if key == "progress":
        if value not in PROGRESS_MODES:
            raise UsageError(f"{where} must be one of {', '.join(PROGRESS_MODES)}, not {value!r}")
        return value
    if key == "plugins":
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError(f"{where} must be a list of module names")
        return [n.strip() for n in names if n.strip()]
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where} must be a non-empty string")
    if key in _PATH_KEYS:
        return str((path.parent / Path(value).expanduser()).resolve())
    if key == "store" and value.startswith("json:"):
        return "json:" + str((path.parent / Path(value[5:]).expanduser()).resolve())
    return value
