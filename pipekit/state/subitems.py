"""Sub-items of a phase (``ctx.map``) and a phase's progress, as the stores keep them.

They live where checkpoints live (``StateStore.load_checkpoints`` and its
siblings), under a namespace of their own per phase, ``"<phase>:sub"``, so
every store keeps them with no new table or folder, and they outlive the
phase's completion (a phase's checkpoints are dropped then; these are dropped
only by ``drop``: ``--force``, ``--from-phase`` and ``pipekit reset``).

One record per sub-item, keyed by the map's label (``fn.__name__``) and the
sub-item's key, holds its status, result, error, attempts, usage, the hash of
its element's content and of ``fn``'s code. Usage follows the checkpoints'
rule (``pipekit.pipeline.checkpoints``): ``counted_by`` names the attempt whose
saved state includes the usage; an attempt that died is released
(``release``) and the next attempt that loads the record counts it.

A result too large to sit in its record (``pipekit.state.values.kept_apart``,
as a phase's output) goes to the outputs folder (``StateStore.write_output``,
wrapped under ``RESULT_WRAPPER`` so its file is never a phase output's) and the
record keeps its reference; ``load`` reads it back, ``drop`` deletes it.

The phase's progress (``ctx.progress``) is one more record, ``PROGRESS_KEY``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
import json
from typing import Any

from pipekit.state.store import StateStore
from pipekit.state.values import kept_apart


#: The checkpoint key of a phase's progress record.
PROGRESS_KEY = "progress"
#: The checkpoint key of the phase's maps and their sizes: ``{label: total}``.
MAPS_KEY = "maps"

DONE = "done"
FAILED = "failed"
#: Started (and possibly paid for) but not finished: only its usage is kept.
RUNNING = "running"
#: The one key of the value a large result is stored as in the outputs folder.
RESULT_WRAPPER = "pipekit.subitem_result"


def namespace(phase: str) -> str:
    """The checkpoint "phase" the sub-items and progress of ``phase`` are kept under."""
    return f"{phase}:sub"


def record_key(label: str, key: str) -> str:
    """The checkpoint key of sub-item ``key`` of the map ``label``."""
    return json.dumps([label, key], ensure_ascii=False)


@dataclass
class SubItem:
    """One sub-item's stored record."""

    label: str
    key: str
    status: str = RUNNING
    result: Any = None
    error: str | None = None
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    #: ``record_usage`` calls left for the driver to price: ``[model, tokens_in, tokens_out]``.
    unpriced: list[list[Any]] = field(default_factory=list)
    #: Hash of the element's content, and of ``fn``'s code, the result was made from.
    content: str | None = None
    code: str | None = None
    #: The phase attempt whose saved state counts this usage; None: nobody's yet.
    counted_by: int | None = None
    #: Where ``result`` is kept when it is too large for the record (``save`` sets it).
    result_ref: str | None = None
    #: True when that file is this record's alone (it names the sub-item), so it may go
    #: once the record refers to another; a file of an older version may be shared.
    result_alone: bool = False
    #: Files of results this record replaced (not stored): ``save`` deletes them once
    #: the record is stored without them.
    replaced: list[str] = field(default_factory=list)

    def set_result(self, value: Any) -> None:
        """Give the record a new result; the file of the one it had goes once the record is saved."""
        if self.result_ref is not None and self.result_alone:
            self.replaced = [*self.replaced, self.result_ref]
        self.result, self.result_ref, self.result_alone = value, None, False

    def encoded(self) -> dict[str, Any]:
        """The JSON object the store keeps."""
        encoded = {
            "status": self.status,
            "result": None if self.result_ref else self.result,
            "result_ref": self.result_ref,
            "error": self.error,
            "attempts": self.attempts,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost_usd": self.cost_usd,
            "unpriced": self.unpriced,
            "content": self.content,
            "code": self.code,
            "counted_by": self.counted_by,
        }
        if self.result_ref is not None:  # most results sit in their record: no word on a file
            encoded["result_alone"] = self.result_alone
        return encoded

    @classmethod
    def decoded(cls, label: str, key: str, stored: Any) -> SubItem:
        """The record for what the store returned (fields it lacks take their defaults)."""
        data = stored if isinstance(stored, dict) else {}
        counted_by = data.get("counted_by")
        return cls(
            label,
            key,
            str(data.get("status") or RUNNING),
            data.get("result"),
            data.get("error") if isinstance(data.get("error"), str) else None,
            int(data.get("attempts") or 0),
            int(data.get("tokens_in") or 0),
            int(data.get("tokens_out") or 0),
            float(data.get("cost_usd") or 0.0),
            [list(call) for call in data.get("unpriced") or ()],
            data.get("content") if isinstance(data.get("content"), str) else None,
            data.get("code") if isinstance(data.get("code"), str) else None,
            counted_by if isinstance(counted_by, int) and not isinstance(counted_by, bool) else None,
            data.get("result_ref") if isinstance(data.get("result_ref"), str) else None,
            data.get("result_alone") is True,
        )

    @property
    def has_usage(self) -> bool:
        """Whether it recorded anything to count."""
        return bool(self.tokens_in or self.tokens_out or self.cost_usd or self.unpriced)


