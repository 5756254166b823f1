"""``--dask-scheduler``: phases on a long-lived cluster of the user's own, started apart
from pipekit with Dask's default configuration."""

from __future__ import annotations

from dask_cluster import DaskCluster
import pytest

from pipekit.testing import PipeTester


pytestmark = pytest.mark.slow


def run_on(tester: PipeTester, cluster: DaskCluster, *args: str) -> object:
    return tester.run_subprocess("pipeline.py", *args, "--executor", "dask", "--dask-scheduler", cluster.address)


def test_workers_run_the_code_the_driver_fingerprinted(pipetester: PipeTester, dask_cluster: DaskCluster) -> None:
    source = '''
        from pipekit import phase
        from helpers import SUFFIX

        @phase(1)
        def version(item_id):
            return f"{VERSION} {SUFFIX}"
    '''
    pipetester.make_files({"helpers.py": "SUFFIX = 'one'\n"})
    pipetester.make_pipeline(source.replace("{VERSION}", "v1"))
    first = run_on(pipetester, dask_cluster, "--item", "a")
    assert first.ret == 0, first
    assert first.state("a").phase_outputs[1] == "v1 one"
    fingerprint = first.state("a").phases[1].fingerprint

    # The same workers, still holding the first version: the edited module must reach them.
    pipetester.make_pipeline(source.replace("{VERSION}", "v2"))
    second = run_on(pipetester, dask_cluster, "--item", "a", "--rerun-stale")
    assert second.ret == 0, second
    assert second.state("a").phase_outputs[1] == "v2 one"
    assert second.state("a").phases[1].fingerprint != fingerprint

    # So must a module of the same folder that the pipeline imports.
    pipetester.make_files({"helpers.py": "SUFFIX = 'two'\n"})
    third = run_on(pipetester, dask_cluster, "--item", "a", "--force")
    assert third.ret == 0, third
    assert third.state("a").phase_outputs[1] == "v2 two"
