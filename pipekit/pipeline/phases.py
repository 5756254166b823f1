"""The ``@phase`` decorator, phase definitions, phase results and argument injection."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
import contextlib
from dataclasses import dataclass
from dataclasses import field
import inspect
import math
from typing import Any
from typing import TypeVar
import weakref

from pipekit.pipeline.outputs import is_model_class
from pipekit.pipeline.outputs import model_parameters


#: Names pipekit injects into every handler (CONTRACT §2); a phase may not use one as its name.
INJECTABLE_NAMES = frozenset({"item_id", "metadata", "previous_outputs", "ctx", "output_dir"})

#: What a run does with a completed phase whose fingerprint changed (``@phase(on_change=...)``).
ON_CHANGE_CHOICES = ("warn", "rerun")

#: The attribute ``@phase`` sets on a function; the loader looks for it.
PHASE_MARKER = "__pipekit_phase__"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PhaseResult:
    """What a handler may return instead of its output alone.

    ``output`` is what the handler could have returned itself: a ``str``, a JSON
    value or a pydantic model (``pipekit.pipeline.outputs``). Tokens and cost
    given here add to what the handler reported with ``ctx.record_cost``.
    """

    output: Any = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    output_file: str | None = None
    executor: str | None = None


@dataclass
class PhaseDefinition:
    """Definition of a pipeline phase (the seed's Pattern 3)."""

    num: int
    name: str
    handler: Callable[..., Any]
    timeout_seconds: float | None = 600
    critical: bool = True
    cache_check: Callable[..., Any] | None = None
    retries: int = 0
    retry_backoff: float = 1.0
    executor: str = ""
    isolate: str | None = None
    #: Most items inside this phase at once (``None``: only ``-j`` limits it).
    concurrency: int | None = None
    #: Named rate limits (``LIMITS`` in the module) acquired before every attempt,
    #: mapped to the tokens each attempt is expected to use.
    limits: dict[str, int] = field(default_factory=dict)
    #: Dollars one execution may record with ``ctx.record_cost`` before it fails.
    max_cost: float | None = None
    #: Free-form options a plugin may read (``@phase(..., **options)`` is not offered;
    #: plugins set these through ``pipekit_configure``).
    options: dict[str, Any] = field(default_factory=dict)
    #: Bumped by hand to mark completed results out of date (``pipekit.stale.fingerprint``).
    version: str | None = None
    #: A callable (arguments injected) whose value stands for inputs outside the code.
    fingerprint: Callable[..., Any] | None = None
    #: ``"warn"``: a stale phase is reported, re-run only with ``--rerun-stale``;
    #: ``"rerun"``: a stale phase is re-run automatically.
    on_change: str = "warn"
    #: Executions of this phase an item may have, across runs, since its last
    #: reset (``None``: no cap); once reached, runs no longer execute it.
    max_attempts: int | None = None
    #: A pydantic model class the handler's value is validated against (``@phase(output=...)``).
    output: type[Any] | None = None
    #: Amounts of named resources one execution holds (``@phase(resources=...)``).
    resources: dict[str, float] = field(default_factory=dict)
    #: The name of a provider in the module's ``BATCHES`` (``@phase(batch=...)``): the
    #: handler returns requests, answered through that provider's batch API.
    batch: str | None = None

    @property
    def is_async(self) -> bool:
        """True when the handler is a coroutine function."""
        return inspect.iscoroutinefunction(self.handler)


def phase(
    num: int,
    *,
    name: str | None = None,
    critical: bool = True,
    timeout: float | None = 600,
    cache: Callable[..., Any] | None = None,
    retries: int = 0,
    retry_backoff: float = 1.0,
    executor: str = "",
    isolate: str | None = None,
    version: str | int | None = None,
    fingerprint: Callable[..., Any] | None = None,
    on_change: str = "warn",
    concurrency: int | None = None,
    limits: Iterable[str] | Mapping[str, int] = (),
    max_cost: float | None = None,
    max_attempts: int | None = None,
    output: type[Any] | None = None,
    resources: Mapping[str, float] | None = None,
    batch: str | None = None,
) -> Callable[[F], F]:
    """Mark a function as phase ``num`` of the pipeline defined in its module.

    The function is returned unchanged, so it stays directly callable. Mistakes
    (duplicate numbers or names, parameters that cannot be injected) are
    reported when the module is loaded, naming the function.

    :param num: position of the phase; phases run in ascending ``num``.
    :param name: the phase's name, by default the function's ``__name__``.
    :param critical: a failed critical phase stops its item; a non-critical one
        is recorded and the item goes on.
    :param timeout: seconds before the phase fails as timed out, ``None`` for no limit.
    :param cache: a callable (arguments injected as for handlers) whose truthy
        result means the work already exists; the phase is then skipped.
    :param retries: extra attempts after a failure.
    :param retry_backoff: base of the exponential wait between attempts, in seconds.
    :param executor: free text recorded in the phase's state (who or what ran it).
    :param isolate: ``"process"`` runs a sync handler in a child process that is
        killed at its timeout.
    :param version: bump it by hand to make completed results of this phase stale.
    :param fingerprint: a callable (arguments injected as for handlers) returning
        a JSON-able value for inputs outside the code (prompt file, model name);
        when its value changes, completed results are stale.
    :param on_change: ``"warn"`` (a run reports stale results and re-runs them
        only with ``--rerun-stale``) or ``"rerun"`` (re-run them automatically).
    :param concurrency: at most this many items inside this phase at once,
        whatever ``-j`` is (a GPU phase at 1 while cheap phases run at 32).
    :param limits: names of rate limits declared in the module's ``LIMITS``,
        acquired before every attempt (one request each); a mapping gives the
        tokens to reserve per attempt, e.g. ``{"openai": 1200}``.
    :param max_cost: dollars one execution may record with ``ctx.record_cost``;
        the call that goes over fails the phase (no retry).
    :param max_attempts: executions an item may have of this phase across runs
        (retries included) until ``pipekit reset``; once reached, later runs do
        not execute it and the item counts as failed. A ``Retry`` the handler
        asks for is not stopped by it (``MAX_RETRY_REQUESTS`` caps those).
    :param output: a pydantic model class: the handler's value (an instance, a
        dict or JSON text) is validated against it and stored as its JSON; an
        invalid value fails the attempt (reason ``invalid_output``, retried per
        ``retries``, its error in the next attempt's ``ctx.last_error``). Its
        schema is part of the phase's fingerprint.
    :param resources: amounts of named resources one execution needs, e.g.
        ``{"GPU": 1}``: on the dask executor it runs only on workers started
        with them (``dask worker --resources GPU=1``); on the local and
        processes executors it waits until they are free among what the run
        declares (``pipekit run --resources GPU=1``). Not part of the fingerprint.
    :param batch: the name of a provider in the module's ``BATCHES``: the handler
        returns this item's requests, sent through the provider's batch API; the
        phase's output is ``{custom_id: response}`` (docs/batches.md); not with ``output=``.
    """
    if on_change not in ON_CHANGE_CHOICES:
        raise ValueError(f"@phase({num}): on_change must be one of {ON_CHANGE_CHOICES}, not {on_change!r}")
    if output is not None and not is_model_class(output):
        raise ValueError(f"@phase({num}): output must be a pydantic model class, not {output!r}")

    def mark(func: F) -> F:
        where = f"@phase({num}) {getattr(func, '__name__', repr(func))}"
        if output is not None and batch is not None:  # the handler returns requests, the output is {custom_id: body}
            raise ValueError(
                f"{where}: output= cannot be combined with batch=; validate the responses in the phase that reads them"
            )
        definition = PhaseDefinition(
            num=num,  # validated by the loader, so that the error names the function
            name=name if name is not None else getattr(func, "__name__", repr(func)),
            handler=func,
            timeout_seconds=timeout,
            critical=critical,
            cache_check=cache,
            retries=retries,
            retry_backoff=retry_backoff,
            executor=executor,
            isolate=isolate,
            version=None if version is None else str(version),
            fingerprint=fingerprint,
            on_change=on_change,
            concurrency=concurrency,
            limits=dict(limits) if isinstance(limits, Mapping) else dict.fromkeys(limits, 0),
            max_cost=max_cost,
            max_attempts=max_attempts,  # validated by the loader, naming the function
            output=output,
            resources=checked_resources(resources, where),
            batch=batch,  # checked against BATCHES by the loader
        )
        setattr(func, PHASE_MARKER, definition)
        return func

    return mark


def phase_definition_of(obj: object) -> PhaseDefinition | None:
    """Return the definition ``@phase`` attached to ``obj``, if any."""
    definition = getattr(obj, PHASE_MARKER, None)
    return definition if isinstance(definition, PhaseDefinition) else None


def injection_problems(func: Callable[..., Any], available: set[str]) -> list[str]:
    """Parameters of ``func`` that pipekit cannot fill, described for an error message."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    problems = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            problems.append(f"parameter {parameter.name!r} is positional-only")
        elif parameter.name not in available and parameter.default is parameter.empty:
            problems.append(f"parameter {parameter.name!r} cannot be injected and has no default")
    return problems


#: ``Injector.for_function`` per function, for as long as the function lives.
_injectors: weakref.WeakKeyDictionary[Any, Injector] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Injector:
    """Calls a handler with the arguments it asks for, by name (CONTRACT §2)."""

    wanted: frozenset[str]
    takes_kwargs: bool
    #: Parameters annotated with a pydantic model class: they receive an instance.
    models: Mapping[str, type[Any]] = field(default_factory=dict)

    @classmethod
    def for_function(cls, func: Callable[..., Any]) -> Injector:
        """Inspect ``func`` once; the result is reused for every call."""
        try:
            return _injectors[func]
        except (KeyError, TypeError):
            pass
        params = inspect.signature(func).parameters.values()
        injector = cls(
            wanted=frozenset(
                p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            ),
            takes_kwargs=any(p.kind is p.VAR_KEYWORD for p in params),
            models=model_parameters(func),
        )
        with contextlib.suppress(TypeError):  # not weakly referenceable: inspected each time
            _injectors[func] = injector
        return injector

    def arguments(self, available: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments to pass, chosen from ``available``."""
        if self.takes_kwargs:
            return dict(available)
        return {name: value for name, value in available.items() if name in self.wanted}


def checked_resources(value: Any, where: str) -> dict[str, float]:
    """``value`` as a ``{name: positive number}`` dict; ``ValueError`` naming ``where`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: resources must be a dict of names to amounts, like {{'GPU': 1}}, not {value!r}")
    checked: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name.strip() or "," in name or "=" in name:
            raise ValueError(f"{where}: resource name {name!r} must be a non-empty string without ',' or '='")
        if not is_amount(amount):
            raise ValueError(f"{where}: resource {name!r} needs a positive number, not {amount!r}")
        checked[name] = amount
    return checked


def is_amount(amount: Any) -> bool:
    """True for a positive finite number (not a bool): an amount of a resource."""
    return (
        isinstance(amount, (int, float)) and not isinstance(amount, bool) and math.isfinite(amount) and amount > 0
    )
