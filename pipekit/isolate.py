"""Hard timeouts for sync code: ``@phase(..., isolate="process")``.

The handler runs in a child process (a new ``python``) that is
killed when the runner abandons the call (its timeout, an interruption). The
child imports the pipeline module again, finds the phase by its num, calls the
handler with the arguments it was sent, and sends back the return value (or
the exception) and what the handler recorded with ``ctx.record_cost``.

Arguments and the return value cross the process boundary with ``pickle``; a
phase whose arguments or result cannot be pickled fails with an
``IsolationError`` that names it. The trade-off against the default (a thread):
a new interpreter per call (tens of milliseconds plus the module's import),
and the module's top level runs again in the child.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
import importlib
import importlib.util
import inspect
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from types import ModuleType
from typing import Any

from pipekit.context import PhaseContext
from pipekit.outcomes import Fail
from pipekit.phases import PhaseDefinition
from pipekit.phases import phase_definition_of


class IsolationError(Fail):
    """An isolated phase could not cross the process boundary (never retried)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in the child, kept as the ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


@dataclass
class _Call:
    """What the child needs: where the handler is, and its arguments."""

    module_name: str
    module_file: str | None
    sys_path: list[str]
    phase_num: int
    kwargs: dict[str, Any]
    #: ``(item_id, metadata, attempt, output_dir, executor)`` when the handler takes ``ctx``.
    ctx: tuple[Any, ...] | None


def start_isolated(
    phase: PhaseDefinition, func: Any, kwargs: dict[str, Any]
) -> asyncio.Future[Any]:
    """Run ``func(**kwargs)`` in a child process; a future of its return value.

    Cancelling the future kills the child (SIGKILL). Usage the child's handler
    recorded with ``ctx.record_cost`` is added to the ``ctx`` in ``kwargs``.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    ctx = kwargs.get("ctx")
    try:
        payload = pickle.dumps(_call_for(phase, func, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        future.set_exception(
            IsolationError(
                f"phase {phase.name!r} has isolate='process' but its arguments cannot be "
                f"pickled ({type(exc).__name__}: {exc})"
            )
        )
        return future
    # The child's stdout is the result pipe; its own prints go to our stderr (never
    # to stdout, which carries --jsonl events).
    proc = subprocess.Popen(
        # Not `-m pipekit.isolate`: this module must not be __main__ there, or the
        # exceptions it pickles would not unpickle here.
        [sys.executable, "-c", "from pipekit.isolate import main; main()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        start_new_session=True,  # a Ctrl-C at the terminal is the parent's to handle
    )

    def kill_if_cancelled(done: asyncio.Future[Any]) -> None:
        if done.cancelled() and proc.poll() is None:
            proc.kill()

    future.add_done_callback(kill_if_cancelled)

    def settle(outcome: tuple[bool, Any], usage: tuple[int, int, float, str] | None) -> None:
        if future.done():
            return
        if usage is not None and isinstance(ctx, PhaseContext):
            ctx.record_cost(*usage[:3])
            ctx.executor = usage[3]
        ok, value = outcome
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def wait() -> None:
        outcome, usage = _communicate(proc, payload, phase)
        try:
            loop.call_soon_threadsafe(settle, outcome, usage)
        except RuntimeError:
            pass  # the loop is closed: nobody wants this result

    threading.Thread(target=wait, name=f"pipekit-isolate-{phase.name}", daemon=True).start()
    return future


def _call_for(phase: PhaseDefinition, func: Any, kwargs: dict[str, Any]) -> _Call:
    module = sys.modules.get(func.__module__)
    ctx = kwargs.get("ctx")
    ctx_spec = None
    if isinstance(ctx, PhaseContext):
        ctx_spec = (ctx.item_id, ctx.metadata, ctx.attempt, ctx._output_dir, ctx.executor)
    return _Call(
        module_name=func.__module__,
        module_file=getattr(module, "__file__", None),
        sys_path=list(sys.path),
        phase_num=phase.num,
        kwargs={k: v for k, v in kwargs.items() if k != "ctx"},
        ctx=ctx_spec,
    )


def _communicate(
    proc: subprocess.Popen[bytes], payload: bytes, phase: PhaseDefinition
) -> tuple[tuple[bool, Any], tuple[int, int, float, str] | None]:
    try:
        out, _ = proc.communicate(payload)
    except BrokenPipeError:
        out, _ = proc.communicate()
    if proc.returncode != 0 or not out:
        how = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        lost = RuntimeError(f"phase {phase.name!r}: its process {how} without a result")
        return (False, lost), None
    try:
        ok, value, remote_tb, usage = pickle.loads(out)
    except Exception as exc:
        error = IsolationError(
            f"phase {phase.name!r}: the result of its process cannot be read ({exc})"
        )
        return (False, error), None
    if not ok and remote_tb:
        value.__cause__ = RemoteTraceback(remote_tb)
    return (ok, value), usage


# -- the child ------------------------------------------------------------------------


def _import(call: _Call) -> ModuleType:
    sys.path[:] = call.sys_path
    if call.module_file and "." not in call.module_name:
        # A pipeline given as a path is imported under its stem, as the loader does.
        spec = importlib.util.spec_from_file_location(call.module_name, call.module_file)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules[call.module_name] = module
            spec.loader.exec_module(module)
            return module
    return importlib.import_module(call.module_name)


def _find_phase(module: ModuleType, num: int) -> PhaseDefinition:
    for value in vars(module).values():
        definition = phase_definition_of(value)
        if definition is not None and definition.num == num:
            return definition
    raise LookupError(f"phase {num} not found in {module.__name__} in the child process")


def _child(stdin: Any, result: Any) -> None:
    usage: tuple[int, int, float, str] | None = None
    name = "?"
    try:
        call: _Call = pickle.load(stdin)
        definition = _find_phase(_import(call), call.phase_num)
        name = definition.name
        kwargs = dict(call.kwargs)
        ctx = None
        if call.ctx is not None:
            item_id, metadata, attempt, output_dir, executor = call.ctx
            ctx = PhaseContext(item_id, metadata, definition, attempt, output_dir)
            ctx.executor = executor
            kwargs["ctx"] = ctx
        try:
            value = definition.handler(**kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
        finally:
            if ctx is not None:
                usage = (ctx.tokens_in, ctx.tokens_out, ctx.cost_usd, ctx.executor)
        outcome: tuple[bool, Any, str | None] = (True, value, None)
    except (KeyboardInterrupt, SystemExit) as exc:
        from pipekit.executor import HandlerExit

        outcome = (False, HandlerExit(exc), None)
    except BaseException as exc:
        outcome = (False, exc, traceback.format_exc())
    try:
        data = pickle.dumps((*outcome, usage), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        error: BaseException = IsolationError(
            f"phase {name!r} has isolate='process' but returned a value that cannot be "
            f"pickled ({type(exc).__name__}: {exc})"
        )
        if not outcome[0]:
            # An exception that does not pickle: keep its text and the child's traceback.
            error = RuntimeError(f"{outcome[1]!r} (raised in the process of phase {name!r})")
        data = pickle.dumps((False, error, outcome[2], usage), protocol=pickle.HIGHEST_PROTOCOL)
    result.write(data)
    result.flush()


def _die_with_parent() -> None:
    """Ask Linux to kill this child when the run's process dies (kill -9 included)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass  # not Linux: an orphaned child finishes its call, its result goes nowhere
    if os.getppid() == 1:
        os._exit(1)


def main() -> None:
    """Entry point of the child process."""
    _die_with_parent()
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the handler's prints go to stderr, never into the result pipe
    _child(sys.stdin.buffer, result)
    result.close()

