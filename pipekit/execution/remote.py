"""Running one handler call in another process: what travels there and back.

A call travels as plain data: the pipeline module's path, the phase's name and
the handler's arguments, with the module's source when the executor ships it
(``pipekit.execution.code``). The worker loads the module itself, from that
source or else by its path (so handlers are never pickled), runs the call
with a ``WorkerContext`` standing in for ``ctx``, and sends back the return
value, the usage the handler recorded and any error (as text when the
exception itself cannot be pickled). Workers never touch
item states: the driver persists every result. A handler's checkpoints
(``ctx.checkpoint``) are kept by the worker itself, straight in the run's
store, opened there by its URL; so is an output over
``SHARED_OUTPUT_THRESHOLD`` when the call carries an ``OutputRoute`` (the
worker stores it with ``StateStore.write_output`` and only its reference, a
``StoredOutput``, comes back), else, with a shared folder, it comes back as a
file there. A call whose inputs travel by reference (``inputs_by_reference``:
the outputs as JSON, those a worker stored as their ``StoredOutput``) has them
read from the store here and given to the handler as it receives them, model
instances included; a worker that cannot reach the store answers
``InputsUnreachable`` before the handler runs, and the driver sends the values.

What the handler reports while it runs (``ctx.progress``, the sub-items
``ctx.map`` finishes) travels back as it happens: ``execute_call`` is given an
``Emit`` that ships each report as a plain tuple (over the worker's pipe, or a
Dask event), and the driver replays it onto its own ``ctx`` (``replay_event``),
so its hooks see a worker's progress as they see a local handler's. The
outcome says how many reports were sent, so a driver can wait for the last of
them before it records the phase.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
import json
import os
from pathlib import Path
import pickle
import socket
import threading
import traceback
from typing import Any

from pipekit.execution.code import PipelineCode
from pipekit.execution.code import load as load_code
from pipekit.execution.workerstores import give_back_store
from pipekit.execution.workerstores import take_store
from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.pipeline.context import PhaseContext
from pipekit.pipeline.outputs import received_inputs
from pipekit.pipeline.outputs import stored_value
from pipekit.pipeline.phases import Injector
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.phases import PhaseResult
from pipekit.stale.fingerprint import code_identity
from pipekit.state.digest import output_hash
from pipekit.state.store import StateStore
from pipekit.state.stored import StoredOutput
from pipekit.state.values import kept_apart


#: Outputs longer than this (characters) come back by reference: stored by the
#: worker in the run's store (``OutputRoute``) or in a file of the shared folder.
SHARED_OUTPUT_THRESHOLD = 64 * 1024


@dataclass(frozen=True)
class OutputRoute:
    """Where a worker stores a large output itself: the run's store, for one item's phase.

    ``marker`` is a file the driver made beside a file store (JSON, SQLite): a
    worker that does not see it is on another file system, where the same path
    names another store, and sends the output back instead. None for a store
    reached over the network (PostgreSQL).
    """

    store_url: str
    item_id: str
    phase_num: int
    marker: str | None = None
    #: The driver's lease token for the item (``StateStore.fencing_token``).
    fencing_token: str | None = None


#: What a worker sends the driver while a handler runs: ``("progress", done, total, label)``
#: or ``("subitem", label, key, status, error)``, plain data any channel carries.
Event = tuple[Any, ...]
#: Ships one ``Event`` to the driver (callable from any thread of the worker).
Emit = Callable[[Event], None]


class WorkerLost(Exception):
    """The worker process running a phase died (killed, crashed, out of memory)."""

    #: Recorded as the phase's ``reason``.
    reason = "worker_lost"


class InputsUnreachable(Exception):
    """A worker cannot read the run's store, where some of the handler's inputs are:
    it answers this before running the handler, and the driver sends their values."""


class RemoteError(Exception):
    """An exception raised by a handler in a worker, carried back as text."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.message, self.remote_traceback))


@dataclass
class RemoteCall:
    """One handler (or cache check) call, as data a worker can run."""

    module_path: str
    phase_name: str
    #: ``"handler"`` or ``"cache"``.
    kind: str
    kwargs: dict[str, Any]
    #: Present when the function takes ``ctx``.
    context: dict[str, Any] | None
    #: Where to write a large output for the driver to read (None: send it back).
    shared_dir: str | None = None
    #: The pipeline's source as the driver loaded it (None: import the module by its path).
    code: PipelineCode | None = None
    #: Where the worker stores a large output itself (None: send it back, or use ``shared_dir``);
    #: also where it reads the inputs that travel by reference.
    output_route: OutputRoute | None = None
    #: The inputs are as ``PhaseExecutor.takes_stored_outputs`` sends them (references and
    #: JSON), and the worker gives back the output as stored (a model as its JSON).
    inputs_by_reference: bool = False


