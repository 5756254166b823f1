"""The one place observer hooks are called, with pipekit's plugin-error policy.

Each implementation is called on its own, so a plugin that raises cannot
silence another one, lose state or change the exit status: its error is
reported once per plugin and hook, on stderr, with the plugin's name.
"""

from __future__ import annotations

from collections.abc import Callable
import os
import sys
import traceback
from typing import Any

import pluggy


class HookNotifier:
    """Calls observer hooks of ``pm``; ``notifier("pipekit_item_start", item=item)``.

    :param report: where plugin errors are written (stderr by default).
    """

    def __init__(self, pm: pluggy.PluginManager, report: Callable[[str], None] | None = None) -> None:
        self.pm = pm
        self._report = report or _to_stderr
        self._reported: set[tuple[str, str]] = set()
        self._trace = bool(os.environ.get("PIPEKIT_DEBUG_HOOKS"))
        #: Per hook: the implementations it was planned for, then wrappers and
        #: plain ones in calling order (hooks fire thousands of times a run).
        self._plans: dict[str, _Plan] = {}
        #: Number of errors raised by observers, reported or not.
        self.errors = 0

    def __call__(self, hookname: str, **kwargs: Any) -> None:
        if self._trace:
            self._report(f"[hook] {hookname}({', '.join(sorted(kwargs))})")
        impls = getattr(self.pm.hook, hookname).get_hookimpls()
        plan = self._plans.get(hookname)
        if plan is None or plan[0] != impls:  # first call, or a plugin came or went
            plan = self._plans[hookname] = _plan(impls)
        _, wrappers, plain = plan
        if not wrappers:
            for impl, argnames in plain:
                try:
                    impl.function(*[kwargs[name] for name in argnames])
                except Exception as exc:
                    self._failed(impl, hookname, exc)
            return
        open_wrappers = []
        for impl, argnames in wrappers:
            gen = self._call(impl, argnames, hookname, kwargs)
            if gen is not None:
                try:
                    next(gen)
                    open_wrappers.append((impl, gen))
                except StopIteration:
                    self._failed(impl, hookname, RuntimeError("wrapper did not yield"))
                except Exception as exc:
                    self._failed(impl, hookname, exc)
        for impl, argnames in plain:
            self._call(impl, argnames, hookname, kwargs)
        for impl, gen in reversed(open_wrappers):
            try:
                gen.send(None)
            except StopIteration:
                pass
            except Exception as exc:
                self._failed(impl, hookname, exc)

    def _call(self, impl: Any, argnames: tuple[str, ...], hookname: str, kwargs: dict[str, Any]) -> Any:
        try:
            return impl.function(*[kwargs[name] for name in argnames])
        except Exception as exc:
            self._failed(impl, hookname, exc)
            return None

    def _failed(self, impl: Any, hookname: str, exc: BaseException) -> None:
        self.errors += 1
        key = (impl.plugin_name, hookname)
        if key in self._reported:
            return
        self._reported.add(key)
        where = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
        self._report(
            f"pipekit: plugin {impl.plugin_name!r} raised in {hookname} "
            f"(reported once; the run goes on):\n{where.rstrip()}"
        )


_Calls = list[tuple[Any, tuple[str, ...]]]
_Plan = tuple[list[Any], _Calls, _Calls]


def _plan(impls: list[Any]) -> _Plan:
    """Wrappers and plain implementations of one hook, each with its argument names.

    pluggy calls the last registered first, wrappers around the rest.
    """
    ordered = list(reversed(impls))
    wrappers = [(i, tuple(i.argnames)) for i in ordered if i.wrapper]
    plain = [(i, tuple(i.argnames)) for i in ordered if not i.wrapper and not i.hookwrapper]
    return impls, wrappers, plain


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
