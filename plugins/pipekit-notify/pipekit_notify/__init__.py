"""pipekit-notify: notifications through Apprise when a run finishes, when an item
fails a critical phase, and when a run stalls.

Any URL Apprise knows works (Slack, Discord, ntfy, email, a JSON webhook...):
``pipekit run books --notify ntfy://my-topic`` or ``PIPEKIT_NOTIFY=...``.
Notifications are sent from a worker thread with bounded timeouts: a
notification that cannot be delivered is reported once on stderr and never
fails or slows the run.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import sys
import time
from typing import TYPE_CHECKING
from typing import Any

from pipekit import hookimpl
from pipekit.config import Config
from pipekit.config import Parser
from pipekit.outcomes import PhaseInterrupted
from pipekit.outcomes import UsageError
from pipekit_notify.messages import Failure
from pipekit_notify.messages import failure_message
from pipekit_notify.messages import finish_message
from pipekit_notify.messages import stall_message


if TYPE_CHECKING:
    from pipekit_notify.sender import Sender


__version__ = importlib.metadata.version("pipekit-notify")

#: Registration name of the per-run ``Notifier``.
PLUGIN_NAME = "notify-run"
#: Environment variable with notification URLs (separated by spaces or commas).
ENV_URLS = "PIPEKIT_NOTIFY"
#: Items whose critical failure is notified on its own; later ones go in the final message.
MAX_FAILURE_ALERTS = 5


@hookimpl
def pipekit_addoption(parser: Parser) -> None:
    """Add ``--notify URL``, ``--notify-stall SECONDS`` and ``--notify-timeout SECONDS``."""
    group = parser.getgroup("notify", "notifications (pipekit-notify, through Apprise)")
    group.addoption(
        "--notify",
        action="append",
        default=[],
        metavar="URL",
        help=f"send notifications to this Apprise URL (repeatable; default ${ENV_URLS})",
    )
    group.addoption(
        "--notify-stall",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="notify when no phase started or ended for this long (default 900; 0: never)",
    )
    group.addoption(
        "--notify-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="longest wait for one notification, and at exit for the last ones (default 10)",
    )


@hookimpl
def pipekit_configure(config: Config) -> None:
    """Register a ``Notifier`` when notification URLs were given."""
    urls = list(config.getoption("notify") or [])
    if not urls and not os.environ.get(ENV_URLS, "").strip():
        return  # Apprise takes a while to load its services: only when needed
    import apprise
    from apprise.utils.parse import parse_urls

    from pipekit_notify.sender import Sender

    origin = "--notify" if urls else ENV_URLS
    urls = urls or parse_urls(os.environ[ENV_URLS])  # type: ignore[no-untyped-call]
    targets = apprise.Apprise()
    for url in urls:
        if not targets.add(url):
            scheme = url.split("://", 1)[0]
            raise UsageError(f"{origin}: Apprise cannot use the URL {scheme}://... (unknown service or bad URL)")
    timeout = config.getoption("notify_timeout", 10.0)
    if not timeout > 0:
        raise UsageError(f"--notify-timeout must be more than 0 seconds, not {timeout}")
    notifier = Notifier(Sender(targets, timeout, _to_stderr), stall_seconds=config.getoption("notify_stall", 900.0))
    config.pluginmanager.register(notifier, PLUGIN_NAME)


@hookimpl
def pipekit_unconfigure(config: Config) -> None:
    """Deliver the last notifications (bounded by ``--notify-timeout``) and unregister."""
    notifier = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if notifier is not None:
        config.pluginmanager.unregister(notifier)
        notifier.close()


class Notifier:
    """Watches one run through pipekit's hooks and queues its notifications.

    :param sender: delivers the messages off the event loop.
    :param stall_seconds: notify when no phase started or ended for this long
        while items are in flight (0 turns it off).
    """

    def __init__(self, sender: Sender, stall_seconds: float = 900.0) -> None:
        self.sender = sender
        self.stall_seconds = stall_seconds
        #: The first failed phases of the run, for the final message.
        self.failures: list[Failure] = []
        self.failure_count = 0
        self._alerts = 0
        self._run: Any = None
        self._last_activity = time.monotonic()
        self._stall_notified = False
        self._watchdog: asyncio.Task[None] | None = None

    # -- run ------------------------------------------------------------------

    @hookimpl
    def pipekit_run_start(self, run: Any) -> None:
        self._run = run
        self._touch()
        if self.stall_seconds > 0:
            self._watchdog = asyncio.ensure_future(self._watch_for_stalls())

    @hookimpl
    def pipekit_run_finish(self, run: Any, exitstatus: int) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self.sender.send(finish_message(run, exitstatus, self.failures, self.failure_count))

    def close(self) -> None:
        """Stop watching and deliver what is queued (bounded)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.sender.close()

    # -- activity ---------------------------------------------------------------

    @hookimpl
    def pipekit_item_start(self) -> None:
        self._touch()

    @hookimpl
    def pipekit_phase_start(self) -> None:
        self._touch()

    @hookimpl
    def pipekit_phase_complete(self) -> None:
        self._touch()

    @hookimpl
    def pipekit_phase_retry(self) -> None:
        self._touch()

    @hookimpl
    def pipekit_phase_skip(self) -> None:
        self._touch()

    @hookimpl
    def pipekit_phase_fail(self, item: Any, phase: Any, error: BaseException) -> None:
        self._touch()
        if isinstance(error, PhaseInterrupted):
            return  # the final message says the run was interrupted
        failure = Failure(item.id, phase.num, phase.name, _message(error), bool(phase.critical))
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURE_ALERTS:
            self.failures.append(failure)
        if failure.critical and self._alerts < MAX_FAILURE_ALERTS:
            self._alerts += 1
            pipeline = self._run.pipeline.name if self._run is not None else "?"
            self.sender.send(failure_message(pipeline, failure, last=self._alerts == MAX_FAILURE_ALERTS))

    def _touch(self) -> None:
        self._last_activity = time.monotonic()
        self._stall_notified = False

    async def _watch_for_stalls(self) -> None:
        period = min(self.stall_seconds / 4, 5.0)
        while True:
            await asyncio.sleep(period)
            quiet = time.monotonic() - self._last_activity
            in_flight = dict(getattr(self._run, "in_flight", {}))
            if quiet >= self.stall_seconds and in_flight and not self._stall_notified:
                self._stall_notified = True
                self.sender.send(stall_message(self._run, quiet, in_flight))


def _message(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["Notifier", "__version__"]
