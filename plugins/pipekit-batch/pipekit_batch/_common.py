"""What both providers share: the lazily made SDK client, request checks, JSON sizes."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import json
import os
import threading
from typing import Any
from typing import Generic
from typing import TypeVar

from pipekit import UsageError


T = TypeVar("T")


class LazyClient(Generic[T]):
    """The SDK client, made on first use from the environment (thread-safe).

    Declaring a provider in a pipeline module never needs a key; the first
    call without one is a :class:`pipekit.UsageError` naming the variable.
    The key itself is never kept here, logged or shown.
    """

    def __init__(self, given: T | None, variables: tuple[str, ...], make: Callable[[], T], owner: str) -> None:
        self._client = given
        self._variables = variables
        self._make = make
        self._owner = owner
        self._lock = threading.Lock()

    def get(self) -> T:
        """The client, made now if it was not given and not made yet."""
        with self._lock:
            if self._client is None:
                if not any(os.environ.get(name) for name in self._variables):
                    raise UsageError(
                        f"{self._owner}: {self._variables[0]} is not set: export it "
                        f"(or pass client= a client of the SDK made with the credentials you use)"
                    )
                self._client = self._make()
            return self._client


def dumps(value: Any) -> str:
    """Compact JSON, as it goes on the wire."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def check_shape(request: Mapping[str, Any], required: tuple[str, str], optional: tuple[str, ...],
                provider: str) -> tuple[str, dict[str, Any]]:
    """``request`` has exactly ``required`` (custom_id, payload field) and maybe ``optional`` keys;
    return (custom_id, payload). A ValueError names the field that is wrong."""
    id_field, payload_field = required
    if not isinstance(request, Mapping):
        raise ValueError(f"a {provider} batch request is a dict with {id_field!r} and {payload_field!r}, "
                         f"not {type(request).__name__}")
    unknown = sorted(set(request) - {id_field, payload_field, *optional})
    if unknown:
        raise ValueError(f"a {provider} batch request has no field {unknown[0]!r} "
                         f"(it takes {', '.join(repr(n) for n in (id_field, payload_field, *optional))})")
    custom_id = request.get(id_field)
    if not isinstance(custom_id, str) or not custom_id:
        raise ValueError(f"{id_field!r} of a {provider} batch request must be a non-empty string, got {custom_id!r}")
    payload = request.get(payload_field)
    if not isinstance(payload, Mapping):
        raise ValueError(f"request {custom_id!r}: {payload_field!r} must be a dict, got {type(payload).__name__}")
    try:
        dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"request {custom_id!r}: {payload_field!r} is not JSON: {exc}") from None
    return custom_id, dict(payload)


def require(custom_id: str, payload: Mapping[str, Any], field: str, names: tuple[str, ...], api: str) -> None:
    """Each of ``names`` is in ``payload``, else a ValueError naming the first one missing."""
    for name in names:
        if name not in payload:
            raise ValueError(f"request {custom_id!r}: {field!r} has no {name!r} ({api} requires "
                             f"{', '.join(repr(n) for n in names)})")
