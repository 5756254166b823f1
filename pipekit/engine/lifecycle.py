"""A command's set-up and teardown hooks, with pipekit's plugin-error policy.

``pipekit_configure`` is where a plugin refuses to start (a missing key, a bad
option): whatever it raises becomes a ``UsageError`` naming the plugin, with
the traceback only under ``-v``. ``pipekit_unconfigure`` runs when the work is
done and saved: a plugin raising there is reported on stderr with its name,
every other plugin is still unconfigured, and the exit status stays what the
work decided.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import traceback
from types import CodeType
from types import TracebackType

from pipekit.config import Config
from pipekit.notify import HookNotifier
from pipekit.outcomes import UsageError


@contextlib.contextmanager
def configured(config: Config) -> Iterator[Config]:
    """``pipekit_configure`` on entry; ``pipekit_unconfigure`` and the cleanup stack on exit.

    As in pytest, unconfigure runs even when a configure implementation raised:
    the plugins configured before it may hold resources (a live display, a
    connection). The cleanups registered with ``config.add_cleanup`` run last.
    """
    try:
        try:
            configure(config)
            yield config
        finally:
            unconfigure(config)
    finally:
        # Config has no hook left to call (configure went through here, not
        # ``do_configure``): this only empties its cleanup stack.
        config.ensure_unconfigure()


def configure(config: Config) -> None:
    """Call ``pipekit_configure`` (historic: plugins registered later get it too).

    :raises UsageError: naming the plugin whose implementation raised.
    """
    hook = config.hook.pipekit_configure
    try:
        hook.call_historic(kwargs={"config": config})
    except UsageError:
        raise  # a plugin's own words to the user (a bad option value)
    except Exception as exc:
        name = _raising_plugin(hook.get_hookimpls(), exc.__traceback__)
        message = f"plugin {name!r} raised in pipekit_configure: {type(exc).__name__}: {exc}"
        if config.getoption("verbose", 0):
            message += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        raise UsageError(message) from exc


def unconfigure(config: Config) -> None:
    """Call every ``pipekit_unconfigure`` implementation, each on its own: one
    that raises is reported on stderr with its plugin's name, the others still run."""
    HookNotifier.of(config.pluginmanager).unconfigure(config)


def _raising_plugin(impls: list[object], tb: TracebackType | None) -> str:
    """The plugin whose implementation is the innermost frame of ``tb``."""
    owners: dict[CodeType, str] = {}
    for impl in impls:
        function = getattr(impl, "function", None)
        code = getattr(getattr(function, "__func__", function), "__code__", None)
        if code is not None:
            owners[code] = str(getattr(impl, "plugin_name", "?"))
    found = "an unknown plugin"
    while tb is not None:
        found = owners.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found
