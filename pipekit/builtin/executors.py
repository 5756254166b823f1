"""Where phases execute: ``--executor local`` (default), ``processes`` or ``dask``."""

from __future__ import annotations

from pipekit.config import Config
from pipekit.config import Parser
from pipekit.execution.base import LocalExecutor
from pipekit.execution.base import PhaseExecutor
from pipekit.hookspecs import hookimpl
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


@hookimpl(trylast=True)
def pipekit_make_executor(config: Config, pipeline: Pipeline, name: str) -> PhaseExecutor | None:
    """The built-in executors."""
    if name == "local":
        return LocalExecutor()
    if name == "processes":
        from pipekit.execution.processes import ProcessExecutor

        return ProcessExecutor(pipeline.path, config.getoption("workers") or 1)
    if name == "dask":
        from pipekit.execution.dask import DaskExecutor

        return DaskExecutor(
            pipeline.path,
            config.getoption("workers") or 1,
            address=config.getoption("dask_scheduler"),
            shared_dir=config.getoption("shared_dir"),
        )
    return None
