"""The saved state document: its statuses, its version, and the one parser every reader goes through.

A state file is hand-editable JSON, so anything may be in it. ``read_document``
checks every field a reader uses before anyone uses it: a document it returns
has the types and ranges pipekit writes (counts are integers >= 0, costs finite
numbers >= 0, statuses known, timestamps ISO 8601, ...), and any other raises
``StateFileError`` naming the file and the field. Readers that build a
``PipelineState`` (``PipelineState.from_document``) and those that read the
document as it is (``status`` rows, the stale key, a database store's summary)
all ask it, so none of them meets a value it does not expect and all of them
call the same file corrupt.

Keys this version does not know are ignored (a newer pipekit of the same
``schema_version`` may add some); a field that may be missing is read as its
default.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Collection
from datetime import datetime
import math
from typing import Any

from pipekit.outcomes import StateFileError
from pipekit.state.encoded import Document


#: Version of the state document; a newer one is refused rather than misread.
SCHEMA_VERSION = 1

PENDING = "pending"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
FAILED = "failed"
SKIPPED = "skipped"
#: A batch phase whose requests are saved and wait for the provider's batch (``pipekit.engine.batching``).
WAITING = "waiting"
#: Every status a phase or an item can have.
STATUSES = frozenset({PENDING, IN_PROGRESS, COMPLETED, FAILED, SKIPPED, WAITING})
#: Phase statuses after which a run does not execute the phase again.
DONE_STATUSES = frozenset({COMPLETED, SKIPPED})

#: Counts above this are no count pipekit wrote (and do not fit a database's integer).
MAX_COUNT = 2**63 - 1


class _Bad(Exception):
    """The field at ``path`` is missing (``problem`` "missing") or not what pipekit writes."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def _bad(path: str, value: Any, what: str) -> _Bad:
    text = repr(value)
    return _Bad(path, f"{text if len(text) <= 40 else text[:37] + '...'} is not {what}")


# -- checks of one value: return None when it is fine, else what it should be -------


def _count(value: Any) -> str | None:
    return None if type(value) is int and 0 <= value <= MAX_COUNT else "an integer >= 0"


def _amount(value: Any) -> str | None:
    kind = type(value)
    if (kind is float and 0.0 <= value < math.inf) or (kind is int and 0 <= value <= MAX_COUNT):
        return None
    return "a finite number >= 0"


def _optional_amount(value: Any) -> str | None:
    return None if value is None else _amount(value)


def _integer(value: Any) -> str | None:
    return None if type(value) is int and -MAX_COUNT <= value <= MAX_COUNT else "an integer"


def _text(value: Any) -> str | None:
    return None if type(value) is str else "a string"


def _name(value: Any) -> str | None:
    return None if type(value) is str and value else "a non-empty string"


def _optional_text(value: Any) -> str | None:
    return None if value is None or type(value) is str else "a string or null"


def _status(value: Any) -> str | None:
    return None if type(value) is str and value in STATUSES else f"one of {', '.join(sorted(STATUSES))}"


def _timestamp(value: Any) -> str | None:
    if type(value) is str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return None
    return "an ISO 8601 timestamp"


def _optional_timestamp(value: Any) -> str | None:
    return None if value is None else _timestamp(value)


def _object(value: Any) -> str | None:
    return None if value is None or type(value) is dict else "an object or null"


