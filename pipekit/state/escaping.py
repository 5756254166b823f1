"""JSON text every store can hold, for any ``str`` a handler returns or an items file holds.

Two kinds of characters have no place in some backend, though Python strings
hold them and a handler may return them (an LLM's output is whatever ``str`` it
is): NUL (PostgreSQL's ``jsonb`` and ``text`` refuse U+0000) and surrogate
code points (U+D800..U+DFFF: they have no UTF-8 form, so SQLite, psycopg and
UTF-8 files cannot take them, and JSON's ``\\ud83d\\ude00`` escape would join
two of them into one character on reading). ``escape`` replaces each string
(value or key) holding one by ``MARKER`` and its ``unicode_escape`` form (ASCII),
and ``unescape`` reverses it on load; a string that happens to start with
``MARKER`` is escaped too, so every string round-trips. Documents without such
strings, nearly all of them, are written exactly as before.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any


#: Starts a string ``escape`` wrote: printable ASCII, so every store shows it as it is.
MARKER = "~pipekit-escaped:"
_MARKER_BYTES = MARKER.encode("ascii")
#: A surrogate code point (Python holds an astral character as one code point, never a pair).
_SURROGATE = re.compile("[\ud800-\udfff]")
#: What no store holds as text as it is: NUL (PostgreSQL) and lone surrogates (UTF-8).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_ESCAPED = {False: _SURROGATE, True: UNSTORABLE}

_unicode = json.JSONEncoder(ensure_ascii=False).encode


def json_text(value: Any) -> str:
    """``value`` as JSON text that is valid UTF-8 and reads back equal with ``json_value``."""
    return checked_json_text(value, _unicode(value))


def plain_json_text(value: Any) -> str:
    """``value`` as standard JSON for people and other programs (``export``): its
    non-ASCII characters as they are, or all as ASCII escapes when it holds a
    surrogate (valid UTF-8 either way; no ``MARKER``)."""
    text = _unicode(value)
    if not text.isascii() and _SURROGATE.search(text):
        return json.dumps(value)
    return text


def jsonb_text(value: Any) -> str:
    """``json_text`` that PostgreSQL's ``jsonb`` also accepts (NUL escaped too)."""
    return checked_json_text(value, _unicode(value), nul=True)


def json_value(text: str | bytes) -> Any:
    """The value ``json_text``, ``jsonb_text`` or an ``escape``'d document wrote."""
    value = json.loads(text)
    escaped = MARKER in text if isinstance(text, str) else _MARKER_BYTES in text
    return unescape(value) if escaped else value


def escape(value: Any, *, nul: bool = False) -> Any:
    """``value`` with every string holding a surrogate (and NUL, with ``nul``), or
    starting with ``MARKER``, replaced by ``MARKER`` plus its ``unicode_escape`` form."""
    if isinstance(value, str):
        return _escape_str(value, nul)
    if isinstance(value, dict):
        return {_escape_str(k, nul) if isinstance(k, str) else k: escape(v, nul=nul) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape(v, nul=nul) for v in value]
    return value


def _escape_str(text: str, nul: bool) -> str:
    if text.startswith(MARKER) or _ESCAPED[nul].search(text):
        return MARKER + text.encode("unicode_escape").decode("ascii")
    return text


def unescape(value: Any) -> Any:
    """Reverse ``escape``."""
    if isinstance(value, str):
        return _unescape_str(value)
    if isinstance(value, dict):
        return {_unescape_str(k): unescape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape(v) for v in value]
    return value


def _unescape_str(text: str) -> str:
    if not text.startswith(MARKER):
        return text
    try:
        return codecs.decode(text[len(MARKER) :].encode("ascii"), "unicode_escape")
    except (UnicodeError, ValueError):
        return text  # not one ``escape`` wrote (edited by hand): kept as it is


def needs_escape(encoded: bytes) -> bool:
    """Whether a document ``pipekit.state.store.encode_document`` wrote as ``encoded``
    must be written ``escape``'d instead: it holds ``MARKER``, or a surrogate it
    could only write as a JSON escape (which reads back joined to its neighbour)."""
    return _MARKER_BYTES in encoded or b"\\ud" in encoded


def checked_json_text(value: Any, text: str, *, nul: bool = False) -> str:
    """``json_text(value)`` (``jsonb_text`` with ``nul``) given ``text``, ``value``'s
    plain encoding: ``text`` itself unless it holds what must be escaped."""
    if (nul and "\\u0000" in text) or MARKER in text or (not text.isascii() and _SURROGATE.search(text)):
        return _unicode(escape(value, nul=nul))  # a false alarm (a literal "\\u0000") only costs the walk
    return text
