"""Discovery: import a pipeline module, collect its ``@phase`` functions, validate them."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import functools
import importlib
import importlib.util
import os
from pathlib import Path
import sys
import traceback
from types import ModuleType
from typing import Any

from pipekit.outcomes import UsageError
from pipekit.pipeline.batch import BatchProvider
from pipekit.pipeline.phases import INJECTABLE_NAMES
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.phases import injection_problems
from pipekit.pipeline.phases import phase_definition_of


@dataclass
class Pipeline:
    """A loaded pipeline: its phases in order, and the module they came from."""

    #: ``PIPELINE_NAME`` or the module's own name (the file's stem).
    name: str
    #: Phases sorted by ``num``.
    phases: list[PhaseDefinition]
    #: The imported module (it is registered as a plugin).
    module: ModuleType
    #: The word for items in progress and summaries (``ITEM_NOUN``).
    item_noun: str = "items"
    #: The module's ``BATCHES``: batch providers by name (``@phase(batch=...)``).
    batches: dict[str, BatchProvider] = field(default_factory=dict)

    @functools.cached_property
    def path(self) -> str:
        """The module's file, absolute (resolved once: every item records it)."""
        return str(Path(getattr(self.module, "__file__", "") or self.name).resolve())

    def phase_named(self, name: str) -> PhaseDefinition | None:
        """The phase called ``name``, if any."""
        return next((p for p in self.phases if p.name == name), None)


def import_pipeline_module(target: str) -> ModuleType:
    """Import ``target``, a dotted module name or a path to a ``.py`` file.

    The user's traceback is kept in the error, pipekit's frames are not.
    """
    path = Path(target)
    looks_like_path = target.endswith(".py") or "/" in target or path.is_file()
    try:
        if looks_like_path:
            return _import_path(path)
        # `pipekit mod` must find mod.py in the current folder, as `python -m` does.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(target)
    except UsageError:
        raise
    except SystemExit as exc:
        # Not a way to end the command (it would end with status 0 and no word).
        code = "" if exc.code is None else repr(exc.code)
        raise UsageError(f"pipeline {target!r} called sys.exit({code}) while being imported") from None
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise UsageError(
                f"no module named {target!r} (give a dotted module name importable from "
                f"the current folder, or a path to a .py file)"
            ) from None
        raise UsageError(user_traceback(exc, f"error while importing pipeline {target!r}")) from None
    except Exception as exc:
        raise UsageError(user_traceback(exc, f"error while importing pipeline {target!r}")) from None


