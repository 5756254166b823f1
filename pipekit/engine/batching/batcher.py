"""The run's side of batch phases: gather the waiting requests of every item into
provider batches, submit each once, poll them, fetch their results.

Submission is idempotent (docs/batches.md): a submission record with a key
derived from the requests it holds is written durably, under the items' locks
and its own, before ``provider.submit(key, ...)``; the batch id is recorded
after. A record found without a batch id (a kill between the two) is first
looked for with ``provider.find(key, ...)`` and submitted again only if the
provider has no such batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Iterator
import hashlib
import inspect
import json
from typing import Any

from pipekit.display.format import count_of
from pipekit.pipeline.batch import BatchProvider
from pipekit.pipeline.batch import BatchRequest
from pipekit.pipeline.batch import BatchResult
from pipekit.pipeline.batch import BatchStatus
from pipekit.pipeline.phases import PhaseDefinition
from pipekit.state.batches import BatchRecords
from pipekit.state.model import utc_now
from pipekit.state.store import ItemLock
from pipekit.state.store import StateStore


#: A request's identity across runs: (item id, phase num, gen, custom_id, round).
Tag = tuple[str, int, int, str, int]


class Batcher:
    """The batches of one run: what the items wait for and what goes to the providers.

    :param name: the pipeline's name (part of every submission key).
    :param providers: the module's ``BATCHES``.
    :param store: where the submission records live, beside the items' states.
    :param say: reports a line to the user (``notify.report``).
    :param price: the ``pipekit_price_usage`` hook, or None.
    :param event: told of each ``batch_submitted`` / ``batch_polled`` / ``batch_completed``.
    """

    #: ``result_for``'s answer for a request in a batch that has not ended.
    IN_FLIGHT: dict[str, Any] = {"outcome": "in_flight"}  # compared by identity

    def __init__(
        self,
        name: str,
        providers: dict[str, BatchProvider],
        store: StateStore,
        *,
        say: Callable[[str, str], None],
        price: Callable[..., Any] | None = None,
        event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.name = name
        self.providers = providers
        self.records = BatchRecords(store)
        self.store = store
        self._say = say
        self._price = price
        self._event = event or (lambda name, record: None)
        self._submissions: dict[str, dict[str, Any]] = {}
        self._index: dict[Tag, tuple[str, str]] = {}
        self._results: dict[str, dict[str, Any]] = {}
        #: Requests no submission holds yet, by item: (tag, provider name, payload).
        self._unsent: dict[str, list[tuple[Tag, str, dict[str, Any]]]] = {}
        #: Items left waiting by the last pass over them.
        self.waiting_items: set[str] = set()
        #: Requests this run sent in batches, and what they cost (for the summary).
        self.requests_submitted = 0
        self.batches_submitted = 0

    # -- what the items ask ----------------------------------------------------------

    def provider(self, phase: PhaseDefinition) -> BatchProvider:
        """The provider a batch phase names (the loader checked that it exists)."""
        assert phase.batch is not None
        return self.providers[phase.batch]

    def result_for(self, tag: Tag) -> dict[str, Any] | None:
        """The result of the request ``tag``: None if no batch holds it, ``IN_FLIGHT``
        if its batch has not ended, else the result as fetched and stored.

        Only a stored result says a request must go out again (expired, canceled or
        errored: the provider's own word, kept by ``_fetch`` for every request of an
        ended batch). A collected batch whose stored results lack the request is not
        such a word: its results are fetched again, and the request waits meanwhile.
        """
        held = self._index.get(tag)
        if held is None:
            return None
        key, wire = held
        record = self._submissions[key]
        if not record.get("collected"):
            return self.IN_FLIGHT
        if key not in self._results:
            self._results[key] = self.records.results(key)
        found: dict[str, Any] | None = self._results[key].get(wire)
        if found is None:
            self._fetch_again(record)
            return self.IN_FLIGHT
        return found

    def _fetch_again(self, record: dict[str, Any]) -> None:
        """The stored results of ``record`` are incomplete: the next poll fetches them again."""
        self._results.pop(record["key"], None)
        record["collected"] = False
        self.records.save_submission(record)  # (a later run would otherwise take it as collected)

    def answer(self, phase: PhaseDefinition, result: dict[str, Any]) -> dict[str, Any]:
        """A succeeded result as the cell keeps it: its body, tokens and cost at the batch price."""
        provider = self.provider(phase)
        tokens_in, tokens_out = int(result.get("tokens_in") or 0), int(result.get("tokens_out") or 0)
        online = None
        model = result.get("model")
        if self._price is not None and model:
            online = self._price(model=model, tokens_in=tokens_in, tokens_out=tokens_out)
        if not online and provider.price is not None:  # (the prices plugin answers 0 for a model it does not know)
            online = (tokens_in * provider.price[0] + tokens_out * provider.price[1]) / 1_000_000
        cost = float(online or 0.0) * provider.discount
        return {"body": result.get("body"), "tokens_in": tokens_in, "tokens_out": tokens_out, "cost_usd": cost}

    def wait_for(
        self, item_id: str, phase: PhaseDefinition, cell: dict[str, Any], unsent: list[tuple[str, int]]
    ) -> None:
        """The item waits on ``phase``; ``unsent`` (custom_id, round) go in the next batch."""
        self.waiting_items.add(item_id)
        assert phase.batch is not None
        entries = self._unsent.setdefault(item_id, [])
        for custom_id, round_ in unsent:
            tag: Tag = (item_id, phase.num, cell["gen"], custom_id, round_)
            entries.append((tag, phase.batch, cell["requests"][custom_id]))

    # -- the records -----------------------------------------------------------------

    def refresh(self) -> dict[str, dict[str, Any]]:
        """Read the submission records again; index which requests they hold."""
        self._submissions = self.records.submissions()
        self._index = {}
        for key, record in self._submissions.items():
            for wire, *tag, _payload in record.get("requests", ()):
                self._index[(tag[0], tag[1], tag[2], tag[3], tag[4])] = (key, wire)
        return self._submissions

    def pending(self) -> list[dict[str, Any]]:
        """The submission records whose results are not fetched yet."""
        return [r for r in self._submissions.values() if not r.get("collected")]

    # -- submitting ------------------------------------------------------------------

    async def submit_gathered(self) -> None:
        """Put every request the items left unsent into as few batches as the providers allow."""
        groups, self._unsent = self._unsent, {}
        if not any(groups.values()):
            return
        locks: list[ItemLock] = []
        fresh: list[tuple[dict[str, Any], ItemLock]] = []
        try:
            by_provider: dict[str, list[tuple[Tag, dict[str, Any]]]] = {}
            held: set[str] = set()
            for item_id in groups:
                lock = await asyncio.to_thread(self.store.try_lock, item_id)
                if lock is not None:  # (else another driver holds the item now: it sends them)
                    locks.append(lock)
                    held.add(item_id)
            await asyncio.to_thread(self.refresh)  # under the items' locks: what no one has sent since
            for item_id, entries in groups.items():
                for tag, provider_name, payload in entries if item_id in held else ():
                    if tag not in self._index:
                        by_provider.setdefault(provider_name, []).append((tag, payload))
            for provider_name, requests in by_provider.items():
                for chunk in _chunks(self.providers[provider_name], requests):
                    record = self._record(provider_name, chunk)
                    lock = self.records.lock(record["key"])
                    if lock is None:
                        continue
                    if record["key"] not in self._submissions:
                        await asyncio.to_thread(self.records.save_submission, record)
                        self._submissions[record["key"]] = record
                    fresh.append((record, lock))
        finally:
            # Every write made under these locks was awaited: the leases may go, off this thread.
            for lock in locks:
                lock.release_soon()
        for record, lock in fresh:
            try:
                await self._resolve(record, fresh=True)
            finally:
                lock.release_soon()  # (after the record's batch id, awaited in _resolve)
        self.refresh()

    def _record(self, provider_name: str, chunk: list[tuple[Tag, dict[str, Any]]]) -> dict[str, Any]:
        """A submission record for ``chunk``: wire ids, and the key they (and the pipeline) decide."""
        provider = self.providers[provider_name]
        kept: set[str] = set()
        wires: list[str] = []
        for tag, _ in chunk:
            custom_id = tag[3]
            wire = custom_id if custom_id not in kept and provider.wire_id_ok(custom_id) else ""
            kept.add(wire)
            wires.append(wire)
        for index, (tag, _) in enumerate(chunk):
            if not wires[index]:
                wire = "pk-" + hashlib.sha256(json.dumps(list(tag)).encode()).hexdigest()[:20]
                while wire in kept:
                    wire += "x"
                kept.add(wire)
                wires[index] = wire
        tags = sorted(json.dumps(list(tag)) for tag, _ in chunk)
        key = hashlib.sha256(json.dumps([self.name, provider_name, tags]).encode()).hexdigest()[:32]
        return {
            "key": key,
            "pipeline": self.name,
            "provider": provider_name,
            "created_at": utc_now(),
            "requests": [[wire, *tag, payload] for wire, (tag, payload) in zip(wires, chunk, strict=True)],
            "batch_id": None,
            "status": "recorded",
            "counts": {},
            "ended": False,
            "collected": False,
            "error": None,
        }

    async def _resolve(self, record: dict[str, Any], *, fresh: bool) -> None:
        """Submit the batch of ``record`` (its lock held) unless the provider has it already."""
        provider = self.providers.get(record["provider"])
        if provider is None:
            self._say(f"batch {record['key']}: no provider named {record['provider']!r} in BATCHES now", "warning")
            return
        requests = [BatchRequest(wire, payload) for wire, *_, payload in record["requests"]]
        batch_id = None if fresh else await asyncio.to_thread(_find, provider, record, requests, self._known(record))
        if batch_id is None:
            batch_id = await asyncio.to_thread(provider.submit, record["key"], requests)
        record.update(batch_id=batch_id, status="submitted", submitted_at=utc_now())
        await asyncio.to_thread(self.records.save_submission, record)
        self.requests_submitted += len(requests)
        self.batches_submitted += 1
        self._event("batch_submitted", record)

    def _known(self, record: dict[str, Any]) -> set[str]:
        """The batch ids the other submission records at ``record``'s provider hold."""
        return {
            r["batch_id"] for r in self._submissions.values()
            if r.get("batch_id") and r["provider"] == record["provider"] and r["key"] != record["key"]
        }

    async def resume(self) -> None:
        """At the start of a run: submit what a killed run recorded but may not have sent, then poll."""
        for record in list(self.refresh().values()):
            if record.get("batch_id") is None and record.get("pipeline") == self.name:
                lock = self.records.lock(record["key"])
                if lock is None:
                    continue
                try:
                    current = self.records.submissions().get(record["key"], record)
                    if current.get("batch_id") is None:
                        await self._resolve(current, fresh=False)
                finally:
                    lock.release_soon()
        self.refresh()
        await self.poll()

    # -- polling and collecting ------------------------------------------------------

    async def poll(self) -> bool:
        """Poll every submitted batch not collected; fetch the results of those that ended.
        True when any batch's results came in."""
        collected = False
        for record in self.pending():
            provider = self.providers.get(record["provider"])
            if provider is None or record.get("batch_id") is None or record.get("pipeline") != self.name:
                continue
            status: BatchStatus = await asyncio.to_thread(provider.poll, record["batch_id"])
            record.update(
                status=status.provider_status, counts=dict(status.counts), ended=status.ended,
                error=status.error, polled_at=utc_now(),
            )
            self._event("batch_polled", record)
            if status.ended:
                results = await asyncio.to_thread(_fetch, provider, record, status)
                await asyncio.to_thread(self.records.save_results, record["key"], results)
                self._results[record["key"]] = results
                record["collected"] = collected = True
                self._event("batch_completed", record)
            await asyncio.to_thread(self.records.save_submission, record)
        return collected

    def pending_message(self) -> str:
        """What the run leaves waiting, and when to come back."""
        pending = [r for r in self.pending() if r.get("pipeline") == self.name]
        by_provider: dict[str, list[int]] = {}
        for record in pending:
            by_provider.setdefault(record["provider"], []).append(len(record["requests"]))
        parts = [
            f"{count_of(sum(sizes), 'requests')} in {count_of(len(sizes), 'batches')} at {name!r}"
            for name, sizes in sorted(by_provider.items())
        ]
        what = "; ".join(parts) or "requests not sent yet"
        return (
            f"waiting for {what}: run again later to collect the results "
            "(batches end within 24 h, most far sooner), or with --wait to wait for them"
        )


