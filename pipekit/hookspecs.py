"""Every hook pipekit calls, in the order they fire.

A plugin is a module or object with functions named ``pipekit_*`` marked with
``@pipekit.hookimpl``. A pipeline module is a plugin too, as a ``conftest.py``
is for pytest. The lifecycle of a run::

    pipekit_addoption          once, while the command line is built
    pipekit_configure          once, after options are parsed
    pipekit_collect_items      once, first non-None result wins
    pipekit_make_executor      once, first non-None result wins
    pipekit_run_start          once
      for each item with work left (several at once with -j):
        pipekit_item_start
          for each phase left to run:
            pipekit_phase_skip                          (cache hit)
            or pipekit_phase_wait ...                   (concurrency or a rate limit)
               then pipekit_phase_start
               pipekit_price_usage ...                 (each ctx.record_usage, first answer wins)
               then pipekit_phase_retry ...            (each failed attempt retried)
               then pipekit_phase_complete | pipekit_phase_fail
        pipekit_item_finish
      pipekit_batch_event ...  (a batch phase's provider batch sent, polled, ended)
      pipekit_budget_reached   at most once, when --max-cost is reached
    pipekit_run_finish         once, if pipekit_run_start ran
    pipekit_unconfigure        once, always

State is saved before observers are called, so a hook always sees the item's
state as it is on disk. Observer hooks run on the event loop's thread: keep
them quick and hand slow work to a thread. An observer that raises is reported
once with its plugin's name and the run goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

import pluggy


if TYPE_CHECKING:
    from pipekit.config import Config
    from pipekit.config import Parser
    from pipekit.engine.control import Item
    from pipekit.engine.outcome import AttemptOutcome
    from pipekit.engine.runner import Run
    from pipekit.execution.base import PhaseExecutor
    from pipekit.pipeline.context import PhaseOutcome
    from pipekit.pipeline.loader import Pipeline
    from pipekit.pipeline.phases import PhaseDefinition

#: The pluggy project name: entry points live in the group of the same name.
PROJECT_NAME = "pipekit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marks a hook specification (pipekit's own specs in this module, or a plugin's new hooks)."""
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a hook implementation: ``@pipekit.hookimpl`` on a ``pipekit_*`` function of a plugin
or pipeline module. Accepts pluggy's options: ``tryfirst``, ``trylast``, ``wrapper``,
``optionalhook``, ``specname``."""


# -------------------------------------------------------------------------
# Initialization
# -------------------------------------------------------------------------


@hookspec(historic=True)
def pipekit_addoption(parser: Parser) -> None:
    """Called once while the ``run`` command line is built, to add options.

    :param parser: offers ``addoption(*flags, **argparse_kwargs)`` and
        ``getgroup(name)``, as pytest's parser does.

    Historic: a plugin registered later is called too.

    In a pipeline module: define it to add options for this pipeline only
    (read them back with ``config.getoption(name)``).

    .. versionadded:: 1.0
    """


@hookspec(historic=True)
def pipekit_configure(config: Config) -> None:
    """Called once after the command line is parsed, before items are collected.

    :param config: the run's configuration: ``getoption(name)``,
        ``pluginmanager``, ``pipeline``, ``add_cleanup(func)``.

    Historic: a plugin registered later is called too. Stateful plugins build
    their objects here and register them with ``config.pluginmanager``.

    In a pipeline module: define it to set up clients or read options.

    .. versionadded:: 1.0
    """


# -------------------------------------------------------------------------
# Collection
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def pipekit_collect_items(config: Config, pipeline: Pipeline) -> Iterable[Any] | None:
    """Called once to find the items to process; stops at the first non-None result.

    :param config: the run's configuration.
    :param pipeline: the loaded pipeline (``name``, ``phases``, ``module``).
    :returns: an iterable of ids, ``(id, metadata)`` pairs or dicts with an
        ``"id"`` key; ``None`` to let the next source answer.

    The built-in ``items`` plugin answers first for ``--item``/``--items`` and
    last for the module's ``items()`` function.

    In a pipeline module: define it to read items from a database or an API.

    .. versionadded:: 1.0
    """


@hookspec(firstresult=True)
def pipekit_make_executor(config: Config, pipeline: Pipeline, name: str) -> PhaseExecutor | None:
    """Called once before the run starts, to build the executor ``--executor NAME`` names;
    stops at the first non-None result.

    :param config: the run's configuration.
    :param pipeline: the loaded pipeline (workers import ``pipeline.path``).
    :param name: the value of ``--executor`` (``local`` by default).
    :returns: a ``pipekit.execution.base.PhaseExecutor``, or ``None`` when this
        plugin does not provide ``name``.

    The built-in ``executors`` plugin answers last for ``local``,
    ``processes`` and ``dask``. An executor decides only where a handler
    runs: the driver keeps every item's phase sequence, writes all state and
    fires every hook.

    .. versionadded:: 1.0
    """


# -------------------------------------------------------------------------
# Run
# -------------------------------------------------------------------------


@hookspec
def pipekit_run_start(run: Run) -> None:
    """Called once when the run starts, after items are collected.

    :param run: ``pipeline``, ``config``, ``total_items``, ``state_location``
        and the run's running totals.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_item_start(item: Item) -> None:
    """Called when an item with work left starts (items already finished never fire).

    :param item: ``id``, ``metadata``, ``state`` (its ``PipelineState``), ``index``.

    .. versionadded:: 1.0
    """


