"""The pipeline's code as the driver loaded it, shipped to workers with every call.

A long-lived worker (a Dask cluster of your own) imported the pipeline module
once; after an edit it would go on running the old code while the driver
records the new code's fingerprint. So the driver reads the module's source,
and that of the modules it imports from the same folder, once, and sends it
with each call, keyed by a hash of its content. A worker loads the code from
that source whenever the hash differs from the code it holds, whether or not
the module's file exists where the worker runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import linecache
import os
from pathlib import Path
import socket
import sys
import threading
from types import ModuleType


@dataclass(frozen=True)
class SourceFile:
    """One module of the pipeline's folder: its name, its file and its text."""

    name: str
    path: str
    source: str
    is_package: bool = False


@dataclass(frozen=True)
class PipelineCode:
    """The pipeline module (``name``) and the modules it imports from its folder."""

    #: The module's file, absolute, as the driver names it.
    module_path: str
    #: Its name in ``sys.modules``.
    name: str
    files: tuple[SourceFile, ...]
    #: Hash of every file's name, path and text.
    digest: str


def capture(module_path: str) -> PipelineCode:
    """Read the code of the pipeline at ``module_path`` as this process loaded it.

    The modules shipped with it are those already imported from the module's
    folder (or packages under it) under the name their file has there.
    Raises ``OSError`` when a file cannot be read.
    """
    path = Path(module_path).resolve()
    folder = path.parent
    name = path.stem
    files = {name: SourceFile(name, str(path), path.read_text("utf-8"))}
    for module_name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if module_name in files or not where or not where.endswith(".py"):
            continue
        located = _located_in(module_name, Path(where), folder)
        if located is not None:
            files[module_name] = SourceFile(
                module_name, str(located), located.read_text("utf-8"), located.name == "__init__.py"
            )
    ordered = tuple(files[n] for n in sorted(files))
    digest = hashlib.sha256()
    for file in ordered:
        for part in (file.name, file.path, file.source):
            digest.update(part.encode("utf-8") + b"\0")
    return PipelineCode(str(path), name, ordered, digest.hexdigest())


def _located_in(module_name: str, where: Path, folder: Path) -> Path | None:
    """``where`` when it is the file ``module_name`` has under ``folder``
    (``a/b.py`` for ``a.b``, ``a/__init__.py`` for ``a``); installed packages never are."""
    try:
        relative = where.resolve().relative_to(folder)
    except (OSError, ValueError):
        return None
    parts: Sequence[str] = relative.parent.parts if relative.name == "__init__.py" else relative.with_suffix("").parts
    return folder / relative if list(parts) == module_name.split(".") else None


class _SourceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the shipped modules from their source, ahead of the files on disk."""

    def __init__(self) -> None:
        self.files: dict[str, SourceFile] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=file.path, is_package=file.is_package)
        spec.has_location = True  # sets __file__: handlers find their data beside the module
        if file.is_package:
            spec.submodule_search_locations = [str(Path(file.path).parent)]
        return spec

    def exec_module(self, module: ModuleType) -> None:
        file = self.files[module.__name__]
        # Tracebacks and inspect show the shipped text, not what is on disk here.
        lines = file.source.splitlines(keepends=True)
        linecache.cache[file.path] = (len(file.source), None, lines, file.path)
        exec(compile(file.source, file.path, "exec"), module.__dict__)


_finder = _SourceFinder()
_lock = threading.Lock()
#: The code each pipeline runs in this worker: module path -> (digest, module).
_loaded: dict[str, tuple[str, ModuleType]] = {}


def load(code: PipelineCode) -> ModuleType:
    """The pipeline module of ``code`` in this worker, loaded from its source
    unless the same code was loaded before.

    Raises ``RuntimeError`` naming this worker when the code cannot be loaded.
    """
    with _lock:
        held = _loaded.get(code.module_path)
        if held is not None and held[0] == code.digest:
            return held[1]
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        for file in code.files:
            sys.modules.pop(file.name, None)  # the versions held so far, so imports get the new ones
            _finder.files[file.name] = file
        folder = str(Path(code.module_path).parent)
        if os.path.isdir(folder) and folder not in sys.path:
            sys.path.insert(0, folder)  # for files the module imports later, as the loader does
        try:
            module = importlib.import_module(code.name)
        except BaseException as exc:
            raise RuntimeError(
                f"worker {socket.gethostname()}:{os.getpid()} cannot load the pipeline {code.module_path} "
                f"from the driver's source: {type(exc).__name__}: {exc}"
            ) from exc
        _loaded[code.module_path] = (code.digest, module)
        return module