def _find(provider: BatchProvider, record: dict[str, Any], requests: list[BatchRequest], known: set[str]) -> str | None:
    """``provider.find``, told the batches the state knows when it takes them (a provider
    written for the earlier ``find(key, requests)`` is called as it was)."""
    if "known" in inspect.signature(provider.find).parameters:
        return provider.find(record["key"], requests, known=frozenset(known))
    return provider.find(record["key"], requests)


def _fetch(provider: BatchProvider, record: dict[str, Any], status: BatchStatus) -> dict[str, Any]:
    """The results of an ended batch by wire id, one for every request the record holds: a
    batch that failed as a whole errors every request, and a request the provider's results
    leave out was not processed (``canceled``), so that the stored results alone say what
    is sent again."""
    results: dict[str, Any] = {}
    for result in provider.results(record["batch_id"]):
        results[result.custom_id] = _result_record(result)
    failed = status.error is not None and not results
    for wire, *_ in record["requests"]:
        if wire not in results and failed:
            results[wire] = {"outcome": "errored", "error": f"the whole batch failed: {status.error}"}
        elif wire not in results:
            results[wire] = {"outcome": "canceled", "error": "the ended batch's results leave it out"}
    return results


def _result_record(result: BatchResult) -> dict[str, Any]:
    return {
        "outcome": result.outcome,
        "body": result.body,
        "error": result.error,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "model": result.model,
    }


def _chunks(
    provider: BatchProvider, requests: list[tuple[Tag, dict[str, Any]]]
) -> Iterator[list[tuple[Tag, dict[str, Any]]]]:
    """``requests`` split at the provider's ``max_requests`` and ``max_bytes``."""
    chunk: list[tuple[Tag, dict[str, Any]]] = []
    size = 0
    for tag, payload in requests:
        try:
            nbytes = provider.request_bytes(BatchRequest(tag[3], payload))
        except NotImplementedError:
            nbytes = len(json.dumps({"custom_id": tag[3], "body": payload}).encode()) + 1
        if chunk and (len(chunk) >= provider.max_requests or size + nbytes > provider.max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((tag, payload))
        size += nbytes
    if chunk:
        yield chunk
