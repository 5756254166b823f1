"""The stale key: what the stale check needs of a saved state, small enough to index.

A run checks at start whether any completed phase is stale (``pipekit.stale.checker``).
Done item by item, that reads every state document, which at 100,000 items costs
more than everything else a no-op re-run does. Database stores therefore keep,
beside each document, its *stale key*: for each completed phase with a
fingerprint, the parts of the check that do not depend on the current pipeline's
per-item values, worked out from the document alone when it is saved::

    [[name, code, version, has input, [consumed names], consumed outputs unchanged], ...]

Items of one run mostly share one key, so a run decides once per distinct key
(``StaleChecker.fresh_by_key``) which finished items it need not read at all.
A key of None means "read the document": one ``read_document`` refuses.
A consumed output the document alone cannot vouch for makes its entry "changed".
"""

from __future__ import annotations

import json
from typing import Any

from pipekit.outcomes import StateFileError
from pipekit.state.digest import output_hash
from pipekit.state.digest import ref_digest
from pipekit.state.document import COMPLETED
from pipekit.state.document import read_document
from pipekit.state.encoded import PhaseRecord


def stale_key(document: Any) -> str | None:
    """The stale key of a saved state document, as compact JSON text (None: read it)."""
    try:
        read_document(document, "the document")
    except StateFileError:
        return None  # the run reads it, and names what is wrong
    return key_of_read(document)


def key_of_read(document: dict[str, Any], records: dict[str, PhaseRecord] | None = None) -> str:
    """``stale_key`` of a document ``read_document`` has already accepted (not checked again).

    :param records: the document's phase records (``pipekit.state.encoded.phase_records``):
        the entry of a phase that consumes no output depends on its record alone,
        so it is kept on the record and not worked out again at the next save.
    """
    entries: list[list[Any]] = []
    for num, phase in sorted(document["phases"].items(), key=lambda pair: int(pair[0])):
        record = None if records is None else records[num]
        if record is not None and record.key_entry is not None:
            entries.append(record.key_entry)
            continue
        recorded = phase.get("fingerprint")
        if phase.get("status") != COMPLETED or not recorded:
            continue  # no fingerprint: never stale (unknown)
        consumed = recorded.get("consumed") or {}
        unchanged = all(_output_hash(document, name) == then for name, then in consumed.items())
        entry = [
            phase["name"],
            recorded.get("code"),
            recorded.get("version"),
            recorded.get("input") is not None,
            sorted(consumed),
            unchanged,
        ]
        if record is not None and not consumed:
            record.key_entry = entry
        entries.append(entry)
    return json.dumps(entries, ensure_ascii=False, separators=(",", ":"))


def _output_hash(document: dict[str, Any], name: str) -> str | None | bool:
    """The hash of the output of the phase named ``name`` in ``document``, as
    ``pipekit.state.digest.output_hash`` would give it after loading; False when
    the document cannot tell (so that it compares unequal)."""
    phases = document["phases"]
    nums = [num for num, phase in phases.items() if phase["name"] == name]
    if len(nums) != 1:
        return False  # retired, renamed or ambiguous: the full check decides
    num = nums[0]
    files = document.get("phase_output_files", {})
    if num in files:
        # Every store names a large output by the same hash of its text.
        return ref_digest(files[num]) or False
    return output_hash(document.get("phase_outputs", {}).get(num))
