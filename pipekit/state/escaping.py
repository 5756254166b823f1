"""JSON text every store can hold, for any ``str`` a handler returns or an items file holds.

Two kinds of characters have no place in some backend, though Python strings
hold them and a handler may return them (an LLM's output is whatever ``str`` it
is): NUL (PostgreSQL's ``jsonb`` and ``text`` refuse U+0000) and lone
surrogates (U+D800..U+DFFF, which have no UTF-8 form, so SQLite and psycopg
cannot send them). ``json_text`` writes a value as JSON that any UTF-8 store
holds (JSON escapes a NUL itself). For ``jsonb``, ``escape`` replaces each
string (value or key) holding NUL or a lone surrogate by ``MARKER`` and its
ASCII JSON form, and ``unescape`` reverses it on load; a string that happens
to start with ``MARKER`` is escaped too, so every string round-trips.
"""

from __future__ import annotations

import json
import re
from typing import Any


#: Starts a string ``escape`` wrote: printable ASCII, so ``jsonb`` shows it as it is.
MARKER = "~pipekit-escaped:"
#: A code point UTF-8 cannot encode (Python joins a valid pair into one code point).
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED = re.compile("[\x00\ud800-\udfff]")

_ascii = json.JSONEncoder(ensure_ascii=True).encode
_unicode = json.JSONEncoder(ensure_ascii=False).encode


def json_text(value: Any) -> str:
    """``value`` as JSON text with its non-ASCII characters as they are, or, when
    it holds a lone surrogate, all as ASCII escapes (valid UTF-8 either way)."""
    text = _unicode(value)
    if not text.isascii() and _SURROGATE.search(text):
        return _ascii(value)
    return text


def jsonb_text(value: Any) -> str:
    """``value`` as JSON text PostgreSQL's ``jsonb`` accepts: ``escape``'d when it
    must be. The common case costs one encode and a few substring searches."""
    text = _unicode(value)
    if "\\u0000" in text or MARKER in text or (not text.isascii() and _SURROGATE.search(text)):
        return _unicode(escape(value))  # a false alarm (a literal "\\u0000") only costs the walk
    return text


def jsonb_value(text: str | bytes) -> Any:
    """The value ``jsonb_text`` wrote, from the text PostgreSQL returns."""
    value = json.loads(text)
    escaped = MARKER in text if isinstance(text, str) else MARKER.encode() in text
    return unescape(value) if escaped else value


def escape(value: Any) -> Any:
    """``value`` with every string holding NUL or a lone surrogate, or starting
    with ``MARKER``, replaced by ``MARKER`` plus its ASCII JSON form."""
    if isinstance(value, str):
        return _escape_str(value)
    if isinstance(value, dict):
        return {_escape_str(k) if isinstance(k, str) else k: escape(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape(v) for v in value]
    return value


def _escape_str(text: str) -> str:
    if text.startswith(MARKER) or _ESCAPED.search(text):
        return MARKER + _ascii(text)
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
    if text.startswith(MARKER):
        try:
            decoded = json.loads(text[len(MARKER) :])
        except ValueError:
            return text  # not one ``escape`` wrote (edited by hand): kept as it is
        if isinstance(decoded, str):
            return decoded
    return text