def _fingerprint(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not dict:
        return "an object or null"
    for part in ("code", "version", "input"):
        if _optional_text(value.get(part)) is not None:
            return f"an object whose {part!r} is a string or null"
    consumed = value.get("consumed")
    if consumed is not None and (
        type(consumed) is not dict or any(_optional_text(then) is not None for then in consumed.values())
    ):
        return "an object whose 'consumed' maps phase names to strings or null"
    return None


Check = Callable[[Any], "str | None"]

#: Every field of a saved phase (``PhaseState``) and its check.
PHASE_CHECKS: dict[str, Check] = {
    "phase": _integer,
    "name": _name,
    "status": _status,
    "executor": _text,
    "started_at": _optional_timestamp,
    "completed_at": _optional_timestamp,
    "duration_seconds": _optional_amount,
    "tokens_in": _count,
    "tokens_out": _count,
    "cost_usd": _amount,
    "output_file": _optional_text,
    "error": _optional_text,
    "attempts": _count,
    "reason": _optional_text,
    "traceback": _optional_text,
    "fingerprint": _fingerprint,
    "attempts_at_reset": _count,
}
#: Phase fields a saved phase must have (the others have defaults).
PHASE_REQUIRED = ("phase", "name")

#: Every top-level field of a saved document but the containers, and its check.
STATE_CHECKS: dict[str, Check] = {
    "item_id": _name,
    "metadata": _object,
    # an item's saved status is the runner's last word ("completed_with_errors"), shown as is
    "status": _text,
    "current_phase": _integer,
    "started_at": _timestamp,
    "last_updated": _timestamp,
    "total_tokens_in": _count,
    "total_tokens_out": _count,
    "total_cost_usd": _amount,
    "pipeline_module": _optional_text,
}
#: Top-level fields a saved document must have.
STATE_REQUIRED = ("item_id", "status", "current_phase", "started_at", "last_updated", "phases")


def read_document(document: Any, where: object, *, checked: Collection[str] = ()) -> dict[str, Any]:
    """``document`` itself once every field of it checks out (nothing is converted
    or copied). Raises ``StateFileError`` naming ``where`` and the first bad field.

    :param checked: nums of phases known to check out already (the same record,
        accepted in an earlier save: ``pipekit.state.encoded``), not checked again.
    """
    if type(document) is not dict and type(document) is not Document:
        raise StateFileError(where, "not a JSON object")
    version = document.get("schema_version")
    if type(version) is not int:
        raise StateFileError(where, "no schema_version")
    if version > SCHEMA_VERSION:
        raise StateFileError(
            where,
            f"schema_version {version} is newer than this pipekit understands ({SCHEMA_VERSION}); upgrade pipekit",
        )
    try:
        _check_state(document, checked)
    except _Bad as exc:
        raise StateFileError(where, f"missing or malformed field {exc.path!r}: {exc.problem}") from None
    return document


def _check_state(document: dict[str, Any], checked: Collection[str] = ()) -> None:
    get = document.get
    if not (  # the quick pass, as in ``_check_phase``
        type(name := get("item_id")) is str
        and name
        and type(get("status")) is str
        and type(num := get("current_phase")) is int
        and -MAX_COUNT <= num <= MAX_COUNT
        and type(get("metadata")) in _PLAIN_OBJECT
        and type(count := get("total_tokens_in", 0)) is int
        and 0 <= count <= MAX_COUNT
        and type(count := get("total_tokens_out", 0)) is int
        and 0 <= count <= MAX_COUNT
        and (amount := get("total_cost_usd", 0)) is not None
        and _plain_amount(amount)
        and type(get("pipeline_module")) in _PLAIN_TEXT
        and type(stamp := get("started_at")) is str
        and _plain_stamp(stamp)
        and type(stamp := get("last_updated")) is str
        and _plain_stamp(stamp)
        and "phases" in document
    ):
        for field in STATE_REQUIRED:
            if field not in document:
                raise _Bad(field, "missing")
        for field, check in STATE_CHECKS.items():
            if field in document and (what := check(value := document[field])) is not None:
                raise _bad(field, value, what)
    phases = document["phases"]
    if type(phases) is not dict:
        raise _bad("phases", phases, "an object of phases by num")
    for num, phase in phases.items():
        if not _is_num(num):
            raise _bad("phases", num, "a phase num")
        if num not in checked:
            _check_phase(phase, f"phases.{num}")
    _check_by_num(document.get("phase_outputs", {}), "phase_outputs", any_value=True)
    _check_by_num(document.get("phase_output_files", {}), "phase_output_files")
    batches = document.get("batch_requests")
    if batches is not None and (type(batches) is not dict or not all(type(v) is dict for v in batches.values())):
        raise _bad("batch_requests", batches, "an object of batch records by phase num")
    retired = document.get("retired_phases")
    if retired is None:
        return
    if type(retired) is not dict:
        raise _bad("retired_phases", retired, "an object or null")
    for name, entry in retired.items():
        path = f"retired_phases.{name}"
        if type(entry) is not dict or type(entry.get("state")) is not dict:
            raise _bad(path, entry, "an object with the phase's 'state'")
        if not is_json_value(entry.get("output")):
            raise _bad(f"{path}.output", entry.get("output"), "a JSON value")
        _check_phase(entry["state"], f"{path}.state")


def _check_phase(phase: Any, path: str) -> None:
    """Check one saved phase: a quick pass over what pipekit writes (status reads
    100,000 documents, and a call per field doubled the cost of parsing them),
    then, only if it finds anything, ``PHASE_CHECKS`` decides and names the first
    bad field (tests/test_state_document.py holds the two to the same answers)."""
    if type(phase) is not dict:
        raise _bad(path, phase, "an object")
    get = phase.get
    if (
        type(num := get("phase")) is int
        and -MAX_COUNT <= num <= MAX_COUNT
        and type(name := get("name")) is str
        and name
        and type(status := get("status", PENDING)) is str
        and status in STATUSES
        and type(get("executor", "")) is str
        and _plain_amount(get("duration_seconds"))
        and type(count := get("tokens_in", 0)) is int
        and 0 <= count <= MAX_COUNT
        and type(count := get("tokens_out", 0)) is int
        and 0 <= count <= MAX_COUNT
        and type(count := get("attempts", 0)) is int
        and 0 <= count <= MAX_COUNT
        and type(count := get("attempts_at_reset", 0)) is int
        and 0 <= count <= MAX_COUNT
        and (amount := get("cost_usd", 0)) is not None
        and _plain_amount(amount)
        and _PLAIN_TEXT.issuperset(map(type, (get("output_file"), get("error"), get("reason"), get("traceback"))))
        and _plain_stamp(get("started_at"))
        and _plain_stamp(get("completed_at"))
        and ((fingerprint := get("fingerprint")) is None or _fingerprint(fingerprint) is None)
    ):
        return
    for field in PHASE_REQUIRED:
        if field not in phase:
            raise _Bad(f"{path}.{field}", "missing")
    for field, value in phase.items():
        check = PHASE_CHECKS.get(field)
        if check is not None and (what := check(value)) is not None:
            raise _bad(f"{path}.{field}", value, what)


_PLAIN_TEXT = frozenset({str, type(None)})
_PLAIN_OBJECT = frozenset({dict, type(None)})


def _plain_amount(value: Any) -> bool:
    """``_optional_amount(value) is None``, quicker."""
    kind = type(value)
    return value is None or (kind is float and 0.0 <= value < math.inf) or (kind is int and 0 <= value <= MAX_COUNT)


def _plain_stamp(value: Any) -> bool:
    """``_optional_timestamp(value) is None``, quicker."""
    if value is None:
        return True
    if type(value) is not str:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _check_by_num(value: Any, field: str, any_value: bool = False) -> None:
    """Check an object keyed by phase num: of strings (``phase_output_files``) or,
    with ``any_value``, of any JSON value (``phase_outputs``: ``pipekit.state.values``)."""
    if type(value) is not dict:
        raise _bad(field, value, "an object of strings by phase num")
    for key, text in value.items():
        if not _is_num(key):
            raise _bad(field, key, "a phase num")
        if any_value:
            if not is_json_value(text):
                raise _bad(f"{field}.{key}", text, "a JSON value")
        elif type(text) is not str:
            raise _bad(f"{field}.{key}", text, "a string")


def is_json_value(value: Any) -> bool:
    """True for what a phase's output may be: ``str``, ``None``, ``bool``, ``int``,
    finite ``float``, and lists and objects (``str`` keys) of these."""
    kind = type(value)
    if kind is str or value is None or kind is bool or kind is int:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(map(is_json_value, value))
    if kind is dict:
        return all(type(k) is str and is_json_value(v) for k, v in value.items())
    return False


#: The phase nums most pipelines have, as keys: found without a conversion.
_COMMON_NUMS = frozenset(str(num) for num in range(-10, 1000))


def _is_num(key: str) -> bool:
    if key in _COMMON_NUMS:
        return True
    # As pipekit writes them: none of the spaces, "+" or leading zeros int() lets through.
    try:
        return str(int(key)) == key
    except ValueError:
        return False