@dataclass
class RemoteOutcome:
    """What comes back from a worker."""

    value: Any = None
    error: BaseException | None = None
    #: ``(tokens_in, tokens_out, cost_usd)`` recorded with ``ctx.record_cost``.
    usage: tuple[int, int, float] = (0, 0, 0.0)
    #: ``ctx.executor`` as the handler left it.
    executor: str = ""
    #: ``ctx.record_usage`` calls for the driver to price (workers have no plugins).
    unpriced: list[tuple[str, int, int]] = field(default_factory=list)
    #: A file in the shared folder holding the output (large outputs).
    output_ref: str | None = None
    #: The output the worker stored in the run's store itself (large outputs with an ``OutputRoute``).
    output_stored: StoredOutput | None = None
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    #: How many ``Event`` reports the worker sent before this outcome.
    events: int = 0


class WorkerContext(PhaseContext):
    """``ctx`` inside a worker: the same attributes, usage collected for the driver,
    checkpoints kept straight in the run's store (opened here by its URL)."""

    #: ``StateStore.reopen_url`` of the run's store; None when workers cannot reach it.
    store_url: str | None = None
    #: The driver's lease token for the item (``StateStore.fencing_token``): this worker's
    #: writes for it land only while the driver holds that lease.
    fencing_token: str | None = None

    #: The store this call took (``take_store``), given back when the call ends.
    _taken: tuple[str, str | None] | None = None

    def _open_checkpoints(self) -> Checkpoints:
        store = take_store(self.store_url, self.fencing_token)
        assert self.store_url is not None
        self._taken = (self.store_url, self.fencing_token)
        if self.fencing_token is not None:
            store.fence_as(self.item_id, self.fencing_token)
        return Checkpoints(store, self.item_id, self.phase.name)

    def _give_back_store(self) -> None:
        if self._taken is not None:
            give_back_store(*self._taken)
            self._taken = None

    def checkpoint(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self._checkpoints is None:
            self._checkpoints = self._open_checkpoints()
        return super().checkpoint(key, fn, *args)

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "ctx.acquire is not available in a worker process; use @phase(limits=[...]) or --executor local"
        )

    def _subitem_store_or_none(self) -> StateStore | None:
        # ctx.map and ctx.progress write here, as checkpoints do.
        if self._checkpoints is None:
            self._checkpoints = self._open_checkpoints()
        return self._checkpoints.store

    def _code_hash(self, fn: Callable[..., Any]) -> str | None:
        return code_identity(fn).hash

    def _report_to(self, emit: Emit | None, driver_alive: Callable[[], bool] | None) -> Callable[[], int]:
        """Send this handler's progress and finished sub-items through ``emit``;
        ``driver_alive`` says whether anyone still waits for the result (a map
        starts no sub-item once it is False). Returns how many were sent so far."""
        sent = [0]
        lock = threading.Lock()

        def ship(event: Event) -> None:
            assert emit is not None
            try:
                emit(event)
            except Exception:  # noqa: BLE001  (a report lost in transit never fails the handler)
                return
            with lock:
                sent[0] += 1

        if emit is not None:
            self._on_progress = lambda done, total, label: ship(("progress", done, total, label))
            self._on_subitem = lambda label, key, status, error: ship(("subitem", label, key, status, error))
        self._driver_alive = driver_alive
        return lambda: sent[0]


def replay_event(event: Event, ctx: PhaseContext | None) -> None:
    """Hand a worker's report to the driver's ``ctx`` observers, as a local handler's."""
    if ctx is None or not event:
        return
    kind, *args = event
    if kind == "progress" and ctx._on_progress is not None and len(args) == 3:
        ctx._on_progress(*args)
    elif kind == "subitem" and ctx._on_subitem is not None and len(args) == 4:
        ctx._on_subitem(*args)


def snapshot_context(ctx: PhaseContext) -> dict[str, Any]:
    """What a worker needs to rebuild ``ctx``."""
    checkpoints = ctx._checkpoints
    return {
        "item_id": ctx.item_id,
        "metadata": ctx.metadata,
        "attempt": ctx.attempt,
        "output_dir": str(ctx._output_dir),
        "executor": ctx.executor,
        "store_url": None if checkpoints is None else checkpoints.store.reopen_url(),
        "fencing_token": None if checkpoints is None else checkpoints.store.fencing_token(ctx.item_id),
        "idempotency_key": ctx.idempotency_key,
    }


