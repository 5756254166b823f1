"""Rate limits and per-phase concurrency: what a phase waits for before it runs.

A pipeline declares its limits once, by name, in its module::

    LIMITS = {"openai": pipekit.Limit(rpm=500, tpm=200_000)}

and phases use them with ``@phase(..., limits=["openai"])`` (acquired before
every attempt) or acquire them for a token estimate from the handler with
``ctx.acquire("openai", tokens=1200)``. The buckets are aiolimiter's leaky
buckets, shared by every item and phase of the run. A handler that raises
``pipekit.Retry(after=...)`` pauses every limit it used, for every phase that
uses it, as a 429 with a Retry-After asks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
import sys
import threading
from types import ModuleType
from typing import Any

from aiolimiter import AsyncLimiter

from pipekit.display.format import number
from pipekit.outcomes import UsageError
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.resources import ResourcePool


#: The module attribute that declares a pipeline's limits.
LIMITS_ATTRIBUTE = "LIMITS"

#: ``on_wait(reason, seconds)``: told when an acquisition has to wait
#: (``seconds`` is the expected wait, or None when it cannot be known).
WaitCallback = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class Limit:
    """A named rate limit, as an API publishes it.

    :param rpm: requests per minute. Requests are spaced evenly (``60/rpm``
        seconds apart) unless ``burst`` allows several at once.
    :param tpm: tokens per minute; a request reserves its token estimate.
    :param burst: requests that may start back to back before the spacing applies.
    """

    rpm: float | None = None
    tpm: float | None = None
    burst: int = 1

    def __post_init__(self) -> None:
        if self.rpm is None and self.tpm is None:
            raise ValueError("a Limit needs rpm, tpm or both")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Limit {name} must be positive, not {value!r}")
        if self.burst < 1:
            raise ValueError(f"Limit burst must be at least 1, not {self.burst!r}")


class RateLimiter:
    """One declared limit at run time: its buckets and its Retry-After pause.

    Made inside the running event loop (aiolimiter buckets belong to one loop).
    """

    def __init__(self, name: str, limit: Limit, *, clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.limit = limit
        self._clock = clock or asyncio.get_running_loop().time
        self._requests = (
            AsyncLimiter(limit.burst, limit.burst * 60.0 / limit.rpm) if limit.rpm is not None else None
        )
        self._tokens = AsyncLimiter(limit.tpm, 60.0) if limit.tpm is not None else None
        #: Loop time before which nobody may acquire (a Retry-After).
        self.paused_until = 0.0

    def pause(self, seconds: float) -> bool:
        """Let nobody acquire for ``seconds``; False if a longer pause was already on."""
        until = self._clock() + seconds
        if until <= self.paused_until:
            return False
        self.paused_until = until
        return True

    async def acquire(self, tokens: int = 0, on_wait: WaitCallback | None = None) -> None:
        """Wait for one request and ``tokens`` tokens of capacity."""
        if self._tokens is not None and tokens > self._tokens.max_rate:
            raise ValueError(
                f"limit {self.name!r}: {tokens} tokens is more than its tpm ({number(self._tokens.max_rate)})"
            )
        told = False
        while True:
            pause = self.paused_until - self._clock()
            if pause > 0:
                if on_wait is not None:
                    on_wait(f"retry-after:{self.name}", pause)
                await asyncio.sleep(pause)
                continue
            if on_wait is not None and not told and not self._has_capacity(tokens):
                told = True
                on_wait(f"limit:{self.name}", None)
            if self._requests is not None:
                await self._requests.acquire()
            if self._tokens is not None and tokens:
                await self._tokens.acquire(tokens)
            if self.paused_until <= self._clock():
                return
            # Paused while we waited: the capacity is spent, wait out the pause and retake.

    def _has_capacity(self, tokens: int) -> bool:
        return (self._requests is None or self._requests.has_capacity()) and (
            self._tokens is None or not tokens or self._tokens.has_capacity(tokens)
        )


class Gate:
    """What a run makes phases wait for: per-phase concurrency, this machine's
    resources and named limits.

    :param declared: the pipeline's limits by name.
    :param phases: the pipeline's phases (their ``concurrency`` and ``limits``).
    :param say: writes one line on stderr.
    :param resources: what this machine declares (``--resources``), shared by
        the phases that need them; None when the executor places phases by
        their resources itself (Dask).
    """

    def __init__(
        self,
        declared: Mapping[str, Limit],
        phases: Iterable[PhaseDefinition],
        say: Callable[[str], None] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        self.declared = dict(declared)
        self._slots = {p.num: asyncio.Semaphore(p.concurrency) for p in phases if p.concurrency}
        self.resources = ResourcePool(resources) if resources is not None else None
        self._limiters: dict[str, RateLimiter] = {}
        self._say = say or _to_stderr
        self._throttling_told: set[str] = set()
        self._paused_told: set[str] = set()
        #: The run's event loop and its thread, for handlers in threads.
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()

    def limiter(self, name: str) -> RateLimiter:
        """The run-time limiter of the limit declared as ``name``."""
        found = self._limiters.get(name)
        if found is None:
            if name not in self.declared:
                known = ", ".join(sorted(self.declared)) or "none declared"
                raise KeyError(f"no limit named {name!r} in {LIMITS_ATTRIBUTE} ({known})")
            found = self._limiters[name] = RateLimiter(name, self.declared[name], clock=self.loop.time)
        return found

    def gates(self, phase: PhaseDefinition) -> bool:
        """Whether ``phase`` has anything to wait for here."""
        return bool(phase.concurrency or phase.limits or (phase.resources and self.resources is not None))

    async def enter(self, phase: PhaseDefinition, on_wait: WaitCallback | None = None) -> Callable[[], None]:
        """Wait for the phase's concurrency slot, resources and limits; returns the release."""
        releases: list[Callable[[], None]] = []

        def release() -> None:
            while releases:
                releases.pop()()

        try:
            slot = self._slots.get(phase.num)
            if slot is not None:
                if slot.locked() and on_wait is not None:
                    on_wait("concurrency", None)
                await slot.acquire()
                releases.append(slot.release)
            pool, needs = self.resources, phase.resources
            if pool is not None and needs:
                lacking = pool.lacking(needs)
                if lacking and on_wait is not None:
                    on_wait(f"resource:{lacking[0]}", None)
                await pool.take(needs)
                releases.append(lambda: pool.give_back(needs))
            for name, tokens in phase.limits.items():
                await self.acquire(name, tokens, on_wait)
        except BaseException:
            release()
            raise
        return release if releases else _nothing

    async def acquire(self, name: str, tokens: int = 0, on_wait: WaitCallback | None = None) -> None:
        """Wait for one request and ``tokens`` tokens of the limit ``name``."""
        limiter = self.limiter(name)

        def waiting(reason: str, seconds: float | None) -> None:
            if reason.startswith("limit:") and name not in self._throttling_told:
                self._throttling_told.add(name)
                self._say(f"limit {name!r} is throttling: work waits for capacity ({_describe(limiter.limit)})")
            if on_wait is not None:
                on_wait(reason, seconds)

        await limiter.acquire(tokens, waiting)

    def pause(self, names: Iterable[str], seconds: float, who: str) -> None:
        """A Retry-After: pause the limits ``names`` for every phase using them."""
        for name in names:
            if name in self.declared and self.limiter(name).pause(seconds) and name not in self._paused_told:
                # Once per limit: a rate-limited API sends dozens (the summary counts the waits).
                self._paused_told.add(name)
                self._say(f"limit {name!r} paused for {seconds:g}s (Retry-After from {who})")

    def acquire_from_thread(self, name: str, tokens: int, on_wait: WaitCallback | None) -> None:
        """``acquire`` for a sync handler running in a thread: blocks that thread."""
        asyncio.run_coroutine_threadsafe(self.acquire(name, tokens, on_wait), self.loop).result()


