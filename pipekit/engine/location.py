"""Where a run's state and outputs live: ``--store``, ``--state-dir``, the defaults."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import hashlib
import os
from pathlib import Path

import platformdirs

from pipekit.outcomes import StateFileError
from pipekit.pipeline.loader import Pipeline
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.store import StateStore
from pipekit.state.store import encode_item_id


#: Reports one line to the user (``HookNotifier.report``): the message and its level.
Say = Callable[[str, str], None]


def default_state_dir(pipeline_name: str, module_path: str | None = None) -> Path:
    """``$PIPEKIT_STATE_DIR/<pipeline>``, else the project's folder in the user state
    dir of pipekit: ``<pipeline>-<hash of the project folder>`` (see ``project_folder``).

    Without ``module_path`` (no module known) it is ``<user state dir>/<pipeline>``.
    """
    chosen = os.environ.get("PIPEKIT_STATE_DIR")
    if chosen:
        return Path(chosen) / _folder_name(pipeline_name)
    root = Path(platformdirs.user_state_dir("pipekit"))
    if module_path is None:
        return root / _folder_name(pipeline_name)
    digest = hashlib.sha256(str(project_folder(module_path)).encode("utf-8", "surrogatepass")).hexdigest()
    return root / _folder_name(f"{pipeline_name}-{digest[:8]}")


def legacy_state_dir(pipeline_name: str) -> Path:
    """Where pipekit 0.x kept a pipeline's state by default: ``<user state dir>/<pipeline>``."""
    return Path(platformdirs.user_state_dir("pipekit")) / _folder_name(pipeline_name)


def project_folder(module_path: str) -> Path:
    """The folder of the nearest ``pyproject.toml`` above the module, else the module's folder."""
    folder = Path(module_path).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return folder


def _folder_name(name: str) -> str:
    """``name`` itself when it is a plain folder name, else its safe encoding."""
    plain = name not in (".", "..") and not name.startswith(".") and not any(c in name for c in "/\\\0")
    return name if plain and len(name.encode("utf-8", "surrogatepass")) <= 200 else encode_item_id(name)


def open_store(option: argparse.Namespace, pipeline: Pipeline, say: Say | None = None) -> StateStore:
    """The store chosen by ``--store``, ``PIPEKIT_STORE``, ``--state-dir`` or the default.

    On the command line ``--store`` wins over ``--state-dir``; a ``--state-dir``
    given there wins over a store from ``PIPEKIT_STORE`` or ``[tool.pipekit]``.
    ``say`` is told when the default falls back to an older default folder.
    """
    configured = getattr(option, "configured_defaults", None) or {}
    store_given = option.store is not None and option.store != configured.get("store")
    dir_given = option.state_dir is not None and option.state_dir != configured.get("state_dir")
    url = option.store if store_given or not dir_given else None
    if url is None and not dir_given:
        url = os.environ.get("PIPEKIT_STORE")
    if url:
        from pipekit.state.open import open_store_url

        return open_store_url(url, pipeline=pipeline.name)
    if option.state_dir:
        return JsonDirStore(Path(option.state_dir).expanduser())
    return default_store(pipeline, say)


def default_store(pipeline: Pipeline, say: Say | None = None) -> JsonDirStore:
    """The project's default folder; the older ``<root>/<pipeline>`` folder instead
    when it holds state written by this very module (so an upgrade loses nothing)."""
    new = default_state_dir(pipeline.name, pipeline.path)
    if not os.environ.get("PIPEKIT_STATE_DIR") and not new.exists():
        old = legacy_state_dir(pipeline.name)
        if old.is_dir() and state_module(JsonDirStore(old)) == pipeline.path:
            if say is not None:
                say(f"using the state in {old}, written by this module before state folders were kept "
                    f"per project (a new project's state goes to {new})", "notice")
            return JsonDirStore(old)
    return JsonDirStore(new)


def state_module(store: StateStore) -> str | None:
    """The module path recorded by the first readable state in ``store``, if any."""
    try:
        for _, document in store.load_all([]):
            module = document.get("pipeline_module")
            return module if isinstance(module, str) and module else None
    except (OSError, StateFileError):
        return None
    return None


def module_mismatch(store: StateStore, pipeline: Pipeline) -> str | None:
    """The warning when ``store`` holds state written by a module at another path
    (two projects sharing one state by pipeline name), naming both paths."""
    written_by = state_module(store)
    if written_by is None or written_by == pipeline.path:
        return None
    return f"state in {store.location} was written by {written_by}; this run uses {pipeline.path}"


def output_root(option: argparse.Namespace, store: StateStore) -> Path:
    """The folder of the items' ``ctx.output_dir``: ``--output-dir``,
    ``PIPEKIT_OUTPUT_DIR``, else ``outputs`` beside the state."""
    chosen = option.output_dir or os.environ.get("PIPEKIT_OUTPUT_DIR")
    if chosen:
        return Path(chosen).expanduser().resolve()
    if isinstance(store, JsonDirStore):
        base = store.state_dir
    else:
        # A database file keeps its outputs beside it; a server has no folder of its own.
        path = getattr(store, "path", None)
        base = path.parent if isinstance(path, Path) else Path(".")
    return (base / "outputs").resolve()
