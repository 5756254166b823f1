"""What both providers share: the lazily made SDK client, request checks, JSON sizes."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import functools
import inspect
import json
import os
import threading
from typing import Any
from typing import Generic
from typing import TypeVar

from pipekit import UsageError


T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: HTTP statuses that say the credentials are wrong: waiting or retrying cannot help.
REFUSED = frozenset({401, 403})


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

    def refusal(self, error: BaseException) -> UsageError | None:
        """The SDK's ``error`` as a :class:`pipekit.UsageError` naming the variable when the
        API refused the credentials (401, 403); None for any other error.

        The key is cut out of the provider's words (a proxy may quote it back).
        """
        status = getattr(error, "status_code", None)
        if status not in REFUSED:
            return None
        text = str(getattr(error, "message", None) or error)
        secrets = [os.environ.get(name) or "" for name in self._variables]
        for secret in secrets:
            if len(secret) >= 8:
                text = text.replace(secret, "***")
        variable = next((name for name in self._variables if os.environ.get(name)), None)
        where = f"in {variable}" if variable else "of the client given"
        return UsageError(
            f"{self._owner}: the API refused the credentials {where} (HTTP {status}): {text.strip()}; "
            "the requests are kept, and the next run sends them"
        )


def naming_refusals(method: F) -> F:
    """A provider method (or generator) whose refused credentials are a
    :class:`pipekit.UsageError` (``LazyClient.refusal``) rather than the SDK's error."""

    def translated(self: Any, error: Exception) -> BaseException:
        refusal: UsageError | None = self._client.refusal(error)
        return error if refusal is None else refusal

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except Exception as exc:
                found = translated(self, exc)
                if found is exc:
                    raise
                raise found from None

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            found = translated(self, exc)
            if found is exc:
                raise
            raise found from None

    return call  # type: ignore[return-value]


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
