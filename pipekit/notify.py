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
        #: Number of errors raised by observers, reported or not.
        self.errors = 0

    def __call__(self, hookname: str, **kwargs: Any) -> None:
        if self._trace:
            self._report(f"[hook] {hookname}({', '.join(sorted(kwargs))})")
        impls = getattr(self.pm.hook, hookname).get_hookimpls()
        # pluggy calls the last registered first, wrappers around the rest.
        wrappers = [i for i in reversed(impls) if i.wrapper]
        plain = [i for i in reversed(impls) if not i.wrapper and not i.hookwrapper]
        open_wrappers = []
        for impl in wrappers:
            gen = self._call(impl, hookname, kwargs)
            if gen is not None:
                try:
                    next(gen)
                    open_wrappers.append((impl, gen))
                except StopIteration:
                    self._failed(impl, hookname, RuntimeError("wrapper did not yield"))
                except Exception as exc:
                    self._failed(impl, hookname, exc)
        for impl in plain:
            self._call(impl, hookname, kwargs)
        for impl, gen in reversed(open_wrappers):
            try:
                gen.send(None)
            except StopIteration:
                pass
            except Exception as exc:
                self._failed(impl, hookname, exc)

    def _call(self, impl: Any, hookname: str, kwargs: dict[str, Any]) -> Any:
        try:
            return impl.function(*[kwargs[name] for name in impl.argnames])
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


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
