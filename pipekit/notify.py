"""The one place observer hooks are called, with pipekit's plugin-error policy.

Each implementation is called on its own, so a plugin that raises cannot
silence another one, lose state or change the exit status: its error is
reported once per plugin and hook, on stderr, with the plugin's name.
"""

from __future__ import annotations

from collections.abc import Callable
import operator
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
        if not impls:
            return
        plan = self._plans.get(hookname)
        if plan is None or plan[0] != impls:  # first call, or a plugin came or went
            plan = self._plans[hookname] = _plan(impls)
        _, wrappers, plain = plan
        open_wrappers = []
        for call in wrappers:
            gen = self._call(call, hookname, kwargs)
            if gen is not None:
                try:
                    next(gen)
                    open_wrappers.append((call[0], gen))
                except StopIteration:
                    self._failed(call[0], hookname, RuntimeError("wrapper did not yield"))
                except Exception as exc:
                    self._failed(call[0], hookname, exc)
        for call in plain:
            self._call(call, hookname, kwargs)
        for impl, gen in reversed(open_wrappers):
            try:
                gen.send(None)
            except StopIteration:
                pass
            except Exception as exc:
                self._failed(impl, hookname, exc)

    def _call(self, call: _Call, hookname: str, kwargs: dict[str, Any]) -> Any:
        impl, function, fetch, single = call
        try:
            return function(fetch(kwargs)) if single else function(*fetch(kwargs))
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


#: One implementation ready to call: ``(impl, function, fetch, single)``, where
#: ``fetch(kwargs)`` gives its arguments (one value when ``single``, else a tuple).
_Call = tuple[Any, Callable[..., Any], Callable[[dict[str, Any]], Any], bool]
_Plan = tuple[list[Any], list[_Call], list[_Call]]


def _no_arguments(kwargs: dict[str, Any]) -> tuple[()]:
    return ()


def _prepare(impl: Any) -> _Call:
    names = tuple(impl.argnames)
    fetch = operator.itemgetter(*names) if names else _no_arguments
    return impl, impl.function, fetch, len(names) == 1


def _plan(impls: list[Any]) -> _Plan:
    """Wrappers and plain implementations of one hook, in calling order, ready to call.

    pluggy calls the last registered first, wrappers around the rest.
    """
    ordered = list(reversed(impls))
    wrappers = [_prepare(i) for i in ordered if i.wrapper]
    plain = [_prepare(i) for i in ordered if not i.wrapper and not i.hookwrapper]
    return impls, wrappers, plain


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
