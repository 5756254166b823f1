"""``--dask-scheduler``: phases on a long-lived cluster of the user's own, started apart
from pipekit with Dask's default configuration."""

from __future__ import annotations

import json

from dask_cluster import DaskCluster
import pytest

from pipekit.testing import PipeResult
from pipekit.testing import PipeTester


pytestmark = pytest.mark.slow


def run_on(
    tester: PipeTester, cluster: DaskCluster, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> PipeResult:
    return tester.run_subprocess(
        "pipeline.py", *args, "--executor", "dask", "--dask-scheduler", cluster.address, env=env, timeout=timeout
    )


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


def test_task_keys_name_the_pipeline_item_and_phase_and_differ_per_attempt_and_run(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    pipetester.make_pipeline('''
        from pathlib import Path
        from distributed import get_worker
        from pipekit import phase

        PIPELINE_NAME = "books"
        HERE = Path(__file__).parent

        @phase(1, retries=1, retry_backoff=0.01)
        def summarise(item_id, ctx):
            key = get_worker().get_current_task()
            with open(HERE / "keys.log", "a") as log:
                log.write(f"{ctx.attempt} {key!r}\\n")
            if ctx.attempt % 2:
                raise RuntimeError("every first attempt of a run fails")
            return "ok"
    ''')
    first = run_on(pipetester, dask_cluster, "--item", "chapter one")
    assert first.ret == 0, first
    second = run_on(pipetester, dask_cluster, "--item", "chapter one", "--force")
    assert second.ret == 0, second
    lines = (pipetester.path / "keys.log").read_text().splitlines()
    keys = [line.split(" ", 1)[1] for line in lines]
    assert len(keys) == 4 and len(set(keys)) == 4, keys  # two attempts in each of two runs
    for line in lines:
        attempt, key = line.split(" ", 1)
        assert key.startswith(f"('books.summarise', 'chapter one', {attempt}, 'pipekit-"), key


def test_a_scheduler_file_names_the_cluster(pipetester: PipeTester, dask_cluster: DaskCluster) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1)
        def echo(item_id):
            return item_id
    ''')
    scheduler_file = str(dask_cluster.folder / "scheduler.json")
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "dask",
                                       "--scheduler-file", scheduler_file)
    assert result.ret == 0, result
    assert result.state("a").phase_outputs[1] == "a"
    assert "dashboard" not in result.stderr  # this scheduler runs none

    missing = pipetester.path / "nowhere.json"
    result = pipetester.run_subprocess("pipeline.py", "--item", "b", "--executor", "dask",
                                       "--scheduler-file", str(missing), timeout=30)
    assert result.ret == 4, result
    assert f"--scheduler-file {missing}: no such file" in result.stderr


ENV_PIPELINE = '''
    import os
    from pipekit import phase

    AT_IMPORT = os.environ.get("PIPEKIT_TEST_TOKEN_NAME")  # read when the module loads

    @phase(1)
    def token(item_id):
        value = os.environ.get("PIPEKIT_TEST_TOKEN_NAME", "")
        return f"{AT_IMPORT == value} {len(value)}"
'''


def test_env_forwards_named_variables_to_workers_without_printing_them(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    name = "PIPEKIT_TEST_TOKEN_FORWARDED"  # unique: the module's workers outlive this test
    pipetester.make_pipeline(ENV_PIPELINE.replace("PIPEKIT_TEST_TOKEN_NAME", name))
    secret = "s3cr3t-value-9f8e7d"
    result = run_on(pipetester, dask_cluster, "--item", "a", "--env", name, "-v", env={name: secret})
    assert result.ret == 0, result
    assert result.state("a").phase_outputs[1] == f"True {len(secret)}"
    assert secret not in result.stdout + result.stderr

    missing = "PIPEKIT_TEST_TOKEN_NEVER_SET"
    result = run_on(pipetester, dask_cluster, "--item", "b", "--env", name, "--env", missing, env={name: secret})
    assert result.ret == 4, result
    assert f"--env {missing}: not set" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_a_notebook_client_runs_the_phases_and_stays_open(pipetester: PipeTester, dask_cluster: DaskCluster) -> None:
    import asyncio

    from distributed import Client

    import pipekit

    pipetester.make_pipeline('''
        from distributed import get_worker
        from pipekit import phase

        @phase(1)
        def where(item_id):
            return get_worker().address
    ''')
    workers = set(dask_cluster._client.scheduler_info(n_workers=-1)["workers"])
    with Client(dask_cluster.address) as client:  # synchronous, as in a notebook cell
        result = pipekit.run(pipetester.path / "pipeline.py", ["a", "b"], state_dir=pipetester.path / "state",
                             client=client, progress="none")
        assert result.exit_status == 0
        assert {state.phase_outputs[1] for state in result.states.values()} <= workers
        assert client.status == "running" and client.submit(sum, [1, 2]).result() == 3

    async def in_a_loop() -> None:
        async with Client(dask_cluster.address, asynchronous=True) as client:
            result = await pipekit.arun(pipetester.path / "pipeline.py", ["c"], state_dir=pipetester.path / "state",
                                        client=client, progress="none")
            assert result.exit_status == 0
            assert result.states["c"].phase_outputs[1] in workers
            assert client.status == "running" and await client.submit(sum, [1, 2]) == 3

    asyncio.run(in_a_loop())


PLACED = '''
    import json, time
    from pathlib import Path
    from distributed import get_worker
    from pipekit import phase

    HERE = Path(__file__).parent

    def record(name, item_id):
        with open(HERE / "workers.log", "a") as f:
            f.write(json.dumps([name, item_id, get_worker().address]) + "\\n")

    @phase(1)
    def cheap(item_id):
        record("cheap", item_id)
        (HERE / f"started-{item_id}").touch()
        deadline = time.time() + 20
        while len(list(HERE.glob("started-*"))) < 2 and time.time() < deadline:
            time.sleep(0.01)  # until the other worker runs a cheap phase too
        return "cheap"

    @phase(2, resources={"GPU": 1})
    def gpu(item_id):
        record("gpu", item_id)
        return "gpu"
'''


def test_a_gpu_phase_runs_only_on_the_worker_started_with_a_gpu(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    pipetester.make_pipeline(PLACED)
    pipetester.make_items(*[f"item{n}" for n in range(4)])
    result = run_on(pipetester, dask_cluster, "--items", "items.txt", "-j", "4")
    assert result.ret == 0, result
    held = dask_cluster.worker_resources()
    gpu_workers = {address for address, resources in held.items() if resources.get("GPU")}
    assert len(gpu_workers) == 1 and len(held) == 2, held
    ran: dict[str, set[str]] = {"cheap": set(), "gpu": set()}
    counts = {"cheap": 0, "gpu": 0}
    for line in (pipetester.path / "workers.log").read_text().splitlines():
        name, _, address = json.loads(line)
        ran[name].add(address)
        counts[name] += 1
    assert counts == {"cheap": 4, "gpu": 4}
    assert ran["gpu"] == gpu_workers
    assert ran["cheap"] == set(held)  # cheap phases on both workers


def test_a_resource_no_worker_has_is_a_usage_error_naming_it(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    pipetester.make_pipeline(PLACED.replace('{"GPU": 1}', '{"GPU": 1, "TPU": 1}'))
    result = run_on(pipetester, dask_cluster, "--item", "a", timeout=60)
    assert result.ret == 4, result
    assert "phase 'gpu' needs resource 'TPU', which no worker of the Dask cluster has" in result.stderr
    assert not (pipetester.path / "workers.log").exists()  # no phase ran

    pipetester.make_pipeline(PLACED.replace('{"GPU": 1}', '{"GPU": 2}'))
    result = run_on(pipetester, dask_cluster, "--item", "a", timeout=60)
    assert result.ret == 4, result
    assert "phase 'gpu' needs GPU=2, more than any one worker of the Dask cluster has" in result.stderr
