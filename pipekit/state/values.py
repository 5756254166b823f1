"""How a phase's output is kept: a ``str`` as it is, any other JSON value as JSON.

An output is a ``str`` (the seed's contract) or a JSON value: ``None``, ``bool``,
``int``, ``float``, ``list`` or ``dict`` (``pipekit.pipeline.outputs`` checks
what a handler returns). Small values sit inline in the document's
``phase_outputs``, as themselves: a ``str`` is a JSON string there, a ``dict`` a
JSON object, so every state file written before non-str outputs existed reads
unchanged. A value goes to the outputs folder instead (``StateStore.write_output``)
when it is large, or when a store could not keep it inline exactly: NUL or a
lone surrogate in a string (PostgreSQL, UTF-8), or a float PostgreSQL's
``jsonb`` would give back as an int (``1e16`` comes back as
``10000000000000000``). There a ``str`` is written as it is (``.txt``) and
anything else, or a ``str`` no store can hold as it is, as ASCII JSON
(``.json``, written by ``pipekit.state.escaping``); the file name holds ``output_hash`` of the value.
"""

from __future__ import annotations

import json
from typing import Any

from pipekit.state.digest import output_hash
from pipekit.state.escaping import UNSTORABLE
from pipekit.state.escaping import json_text
from pipekit.state.escaping import json_value
from pipekit.state.model import INLINE_OUTPUT_LIMIT


#: From here on a float is written with an exponent, which ``jsonb`` turns into an integer.
_EXPONENT_FLOAT = 1e16


def kept_apart(value: Any) -> bool:
    """True when ``value`` is stored in the outputs folder rather than inline."""
    if type(value) is str:
        if len(value) * 4 > INLINE_OUTPUT_LIMIT and len(value.encode("utf-8", "surrogatepass")) > INLINE_OUTPUT_LIMIT:
            return True
        return UNSTORABLE.search(value) is not None
    if value is None or type(value) in (bool, int):
        return False
    return len(json.dumps(value, ensure_ascii=False)) > INLINE_OUTPUT_LIMIT or not _inline_exact(value)


def _inline_exact(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return UNSTORABLE.search(value) is None
    if kind is float:
        return bool(abs(value) < _EXPONENT_FLOAT)
    if kind is list:
        return all(_inline_exact(v) for v in value)
    if kind is dict:
        return all(_inline_exact(k) and _inline_exact(v) for k, v in value.items())
    return True


def output_name(phase_num: int, value: Any) -> str:
    """The file name of an output kept apart: by phase and content, ``.txt`` when it
    is stored as it is and ``.json`` when ``encode_output`` writes it as JSON."""
    plain = type(value) is str and UNSTORABLE.search(value) is None
    return f"{phase_num}.{output_hash(value)}.{'txt' if plain else 'json'}"


def output_ref(phase_num: int, value: Any) -> str:
    """The reference of an output kept apart in a database store: named by phase and content."""
    return f"outputs/{output_name(phase_num, value)}"


def encode_output(value: Any) -> str:
    """``value`` as every store can hold it: a ``str`` as itself, anything else
    (or a ``str`` with NUL or a lone surrogate in it) as JSON of ASCII escapes,
    which ``output_name`` marks by ``.json``. Reversed by ``decode_output``."""
    if type(value) is str and UNSTORABLE.search(value) is None:
        return value
    # json_text, not json.dumps: JSON's escapes of a lone-surrogate pair read back as one character.
    return json_text(value)


def decode_output(ref: str, stored: str) -> Any:
    """The output ``encode_output`` stored under ``ref``."""
    return json_value(stored) if ref.endswith(".json") else stored