def _import_path(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"pipeline file not found: {path}")
    path = path.resolve()
    module_name = path.stem
    # The module's folder goes first on sys.path, so it can import its neighbours
    # (as `python path/to/script.py` would allow).
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def user_traceback(exc: BaseException, what: str) -> str:
    """``exc``'s traceback without pipekit's and importlib's frames, introduced by ``what``."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename and "/pipekit/" not in f.filename]
    lines = traceback.format_list(user) + traceback.format_exception_only(type(exc), exc)
    return f"{what}:\nTraceback (most recent call last):\n" + "".join(lines).rstrip()


def collect_phases(module: ModuleType) -> list[PhaseDefinition]:
    """The ``@phase`` functions defined in ``module``, validated, sorted by ``num``."""
    found: list[tuple[str, PhaseDefinition]] = []
    for attr, value in vars(module).items():
        definition = phase_definition_of(value)
        if definition is not None:
            found.append((attr, definition))
    where = getattr(module, "__file__", module.__name__)
    if not found:
        raise UsageError(f"no phases in {where}: mark functions with @pipekit.phase(num)")
    problems: list[str] = []
    by_num: dict[int, list[str]] = {}
    by_name: dict[str, list[str]] = {}
    for attr, d in found:
        if not isinstance(d.num, int) or isinstance(d.num, bool):
            problems.append(f"{attr}: phase num must be an int, got {d.num!r}")
            continue
        by_num.setdefault(d.num, []).append(attr)
        by_name.setdefault(d.name, []).append(attr)
        if d.name in INJECTABLE_NAMES:
            problems.append(f"{attr}: phase name {d.name!r} clashes with an injected argument")
        if d.timeout_seconds is not None and not (
            isinstance(d.timeout_seconds, (int, float)) and d.timeout_seconds > 0
        ):
            problems.append(f"{attr}: timeout must be a positive number or None")
        if not isinstance(d.retries, int) or d.retries < 0:
            problems.append(f"{attr}: retries must be a non-negative int")
        if d.max_attempts is not None and (type(d.max_attempts) is not int or d.max_attempts < 1):
            problems.append(f"{attr}: max_attempts must be a positive int or None, got {d.max_attempts!r}")
        if not isinstance(d.retry_backoff, (int, float)) or isinstance(d.retry_backoff, bool) or d.retry_backoff < 0:
            problems.append(f"{attr}: retry_backoff must be a non-negative number of seconds")
        if d.cache_check is not None and not callable(d.cache_check):
            problems.append(f"{attr}: cache must be a callable or None")
        if d.isolate not in (None, "process"):
            problems.append(f"{attr}: isolate must be None or 'process'")
    problems += [f"{', '.join(a)}: duplicate phase num {n}" for n, a in by_num.items() if len(a) > 1]
    problems += [f"{', '.join(a)}: duplicate phase name {n!r}" for n, a in by_name.items() if len(a) > 1]
    if not problems:
        phases = sorted((d for _, d in found), key=lambda d: d.num)
        for index, d in enumerate(phases):
            available = set(INJECTABLE_NAMES) | {p.name for p in phases[:index]}
            for label, func in (("handler", d.handler), ("cache", d.cache_check), ("fingerprint", d.fingerprint)):
                if func is not None:
                    problems += [
                        f"{getattr(d.handler, '__name__', d.name)}: {label} {p}"
                        for p in injection_problems(func, available)
                    ]
        if not problems:
            return phases
    raise UsageError(f"invalid phases in {where}:\n  " + "\n  ".join(problems))


def pipeline_from_module(module: ModuleType) -> Pipeline:
    """Build a ``Pipeline`` from an imported module."""
    default_name = module.__name__.rpartition(".")[2]
    name = getattr(module, "PIPELINE_NAME", default_name)
    noun = getattr(module, "ITEM_NOUN", "items")
    if not isinstance(name, str) or not name:
        raise UsageError(f"PIPELINE_NAME in {module.__name__} must be a non-empty string")
    if not isinstance(noun, str) or not noun:
        raise UsageError(f"ITEM_NOUN in {module.__name__} must be a non-empty string")
    phases = collect_phases(module)
    batches = declared_batches(module, phases)
    return Pipeline(name=name, phases=phases, module=module, item_noun=noun, batches=batches)


def declared_batches(module: ModuleType, phases: list[PhaseDefinition]) -> dict[str, BatchProvider]:
    """The module's ``BATCHES`` (names to ``pipekit.BatchProvider``), checked against
    the phases' ``batch=``; a ``UsageError`` names what is wrong."""
    raw: Any = getattr(module, "BATCHES", None)
    raw = {} if raw is None else raw
    fits = isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, BatchProvider) for k, v in raw.items())
    if not fits:
        raise UsageError(f"BATCHES in {module.__name__} must be a dict of names to pipekit.BatchProvider instances")
    for phase in phases:
        if phase.batch is not None and phase.batch not in raw:
            known = ", ".join(sorted(raw)) or "none declared"
            raise UsageError(f"phase {phase.name!r}: no batch provider named {phase.batch!r} in BATCHES ({known})")
    return dict(raw)


def load(module_or_path: str | ModuleType) -> Pipeline:
    """Load a pipeline from a dotted module name, a ``.py`` path or a module object.

    Raises ``UsageError`` naming the problem: a module that cannot be imported
    (with the user's traceback), no phases, or invalid phase declarations.
    """
    module: Any = module_or_path
    if isinstance(module_or_path, str):
        module = import_pipeline_module(module_or_path)
    return pipeline_from_module(module)
