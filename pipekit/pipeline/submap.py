"""Durable sub-items inside a phase: ``ctx.map(fn, iterable, ...)``.

A book's 40 chapters are 40 sub-items of its summarise phase. Each element of
the iterable is one, identified by ``key(element)`` (default: its position).
``fn``'s result, status, attempts and usage are stored (``pipekit.state.subitems``)
as soon as ``fn`` returns, a batch of finished sub-items in one write, before
the phase's progress counts them. A later attempt, in this run or another,
calls ``fn`` only for the sub-items that did not finish, or whose element's
content or ``fn``'s code changed since (results are kept after the phase
completes, so a stale re-run of the merge step reuses every chapter).

Usage a sub-item records counts toward the phase as ``ctx.record_cost`` does,
and is stored with the sub-item as soon as it is recorded: a kill in the
middle of ``fn`` loses no cost (the next attempt counts what the dead one
could not, as checkpoints do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import math
import threading
import time
from typing import Any

from pipekit.pipeline.checkpoints import Tab
from pipekit.pipeline.outputs import OutputError
from pipekit.pipeline.outputs import is_model
from pipekit.pipeline.outputs import stored_value
from pipekit.state import subitems
from pipekit.state.digest import text_hash
from pipekit.state.holder import LeaseLostError
from pipekit.state.store import StateStore
from pipekit.state.subitems import DONE
from pipekit.state.subitems import FAILED
from pipekit.state.subitems import Progress
from pipekit.state.subitems import SubItem


#: ``pipekit.pipeline.context.PhaseContext``, which imports this module (typed
#: as ``Any`` here: an import back, even for types, would be a circle).
PhaseContext = Any


#: Sub-items in flight in one map when ``concurrency=`` is not given.
DEFAULT_CONCURRENCY = 8
#: Finished sub-items written in one batch, at most (one write per batch).
BATCH_SIZE = 256
#: ``ctx.progress`` stores an in-flight phase's progress at most this often (seconds).
PROGRESS_WRITE_SECONDS = 1.0


class SubItemsFailed(Exception):
    """More sub-items of a map failed than ``allow_failures`` lets pass; names their keys."""

    reason = "subitems_failed"


class DriverGone(Exception):
    """The run that waits for this handler is gone (its driver died): a worker's map
    starts no more sub-items, which the next run would pay for again."""


class SubItemContext:
    """The ``ctx`` a map's ``fn`` receives (when it has a parameter named ``ctx``).

    Usage it records counts toward the phase; ``checkpoint``, ``acquire`` and
    ``progress`` act as the phase's own, for this sub-item.
    """

    def __init__(self, run: MapRun, record: SubItem) -> None:
        self._run = run
        self._record = record
        parent = run.ctx
        #: This sub-item's key (``key(element)`` as a str, or its position).
        self.key = record.key
        self.item_id = parent.item_id
        self.metadata = parent.metadata
        self.phase = parent.phase
        #: fn calls for this sub-item so far, this one included, across runs.
        self.attempt = record.attempts

    @property
    def output_dir(self) -> Any:
        """The item's own folder for files (as ``ctx.output_dir``)."""
        return self._run.ctx.output_dir

    @property
    def idempotency_key(self) -> str:
        """A key unique to this sub-item, stable across attempts and runs
        (made from the phase's ``ctx.idempotency_key``, the map and the key)."""
        text = json.dumps([self._run.ctx.idempotency_key, self._run.label, self.key], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    def record_cost(self, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        """Add usage to this sub-item and its phase; stored at once, so a kill loses none."""
        self._run.charge(self._record, lambda: self._run.ctx.record_cost(tokens_in, tokens_out, cost_usd),
                         Tab(int(tokens_in), int(tokens_out), float(cost_usd)))

    def record_usage(self, model: str, tokens_in: int = 0, tokens_out: int = 0) -> float:
        """Add one model call's tokens, priced as ``ctx.record_usage`` does; returns the cost."""
        ctx = self._run.ctx
        before = len(ctx.unpriced)
        cost = 0.0

        def record() -> None:
            nonlocal cost
            cost = ctx.record_usage(model, tokens_in, tokens_out)

        tab = Tab(int(tokens_in), int(tokens_out))
        self._run.charge(self._record, record, tab, lambda: (cost, ctx.unpriced[before:]))
        return cost

    def checkpoint(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``ctx.checkpoint`` under a key private to this sub-item."""
        return self._run.ctx.checkpoint(json.dumps([self._run.label, self.key, key]), fn, *args)

    def acquire(self, limit: str, tokens: int = 0) -> Any:
        """``ctx.acquire``: awaitable in an async ``fn``, blocking in a sync one."""
        return self._run.ctx.acquire(limit, tokens)

    def progress(self, done: int, total: int | None = None) -> None:
        """Progress inside this sub-item, shown as the phase's (labelled with the key)."""
        self._run.ctx.progress(done, total, label=f"{self._run.label} {self.key}")


class MapRun:
    """One ``ctx.map`` call: its sub-items, their stored records, the writes."""

    def __init__(
        self,
        ctx: PhaseContext,
        fn: Callable[..., Any],
        elements: list[Any],
        keys: list[str],
        label: str,
        store: StateStore,
    ) -> None:
        self.ctx = ctx
        self.fn = fn
        self.elements = elements
        self.keys = keys
        self.label = label
        self.store = store
        self.code = ctx._code_hash(fn)
        self.contents = [content_hash(element) for element in elements]
        self._positions = {key: index for index, key in enumerate(keys)}
        self._lock = threading.Lock()
        self._pending: list[SubItem] = []
        #: Sub-items finished (written or waiting to be) and counted in the progress.
        self.done = 0
        self._unreported = 0
        #: Sub-items an earlier, killed attempt finished: saved again (their usage is this
        #: attempt's now) but not reported as finished again.
        self._adopted: set[tuple[str, str]] = set()

    # -- usage ----------------------------------------------------------------

    def charge(
        self, record: SubItem, count: Callable[[], None], tab: Tab, priced: Callable[[], Any] | None = None
    ) -> None:
        """Count usage on the phase (``count``), add it to ``record`` and store the record."""
        with self._lock:
            count()
            record.tokens_in += tab.tokens_in
            record.tokens_out += tab.tokens_out
            record.cost_usd += tab.cost_usd
            if priced is not None:
                cost, unpriced = priced()
                record.cost_usd += cost
                record.unpriced.extend(list(call) for call in unpriced)
            record.counted_by = self.ctx.attempt
            snapshot = SubItem(**vars(record))
        subitems.save(self.store, self.ctx.item_id, self.ctx.phase.name, [snapshot], self.ctx.phase.num)

    def adopt(self, records: Iterable[SubItem]) -> list[SubItem]:
        """Count the usage of records no saved state counts (their attempt died): this attempt's now."""
        adopted = []
        for record in records:
            if record.has_usage and record.counted_by is None:
                unpriced = [(str(m), int(i), int(o)) for m, i, o in record.unpriced]
                self.ctx._adopt(Tab(record.tokens_in, record.tokens_out, record.cost_usd, unpriced))
                record.counted_by = self.ctx.attempt
                adopted.append(record)
        return adopted

    # -- running ----------------------------------------------------------------

    async def run(
        self, concurrency: int, limits: tuple[str, ...], retries: int, allow_failures: float
    ) -> list[Any]:
        """Run ``fn`` for every sub-item not already done; the results in input order."""
        item_id, phase = self.ctx.item_id, self.ctx.phase.name
        records = await asyncio.to_thread(subitems.load, self.store, item_id, phase)
        first = not self.ctx._maps_seen
        self.ctx._maps_seen.add(self.label)
        adopted = self.adopt(records.values()) if first else []
        self._pending.extend(adopted)
        adopted_keys = {(record.label, record.key) for record in adopted}
        sizes = {label: n for label, n in self.ctx._map_sizes.items()}
        self.ctx._map_sizes[self.label] = sizes[self.label] = len(self.elements)
        await asyncio.to_thread(subitems.save_sizes, self.store, item_id, phase, sizes)
        results: list[Any] = [None] * len(self.elements)
        todo: list[tuple[int, SubItem]] = []
        for index, key in enumerate(self.keys):
            record = records.get((self.label, key))
            if record is not None and self._reusable(record, index):
                results[index] = record.result
            else:
                todo.append((index, record or SubItem(self.label, key)))
        self.done = len(self.elements) - len(todo)
        self._adopted = adopted_keys - {(record.label, record.key) for _, record in todo}
        await self._flush(force=True)
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="pipekit-map")
        slots = asyncio.Semaphore(concurrency)
        try:
            tasks = [self._one(index, record, slots, pool, limits, retries, results) for index, record in todo]
            await asyncio.gather(*tasks)
        finally:
            pool.shutdown(wait=False)
        await self._flush(force=True)
        failed = [record for _, record in todo if record.status == FAILED]
        allowed = allow_failures if isinstance(allow_failures, int) else math.floor(allow_failures * len(self.elements))
        if len(failed) > allowed:
            raise SubItemsFailed(self._failure_text(failed))
        return results

    def _reusable(self, record: SubItem, index: int) -> bool:
        return record.status == DONE and record.content == self.contents[index] and record.code == self.code

    def _failure_text(self, failed: list[SubItem]) -> str:
        shown = ", ".join(f"{record.key!r} ({record.error})" for record in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        return f"map {self.label!r}: {len(failed)} of {len(self.elements)} sub-items failed: {shown}{more}"

    async def _one(
        self,
        index: int,
        record: SubItem,
        slots: asyncio.Semaphore,
        pool: ThreadPoolExecutor,
        limits: tuple[str, ...],
        retries: int,
        results: list[Any],
    ) -> None:
        async with slots:
            if record.counted_by is not None and record.counted_by != self.ctx.attempt:
                # Its usage so far is in a saved state already; this attempt's starts at zero.
                record.tokens_in = record.tokens_out = 0
                record.cost_usd = 0.0
                record.unpriced = []
                record.counted_by = None
            alive = self.ctx._driver_alive
            if alive is not None and not alive():
                raise DriverGone(f"map {self.label!r}: the run waiting for item {self.ctx.item_id!r} is gone")
            for left in range(retries, -1, -1):
                record.attempts += 1
                try:
                    for name in limits:
                        await self._acquire(name)
                    value = await self._call(record, pool)
                    record.set_result(self._stored(record.key, value))
                except Exception as exc:  # noqa: BLE001  (a sub-item's failure is recorded, not raised)
                    record.status, record.error = FAILED, f"{type(exc).__name__}: {exc}"
                    if left:
                        continue
                else:
                    record.status, record.error = DONE, None
                    record.content, record.code = self.contents[index], self.code
                    results[index] = record.result
                break
            with self._lock:
                self._pending.append(record)
                self._unreported += 1
            # Inside the slot: the next sub-item starts once this one's write (when it
            # makes a batch) is durable, so a kill then loses no result fn returned.
            await self._flush()

    async def _acquire(self, name: str) -> None:
        gate = self.ctx._gate
        if gate is not None and threading.get_ident() == gate.loop_thread:
            await self.ctx.acquire(name)
        else:
            await asyncio.to_thread(self.ctx.acquire, name)

    async def _call(self, record: SubItem, pool: ThreadPoolExecutor) -> Any:
        element = self.elements[self._positions[record.key]]
        kwargs = {"ctx": SubItemContext(self, record)} if _takes_ctx(self.fn) else {}
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(element, **kwargs)
        call = functools.partial(contextvars.copy_context().run, self.fn, element, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(pool, call)

    def _stored(self, key: str, value: Any) -> Any:
        try:
            return stored_value(self.ctx.phase.name, value)
        except OutputError as exc:
            raise OutputError(f"sub-item {key!r} of map {self.label!r}: {exc}") from None

    async def _flush(self, force: bool = False) -> None:
        """Write the finished sub-items waiting (one write), then count them in the progress."""
        with self._lock:
            if not self._pending or (not force and len(self._pending) < self._batch()):
                batch, finished = [], 0
            else:
                batch, self._pending = self._pending, []
                finished, self._unreported = self._unreported, 0
                snapshots = [SubItem(**vars(record)) for record in batch]
        if batch:
            phase = self.ctx.phase
            await asyncio.to_thread(subitems.save, self.store, self.ctx.item_id, phase.name, snapshots, phase.num)
            self.done += finished
            report = self.ctx._on_subitem
            if report is not None:
                for record in snapshots:
                    if record.status in (DONE, FAILED) and (record.label, record.key) not in self._adopted:
                        report(record.label, record.key, record.status, record.error)
        if batch or force:
            self.ctx.progress(min(self.done, len(self.elements)), len(self.elements), label=self.label)

    def _batch(self) -> int:
        # Small maps (LLM calls) write each sub-item at once; big ones group
        # their writes, while no more than the map's in-flight width waits.
        return max(1, min(BATCH_SIZE, len(self.elements) // 64))


def start_map(
    ctx: PhaseContext,
    fn: Callable[..., Any],
    iterable: Iterable[Any],
    key: Callable[[Any], Any] | None,
    concurrency: int | None,
    limits: Iterable[str],
    retries: int,
    allow_failures: float,
) -> Any:
    """What ``ctx.map`` does: checks its arguments, then runs the map (a coroutine
    when called on a running event loop, an async handler's; else to the end)."""
    if not callable(fn):
        raise TypeError(f"ctx.map: fn must be callable, not {fn!r}")
    elements = list(iterable)
    keys = _keys(elements, key)
    width = DEFAULT_CONCURRENCY if concurrency is None else concurrency
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"ctx.map: concurrency must be an int >= 1, not {concurrency!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"ctx.map: retries must be an int >= 0, not {retries!r}")
    if isinstance(allow_failures, bool) or not isinstance(allow_failures, (int, float)) or not (
        allow_failures >= 0 and (isinstance(allow_failures, int) or allow_failures < 1)
    ):
        raise ValueError(f"ctx.map: allow_failures is an int >= 0 or a fraction below 1, not {allow_failures!r}")
    names = (limits,) if isinstance(limits, str) else tuple(limits)
    base = getattr(fn, "__name__", None) or type(fn).__name__
    label = base
    ordinal = 1
    while label in ctx._maps_seen:
        ordinal += 1
        label = f"{base}#{ordinal}"
    run = MapRun(ctx, fn, elements, keys, label, ctx._subitem_store())
    coroutine = run.run(width, names, retries, allow_failures)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    return coroutine


def _keys(elements: list[Any], key: Callable[[Any], Any] | None) -> list[str]:
    if key is None:
        return [str(index) for index in range(len(elements))]
    keys: list[str] = []
    seen: set[str] = set()
    for element in elements:
        value = key(element)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise TypeError(f"ctx.map: key() returned {value!r} for {element!r}; a key is a str or an int")
        text = str(value)
        if text in seen:
            raise ValueError(f"ctx.map: duplicate key {text!r}; key() must give each element its own key")
        seen.add(text)
        keys.append(text)
    return keys


def content_hash(element: Any) -> str:
    """A hash of an element's content: its JSON (a pydantic model's JSON), else its ``repr``."""
    value = element.model_dump(mode="json") if is_model(element) else element
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = "\x00repr:" + repr(value)
    return text_hash(text)


def _takes_ctx(fn: Callable[..., Any]) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ProgressWriter:
    """Stores a phase's ``ctx.progress`` at most once a second (always the last of a map)."""

    def __init__(self, store: Callable[[], StateStore | None], item_id: str, phase: str) -> None:
        self._store = store
        self._item_id = item_id
        self._phase = phase
        self._written_at = -math.inf
        self._lock = threading.Lock()

    def offer(self, progress: Progress) -> None:
        """Store ``progress`` if the last write is a second old or it is a total's end."""
        now = time.monotonic()
        with self._lock:
            if now - self._written_at < PROGRESS_WRITE_SECONDS and progress.done != progress.total:
                return
            self._written_at = now
        try:
            store = self._store()
        except RuntimeError:  # a worker that cannot reach the store: shown live only
            return
        if store is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            subitems.save_progress(store, self._item_id, self._phase, progress)
            return
        # On the event loop: the write (an fsync) goes to a thread, not in every item's way.
        loop.run_in_executor(None, _save_progress_unless_released, store, self._item_id, self._phase, progress)


def _save_progress_unless_released(store: StateStore, item_id: str, phase: str, progress: Progress) -> None:
    """``subitems.save_progress``, which nobody waits for: one that lands after the item's
    lock was released (the phase ended meanwhile) is refused by the store, and dropped."""
    with contextlib.suppress(LeaseLostError):
        subitems.save_progress(store, item_id, phase, progress)