# -------------------------------------------------------------------------
# Phase
# -------------------------------------------------------------------------


@hookspec
def pipekit_phase_start(item: Item, phase: PhaseDefinition) -> None:
    """Called after a phase is recorded ``in_progress``, before its handler runs.

    It runs in the item's task, so context variables set here (a tracing span)
    are seen by the handler.

    :param item: the item.
    :param phase: the phase's definition (``num``, ``name``, ...).

    Fired once per execution, not per attempt. A phase skipped by its cache
    does not fire it.

    .. versionadded:: 1.0
    """


@hookspec(firstresult=True)
def pipekit_price_usage(model: str, tokens_in: int, tokens_out: int) -> float | None:
    """Called when a handler reports usage with ``ctx.record_usage``, to price it;
    stops at the first non-None result.

    :param model: the model name the handler gave (``"gpt-4o"``, ``"claude-sonnet-4-5"``).
    :param tokens_in: input (prompt) tokens of this call.
    :param tokens_out: output (completion) tokens of this call.
    :returns: the cost in US dollars, or ``None`` to let the next plugin answer.
        When no plugin answers the cost is 0; the tokens are recorded either way.

    Sync handlers run in worker threads, so this hook may be called from any
    thread, several at once: an implementation must be thread-safe and quick
    (no network). An exception it raises reaches the handler, as any error of
    ``ctx`` would. The ``pipekit-prices`` distribution implements it from the
    ``genai-prices`` database.

    In a pipeline module: define it to price a private or fine-tuned model.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_phase_wait(item: Item, phase: PhaseDefinition, reason: str, seconds: float | None) -> None:
    """Called when a phase has to wait before its work can go on.

    :param item: the item.
    :param phase: the phase's definition.
    :param reason: what it waits for: ``"concurrency"`` (the phase's
        ``concurrency`` slots are taken), ``"resource:NAME"`` (not enough of
        the resource ``NAME`` this machine declares is free), ``"limit:NAME"``
        (the rate limit ``NAME`` has no capacity) or ``"retry-after:NAME"``
        (the limit is paused by a ``pipekit.Retry(after=...)``).
    :param seconds: the expected wait, or ``None`` when it cannot be known.

    Fired when the wait begins: before ``pipekit_phase_start`` for the first
    attempt, before a retried attempt, and inside the handler when
    ``ctx.acquire`` has to wait. Not fired when there is capacity.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_phase_progress(
    item: Item, phase: PhaseDefinition, done: int, total: int | None, label: str | None
) -> None:
    """Called when a running phase reports progress (``ctx.progress``, and ``ctx.map``
    after each batch of finished sub-items is stored).

    :param item: the item.
    :param phase: the phase's definition.
    :param done: units done so far.
    :param total: units in all, or ``None`` when unknown.
    :param label: what the units are (a map's ``fn`` name, e.g. ``"chapters"``), or ``None``.

    Called on the event loop's thread, as often as the handler reports: an
    implementation that draws or writes throttles itself. Not called for a
    handler running in a worker process (``--executor processes``, ``dask``):
    its progress is stored by the worker, and ``pipekit status`` shows it.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_subitem_finish(
    item: Item, phase: PhaseDefinition, label: str, key: str, status: str, error: str | None
) -> None:
    """Called when a sub-item of ``ctx.map`` finished and its record was stored.

    :param item: the item.
    :param phase: the phase whose handler called ``ctx.map``.
    :param label: the map's name (its ``fn``'s ``__name__``).
    :param key: the sub-item's key (``key(element)`` as a str, or its position).
    :param status: ``"done"`` or ``"failed"`` (after its ``retries``).
    :param error: the failure's text, ``None`` when done.

    Called on the event loop's thread, after the batch holding the sub-item is
    durable. Sub-items reused from an earlier attempt are not reported again.
    Not called for a handler running in a worker process.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_phase_complete(item: Item, phase: PhaseDefinition, result: PhaseOutcome) -> None:
    """Called after a phase completed and its state was saved.

    :param item: the item.
    :param phase: the phase's definition.
    :param result: ``output``, ``tokens_in``, ``tokens_out``, ``cost_usd``,
        ``duration_seconds``, ``attempt`` (the usage is that of the attempt that
        completed; failed attempts before it were reported by ``pipekit_phase_retry``).
        With ``--executor processes`` or ``dask``, an output over 64 KiB that the
        worker stored in the run's store itself, or that an earlier run kept in the
        store, is a ``pipekit.state.stored.StoredOutput`` here and in
        ``item.state.phase_outputs`` during the run (the store's ``read_output(item_id, ref)`` gives its value), so
        the driver does not read it unless asked.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_phase_retry(
    item: Item, phase: PhaseDefinition, error: BaseException, attempt: int, result: AttemptOutcome
) -> None:
    """Called when a failed attempt will be retried, before the wait.

    :param item: the item.
    :param phase: the phase's definition.
    :param error: the exception of the failed attempt.
    :param attempt: the number of the attempt that failed (1 for the first).
    :param result: the failed attempt, as ``pipekit_phase_complete`` receives a
        completed one: its ``tokens_in``, ``tokens_out``, ``cost_usd``,
        ``duration_seconds`` (since the execution started) and ``attempt``,
        with ``error``, ``reason`` and ``message`` (the error as the state records it).

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_phase_fail(item: Item, phase: PhaseDefinition, error: BaseException, result: AttemptOutcome) -> None:
    """Called after a phase failed for good (its last attempt) and state was saved.

    :param item: the item.
    :param phase: the phase's definition (``critical`` says whether the item stops).
    :param error: the exception; a timeout is a ``PhaseTimeoutError``, an
        interruption a ``PhaseInterrupted``.
    :param result: the last attempt, as ``pipekit_phase_retry`` receives one
        (its own usage, ``duration_seconds``, ``attempt``, ``error``,
        ``reason`` and ``message``).

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_phase_skip(item: Item, phase: PhaseDefinition, reason: str) -> None:
    """Called after a phase was recorded ``skipped`` (by its cache, reason ``cache``).

    :param item: the item.
    :param phase: the phase's definition.
    :param reason: why it was skipped.

    .. versionadded:: 1.0
    """


# -------------------------------------------------------------------------
# Finish
# -------------------------------------------------------------------------


@hookspec
def pipekit_item_finish(item: Item) -> None:
    """Called when an item that fired ``pipekit_item_start`` is done for this run.

    :param item: the item; ``item.state.status`` says how it ended.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_batch_event(
    run: Run,
    event: str,
    provider: str,
    batch_id: str | None,
    requests: int,
    status: str,
    counts: dict[str, int],
    next_poll: float | None,
) -> None:
    """Called when a provider batch of a batch phase is submitted, polled or has ended.

    :param run: the run.
    :param event: ``"batch_submitted"`` (the batch id is saved), ``"batch_polled"``
        (its status read), ``"batch_completed"`` (its results fetched and saved) or,
        under ``--wait``, ``"batch_waiting"`` (the run sleeps ``next_poll`` seconds
        before it polls the batch again).
    :param provider: the name of the provider in the module's ``BATCHES``.
    :param batch_id: the provider's id of the batch.
    :param requests: how many requests the batch holds.
    :param status: the provider's status of the batch (``"submitted"`` when just sent).
    :param counts: the provider's request counts by state (``{"succeeded": 38, ...}``;
        empty before the first poll).
    :param next_poll: for ``"batch_waiting"``, the seconds until the next poll (they
        grow between polls); None for the other events.

    Called on the event loop's thread after the submission record is saved.
    Requests' payloads and results are never passed, nor any credential.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_budget_reached(run: Run, spent: float, cap: float) -> None:
    """Called once when the spending of the selected items reaches ``--max-cost``.

    :param run: the run.
    :param spent: dollars recorded by the selected items, this run and earlier ones.
    :param cap: the ``--max-cost`` in dollars.

    From then on no new phase starts; phases in flight finish and are saved.
    Fired at the start of a run when an earlier run already spent the cap.
    The run then exits 1; the same command with a higher cap continues.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_run_finish(run: Run, exitstatus: int) -> None:
    """Called once at the end of a run whose ``pipekit_run_start`` was called.

    :param run: the run, with its final totals.
    :param exitstatus: the exit code the run will return.

    .. versionadded:: 1.0
    """


@hookspec
def pipekit_unconfigure(config: Config) -> None:
    """Called once before the command exits, whatever happened.

    :param config: the run's configuration.

    .. versionadded:: 1.0
    """


# -------------------------------------------------------------------------
# Reporting
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def pipekit_report_message(message: str, level: str) -> bool | None:
    """Called for each message of the engine during a run (the state location,
    the forecast, a busy item, a corrupt state file, an interruption), to show it;
    stops at the first non-None result.

    :param message: the text, one line or more, without the ``pipekit:`` prefix.
    :param level: ``"error"``, ``"warning"``, ``"notice"`` (shown even with
        ``-q``) or ``"info"`` (hidden by ``-q``).
    :returns: ``True`` when the message was shown (or deliberately hidden),
        ``None`` to let the next plugin answer.

    The built-in ``progress`` plugin answers last: it prints
    ``pipekit: [error: |warning: ]message`` on stderr, above the live display,
    and hides ``info`` messages under ``-q``. When no plugin answers (the
    built-in blocked with ``-p no:progress``) the message goes to stderr as is.
    Define it to send the messages elsewhere (a log file, a chat) and return
    ``None`` to let them reach the terminal too.

    .. versionadded:: 1.0
    """
