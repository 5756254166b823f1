"""What a handler may return as its output, and what a downstream handler receives.

An output is a ``str`` (the seed's contract) or any JSON value: ``None``,
``bool``, ``int``, a finite ``float``, ``list`` and ``dict`` with ``str`` keys.
A pydantic model instance is stored as its JSON (``model_dump(mode="json")``);
a downstream parameter annotated with a model class receives an instance again.
``@phase(output=Model)`` validates the value. pydantic stays optional: nothing
here imports it; a model in use means the user's code already did.

An output a worker stored in the run's store itself is a ``StoredOutput``
(``pipekit.state.stored``) until something needs its value: a worker that
reads the store is sent the reference and the JSON, and builds what the
handler receives there (``received_inputs``).
"""

from __future__ import annotations

from collections.abc import Callable
import copy
import json
import math
import sys
import typing
from typing import Any

from pipekit.state.digest import text_hash
from pipekit.state.stored import StoredOutput


#: Field errors named in an ``invalid_output`` message, at most.
MAX_FIELD_ERRORS = 8


class OutputError(TypeError):
    """A handler returned a value pipekit cannot store (the message names the phase and the type)."""


class InvalidOutput(TypeError):
    """A value that does not fit the phase's ``output=`` model; the message names the fields."""

    reason = "invalid_output"


def is_model(value: object) -> bool:
    """True when ``value`` is a pydantic model instance."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def is_model_class(value: object) -> bool:
    """True when ``value`` is a pydantic model class."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, type) and issubclass(value, pydantic.BaseModel)


def stored_value(phase_name: str, value: Any, model: type[Any] | None = None) -> Any:
    """``value`` as it is stored: checked, copied, a model as its JSON; validated
    against ``model`` (``@phase(output=...)``) when one is given.

    Raises ``InvalidOutput`` (does not fit ``model``) or ``OutputError`` (cannot be stored).
    """
    if type(value) is StoredOutput:  # checked and validated by the worker that stored it
        return value
    if model is not None:
        value = validated(phase_name, model, value)
    return _plain(phase_name, value, "")


def _plain(phase: str, value: Any, path: str) -> Any:
    kind = type(value)
    if kind is str or value is None or kind is bool or kind is int:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise OutputError(f"phase {phase!r} returned {value!r}{_at(path)}: JSON has no NaN or infinity")
    if kind is list:
        return [_plain(phase, item, f"{path}[{index}]") for index, item in enumerate(value)]
    if kind is dict:
        plain = {}
        for key, item in value.items():
            if type(key) is not str:
                raise OutputError(
                    f"phase {phase!r} returned a {type(key).__name__} key {key!r}{_at(path)}: JSON object keys are str"
                )
            plain[key] = _plain(phase, item, f"{path}[{key!r}]")
        return plain
    if is_model(value):
        return _plain(phase, value.model_dump(mode="json"), path)
    raise OutputError(
        f"phase {phase!r} returned {kind.__module__}.{kind.__qualname__}{_at(path)}, which cannot be stored: "
        "a handler returns a str, a JSON value (dict, list, int, float, bool, None), a pydantic model or a PhaseResult"
    )


def _at(path: str) -> str:
    return f" at output{path}" if path else ""


def validated(phase_name: str, model: type[Any], value: Any) -> Any:
    """``value`` (an instance, a dict, or JSON text) checked against ``model``, as its JSON."""
    from pydantic import ValidationError

    try:
        if isinstance(value, model):
            instance = value
        elif isinstance(value, (str, bytes)):
            instance = model.model_validate_json(value)
        else:
            instance = model.model_validate(value)
    except ValidationError as exc:
        raise InvalidOutput(f"phase {phase_name!r} returned an invalid {model.__name__}: {field_errors(exc)}") from None
    return instance.model_dump(mode="json")


def field_errors(exc: Any) -> str:
    """A pydantic ``ValidationError`` as ``field: message; ...``."""
    errors = exc.errors()
    parts = [f"{'.'.join(map(str, e['loc'])) or '(the value)'}: {e['msg']}" for e in errors[:MAX_FIELD_ERRORS]]
    if len(errors) > MAX_FIELD_ERRORS:
        parts.append(f"and {len(errors) - MAX_FIELD_ERRORS} more")
    return "; ".join(parts)


def schema_hash(model: type[Any]) -> str:
    """A hash of ``model``'s JSON schema: part of its phase's fingerprint."""
    return text_hash(json.dumps(model.model_json_schema(), sort_keys=True, ensure_ascii=False))


def received(value: Any, model: type[Any] | None = None) -> Any:
    """What a downstream handler is given for a stored output: a copy (what it
    changes stays its own), or an instance of ``model`` for a parameter annotated with it."""
    if model is not None and value is not None:
        return model.model_validate(value)
    return copy.deepcopy(value) if type(value) in (dict, list) else value


#: Arguments that are not an earlier phase's output (``previous_outputs`` holds several).
_NOT_OUTPUTS = frozenset({"item_id", "metadata", "ctx", "output_dir"})


def inline_stored(kwargs: dict[str, Any], read: Callable[[StoredOutput], Any]) -> dict[str, Any]:
    """``kwargs`` with every ``StoredOutput`` (an argument, or one of ``previous_outputs``)
    replaced by its value, ``read`` from the store."""
    given = dict(kwargs)
    for name, value in kwargs.items():
        if type(value) is StoredOutput:
            given[name] = read(value)
        elif name == "previous_outputs" and type(value) is dict:
            given[name] = {num: read(v) if type(v) is StoredOutput else v for num, v in value.items()}
    return given


def received_inputs(
    kwargs: dict[str, Any], models: dict[str, type[Any]], read: Callable[[StoredOutput], Any]
) -> dict[str, Any]:
    """Where a handler runs, from the arguments the driver sent by reference (stored
    outputs as ``StoredOutput``, the rest as JSON): what it receives, stored outputs
    ``read`` and a parameter annotated with a model class (``models``) given an instance."""
    given = inline_stored(kwargs, read)
    for name, model in models.items():
        if name in given and name not in _NOT_OUTPUTS:
            given[name] = received(given[name], model)
    return given


def model_parameters(func: Callable[..., Any]) -> dict[str, type[Any]]:
    """Parameters of ``func`` annotated with a pydantic model class (or ``Model | None``), by name."""
    found: dict[str, type[Any]] = {}
    annotations = getattr(func, "__annotations__", None)
    if not annotations or "pydantic" not in sys.modules:
        return found
    namespace = getattr(func, "__globals__", {})
    for name, hint in annotations.items():
        if isinstance(hint, str):
            try:
                hint = eval(hint, namespace)  # noqa: S307 (a module's own annotation, as typing.get_type_hints does)
            except Exception:
                continue
        options = typing.get_args(hint) if typing.get_args(hint) and not is_model_class(hint) else (hint,)
        models = [option for option in options if is_model_class(option)]
        if len(models) == 1:
            found[name] = models[0]
    return found


def preview(value: Any, width: int = 60) -> str:
    """A one-line preview of an output: a ``str`` as it is, anything else as compact JSON."""
    text = value if type(value) is str else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
