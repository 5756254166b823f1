"""What a handler sees while it runs (``ctx``) and what a finished phase reports."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
import hashlib
import json
import math
from pathlib import Path
import sys
import threading
from typing import TYPE_CHECKING
from typing import Any

from pipekit.display.format import money_as_given
from pipekit.display.format import money_exact
from pipekit.outcomes import Fail
from pipekit.pipeline.checkpoints import Checkpoints
from pipekit.pipeline.checkpoints import Tab
from pipekit.pipeline.checkpoints import charge
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.pipeline.submap import ProgressWriter
from pipekit.pipeline.submap import start_map
from pipekit.state.store import StateStore
from pipekit.state.subitems import Progress


if TYPE_CHECKING:
    from pipekit.pipeline.limits import Gate
    from pipekit.pipeline.limits import WaitCallback


@dataclass(frozen=True)
class PhaseOutcome:
    """A completed phase, as ``pipekit_phase_complete`` receives it."""

    #: A ``str`` or a JSON value, as stored (``pipekit.pipeline.outputs``).
    output: Any
    tokens_in: int
    tokens_out: int
    cost_usd: float
    duration_seconds: float
    attempt: int
    output_file: str | None = None
    executor: str = ""


def check_usage(tokens_in: float, tokens_out: float, cost_usd: float) -> None:
    """Refuse usage that would corrupt totals: NaN, infinite or negative numbers."""
    for name, value in (("tokens_in", tokens_in), ("tokens_out", tokens_out), ("cost_usd", cost_usd)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class PhaseContext:
    """The ``ctx`` argument of a handler: who it runs for, where to write, what it spent.

    :param item_id: the item's id.
    :param metadata: the item's metadata.
    :param phase: the phase's definition.
    :param attempt: executions of this phase so far, this one included, across runs
        (1 the first time; a retry or a resumed run counts up).
    :param output_dir: a folder private to this item, created when first asked for.
    :param price: prices usage for ``record_usage`` (the ``pipekit_price_usage`` hook,
        called with keyword arguments); without it usage costs nothing.
    :param last_error: the error text of the phase's previous attempt, if it failed.
    :param consumed: gives the hashes of the earlier outputs the handler is given,
        by phase name (what ``idempotency_key`` depends on besides the item);
        asked for only when the key is.
    """

    def __init__(
        self,
        item_id: str,
        metadata: dict[str, Any],
        phase: PhaseDefinition,
        attempt: int,
        output_dir: Path,
        price: Callable[..., float | None] | None = None,
        *,
        checkpoints: Checkpoints | None = None,
        gate: Gate | None = None,
        on_wait: WaitCallback | None = None,
        consumed: Callable[[], Mapping[str, str | None]] | None = None,
        last_error: str | None = None,
        on_progress: Callable[[int, int | None, str | None], None] | None = None,
        code_hash: Callable[[Callable[..., Any]], str | None] | None = None,
        on_subitem: Callable[[str, str, str, str | None], None] | None = None,
    ) -> None:
        self.item_id = item_id
        self.metadata = metadata
        self.phase = phase
        self.attempt = attempt
        self._output_dir = output_dir
        self._price = price
        #: Who or what ran the phase (a model name, a worker); recorded in the state.
        self.executor: str = phase.executor
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_usd = 0.0
        self._checkpoints = checkpoints
        self._gate = gate
        self._on_wait = on_wait
        #: Names of the limits acquired by this attempt (a ``Retry`` pauses them).
        self.limits_used: set[str] = set(phase.limits)
        #: ``record_usage`` calls made without a pricer: ``(model, tokens_in, tokens_out)``.
        self.unpriced: list[tuple[str, int, int]] = []
        self._consumed = consumed
        self._idempotency_key: str | None = None
        #: The error of this phase's previous attempt (this run or an earlier one), None on
        #: its first: a handler may re-ask a model with it after an ``invalid_output``.
        self.last_error = last_error
        self._on_progress = on_progress
        self._code_hasher = code_hash
        #: ``(label, key, status, error)`` of each stored finished sub-item, for observers.
        self._on_subitem = on_subitem
        #: Labels of the maps this attempt ran, and their sizes (``ctx.map``).
        self._maps_seen: set[str] = set()
        self._map_sizes: dict[str, int] = {}
        #: In a worker: False once the driver no longer waits for this handler (a map stops).
        self._driver_alive: Callable[[], bool] | None = None
        self._progress: ProgressWriter | None = None  # made at the first ctx.progress (few phases call it)

    @property
    def output_dir(self) -> Path:
        """This item's own folder for files (created on first use)."""
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return self._output_dir

    @property
    def idempotency_key(self) -> str:
        """A key for external side effects, the same for every attempt of this phase
        of this item, in this run and later ones.

        Phases run at least once: the attempt in flight when a process or a
        worker dies runs again, and a failed attempt is retried. Give this key
        to an API that deduplicates requests (a payment, an e-mail, a posted
        message) so the repeated attempt does not do it twice. It is made from
        the pipeline's name, the item's id and metadata, the phase's name and
        the outputs of the earlier phases the handler is given: it changes when
        one of those does (an upstream phase produced another output, the
        item's metadata was edited), since the side effect is then a new one.
        The attempt number, the run and the phase's code do not change it.
        """
        if self._idempotency_key is None:
            intent = {
                "pipeline": pipeline_name(self.phase),
                "item": self.item_id,
                "phase": self.phase.name,
                "metadata": self.metadata,
                "consumed": dict(self._consumed()) if self._consumed is not None else {},
            }
            text = json.dumps(intent, sort_keys=True, ensure_ascii=False, default=repr)
            self._idempotency_key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self._idempotency_key

    def record_cost(self, tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0) -> None:
        """Add usage to this phase; it counts even if the attempt later fails."""
        check_usage(tokens_in, tokens_out, cost_usd)
        self.tokens_in += int(tokens_in)
        self.tokens_out += int(tokens_out)
        self.cost_usd += float(cost_usd)
        charge(int(tokens_in), int(tokens_out), float(cost_usd))
        self._check_max_cost()

    def _check_max_cost(self) -> None:
        cap = self.phase.max_cost
        if cap is not None and self.cost_usd > cap:
            raise CostCapExceeded(
                f"phase {self.phase.name!r} recorded {money_exact(self.cost_usd)} in this execution, "
                f"over its max_cost {money_as_given(cap)}"
            )

    def checkpoint(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` once per (item, phase, ``key``) and keep its result.

        The result must be JSON-serialisable; it is stored durably before it is
        returned (as JSON reads it back: a tuple comes back a list), and a later
        attempt of this phase gets the stored result without calling ``fn``.
        Awaitable when ``fn`` is a coroutine function, a plain call otherwise.
        The checkpoints are dropped when the phase completes or is reset.

        Usage that ``fn`` records with ``ctx.record_cost`` or ``ctx.record_usage``
        (in its own thread or task) is stored with the result, in the same
        write: it counts once in the phase's totals even when the process is
        killed before the phase ends; the attempt that then reuses the result
        counts it.
        """
        if self._checkpoints is None:
            raise RuntimeError("ctx.checkpoint works inside a pipekit run only")
        return self._checkpoints.checkpoint(key, fn, *args, attempt=self.attempt, adopt=self._adopt)

    def _adopt(self, usage: Tab) -> None:
        """Count a reused checkpoint's usage that no saved state counts yet (its
        attempt died): it is this attempt's now. Not held against ``max_cost``
        by itself: the attempt that spent it stayed under the cap."""
        self.tokens_in += usage.tokens_in
        self.tokens_out += usage.tokens_out
        self.cost_usd += usage.cost_usd
        charge(usage.tokens_in, usage.tokens_out, usage.cost_usd)
        for model, tokens_in, tokens_out in usage.unpriced:
            self._price_call(model, tokens_in, tokens_out)

    def acquire(self, limit: str, tokens: int = 0) -> Any:
        """Take one request and ``tokens`` tokens of the rate limit named ``limit``.

        In an async handler, ``await ctx.acquire("openai", tokens=1200)``; in a
        sync handler (it runs in a thread) the call blocks until capacity is free.
        A ``pipekit.Retry`` raised afterwards pauses this limit for every phase.
        """
        if self._gate is None:
            raise RuntimeError("ctx.acquire works inside a pipekit run only")
        self._gate.limiter(limit)  # an unknown name fails here, in the handler's own frame
        self.limits_used.add(limit)
        if threading.get_ident() == self._gate.loop_thread:
            return self._gate.acquire(limit, tokens, self._on_wait)
        self._gate.acquire_from_thread(limit, tokens, self._on_wait)
        return None

    def record_usage(self, model: str, tokens_in: int = 0, tokens_out: int = 0) -> float:
        """Add one model call's tokens to this phase and price them; returns the cost.

        The cost comes from the ``pipekit_price_usage`` hook (``pipekit-prices``
        answers it from a price database); with no plugin to answer it is 0.
        The tokens count even when the call cannot be priced. ``model`` becomes
        the phase's ``executor`` unless one was set.
        """
        self.record_cost(tokens_in, tokens_out)
        if not self.executor:
            self.executor = model
        return self.price_usage(model, int(tokens_in), int(tokens_out))

    def price_usage(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Add the cost of usage whose tokens are already recorded; returns it.

        Without a pricer (in a worker process) the call is kept in ``unpriced``
        for the driver to price when the worker's usage comes back.
        """
        cost = self._price_call(model, tokens_in, tokens_out)
        self._check_max_cost()
        return cost

    def _price_call(self, model: str, tokens_in: int, tokens_out: int) -> float:
        if self._price is None:
            self.unpriced.append((model, tokens_in, tokens_out))
            charge(unpriced=[(model, tokens_in, tokens_out)])
            return 0.0
        cost = float(self._price(model=model, tokens_in=tokens_in, tokens_out=tokens_out) or 0.0)
        self.cost_usd += cost
        charge(cost_usd=cost)
        return cost

    def progress(self, done: int, total: int | None = None, *, label: str | None = None) -> None:
        """Say how far this phase is: ``done`` of ``total`` units (chapters, pages).

        Shown on the item's line of the live display, in ``--progress simple``
        lines (at most one per item every few seconds), as a JSONL ``progress``
        event and by ``pipekit status`` while the phase runs (stored at most
        once a second). ``label`` names the units (``ctx.map`` gives its
        ``fn``'s name). Callable from any thread of the handler.
        """
        if isinstance(done, bool) or not isinstance(done, int) or done < 0:
            raise ValueError(f"ctx.progress: done must be an int >= 0, not {done!r}")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
            raise ValueError(f"ctx.progress: total must be an int >= 0 or None, not {total!r}")
        self._progress_writer().offer(Progress(done, total, label))
        if self._on_progress is not None:
            self._on_progress(done, total, label)

    def _progress_writer(self) -> ProgressWriter:
        if self._progress is None:
            with _PROGRESS_LOCK:  # ctx.progress may come from several threads of the handler at once
                if self._progress is None:
                    self._progress = ProgressWriter(self._subitem_store_or_none, self.item_id, self.phase.name)
        return self._progress

    def map(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        *,
        key: Callable[[Any], Any] | None = None,
        concurrency: int | None = None,
        limits: Iterable[str] = (),
        retries: int = 0,
        allow_failures: float = 0,
    ) -> Any:
        """Call ``fn(element)`` for each element, durably; its results in input order.

        Each element is a sub-item, identified by ``key(element)`` (a str or an
        int, unique; default: its position). A sub-item's result (a JSON value)
        is stored as soon as ``fn`` returns; a later attempt calls ``fn`` only
        for the sub-items that did not finish, or whose element or ``fn``'s code
        changed, and results outlive the phase's completion (``--force`` and
        ``pipekit reset`` drop them). ``concurrency`` caps the calls in flight
        (default 8, whatever ``-j``); ``limits`` names rate limits each call
        takes; ``retries`` retries a failing call in this attempt;
        ``allow_failures`` (an int, or a fraction below 1 of the elements)
        lets that many sub-items fail, with ``None`` at their positions; more
        fail the phase, naming their keys. ``fn`` may be sync or async, and
        receives a sub-item context when it has a parameter named ``ctx``.
        In an async handler ``await ctx.map(...)``; in a sync one it is a plain call.
        See docs/subitems.md.
        """
        return start_map(self, fn, iterable, key, concurrency, limits, retries, allow_failures)

    def _subitem_store(self) -> StateStore:
        """The store sub-items and progress are written to (a worker opens it by its URL)."""
        store = self._subitem_store_or_none()
        if store is None:
            raise RuntimeError("ctx.map works inside a pipekit run only")
        return store

    def _subitem_store_or_none(self) -> StateStore | None:
        return self._checkpoints.store if self._checkpoints is not None else None

    def _code_hash(self, fn: Callable[..., Any]) -> str | None:
        """The hash of ``fn``'s code, as the phase fingerprints count it (None: unknown)."""
        return self._code_hasher(fn) if self._code_hasher is not None else None

    def __repr__(self) -> str:
        return f"<PhaseContext item={self.item_id!r} phase={self.phase.name!r} attempt={self.attempt}>"


def pipeline_name(phase: PhaseDefinition) -> str:
    """The name of the pipeline ``phase`` belongs to, as ``pipekit.pipeline.loader``
    names it: the module's ``PIPELINE_NAME``, else the module's own name."""
    module_name = getattr(phase.handler, "__module__", None) or ""
    name = getattr(sys.modules.get(module_name), "PIPELINE_NAME", None)
    return name if isinstance(name, str) and name else module_name.rpartition(".")[2]


#: Makes each context's ``ProgressWriter`` once, whichever thread asks first.
_PROGRESS_LOCK = threading.Lock()


class CostCapExceeded(Fail):
    """One execution of a phase recorded more than its ``max_cost``; it fails, unretried."""
