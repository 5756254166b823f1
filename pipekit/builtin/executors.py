"""Where phases execute: ``--executor local`` (default), ``processes`` or ``dask``."""

from __future__ import annotations

from typing import Any

from pipekit.config import Config
from pipekit.config import Parser
from pipekit.execution.base import LocalExecutor
from pipekit.execution.base import PhaseExecutor
from pipekit.hookspecs import hookimpl
from pipekit.notify import HookNotifier
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import Pipeline


@hookimpl
def pipekit_addoption(parser: Parser) -> None:
    """Options of the built-in executors."""
    group = parser.getgroup("executors")
    group.addoption(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="with --executor dask: a running scheduler (tcp://host:8786); default a LocalCluster of -j workers",
    )
    group.addoption(
        "--shared-dir",
        metavar="DIR",
        help="with --executor dask: a folder the driver and every worker see; large outputs travel through it",
    )
    group.addoption(
        "--scheduler-file",
        metavar="PATH",
        help="with --executor dask: the file a running scheduler wrote (dask scheduler --scheduler-file PATH)",
    )
    group.addoption(
        "--env",
        metavar="NAME",
        action="append",
        default=[],
        help="with --executor dask: send this environment variable to the workers (repeatable; values never shown)",
    )


@hookimpl(trylast=True)
def pipekit_make_executor(config: Config, pipeline: Pipeline, name: str) -> PhaseExecutor | None:
    """The built-in executors."""
    if name == "local":
        return LocalExecutor()
    if name == "processes":
        from pipekit.execution.processes import ProcessExecutor

        return ProcessExecutor(pipeline.path, config.getoption("workers") or 1)
    if name == "dask":
        return make_dask_executor(config, pipeline)
    return None


def make_dask_executor(config: Config, pipeline: Pipeline, client: Any = None) -> PhaseExecutor:
    """``--executor dask`` with this run's options, on ``client`` when one is given."""
    from pipekit.execution.dask import DaskExecutor
    from pipekit.execution.dask import ForwardedEnv

    return DaskExecutor(
        pipeline.path,
        config.getoption("workers") or 1,
        address=config.getoption("dask_scheduler"),
        shared_dir=config.getoption("shared_dir"),
        pipeline_name=pipeline.name,
        scheduler_file=config.getoption("scheduler_file"),
        client=client,
        env=ForwardedEnv.from_driver(config.getoption("env") or []),
        say=HookNotifier.of(config.pluginmanager).report,
        phases=pipeline.phases,
    )


class DaskClient:
    """A plugin for ``pipekit.run(..., client=...)``: the run's Dask executor uses
    the caller's ``distributed.Client`` and leaves it open."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @hookimpl(tryfirst=True)
    def pipekit_make_executor(self, config: Config, pipeline: Pipeline, name: str) -> PhaseExecutor | None:
        """The dask executor on ``self.client``; any other executor is a usage error."""
        if name != "dask":
            raise UsageError(f"client= is a Dask client: it needs executor='dask', not {name!r}")
        return make_dask_executor(config, pipeline, self.client)