def make_gate(
    declared: Mapping[str, Limit],
    phases: Iterable[PhaseDefinition],
    say: Callable[[str], None],
    resources: Mapping[str, float] | None = None,
) -> Gate | None:
    """The run's ``Gate``, or None when no phase has anything to wait for."""
    phases = list(phases)
    gate = Gate(declared, phases, say=say, resources=resources)
    return gate if declared or any(gate.gates(p) for p in phases) else None


def _nothing() -> None:
    pass


def _describe(limit: Limit) -> str:
    parts = [f"{k}={number(getattr(limit, k))}" for k in ("rpm", "tpm") if getattr(limit, k) is not None]
    return ", ".join(parts)


def _to_stderr(message: str) -> None:
    print(f"pipekit: {message}", file=sys.stderr, flush=True)


def declared_limits(module: ModuleType | None, phases: Iterable[PhaseDefinition]) -> dict[str, Limit]:
    """The module's ``LIMITS``, checked against what its phases ask for.

    Raises ``UsageError`` naming the phase for an unknown limit name, a bad
    ``concurrency`` or ``max_cost``, or a ``LIMITS`` that is not a dict of ``Limit``.
    """
    raw: Any = getattr(module, LIMITS_ATTRIBUTE, None) if module is not None else None
    where = getattr(module, "__file__", None) or getattr(module, "__name__", "the pipeline module")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, Limit) for k, v in raw.items()):
        raise UsageError(f"{LIMITS_ATTRIBUTE} in {where} must be a dict of names to pipekit.Limit(...)")
    problems = []
    for phase in phases:
        if phase.concurrency is not None and (
            not isinstance(phase.concurrency, int) or isinstance(phase.concurrency, bool) or phase.concurrency < 1
        ):
            problems.append(f"phase {phase.name!r}: concurrency must be a positive int, not {phase.concurrency!r}")
        if phase.max_cost is not None and not (isinstance(phase.max_cost, (int, float)) and phase.max_cost >= 0):
            problems.append(f"phase {phase.name!r}: max_cost must be a number of dollars, not {phase.max_cost!r}")
        for name, tokens in phase.limits.items():
            if name not in raw:
                known = ", ".join(sorted(raw)) or "none declared"
                problems.append(f"phase {phase.name!r}: no limit named {name!r} in {LIMITS_ATTRIBUTE} ({known})")
            elif not isinstance(tokens, int) or tokens < 0:
                problems.append(f"phase {phase.name!r}: tokens for limit {name!r} must be an int >= 0")
            elif raw[name].tpm is not None and tokens > raw[name].tpm:
                problems.append(
                    f"phase {phase.name!r}: {number(tokens)} tokens is more than {name!r} "
                    f"allows per minute ({_describe(raw[name])})"
                )
    if problems:
        raise UsageError("invalid phase declarations in " + str(where) + ":\n  " + "\n  ".join(problems))
    return dict(raw)