def load(store: StateStore, item_id: str, phase: str) -> dict[tuple[str, str], SubItem]:
    """Every sub-item record of (``item_id``, ``phase``), by (label, key)."""
    found: dict[tuple[str, str], SubItem] = {}
    for stored_key, value in store.load_checkpoints(item_id, namespace(phase)).items():
        if stored_key in (PROGRESS_KEY, MAPS_KEY):
            continue
        try:
            label, key = json.loads(stored_key)
        except (ValueError, TypeError):
            continue
        if isinstance(label, str) and isinstance(key, str):
            found[label, key] = _read_result(store, item_id, SubItem.decoded(label, key, value))
    return found


def _read_result(store: StateStore, item_id: str, record: SubItem) -> SubItem:
    """``record`` with its result read back from the outputs folder, if kept there;
    one whose file is gone is not finished (fn runs again, nothing else is lost)."""
    if record.result_ref is None:
        return record
    try:
        stored = store.read_output(item_id, record.result_ref)
        record.result = stored[RESULT_WRAPPER]
    except Exception:  # noqa: BLE001  (missing or unreadable: redo that sub-item)
        record.result, record.result_ref = None, None
        if record.status == DONE:
            record.status = RUNNING
    return record


def save(store: StateStore, item_id: str, phase: str, records: Iterable[SubItem], phase_num: int = 0) -> None:
    """Store ``records`` durably, in one write where the store can (``save_checkpoints``);
    a large result first goes to the outputs folder (``phase_num`` names its file),
    and the files of the results they replaced go once they are stored."""
    values = {}
    replaced: list[str] = []
    for record in records:
        if record.result_ref is None and record.status == DONE and kept_apart(record.result):
            # The sub-item is in the file, so no other record's identical result shares it.
            kept = {RESULT_WRAPPER: record.result, "subitem": [record.label, record.key]}
            record.result_ref, record.result_alone = store.write_output(item_id, phase_num, kept), True
        values[record_key(record.label, record.key)] = record.encoded()
        replaced += (ref for ref in record.replaced if ref != record.result_ref)
    if values:
        store.save_checkpoints(item_id, namespace(phase), values)
    for ref in replaced:  # after: a kill in between leaves that stray file, never a record without its result
        store.delete_output(item_id, ref)


def drop(store: StateStore, item_id: str, phase: str) -> None:
    """Forget the sub-items and progress of (``item_id``, ``phase``): it is redone from scratch."""
    refs = set()
    for stored in store.load_checkpoints(item_id, namespace(phase)).values():
        ref = stored.get("result_ref") if isinstance(stored, dict) else None
        if isinstance(ref, str):
            refs.add(ref)
    store.drop_checkpoints(item_id, namespace(phase))
    for ref in refs:  # after: a kill in between leaves a stray file, never a record without its result
        store.delete_output(item_id, ref)


def release(store: StateStore, item_id: str, phase: str, attempt: int) -> None:
    """``attempt`` died before its usage reached the saved state: the usage of the
    sub-items it counted is counted by no one yet; the next attempt counts it."""
    released = [
        record
        for record in load(store, item_id, phase).values()
        if record.has_usage and record.counted_by == attempt
    ]
    for record in released:
        record.counted_by = None
    save(store, item_id, phase, released)


@dataclass(frozen=True)
class Progress:
    """A phase's last reported progress."""

    done: int
    total: int | None
    label: str | None = None


def save_progress(store: StateStore, item_id: str, phase: str, progress: Progress) -> None:
    """Store the progress of an in-flight phase (replacing the one before)."""
    value = {"done": progress.done, "total": progress.total, "label": progress.label}
    store.save_checkpoint(item_id, namespace(phase), PROGRESS_KEY, value)


def load_progress(store: StateStore, item_id: str, phase: str) -> Progress | None:
    """The last progress stored for (``item_id``, ``phase``), if any."""
    value = store.load_checkpoints(item_id, namespace(phase)).get(PROGRESS_KEY)
    if not isinstance(value, dict) or not isinstance(value.get("done"), int):
        return None
    total = value.get("total")
    label = value.get("label")
    return Progress(value["done"], total if isinstance(total, int) else None, label if isinstance(label, str) else None)


@dataclass
class MapCounts:
    """What ``status --item`` shows of one map: counts and the failed keys with their errors."""

    label: str
    done: int = 0
    failed: int = 0
    total: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def save_sizes(store: StateStore, item_id: str, phase: str, sizes: dict[str, int]) -> None:
    """Store how many sub-items each map of the phase has (``status`` shows the totals)."""
    store.save_checkpoint(item_id, namespace(phase), MAPS_KEY, sizes)


def counts(store: StateStore, item_id: str, phase: str) -> list[MapCounts]:
    """Per map of (``item_id``, ``phase``), in label order: its sub-items' counts."""
    stored = store.load_checkpoints(item_id, namespace(phase))
    sizes = stored.get(MAPS_KEY)
    maps: dict[str, MapCounts] = {}
    if isinstance(sizes, dict):
        for label, total in sizes.items():
            if isinstance(total, int):
                maps[label] = MapCounts(label)
    for record in load(store, item_id, phase).values():
        entry = maps.setdefault(record.label, MapCounts(record.label))
        entry.total += 1
        if record.status == DONE:
            entry.done += 1
        elif record.status == FAILED:
            entry.failed += 1
            entry.errors[record.key] = record.error or ""
    if isinstance(sizes, dict):
        for label, entry in maps.items():
            total = sizes.get(label)
            if isinstance(total, int):
                entry.total = total
    return [maps[label] for label in sorted(maps)]
