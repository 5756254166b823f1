"""Who holds an item's lease, and whether that holder is certainly gone.

A lease names its holder so that a driver finding an unexpired lease can take
the item at once when the holder died on this very machine (a crash, kill -9)
instead of waiting for the lease to expire. Host name and pid alone do not
prove that: a container with host networking has the same host name, its own
pid numbers, and ``os.kill(pid, 0)`` there asks about some other process; a
pid is also reused after its process died, and a host reboots. So a holder is
named by its host, pid, boot id, the start time of its process and the inode
of its PID namespace, and it counts as dead only when all of these can be read
here and match this process's boot and namespace. Anything else (another host,
another boot, another namespace, no ``/proc``, an older driver that wrote no
identity) is doubt, and doubt waits for the lease to expire: taking a live
driver's item runs its paid phases twice.
"""

from __future__ import annotations

from dataclasses import asdict
from dataclasses import dataclass
import functools
import json
import os
from pathlib import Path
import socket
from typing import Any

from pipekit.outcomes import StateWriteError


class LeaseLostError(StateWriteError):
    """This driver no longer holds the lease of the item(s) it was writing.

    Its lease expired (the process was paused: a laptop lid, a VM snapshot, a
    long SIGSTOP) and another driver took the item over, or this driver had
    released it already (a write landing after the release: a thread the run
    abandoned; ``released`` says so). Nothing was written, so the new holder's
    state stands. The runner stops working on the items named and leaves them
    to their new holder.
    """

    def __init__(self, location: str, item_ids: list[str], *, released: bool = False) -> None:
        self.item_ids = list(item_ids)
        self.released = released
        names = ", ".join(repr(item_id) for item_id in self.item_ids[:3])
        more = f" and {len(self.item_ids) - 3} more" if len(self.item_ids) > 3 else ""
        why = "was released already (a write after the release)" if released else (
            "expired and another driver took it over")
        super().__init__(
            location, f"this driver's lease on item {names}{more} {why}; its work there is left to that driver"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses from a worker process as itself (its ``__init__`` is not ``args``'s).
        return (_lease_lost, (self.path, self.item_ids, self.released))


def _lease_lost(location: str, item_ids: list[str], released: bool) -> LeaseLostError:
    return LeaseLostError(location, item_ids, released=released)


@dataclass(frozen=True)
class Holder:
    """The identity of a process holding leases (None where ``/proc`` does not tell)."""

    host: str
    pid: int
    boot_id: str | None
    #: The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22).
    start_time: int | None
    #: The PID namespace, as ``/proc/self/ns/pid`` names it (``pid:[4026531836]``).
    pid_namespace: str | None

    def to_json(self) -> str:
        """The identity as stored beside a lease."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Holder | None:
        """The identity stored by ``to_json``; None when absent or unreadable."""
        if not text:
            return None
        try:
            fields: Any = json.loads(text)
            return cls(
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                boot_id=_optional(fields.get("boot_id"), str),
                start_time=_optional(fields.get("start_time"), int),
                pid_namespace=_optional(fields.get("pid_namespace"), str),
            )
        except (ValueError, TypeError, KeyError):
            return None


def _optional(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


@functools.lru_cache(maxsize=1)
def _this_holder(pid: int) -> Holder:
    return Holder(socket.gethostname(), pid, boot_id(), process_start_time(pid), pid_namespace())


def this_holder() -> Holder:
    """The identity of this process (read once per process; a fork gets its own)."""
    return _this_holder(os.getpid())


def boot_id(proc: str = "/proc") -> str | None:
    """This machine's boot id (a new one at every boot); None without ``/proc``."""
    try:
        return Path(proc, "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def pid_namespace(proc: str = "/proc") -> str | None:
    """The PID namespace this process sees pids in; None without ``/proc``."""
    try:
        return os.readlink(Path(proc, "self/ns/pid"))
    except OSError:
        return None


def process_start_time(pid: int, proc: str = "/proc") -> int | None:
    """When process ``pid`` (as this namespace numbers it) started, in clock
    ticks since boot; None when there is no such process or no ``/proc``."""
    try:
        stat = Path(proc, str(pid), "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def holder_is_gone(holder: Holder | None, me: Holder | None = None, proc: str = "/proc") -> bool:
    """True only when ``holder`` certainly no longer runs: it ran on this host,
    in this boot and this PID namespace, and its pid is now free or belongs to
    a process started at another time (the pid was reused). False in any doubt.
    """
    me = me or this_holder()
    if holder is None or None in (holder.boot_id, holder.start_time, holder.pid_namespace):
        return False
    if me.boot_id is None or me.pid_namespace is None:
        return False
    if (holder.host, holder.boot_id, holder.pid_namespace) != (me.host, me.boot_id, me.pid_namespace):
        return False
    if holder.pid == me.pid:
        return holder.start_time != me.start_time  # an earlier process that had this pid
    return process_start_time(holder.pid, proc) != holder.start_time
