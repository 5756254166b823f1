"""Items: reading ``--items`` files and normalising what item sources return."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
import csv
import gc
import json
from pathlib import Path
import random
from typing import Any

from pipekit.outcomes import UsageError
from pipekit.state.store import item_id_problem


#: One item to process: its id and metadata.
ItemSpec = tuple[str, dict[str, Any]]

#: Allocations between two passes of the cyclic garbage collector while items are normalised.
_ITEMS_PER_COLLECTION = 50_000


def normalize_items(source: Iterable[Any], origin: str) -> list[ItemSpec]:
    """Turn ids, ``(id, metadata)`` pairs or dicts with ``"id"`` into ``ItemSpec``s.

    Raises ``UsageError`` for an empty or non-string id and for duplicates,
    naming ``origin``.
    """
    # A million items are a million new tuples that make no cycle: the cyclic
    # collector's passes over them, every 700 of them, were half the time of
    # this loop. It runs less often meanwhile, not never: ``source`` is the
    # user's code, and its own garbage is still collected.
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], _ITEMS_PER_COLLECTION), *thresholds[1:])
    try:
        return _normalized(source, origin)
    finally:
        gc.set_threshold(*thresholds)


def _normalized(source: Iterable[Any], origin: str) -> list[ItemSpec]:
    items: list[ItemSpec] = []
    seen: set[str] = set()
    for position, entry in enumerate(source, 1):
        if isinstance(entry, dict):
            if "id" not in entry:
                raise UsageError(f"{origin}: item {position} is a dict without an 'id' key")
            metadata = {k: v for k, v in entry.items() if k != "id"}
            item_id = entry["id"]
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            item_id, metadata = entry
            if not isinstance(metadata, dict):
                raise UsageError(f"{origin}: metadata of item {item_id!r} is not a dict")
        else:
            item_id, metadata = entry, {}
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        if not isinstance(item_id, str) or not item_id:
            raise UsageError(f"{origin}: item {position} has an invalid id {item_id!r} (ids are non-empty strings)")
        if item_id in seen:
            raise UsageError(f"{origin}: duplicate item id {item_id!r}")
        problem = item_id_problem(item_id)
        if problem is not None:
            raise UsageError(f"{origin}: item id {item_id!r} {problem}")
        try:
            if metadata:
                json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{origin}: metadata of item {item_id!r} cannot be saved as JSON ({exc})") from None
        seen.add(item_id)
        items.append((item_id, dict(metadata)))
    return items


def read_items_file(path: str | Path) -> Iterator[Any]:
    """Read a ``.txt``, ``.jsonl`` or ``.csv`` items file (CONTRACT §3)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        # utf-8-sig: files saved by spreadsheet programs start with a byte-order mark.
        handle = path.open(encoding="utf-8-sig", newline="" if suffix == ".csv" else None)
    except OSError as exc:
        raise UsageError(f"cannot read items file {path}: {exc.strerror}") from None
    with handle:
        try:
            if suffix == ".jsonl":
                yield from _jsonl(handle, path)
            elif suffix == ".csv":
                yield from _csv(handle, path)
            else:
                yield from _txt(handle)
        except UnicodeDecodeError as exc:
            raise UsageError(f"items file {path} is not UTF-8 text ({exc.reason})") from None


def _txt(handle: Iterable[str]) -> Iterator[str]:
    for line in handle:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def _jsonl(handle: Iterable[str], path: Path) -> Iterator[Any]:
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{path}, line {number}: invalid JSON ({exc})") from None
        if not isinstance(entry, dict) or "id" not in entry:
            raise UsageError(f"{path}, line {number}: expected an object with an \"id\" key")
        yield entry


def _csv(handle: Iterable[str], path: Path) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or "id" not in reader.fieldnames:
        raise UsageError(f"{path}: the header has no 'id' column")
    for row in reader:
        if not row.get("id"):
            raise UsageError(f"{path}, line {reader.line_num}: empty id")
        yield dict(row)


def select_from_files(files: Iterable[Any], ids: list[str], origin: str) -> list[ItemSpec]:
    """The items of ``--items`` files narrowed to the ``--item`` ids, with their metadata.

    Without ids every item of the files is selected. An id that is in no file is
    a ``UsageError`` naming it (a typo must not quietly select nothing).
    """
    specs = normalize_items(files, origin)
    if not ids:
        return specs
    wanted = set(ids)
    known = {item_id for item_id, _ in specs}
    missing = [item_id for item_id in dict.fromkeys(ids) if item_id not in known]
    if missing:
        shown = ", ".join(repr(m) for m in missing)
        raise UsageError(f"--item {shown}: not in the --items file(s) ({origin})")
    return [spec for spec in specs if spec[0] in wanted]


class Sampled(list[ItemSpec]):
    """Items drawn at random by ``--sample``: what they were drawn from, and the seed."""

    def __init__(self, items: Iterable[ItemSpec], *, population: int, seed: int) -> None:
        super().__init__(items)
        #: How many items the sample was drawn from.
        self.population = population
        #: The seed that draws the same sample again (``--seed``).
        self.seed = seed


def narrow(specs: list[ItemSpec], *, limit: int | None, sample: int | None, seed: int | None) -> list[ItemSpec]:
    """``--sample N`` items at random (in their original order), then the first ``--limit N``.

    A sample is a ``Sampled`` list; without ``seed`` a random one is chosen (and kept on it).
    """
    if sample is not None:
        chosen_seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
        picked = set(random.Random(chosen_seed).sample(range(len(specs)), min(sample, len(specs))))
        specs = Sampled([s for i, s in enumerate(specs) if i in picked], population=len(specs), seed=chosen_seed)
    if limit is not None and limit < len(specs):
        kept = specs[:limit]
        specs = Sampled(kept, population=specs.population, seed=specs.seed) if isinstance(specs, Sampled) else kept
    return specs
