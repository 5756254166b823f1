"""A state document that carries the JSON text of its phase records, from one save to the next.

A save changes one or two phase records of an item, yet every store encoded the
whole document and checked every record again at every save: most of a SQLite
save's CPU. The manager therefore builds its documents as ``Document``: a plain
``dict`` (what every store, plugin and test reads), whose phase records are
``PhaseRecord`` snapshots kept from one save to the next while the phase does
not change. A record's JSON text and its check by ``read_document`` are worked
out once, on whichever thread asks first, and reused by every later save of the
item; the text a store writes is the bytes a whole-document encoding gives
(``tests/test_encoded.py`` holds them to it).

A record's ``fields`` are never changed once it exists (a changed phase gets a
new record); ``phase_records`` refuses a document whose phases are no longer
exactly its records' (anyone replaced one), and the store then encodes it whole.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring
from typing import Any
import uuid

from pipekit.state.escaping import checked_json_text


#: The encoder of ``pipekit.state.escaping.json_text`` and of a JSON store's lines
#: (``", "`` and ``": "`` between items, characters as they are).
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), check_circular=False)
#: Its C encoder, built once: ``JSONEncoder.encode`` builds one per call, which
#: costs more than encoding a phase record. (The same text: ``json.dumps`` uses it.)
_c_encoder = c_make_encoder and c_make_encoder(
    None, _encoder.default, encode_basestring, None, ": ", ", ", False, False, True
)


def _encode(value: Any) -> str:
    if _c_encoder is None or isinstance(value, str):
        return _encoder.encode(value)
    return "".join(_c_encoder(value, 0))


class PhaseRecord:
    """One phase's fields as saved, with their JSON text and check, each worked out once."""

    __slots__ = ("fields", "_text", "checked", "key_entry")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self._text: str | None = None
        #: True once ``read_document`` accepted a document holding this record.
        self.checked = False
        #: Its part of the stale key when that depends on the record alone (``pipekit.state.stalekey``).
        self.key_entry: list[Any] | None = None

    @property
    def text(self) -> str:
        """The record as JSON text (as ``json_text`` writes it, before any escaping)."""
        text = self._text
        if text is None:
            # Two threads may both work it out: the same text, and assigning it is atomic.
            text = self._text = _encode(self.fields)
        return text


class Document(dict[str, Any]):
    """A state document (a ``dict``) that also holds its phases' ``PhaseRecord`` by num, as its keys."""

    __slots__ = ("records",)

    def __init__(self, records: dict[str, PhaseRecord]) -> None:
        super().__init__()
        self.records = records


def phase_records(document: Any) -> dict[str, PhaseRecord] | None:
    """The records of ``document``'s phases, when it is a ``Document`` whose phases
    are still exactly its records' fields; else None (encode and check it whole)."""
    if type(document) is not Document:
        return None
    phases = document.get("phases")
    records = document.records
    if type(phases) is not dict or len(phases) != len(records):
        return None
    for key, fields in phases.items():
        record = records.get(key)
        if record is None or record.fields is not fields:
            return None
    return records


def phases_texts(document: Any) -> dict[str, str] | None:
    """The JSON text of each of ``document``'s phases by num, from its records (None: not known)."""
    records = phase_records(document)
    if records is None:
        return None
    return {key: record.text for key, record in records.items()}


def document_text(document: dict[str, Any], *, nul: bool = False) -> str:
    """``json_text(document)`` (``jsonb_text`` with ``nul``), encoding only what its
    records do not already hold: the same text, escaped the same way."""
    records = phase_records(document)
    if records is None:
        return checked_json_text(document, _encode(document), nul=nul)
    # The other fields in one encoding, the phases' place held by a token no value
    # can hold unnoticed: a value equal to it makes it appear twice, then all is encoded.
    rest = dict(document)
    rest["phases"] = _PLACE
    around = _encode(rest)
    at = around.find(_PLACE_TEXT)
    if at < 0 or around.find(_PLACE_TEXT, at + 1) >= 0:
        return checked_json_text(document, _encode(document), nul=nul)
    # The keys are phase nums (``str(int)``, by ``to_document``): no character to escape.
    phases = "{" + ", ".join([f'"{key}": {record.text}' for key, record in records.items()]) + "}"
    text = around[:at] + phases + around[at + len(_PLACE_TEXT) :]
    return checked_json_text(document, text, nul=nul)


_PLACE = f"~pipekit-phases-{uuid.uuid4().hex}"
_PLACE_TEXT = f'"{_PLACE}"'


def document_jsonb_text(document: dict[str, Any]) -> str:
    """``document_text`` that PostgreSQL's ``jsonb`` also accepts (``jsonb_text``'s escaping)."""
    return document_text(document, nul=True)
