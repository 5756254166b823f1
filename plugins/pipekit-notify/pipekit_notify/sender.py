"""Delivery off the event loop: one worker thread, bounded waits, failures reported once."""

from __future__ import annotations

from collections.abc import Callable
import logging
import queue
import threading

import apprise

from pipekit_notify.messages import Message


class Sender:
    """Sends ``Message`` objects to every URL of ``targets`` from a worker thread.

    ``send`` only queues, so a hook never waits for the network. Each URL's
    connect and read timeouts are capped at ``timeout`` seconds; ``close`` waits
    at most ``timeout`` seconds for what is still queued. The first delivery
    that fails is reported through ``report``; later ones are only counted.

    :param targets: the Apprise object holding the notification URLs.
    :param timeout: the longest wait, in seconds, for one delivery and for ``close``.
    :param report: where a delivery failure is reported (once).
    """

    def __init__(self, targets: apprise.Apprise, timeout: float, report: Callable[[str], None]) -> None:
        self._targets = targets
        self._timeout = timeout
        self._report = report
        for server in targets:
            server.socket_connect_timeout = min(server.socket_connect_timeout or timeout, timeout)
            server.socket_read_timeout = min(server.socket_read_timeout or timeout, timeout)
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Messages delivered to every URL, and messages at least one URL did not take.
        self.delivered = 0
        self.failed = 0

    def send(self, message: Message) -> None:
        """Queue ``message``; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="pipekit-notify", daemon=True)
            self._thread.start()
        self._queue.put(message)

    def close(self) -> None:
        """Deliver what is queued, waiting at most ``timeout`` seconds, then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(self._timeout)
        if self._thread.is_alive():
            self._fail(f"gave up waiting after {self._timeout:g}s for the last notifications")
        self._thread = None

    def _work(self) -> None:
        while (message := self._queue.get()) is not None:
            self._deliver(message)

    def _deliver(self, message: Message) -> None:
        # Apprise logs why a delivery failed; capture it so the report can say so
        # (and so it is not printed by logging's last-resort handler on every failure).
        ok: bool
        try:
            with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as logs:  # type: ignore[no-untyped-call]
                ok = bool(self._targets.notify(title=message.title, body=message.body, notify_type=message.kind))
            why = logs.getvalue().strip().splitlines()
        except Exception as exc:
            ok, why = False, [f"{type(exc).__name__}: {exc}"]
        if ok:
            self.delivered += 1
        else:
            self._fail(why[-1] if why else "no reason given")

    def _fail(self, why: str) -> None:
        with self._lock:
            self.failed += 1
            first = self.failed == 1
        if first:
            where = ", ".join(
                str(server.url(privacy=True)).split("?")[0]  # type: ignore[no-untyped-call]
                for server in self._targets
            )
            self._report(
                f"pipekit-notify: could not deliver a notification to {where}: {why} "
                f"(the run goes on; further delivery failures are not reported)"
            )
