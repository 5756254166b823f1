"""Phase fingerprints: a record of what produced a completed result (#10).

When a phase completes, its state keeps a fingerprint with four parts:

- ``code``: a hash of the phase function's normalised syntax tree. Formatting,
  comments and the ``@phase(...)`` decorator do not count; every other edit of
  the function does, its docstring included (prompts often live in strings).
  Functions it calls are not followed: bump ``version=`` or use ``fingerprint=``
  for those. ``None`` when the source cannot be read. With ``@phase(output=Model)``
  the model's JSON schema counts as part of the code: changing the model makes
  completed results stale (``phase_code``).
- ``version``: ``@phase(version=...)`` as a string, or ``None``.
- ``input``: a hash of the JSON form of the value ``@phase(fingerprint=...)``
  returned (prompt files, model names, configuration), or ``None`` without one.
- ``consumed``: for each earlier phase whose output the handler is given (named
  as a parameter, or all of them through ``previous_outputs``/``**kwargs``), a
  hash of that output, by phase name (``None`` when it had none).

Function sources are kept, keyed by their code hash, in a ``SourceArchive``
beside the state, so that ``pipekit why`` can show a diff without the state
files growing.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
import inspect
import json
from pathlib import Path
import textwrap
import threading
from typing import Any
import weakref

import platformdirs

from pipekit.pipeline.phases import Injector
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.digest import output_hash
from pipekit.state.digest import text_hash
from pipekit.state.store import write_atomically


@dataclass(frozen=True)
class CodeIdentity:
    """A function's code hash and the source text it was computed from."""

    hash: str | None
    source: str | None


_code_cache: weakref.WeakKeyDictionary[Any, CodeIdentity] = weakref.WeakKeyDictionary()


def code_identity(func: Callable[..., Any]) -> CodeIdentity:
    """Hash of ``func``'s normalised syntax tree (see the module docstring); cached per function."""
    try:
        return _code_cache[func]
    except (KeyError, TypeError):
        pass
    identity = _compute_code_identity(func)
    try:
        _code_cache[func] = identity
    except TypeError:
        pass  # not weak-referenceable: computed again next time
    return identity


#: ``schema_hash`` per output model class.
_schema_cache: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def phase_code(definition: PhaseDefinition) -> CodeIdentity:
    """The ``code`` part of ``definition``'s fingerprint: its handler's code
    identity, and with ``@phase(output=Model)`` the model's schema too (its hash
    folded in, its JSON appended to the source, so that ``pipekit why`` shows it)."""
    identity = code_identity(definition.handler)
    model = definition.output
    if model is None:
        return identity
    schema = _schema_cache.get(model)
    if schema is None:
        schema = _schema_cache[model] = json.dumps(model.model_json_schema(), sort_keys=True, ensure_ascii=False)
    note = f"\n# output={model.__qualname__}, schema: {schema}\n"
    return CodeIdentity(text_hash(f"{identity.hash}\x00{schema}"), (identity.source or "") + note)


def _compute_code_identity(func: Callable[..., Any]) -> CodeIdentity:
    func = inspect.unwrap(func)
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return CodeIdentity(None, None)
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return CodeIdentity(text_hash(source), source)
    if not _defines(tree, getattr(func, "__name__", "")):
        # Found by file name but not this function's: code made with exec() in a
        # ``python -c`` program, whose text Python 3.13 keeps under "<string>" too.
        return CodeIdentity(None, None)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.decorator_list = []
    return CodeIdentity(text_hash(ast.dump(tree)), source)


def _defines(tree: ast.AST, name: str) -> bool:
    """Whether ``tree`` defines a function called ``name`` (any lambda for ``<lambda>``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda) and name == "<lambda>":
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
    return False


def consumed_phases(definition: PhaseDefinition, phases: Sequence[PhaseDefinition]) -> list[PhaseDefinition]:
    """Earlier phases whose output ``definition``'s handler is given."""
    injector = Injector.for_function(definition.handler)
    earlier = [p for p in phases if p.num < definition.num]
    if injector.takes_kwargs or "previous_outputs" in injector.wanted:
        return earlier
    return [p for p in earlier if p.name in injector.wanted]


def resolve(value: Any) -> Any:
    """``value``, awaited first if it is awaitable (on a private loop in a thread,
    so that this works inside and outside a running event loop)."""
    if not inspect.isawaitable(value):
        return value
    box: dict[str, Any] = {}

    async def wait() -> Any:
        return await value

    def target() -> None:
        try:
            box["value"] = asyncio.run(wait())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="pipekit-fingerprint")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def input_hash(definition: PhaseDefinition, arguments: dict[str, Any]) -> str | None:
    """Call ``definition.fingerprint`` with the arguments it asks for; hash its value.

    ``arguments`` are the injectable values (as for a handler). Errors propagate.
    """
    func = definition.fingerprint
    if func is None:
        return None
    value = resolve(func(**Injector.for_function(func).arguments(arguments)))
    return text_hash(json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False))


def phase_fingerprint(
    definition: PhaseDefinition,
    phases: Sequence[PhaseDefinition],
    outputs: dict[int, str],
    arguments_for: Callable[[Callable[..., Any]], dict[str, Any]],
) -> dict[str, Any]:
    """The fingerprint of ``definition`` about to run with the earlier ``outputs``.

    :param arguments_for: builds the injectable arguments for a callable (used
        for the ``fingerprint=`` callable only).
    """
    func = definition.fingerprint
    return {
        "code": phase_code(definition).hash,
        "version": definition.version,
        "input": None if func is None else input_hash(definition, arguments_for(func)),
        "consumed": {p.name: output_hash(outputs.get(p.num)) for p in consumed_phases(definition, phases)},
    }


class SourceArchive:
    """Function sources by code hash, one file each (content-addressed, written once).

    :param folder: where the files go.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_store(cls, store: object) -> SourceArchive:
        """The archive beside a directory store's state, else in the user cache dir."""
        state_dir = getattr(store, "state_dir", None)
        if state_dir is not None:
            return cls(Path(state_dir) / ".sources")
        return cls(Path(platformdirs.user_cache_dir("pipekit")) / "sources")

    def _path(self, code_hash: str) -> Path:
        return self.folder / f"{code_hash}.py"

    def save(self, identity: CodeIdentity) -> None:
        """Keep ``identity``'s source unless it is already kept; errors are ignored
        (the archive only serves ``pipekit why``)."""
        if identity.hash is None or identity.source is None:
            return
        path = self._path(identity.hash)
        if path.exists():
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(path, identity.source.encode("utf-8"), durable=False)
        except OSError:
            pass

    def load(self, code_hash: str) -> str | None:
        """The source kept for ``code_hash``, or None."""
        try:
            return self._path(code_hash).read_text("utf-8")
        except (OSError, ValueError):
            return None

    def save_pipeline(self, phases: Sequence[PhaseDefinition]) -> None:
        """Keep the current source of every phase."""
        for definition in phases:
            self.save(phase_code(definition))
