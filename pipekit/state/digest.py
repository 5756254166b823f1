"""Short content hashes: output file names, fingerprints and stale keys agree on them."""

from __future__ import annotations

import hashlib


#: Hex digits kept of each SHA-256: plenty to tell versions of one cell apart.
HASH_CHARS = 16


def text_hash(text: str) -> str:
    """A short SHA-256 of ``text`` (lone surrogates included as they are)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def output_hash(output: str | None) -> str | None:
    """The hash recorded for a consumed output (``None`` stays ``None``)."""
    return None if output is None else text_hash(output)
