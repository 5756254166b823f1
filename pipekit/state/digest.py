"""Short content hashes: output file names, fingerprints and stale keys agree on them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipekit.state.stored import StoredOutput


#: Hex digits kept of each SHA-256: plenty to tell versions of one cell apart.
HASH_CHARS = 16


def text_hash(text: str) -> str:
    """A short SHA-256 of ``text`` (lone surrogates included as they are)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


#: Put before the JSON of a non-str output when hashing it: ``"42"`` and ``42`` differ.
JSON_VALUE_MARK = "\x00json:"


def output_hash(output: Any) -> str | None:
    """The hash recorded for a consumed output (``None``, no output, stays ``None``).

    A ``str`` hashes as its text (as before outputs could be other JSON values);
    any other value as its canonical JSON, keys sorted (PostgreSQL's ``jsonb``
    does not keep their order), after ``JSON_VALUE_MARK``.
    """
    if output is None:
        return None
    if type(output) is str:
        return text_hash(output)
    if type(output) is StoredOutput:  # hashed where it was stored: not read again for this
        return output.digest
    return text_hash(JSON_VALUE_MARK + json.dumps(output, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def ref_digest(ref: str) -> str | None:
    """The ``output_hash`` an output kept apart is named by (``phase.HASH.txt`` or
    ``.json``, in every store), read from its reference ``ref``; None when the name
    does not hold one."""
    parts = ref.rsplit("/", 1)[-1].split(".")
    return parts[1] if len(parts) > 1 and len(parts[1]) == HASH_CHARS else None
