"""Resources a phase needs (``@phase(..., resources={"GPU": 1})``) and a machine has.

A resource is a name and an amount: ``GPU``, ``MEM`` (in whatever unit the
pipeline chooses), a licence seat. On the dask executor the cluster places a
phase on a worker started with enough of each (``dask worker --resources
GPU=1``). On the local and processes executors the driver caps concurrency by
what this machine declares (``pipekit run --resources GPU=1,MEM=16``): a phase
starts only once every amount it needs is free, all at once, and gives them
back when its call stops (a timed-out sync handler whose thread runs on keeps
them until it ends, since it still uses the device).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable
from collections.abc import Mapping
import math

from pipekit.outcomes import UsageError
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.phases import is_amount


#: Resource names and amounts: a phase's needs or a machine's capacity.
Resources = dict[str, float]


def parse_resources(text: str) -> Resources:
    """``GPU=1,MEM=4`` as ``{"GPU": 1, "MEM": 4}``: an ``argparse`` type, so bad
    text is a usage error naming the option."""
    parsed: Resources = {}
    for part in text.split(","):
        name, equals, amount = part.strip().partition("=")
        name = name.strip()
        if not name or not equals:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not NAME=AMOUNT (e.g. GPU=1,MEM=4)")
        try:
            number = float(amount)
        except ValueError:
            number = math.nan
        if not is_amount(number):
            raise argparse.ArgumentTypeError(f"{name}={amount.strip()}: the amount must be a positive number")
        if name in parsed:
            raise argparse.ArgumentTypeError(f"{name} is given twice")
        parsed[name] = int(number) if number.is_integer() else number
    return parsed


def merge_resources(given: Iterable[Resources] | None) -> Resources:
    """The ``--resources`` options of a run (repeatable) as one dict; a name given
    in two of them is a usage error."""
    merged: Resources = {}
    for resources in given or ():
        for name, amount in resources.items():
            if name in merged:
                raise UsageError(f"--resources: {name} is given twice")
            merged[name] = amount
    return merged


def check_machine(phases: Iterable[PhaseDefinition], machine: Mapping[str, float]) -> None:
    """Raise ``UsageError`` naming each phase that needs a resource this machine
    did not declare, or more of one than it declares: such a phase could never start."""
    problems = unplaceable(phases, [machine], "which this machine does not declare", "more than this machine declares")
    if problems:
        declared = ", ".join(f"{k}={_amount(v)}" for k, v in machine.items()) or "none"
        raise UsageError(
            f"phases need resources this run does not declare (--resources NAME=AMOUNT; declared: {declared}):\n  "
            + "\n  ".join(problems)
        )


def unplaceable(
    phases: Iterable[PhaseDefinition], holders: Iterable[Mapping[str, float]], missing: str, short: str
) -> list[str]:
    """What stops each phase from ever starting on one of ``holders`` (a machine,
    the workers of a cluster): one line per phase, saying ``missing`` after
    the names no holder has, else ``short`` after the amounts none has at once."""
    holders = list(holders)
    problems = []
    for phase in phases:
        needs = phase.resources
        if not needs or any(all(have.get(k, 0) >= v for k, v in needs.items()) for have in holders):
            continue
        absent = [name for name in needs if not any(name in have for have in holders)]
        if absent:
            names = ", ".join(repr(name) for name in absent)
            problems.append(f"phase {phase.name!r} needs resource {names}, {missing}")
        else:
            wanted = ", ".join(f"{k}={_amount(v)}" for k, v in needs.items())
            problems.append(f"phase {phase.name!r} needs {wanted}, {short}")
    return problems


def _amount(value: float) -> str:
    return f"{value:g}"


class ResourcePool:
    """What this machine declares, taken and given back by phases on one event loop.

    A phase takes every amount it needs at once or waits: never part of them,
    so two phases needing GPU and MEM cannot each hold one and wait forever.
    """

    def __init__(self, capacity: Mapping[str, float]) -> None:
        self.capacity = dict(capacity)
        self.free = dict(capacity)
        self._waiters: list[asyncio.Future[None]] = []

    def lacking(self, needs: Mapping[str, float]) -> list[str]:
        """The resources of ``needs`` not free enough now."""
        return [name for name, amount in needs.items() if self.free.get(name, 0) < amount]

    def available(self, needs: Mapping[str, float]) -> bool:
        """True when every amount of ``needs`` is free now."""
        return not self.lacking(needs)

    async def take(self, needs: Mapping[str, float]) -> None:
        """Wait until every amount of ``needs`` is free, then hold them (a
        cancelled wait holds nothing)."""
        while not self.available(needs):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        for name, amount in needs.items():
            self.free[name] -= amount

    def give_back(self, needs: Mapping[str, float]) -> None:
        """Return what ``take(needs)`` held and wake the phases waiting (each checks again)."""
        for name, amount in needs.items():
            self.free[name] += amount
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def machine_resources(
    given: Iterable[Resources] | None,
    phases: Iterable[PhaseDefinition],
    executor: str,
    placed_by_executor: bool,
) -> Resources | None:
    """What the run's gate caps phases by: the ``--resources`` options, checked
    against what the phases need (``check_machine``); None when the executor
    places phases by their resources itself, where ``--resources`` is a usage
    error (its workers declare their own)."""
    declared = merge_resources(given)
    if placed_by_executor:
        if declared:
            raise UsageError(
                f"--resources declares this machine's resources for the local and processes executors; "
                f"with --executor {executor} each worker declares its own (dask worker --resources GPU=1)"
            )
        return None
    check_machine(phases, declared)
    return declared
