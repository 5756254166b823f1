"""The one place observer hooks are called, with pipekit's plugin-error policy.

Hooks are called through pluggy's own machinery (its call loop, its
``add_hookcall_monitoring`` and tracing), each implementation guarded on its
own, so a plugin that raises cannot silence another one, lose state or change
the exit status: its error is reported once per plugin and hook, on stderr,
with the plugin's name. Wrappers see the results as pluggy gives them.

Engine messages go through ``pipekit_report_message`` (``HookNotifier.report``),
so the reporting plugins decide what reaches stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Generator
from collections.abc import Sequence
import functools
import os
import signal
import sys
import traceback
from types import FrameType
from typing import Any
from typing import ClassVar
from typing import Final
import weakref

import pluggy


#: Levels of ``pipekit_report_message``, most severe first. ``-q`` hides ``info``.
LEVELS: Final = ("error", "warning", "notice", "info")


class ObserverInterrupted(BaseException):
    """Raised inside an observer hook that blocks the run when a second
    SIGINT/SIGTERM arrives: the hook is abandoned and the run stops as an
    interrupt does (a ``BaseException``, so a plugin's ``except Exception``
    does not swallow it)."""


class HookNotifier:
    """Calls the observer hooks of ``pm``: ``notify.item_start(item)``, ...

    :param pm: the plugin manager (None: a notifier that calls nothing).
    :param report: where plugin errors are written (stderr by default).
    """

    #: One notifier per plugin manager: a command's session and its run share it
    #: (and with it the once-per-plugin error reports).
    _by_manager: ClassVar[weakref.WeakKeyDictionary[pluggy.PluginManager, HookNotifier]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, pm: pluggy.PluginManager | None, report: Callable[[str], None] | None = None) -> None:
        self.pm = pm
        self._report = report or _to_stderr
        self._reported: set[tuple[str, str]] = set()
        self._trace = bool(os.environ.get("PIPEKIT_DEBUG_HOOKS"))
        #: Per hook: the implementations the guarded copies were made for, and the copies.
        self._guarded: dict[str, tuple[list[pluggy.HookImpl], list[pluggy.HookImpl]]] = {}
        #: Plugins no longer called: they blocked the run until a second signal.
        self._abandoned: set[str] = set()
        #: ``(plugin name, hook name)`` of the implementation running now, if any.
        self.running: tuple[str, str] | None = None
        #: Number of errors raised by observers, reported or not.
        self.errors = 0
        self._signals = 0
        self._signal_seen = False

    @classmethod
    def of(cls, pm: pluggy.PluginManager) -> HookNotifier:
        """The notifier of ``pm``, made on first use."""
        notifier = cls._by_manager.get(pm)
        if notifier is None:
            notifier = cls._by_manager[pm] = cls(pm)
        return notifier

    # -- the observer hooks, typed ---------------------------------------------------

    def unconfigure(self, config: Any) -> None:
        """``pipekit_unconfigure(config)``: every implementation runs, one raising is reported."""
        self._call("pipekit_unconfigure", {"config": config})

    def run_start(self, run: Any) -> None:
        """``pipekit_run_start(run)``."""
        self._call("pipekit_run_start", {"run": run})

    def item_start(self, item: Any) -> None:
        """``pipekit_item_start(item)``."""
        self._call("pipekit_item_start", {"item": item})

    def phase_wait(self, item: Any, phase: Any, reason: str, seconds: float | None) -> None:
        """``pipekit_phase_wait(item, phase, reason, seconds)``."""
        self._call("pipekit_phase_wait", {"item": item, "phase": phase, "reason": reason, "seconds": seconds})

    def phase_start(self, item: Any, phase: Any) -> None:
        """``pipekit_phase_start(item, phase)``."""
        self._call("pipekit_phase_start", {"item": item, "phase": phase})

    def phase_progress(self, item: Any, phase: Any, done: int, total: int | None, label: str | None) -> None:
        """``pipekit_phase_progress(item, phase, done, total, label)``."""
        self._call(
            "pipekit_phase_progress", {"item": item, "phase": phase, "done": done, "total": total, "label": label}
        )

    def subitem_finish(self, item: Any, phase: Any, label: str, key: str, status: str, error: str | None) -> None:
        """``pipekit_subitem_finish(item, phase, label, key, status, error)``."""
        arguments = {"item": item, "phase": phase, "label": label, "key": key, "status": status, "error": error}
        self._call("pipekit_subitem_finish", arguments)

    def phase_complete(self, item: Any, phase: Any, result: Any) -> None:
        """``pipekit_phase_complete(item, phase, result)``."""
        self._call("pipekit_phase_complete", {"item": item, "phase": phase, "result": result})

    def phase_retry(self, item: Any, phase: Any, error: BaseException, attempt: int, result: Any) -> None:
        """``pipekit_phase_retry(item, phase, error, attempt, result)``."""
        arguments = {"item": item, "phase": phase, "error": error, "attempt": attempt, "result": result}
        self._call("pipekit_phase_retry", arguments)

    def phase_fail(self, item: Any, phase: Any, error: BaseException, result: Any) -> None:
        """``pipekit_phase_fail(item, phase, error, result)``."""
        self._call("pipekit_phase_fail", {"item": item, "phase": phase, "error": error, "result": result})

    def phase_skip(self, item: Any, phase: Any, reason: str) -> None:
        """``pipekit_phase_skip(item, phase, reason)``."""
        self._call("pipekit_phase_skip", {"item": item, "phase": phase, "reason": reason})

    def item_finish(self, item: Any) -> None:
        """``pipekit_item_finish(item)``."""
        self._call("pipekit_item_finish", {"item": item})

    def budget_reached(self, run: Any, spent: float, cap: float) -> None:
        """``pipekit_budget_reached(run, spent, cap)``."""
        self._call("pipekit_budget_reached", {"run": run, "spent": spent, "cap": cap})

    def batch_event(self, run: Any, event: str, record: dict[str, Any], next_poll: float | None = None) -> None:
        """``pipekit_batch_event(...)`` for a batch's submission ``record``: its counts, never its payloads."""
        arguments = {
            "run": run, "event": event, "provider": record["provider"], "batch_id": record.get("batch_id"),
            "requests": len(record["requests"]), "status": record.get("status") or "",
            "counts": dict(record.get("counts") or {}), "next_poll": next_poll,
        }
        self._call("pipekit_batch_event", arguments)

    def run_finish(self, run: Any, exitstatus: int) -> None:
        """``pipekit_run_finish(run, exitstatus)``."""
        self._call("pipekit_run_finish", {"run": run, "exitstatus": exitstatus})

    def report(self, message: str, level: str = "info") -> None:
        """Say ``message`` through ``pipekit_report_message``; when no plugin takes
        it (the reporters blocked), it goes to stderr as ``pipekit: [level: ]message``."""
        if level not in LEVELS:
            raise ValueError(f"unknown message level {level!r} (one of {', '.join(LEVELS)})")
        if not self._call("pipekit_report_message", {"message": message, "level": level}):
            _to_stderr(format_message(message, level))

    # -- calling -----------------------------------------------------------------

    def _call(self, hookname: str, kwargs: dict[str, Any]) -> Any:
        """What pluggy returns: the list of results, or the first one for a firstresult hook."""
        if self.pm is None:
            return None
        if self._trace:
            self._report(f"[hook] {hookname}({', '.join(sorted(kwargs))})")
        caller = getattr(self.pm.hook, hookname)
        impls = caller.get_hookimpls()
        if not impls:
            return None
        known = self._guarded.get(hookname)
        if known is None or known[0] != impls:  # first call, or a plugin came or went
            known = self._guarded[hookname] = (impls, [self._guard(impl, hookname) for impl in impls])
        # pluggy's own executor: its call loop, monitoring and tracing see the call.
        firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
        return self.pm._hookexec(hookname, known[1], kwargs, firstresult)

    def _guard(self, impl: pluggy.HookImpl, hookname: str) -> pluggy.HookImpl:
        """A copy of ``impl`` whose errors are reported instead of raised."""
        function = impl.function
        name = impl.plugin_name
        if impl.wrapper:

            @functools.wraps(function)
            def guarded_wrapper(*args: Any) -> Generator[None, Any, Any]:
                gen = None if name in self._abandoned else self._start_wrapper(impl, hookname, function, args)
                result = yield
                return result if gen is None else self._end_wrapper(impl, hookname, gen, result)

            guarded: Callable[..., Any] = guarded_wrapper
        else:

            @functools.wraps(function)
            def guarded_call(*args: Any) -> Any:
                if name in self._abandoned:
                    return None
                outer, self.running = self.running, (name, hookname)  # a hook may report a message
                try:
                    return function(*args)
                except BaseException as exc:  # SystemExit too: one plugin must not end the run
                    self._failed(impl, hookname, exc)
                    return None
                finally:
                    self.running = outer

            guarded = guarded_call
        copy = pluggy.HookImpl(impl.plugin, name, guarded, impl.opts)
        # Older pluggy reads argument names from the function itself, not what it wraps.
        for attr in ("argnames", "kwargnames"):
            setattr(copy, attr, getattr(impl, attr))
        return copy

    def _start_wrapper(
        self, impl: pluggy.HookImpl, hookname: str, function: Callable[..., Any], args: Sequence[Any]
    ) -> Generator[None, Any, Any] | None:
        outer, self.running = self.running, (impl.plugin_name, hookname)
        try:
            gen = function(*args)
            next(gen)
            return gen  # type: ignore[no-any-return]
        except StopIteration:
            self._failed(impl, hookname, RuntimeError("wrapper did not yield"))
        except BaseException as exc:
            self._failed(impl, hookname, exc)
        finally:
            self.running = outer
        return None

    def _end_wrapper(self, impl: pluggy.HookImpl, hookname: str, gen: Generator[None, Any, Any], result: Any) -> Any:
        outer, self.running = self.running, (impl.plugin_name, hookname)
        try:
            gen.send(result)
        except StopIteration as stop:
            return stop.value
        except BaseException as exc:
            self._failed(impl, hookname, exc)
            return result
        finally:
            self.running = outer
        gen.close()
        self._failed(impl, hookname, RuntimeError("wrapper yielded twice"))
        return result

    def _failed(self, impl: pluggy.HookImpl, hookname: str, exc: BaseException) -> None:
        self.errors += 1
        name = impl.plugin_name
        if isinstance(exc, ObserverInterrupted):
            self._abandoned.add(name)
            self._report(f"pipekit: plugin {name!r} blocked the run in {hookname}: stopped, and not called again")
            return
        key = (name, hookname)
        if key in self._reported:
            return
        self._reported.add(key)
        where = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
        self._report(
            f"pipekit: plugin {name!r} raised in {hookname} (reported once; the run goes on):\n{where.rstrip()}"
        )

    # -- signals ---------------------------------------------------------------------

    def signal_handler(self, loop: Any, interrupt: Callable[[], None]) -> Callable[[int, FrameType | None], None]:
        """A ``signal.signal`` handler for SIGINT/SIGTERM that calls ``interrupt`` on
        ``loop``; a second signal while the loop is still stuck in an observer hook
        stops that hook (``ObserverInterrupted``), so the run can save and stop.

        A plain handler runs between the main thread's bytecodes even while the
        loop is blocked; the loop's own handlers would wait for the loop.
        """

        def delivered() -> None:
            if not self._signal_seen:
                self._signal_seen = True
                interrupt()

        def handler(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals == 1:
                loop.call_soon_threadsafe(delivered)
            elif not self._signal_seen and self.running is not None:
                blocked = self.running[0]
                # Stop first, so nothing new starts once the hook is left.
                delivered()
                raise ObserverInterrupted(f"{signal.Signals(signum).name} while {blocked} ran")
            elif not self._signal_seen:
                loop.call_soon_threadsafe(delivered)  # stuck elsewhere: interrupt() exits on the next one

        return handler


def format_message(message: str, level: str) -> str:
    """A message as pipekit prints it: ``pipekit: error: ...``, ``pipekit: ...``."""
    prefix = f"{level}: " if level in ("error", "warning") else ""
    return f"pipekit: {prefix}{message}"


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
