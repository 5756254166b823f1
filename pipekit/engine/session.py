"""The skeleton of one run, from prepared options to exit code (pytest's ``wrap_session``).

``wrap_run`` owns the order: prepare (options, plugins, the module) ->
configure -> collect items -> preflight (store, executor, staleness) -> run ->
unconfigure and cleanups, and it alone settles the exit code (through
``engine.exitcode``), from what the runner reports and what stopped the run
before or after it (CONTRACT §4). The
command line and the library API both go through it; they differ only in how
they present an error (a message and the code, or the exception).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from typing import IO
from typing import Any

from pipekit.config import Config
from pipekit.display.format import duration
from pipekit.display.format import money
from pipekit.display.streams import stdout_reserved_for_events
from pipekit.engine.exitcode import decide_exit_code
from pipekit.engine.lifecycle import configured
from pipekit.engine.location import module_mismatch
from pipekit.engine.location import open_store
from pipekit.engine.location import output_root
from pipekit.engine.preflight import prepare_stale_policy
from pipekit.engine.result import RunResult
from pipekit.engine.runner import Run
from pipekit.engine.selection import has_failed_phase
from pipekit.notify import HookNotifier
from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError
from pipekit.pipeline.items import ItemSpec
from pipekit.pipeline.items import Sampled
from pipekit.pipeline.items import narrow
from pipekit.pipeline.items import normalize_items
from pipekit.pipeline.loader import Pipeline
from pipekit.pipeline.resources import machine_resources
from pipekit.state.model import PipelineState
from pipekit.state.store import StateStore


#: Builds a run's ``Config`` (options parsed with every plugin's options, the
#: pipeline loaded and registered); given the real stdout to print ``--help``
#: on, it returns None when it did.
Prepare = Callable[[IO[str]], "Config | None"]


@dataclass
class RunOutcome:
    """How a run ended: its result (``exit_status`` is the final exit code) and
    the exception that stopped it, if one did, for the caller to present."""

    result: RunResult
    error: BaseException | None = None


#: Called with each selected item's final state (``pipekit.run(on_state=...)``).
OnState = Callable[[PipelineState], None] | None


@dataclass
class _Progress:
    """How far a run got: what its exit code is decided from."""

    run: Run | None = None
    no_items: bool = False
    error: BaseException | None = None


async def wrap_run(
    prepare: Prepare,
    *,
    items: list[Any] | None = None,
    keep_states: bool = False,
    on_state: OnState = None,
) -> RunOutcome:
    """Prepare, configure, collect, check, run and tear down one run.

    :param prepare: builds the run's ``Config`` (see ``Prepare``).
    :param items: the items (the library's ``items=``); None: the hooks collect them.
    :param keep_states: keep every final state in the result (the library API).
    :param on_state: called with each selected item's final state (the library API).
    """
    progress = _Progress()
    # During a run stdout carries only --jsonl events: the module's and the
    # handlers' prints, subprocesses and workers write to stderr.
    with stdout_reserved_for_events() as stdout:
        try:
            config = prepare(stdout)
            if config is None:  # --help
                return RunOutcome(RunResult(ExitCode.OK))
            config.stdout = stdout
            with configured(config):
                await _collect_and_run(config, progress, items, keep_states, on_state)
        except (Exception, KeyboardInterrupt) as exc:
            progress.error = exc
    run = progress.run
    run_status = run.exit_status if run is not None else None
    code = decide_exit_code(run_status, progress.error, no_items=progress.no_items)
    result = run.result() if run is not None and run_status is not None else None
    return RunOutcome(replace(result, exit_status=code) if result else RunResult(code), progress.error)


async def _collect_and_run(
    config: Config, progress: _Progress, items: list[Any] | None, keep: bool, on_state: OnState = None
) -> None:
    pipeline = config.pipeline
    assert pipeline is not None
    option = config.option
    say = HookNotifier.of(config.pluginmanager).report
    specs = collect_items(config, pipeline, items)
    if not specs:
        say(f"no {pipeline.item_noun} to process", "notice")
        progress.no_items = True
        return
    store = open_store(option, pipeline, say)
    store.warn = lambda message: say(message, "warning")
    config.add_cleanup(store.close)
    say(f"state: {store.location}", "notice")
    mismatch = module_mismatch(store, pipeline)
    if mismatch:
        say(mismatch, "warning")
    if option.failed_only:
        specs = [spec for spec in specs if has_failed_phase(store, spec[0])]
        if not specs:
            say(
                f"no {pipeline.item_noun} with a failed phase "
                f"(reset ones are pending: run without --failed-only)",
                "notice",
            )
            progress.no_items = True
            return
    executor = config.hook.pipekit_make_executor(config=config, pipeline=pipeline, name=option.executor)
    if executor is None:
        raise UsageError(f"unknown --executor {option.executor!r} (built in: local, processes, dask)")
    outputs = output_root(option, store)
    say(f"outputs: {outputs}", "info")
    stale_policy = prepare_stale_policy(pipeline, store, outputs, option)
    check_from_phase(pipeline, option.from_phase)
    resources = machine_resources(option.resources, pipeline.phases, option.executor, executor.places_resources)
    progress.run = Run(
        config,
        pipeline,
        specs,
        store,
        output_root=outputs,
        workers=option.workers,
        force=option.force,
        from_phase=option.from_phase,
        executor=executor,
        keep_states=keep,
        on_state=on_state,
        stale_policy=stale_policy,
        max_cost=option.max_cost,
        skip_busy=option.skip_busy,
    )
    # Said once above, for every item: the runner need not say it again.
    progress.run._module_warning_given = bool(mismatch)
    progress.run.control.resources = resources
    await progress.run.execute()
    if isinstance(specs, Sampled):
        say(projection(store, specs, pipeline.item_noun), "notice")


def collect_items(
    config: Config, pipeline: Pipeline, items: list[Any] | None, fallback: Callable[[], list[str]] | None = None
) -> list[ItemSpec]:
    """The selected items: ``items`` when given, else ``pipekit_collect_items`` (§3),
    else (no source names any) the ids ``fallback`` gives, when it gives some;
    then ``--sample`` and ``--limit`` pick from them."""
    found: list[Any] | None
    if items is not None:
        found, origin = items, "items passed to pipekit.run"
    else:
        found, origin = _from_sources(config, pipeline)
        if found is None and fallback is not None:
            found, origin = fallback() or None, "the saved state"
        if found is None:
            raise UsageError(
                f"no items for {pipeline.name}: give --item/--items, or define items() in {pipeline.path}"
            )
    return _narrowed(config, pipeline, found, origin)


def source_items(config: Config, pipeline: Pipeline) -> list[ItemSpec] | None:
    """The items a run's sources select (``collect_items`` without items passed in),
    or None when no source names any (the commands that read a batch then show
    the items with state)."""
    found, origin = _from_sources(config, pipeline)
    return None if found is None else _narrowed(config, pipeline, found, origin)


def _from_sources(config: Config, pipeline: Pipeline) -> tuple[Any, str]:
    found = config.hook.pipekit_collect_items(config=config, pipeline=pipeline)
    return found, "--item/--items" if config.getoption("item") or config.getoption("items") else "items()"


def _narrowed(config: Config, pipeline: Pipeline, found: Any, origin: str) -> list[ItemSpec]:
    specs = narrow(
        normalize_items(found, origin),
        limit=config.getoption("limit"),
        sample=config.getoption("sample"),
        seed=config.getoption("seed"),
    )
    if isinstance(specs, Sampled):
        HookNotifier.of(config.pluginmanager).report(
            f"sample: {len(specs)} of {specs.population} {pipeline.item_noun} (--seed {specs.seed} draws it again)",
            "notice",
        )
    return specs


def projection(store: StateStore, sample: Sampled, noun: str) -> str:
    """The cost and phase time of all the items a sample was drawn from:
    the sample's mean per item times their number, with the range from its cheapest
    to its dearest item."""
    costs, seconds = [], []
    for _, document in store.load_many([item_id for item_id, _ in sample]):
        if isinstance(document, dict):
            costs.append(float(document.get("total_cost_usd") or 0.0))
            phases = document.get("phases") or {}
            seconds.append(sum(float(p.get("duration_seconds") or 0.0) for p in phases.values()))
    if not costs:
        return f"projection: none of the {len(sample)} sampled {noun} has state yet"
    n, total = len(costs), sample.population

    def spread(values: list[float], show: Callable[[float], str]) -> str:
        mean = sum(values) / len(values)
        return f"{show(mean * total)} ({show(min(values) * total)}-{show(max(values) * total)})"

    return (
        f"projection for all {total} {noun} from {n} sampled: cost {spread(costs, money)}, "
        f"phase time {spread(seconds, duration)} (mean per item x {total}; range: cheapest-dearest item)"
    )


def check_from_phase(pipeline: Pipeline, from_phase: int | None) -> None:
    """A usage error when ``--from-phase`` names no phase and no later one."""
    if from_phase is not None and not any(p.num >= from_phase for p in pipeline.phases):
        numbers = ", ".join(str(p.num) for p in pipeline.phases)
        raise UsageError(f"--from-phase {from_phase}: no phase has that num or a later one ({numbers})")
