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


KILLS_ITS_WORKER = '''
    import os, signal
    from pathlib import Path
    from pipekit import phase

    HERE = Path(__file__).parent

    @phase(1, retries=RETRIES, retry_backoff=0.01)
    def fragile(item_id):
        with open(HERE / "executions.log", "a") as log:
            log.write(f"{os.getpid()}\\n")
        marker = HERE / "killed"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-phase
        return "survived"
'''


def executions(tester: PipeTester) -> int:
    log = tester.path / "executions.log"
    return len(log.read_text().split()) if log.exists() else 0


def test_a_lost_worker_is_a_failed_attempt_not_a_silent_rerun(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    pipetester.make_pipeline(KILLS_ITS_WORKER.replace("RETRIES", "0"))
    result = run_on(pipetester, dask_cluster, "--item", "a")
    dask_cluster.wait_for_workers()
    assert result.ret == 1, result
    phase = result.state("a").phases[1]
    assert (phase.status, phase.reason, phase.attempts) == ("failed", "worker_lost", 1), phase
    assert executions(pipetester) == 1  # paid once, and the state says so


def test_a_lost_worker_is_retried_by_the_phase_retries(pipetester: PipeTester, dask_cluster: DaskCluster) -> None:
    pipetester.make_pipeline(KILLS_ITS_WORKER.replace("RETRIES", "1"))
    result = run_on(pipetester, dask_cluster, "--item", "a")
    dask_cluster.wait_for_workers()
    assert result.ret == 0, result
    state = result.state("a")
    assert (state.phases[1].status, state.phases[1].attempts) == ("completed", 2)
    assert state.phase_outputs[1] == "survived"
    assert executions(pipetester) == 2
    retries = [payload for name, payload in result.events if name == "phase_retry"]
    assert len(retries) == 1 and "died" in retries[0]["error"]


def test_a_phase_timeout_counts_from_the_handler_start_not_from_the_queue(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    pipetester.make_pipeline('''
        import time
        from pipekit import phase

        @phase(1, timeout=1.5)
        def wait(item_id, metadata):
            time.sleep(metadata["seconds"])
            return "done"
    ''')
    # Eight 0.5 s phases on two worker threads: the last ones wait 1.5 s in the queue.
    items = [{"id": f"quick-{n}", "seconds": 0.5} for n in range(8)]
    pipetester.make_items(*items, {"id": "slow", "seconds": 2.5}, name="items.jsonl")
    result = run_on(pipetester, dask_cluster, "--items", "items.jsonl", "-j", "9")
    assert result.ret == 1, result
    for item in items:
        assert result.state(item["id"]).phases[1].status == "completed", result.state(item["id"]).phases[1]
    slow = result.state("slow").phases[1]
    assert (slow.status, slow.reason) == ("failed", "timeout")