def build_call(
    module_path: str,
    phase: PhaseDefinition,
    func: Any,
    kwargs: dict[str, Any],
    shared_dir: str | None = None,
    code: PipelineCode | None = None,
) -> RemoteCall:
    """Turn a local call (with a ``PhaseContext`` among its arguments) into a ``RemoteCall``.

    Raises ``TypeError`` naming the phase when an argument cannot be pickled.
    """
    plain = dict(kwargs)
    ctx = plain.pop("ctx", None)
    call = RemoteCall(
        module_path=module_path,
        phase_name=phase.name,
        kind="cache" if func is phase.cache_check and func is not phase.handler else "handler",
        kwargs=plain,
        context=snapshot_context(ctx) if isinstance(ctx, PhaseContext) else None,
        shared_dir=shared_dir,
        code=code,
    )
    try:
        pickle.dumps(call)
    except Exception as exc:
        raise TypeError(
            f"phase {phase.name!r}: its arguments cannot be sent to a worker process "
            f"({type(exc).__name__}: {exc}); metadata and outputs must be picklable"
        ) from None
    return call


def apply_outcome(outcome: RemoteOutcome, ctx: PhaseContext | None) -> Any:
    """Replay a worker's usage onto the driver's ``ctx`` and return the value (or raise)."""
    if ctx is not None:
        ctx.record_cost(*outcome.usage)
        ctx.executor = outcome.executor or ctx.executor or outcome.worker
        for usage in outcome.unpriced:
            ctx.price_usage(*usage)
    if outcome.error is not None:
        raise outcome.error
    if outcome.output_stored is not None:  # stays in the store: the state refers to it there
        return _with_output(outcome.value, outcome.output_stored)
    if outcome.output_ref is not None:
        path = Path(outcome.output_ref)
        text = path.read_bytes().decode("utf-8")
        path.unlink(missing_ok=True)
        return _with_output(outcome.value, text)
    return outcome.value


_modules: dict[str, Any] = {}


def import_once(module_path: str) -> Any:
    """Import the pipeline module in this worker, once per process."""
    from pipekit.pipeline.loader import import_pipeline_module

    module = _modules.get(module_path)
    if module is None:
        module = _modules[module_path] = import_pipeline_module(module_path)
    return module


def _phase(call: RemoteCall) -> PhaseDefinition:
    from pipekit.pipeline.loader import collect_phases

    module = import_once(call.module_path) if call.code is None else load_code(call.code)
    for definition in collect_phases(module):
        if definition.name == call.phase_name:
            return definition
    raise LookupError(f"phase {call.phase_name!r} not found in {call.module_path} on this worker")


def execute_call(
    call: RemoteCall, emit: Emit | None = None, driver_alive: Callable[[], bool] | None = None
) -> RemoteOutcome:
    """Run ``call`` here (in a worker) and report what happened; never raises.

    :param emit: ships the handler's progress and finished sub-items to the driver as they happen.
    :param driver_alive: False once the driver no longer waits for this call (it died).
    """
    ctx: WorkerContext | None = None
    sent: Callable[[], int] = lambda: 0  # noqa: E731
    try:
        definition = _phase(call)
        func = definition.cache_check if call.kind == "cache" else definition.handler
        assert func is not None
        kwargs = dict(call.kwargs)
        if call.inputs_by_reference:
            kwargs = received_inputs(kwargs, dict(Injector.for_function(func).models), _input_reader(call))
        if call.context is not None:
            data = call.context
            ctx = WorkerContext(
                data["item_id"], data["metadata"], definition, data["attempt"], Path(data["output_dir"])
            )
            ctx.executor = data["executor"]
            ctx.store_url = data["store_url"]
            ctx.fencing_token = data.get("fencing_token")
            ctx._idempotency_key = data["idempotency_key"]
            sent = ctx._report_to(emit, driver_alive)
            kwargs["ctx"] = ctx
        value = func(**kwargs)
        if asyncio.iscoroutine(value):
            value = asyncio.run(value)
        outcome = RemoteOutcome(value=_as_stored(value, definition) if _gives_stored(call) else value)
    except BaseException as exc:  # the driver decides what a failure means
        outcome = RemoteOutcome(error=_portable(exc))
    if ctx is not None:
        ctx._give_back_store()
        outcome.usage = (ctx.tokens_in, ctx.tokens_out, ctx.cost_usd)
        outcome.executor = ctx.executor
        outcome.unpriced = ctx.unpriced
    outcome.events = sent()
    return check_result_picklable(_share_large_output(outcome, call), call.phase_name)


