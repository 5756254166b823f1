"""Where a run's state and outputs live: ``--store``, ``--state-dir``, the defaults."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import platformdirs

from pipekit.pipeline.loader import Pipeline
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.store import StateStore
from pipekit.state.store import encode_item_id


def default_state_dir(pipeline_name: str) -> Path:
    """``$PIPEKIT_STATE_DIR/<pipeline>``, else the user state dir of pipekit ``/<pipeline>``."""
    root = os.environ.get("PIPEKIT_STATE_DIR") or platformdirs.user_state_dir("pipekit")
    return Path(root) / _folder_name(pipeline_name)


def _folder_name(name: str) -> str:
    """``name`` itself when it is a plain folder name, else its safe encoding."""
    plain = name not in (".", "..") and not name.startswith(".") and not any(c in name for c in "/\\\0")
    return name if plain and len(name.encode("utf-8", "surrogatepass")) <= 200 else encode_item_id(name)


def open_store(option: argparse.Namespace, pipeline: Pipeline) -> StateStore:
    """The store chosen by ``--store``, ``PIPEKIT_STORE``, ``--state-dir`` or the default.

    On the command line ``--store`` wins over ``--state-dir``; a ``--state-dir``
    given there wins over a store from ``PIPEKIT_STORE`` or ``[tool.pipekit]``.
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
    return JsonDirStore(default_state_dir(pipeline.name))


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