def _input_reader(call: RemoteCall) -> Callable[[StoredOutput], Any]:
    """Reads an input a worker stored, here, from the store the call's route names
    (where this worker may store outputs: the same condition)."""

    def read(stored: StoredOutput) -> Any:
        route = call.output_route
        if route is None or (route.marker is not None and not Path(route.marker).exists()):
            raise InputsUnreachable(f"{stored.ref}: the run's store is not reachable from {socket.gethostname()}")
        try:
            store = take_store(route.store_url, route.fencing_token)
        except Exception as exc:
            raise InputsUnreachable(f"{stored.ref}: {type(exc).__name__}: {exc}") from None
        try:
            return stored.read_from(store)
        finally:
            give_back_store(route.store_url, route.fencing_token)

    return read


def _gives_stored(call: RemoteCall) -> bool:
    return call.inputs_by_reference and call.kind == "handler"


def _as_stored(value: Any, definition: PhaseDefinition) -> Any:
    """The handler's value with its output as the driver stores it: checked, validated
    against ``@phase(output=...)``, a model as its JSON (the driver may not have the
    model's class this worker loaded). Raises what ``stored_value`` raises."""
    if isinstance(value, PhaseResult):
        return replace(value, output=stored_value(definition.name, value.output, definition.output))
    return stored_value(definition.name, value, definition.output)


def _size(output: Any) -> int:
    """Characters of ``output`` as text or JSON (0 for a scalar: always inline)."""
    if type(output) is str:
        return len(output)
    if output is None or type(output) in (bool, int, float):
        return 0
    return len(json.dumps(output, ensure_ascii=False))


def _share_large_output(outcome: RemoteOutcome, call: RemoteCall) -> RemoteOutcome:
    value = outcome.value
    output = value.output if isinstance(value, PhaseResult) else value
    # Only a str, or an output made JSON by ``_as_stored``, has a size to measure here.
    plain = isinstance(output, str) or _gives_stored(call)
    if outcome.error is not None or not plain or _size(output) <= SHARED_OUTPUT_THRESHOLD:
        return outcome
    if call.output_route is not None and _gives_stored(call) and _store_output(outcome, output, call.output_route):
        return outcome
    if call.shared_dir is None or not isinstance(output, str):
        return outcome
    folder = Path(call.shared_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}-{id(outcome):x}-{os.urandom(4).hex()}.txt"
    path.write_text(output, "utf-8")
    outcome.output_ref = str(path)
    outcome.value = _without_output(outcome.value)
    return outcome


def _store_output(outcome: RemoteOutcome, output: Any, route: OutputRoute) -> bool:
    """Store ``output`` (as stored: ``_as_stored``) in the run's store from here; False
    (the output then goes back another way) when this worker cannot reach that store."""
    if route.marker is not None and not Path(route.marker).exists():
        return False
    if not kept_apart(output):  # the driver keeps it inline: it must come back
        return False
    try:
        store = take_store(route.store_url, route.fencing_token)
    except Exception:  # unreachable here: the bytes go back through the scheduler instead
        return False
    try:
        ref = store.write_output(route.item_id, route.phase_num, output)
    except Exception:
        return False
    finally:
        give_back_store(route.store_url, route.fencing_token)
    outcome.output_stored = StoredOutput(route.item_id, ref, output_hash(output))
    outcome.value = _without_output(outcome.value)
    return True


def _with_output(value: Any, output: Any) -> Any:
    """The handler's value with its output put back: the output, or a ``PhaseResult`` holding it."""
    return replace(value, output=output) if isinstance(value, PhaseResult) else output


def _without_output(value: Any) -> Any:
    """What comes back of the handler's value once its output goes another way."""
    return replace(value, output="") if isinstance(value, PhaseResult) else None


def _portable(exc: BaseException) -> BaseException:
    """``exc`` itself when it pickles, else a ``RemoteError`` with its text and traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return RemoteError(type(exc).__name__, f"handler raised {type(exc).__name__}{exc.args!r}", text)
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RemoteError(type(exc).__name__, str(exc), text)
    exc.remote_traceback = text  # type: ignore[attr-defined]
    return exc


def check_result_picklable(outcome: RemoteOutcome, phase_name: str) -> RemoteOutcome:
    """Replace an unpicklable return value by a clear error naming the phase."""
    try:
        pickle.dumps(outcome)
    except Exception as exc:
        return RemoteOutcome(
            error=RemoteError(
                "TypeError",
                f"phase {phase_name!r} returned a value that cannot be sent back from the worker "
                f"({type(exc).__name__}: {exc})",
                "",
            ),
            usage=outcome.usage,
            executor=outcome.executor,
            unpriced=outcome.unpriced,
            events=outcome.events,
        )
    return outcome
