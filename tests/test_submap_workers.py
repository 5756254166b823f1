"""``ctx.map`` in worker processes (``--executor processes``) and on a Dask cluster.

``fn`` runs where the handler runs and that process stores each sub-item
through the run's store: a driver killed in the middle (and, on Dask, the worker
running the handler) loses no finished sub-item and no recorded cost, and the
rerun calls ``fn`` only for the unfinished ones. The handler's progress and
finished sub-items reach the driver's hooks (JSONL) as a local handler's do.

``fn`` logs every call to ``calls.log`` and pays $0.01 for it; the call for c2
waits on its first attempt while the file ``hold`` exists, so a test can kill
the driver with c0 and c1 finished and c2 in flight; the call for an element
with a file ``kill-worker-at-TITLE`` kills its own process (the worker).
"""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING

import pytest

from pipekit.testing import PipeResult
from pipekit.testing import PipeTester


if TYPE_CHECKING:
    from dask_cluster import DaskCluster


pytestmark = pytest.mark.slow

BOOK = '''
    import os, signal, time
    from pathlib import Path
    from pipekit import phase

    HERE = Path(__file__).parent
    TITLES = [f"c{n}" for n in range(6)]

    def chapter(title, ctx):
        ctx.record_cost(tokens_in=100, tokens_out=10, cost_usd=0.01)
        with open(HERE / "calls.log", "a") as log:
            log.write(title + "\\n")
        deadline = time.monotonic() + 60
        while title == "c2" and ctx.attempt == 1 and (HERE / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if (HERE / f"kill-worker-at-{title}").exists():
            (HERE / f"kill-worker-at-{title}").unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"title": title, "text": SIZE * "x"}

    @phase(1)
    def summarise(item_id, ctx):
        ctx.progress(0, 1, label="pages")
        parts = ctx.map(chapter, TITLES, concurrency=1)
        assert all(p["text"] == SIZE * "x" for p in parts), "a result came back changed"
        return [p["title"] for p in parts]
'''

TITLES = [f"c{n}" for n in range(6)]


def book(tester: PipeTester, size: int = 1) -> None:
    tester.make_pipeline(BOOK.replace("SIZE", str(size)))


def calls(tester: PipeTester) -> list[str]:
    log = tester.path / "calls.log"
    found = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return found


def kill_driver_in_c2(tester: PipeTester, args: tuple[str, ...], timeout: float = 120) -> None:
    """Run ``pipekit ARGS`` (with ``hold``) and SIGKILL the driver once its JSONL says
    sub-item 1 finished and c2's call began (it waits there)."""
    (tester.path / "hold").touch()
    proc = tester.popen(*args)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == "subitem_finish" and record.get("key") == "1":
            break
        assert time.monotonic() < deadline, "".join(lines)
    log = tester.path / "calls.log"
    while "c2" not in (log.read_text().split() if log.exists() else []):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "".join(lines)


def map_status(tester: PipeTester) -> str:
    """What ``status --item a`` says of the map: stored by the worker before it reported them."""
    status = tester.run("status", "pipeline.py", "--item", "a")
    return next((line.strip() for line in status.stdout.splitlines() if "map chapter" in line), status.stdout)


def assert_resumed(resumed: PipeResult) -> None:
    assert resumed.ret == 0, resumed
    assert resumed.state("a").phase_outputs[1] == TITLES
    # Seven calls paid for: c0, c1 and c2 (it paid, then waited) before the kill, c2-c5 after.
    phase = resumed.state("a").phases[1]
    assert (phase.tokens_in, phase.tokens_out, round(phase.cost_usd, 6)) == (700, 70, 0.07)
    assert round(resumed.state("a").total_cost_usd, 6) == 0.07
    # Only what this run finished is reported, by the worker, through the driver's hooks.
    finished = sorted(e["key"] for name, e in resumed.events if name == "subitem_finish")
    assert finished == ["2", "3", "4", "5"], finished


def test_a_driver_killed_mid_map_in_a_worker_process_reruns_only_the_unfinished(
    pipetester: PipeTester, any_store: str | None
) -> None:
    book(pipetester)
    kill_driver_in_c2(pipetester, ("pipeline.py", "--item", "a", "--executor", "processes"))
    (pipetester.path / "hold").unlink()
    assert calls(pipetester) == ["c0", "c1", "c2"]
    assert map_status(pipetester) == "map chapter: 2 done, 0 failed, 6 in all"

    resumed = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert calls(pipetester) == ["c2", "c3", "c4", "c5"]
    assert_resumed(resumed)


def test_progress_and_sub_items_of_a_worker_process_reach_the_driver(pipetester: PipeTester) -> None:
    book(pipetester)
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes", "--progress", "simple")
    assert result.ret == 0, result
    progress = [(e["done"], e["total"], e["label"]) for name, e in result.events if name == "phase_progress"]
    assert progress[0] == (0, 1, "pages")
    assert progress[-1] == (6, 6, "chapter")
    finished = [(e["key"], e["status"]) for name, e in result.events if name == "subitem_finish"]
    assert finished == [(str(n), "done") for n in range(6)]
    # Every report came before the phase was recorded.
    names = [name for name, _ in result.events]
    assert names.index("phase_complete") > max(i for i, name in enumerate(names) if name == "subitem_finish")
    assert "sub-items: 6 done, 0 failed" in result.stderr, result.stderr
    assert "[1/1] a phase 1/1 summarise pages 0/1" in result.stderr, result.stderr  # throttled: the first


def test_a_large_sub_item_result_in_a_worker_process_round_trips(pipetester: PipeTester, any_store: str | None) -> None:
    book(pipetester, size=200_000)
    kill_driver_in_c2(pipetester, ("pipeline.py", "--item", "a", "--executor", "processes"))
    (pipetester.path / "hold").unlink()
    calls(pipetester)
    resumed = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert calls(pipetester) == ["c2", "c3", "c4", "c5"]
    assert_resumed(resumed)


# -- Dask: a cluster started apart, as a user's own ---------------------------------------


def on_dask(cluster: DaskCluster) -> tuple[str, ...]:
    return ("pipeline.py", "--item", "a", "--executor", "dask", "--dask-scheduler", cluster.address)


def wait_until_idle(cluster: DaskCluster, timeout: float = 60) -> None:
    """Until no worker of ``cluster`` runs a task (a cancelled one included)."""
    client = cluster._client
    deadline = time.monotonic() + timeout
    while any(client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
        assert time.monotonic() < deadline, "a task still runs on the cluster"
        time.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgresql"])
def dask_store(
    request: pytest.FixtureRequest, pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> str | None:
    from store_urls import store_url_fixture

    fixture = store_url_fixture(request.param, request.getfixturevalue("tmp_path_factory"))
    url = next(fixture)
    request.addfinalizer(lambda: next(fixture, None))
    assert url is not None
    monkeypatch.setenv("PIPEKIT_STORE", url)
    return url


def test_a_driver_killed_mid_map_on_dask_reruns_only_the_unfinished(
    pipetester: PipeTester, dask_cluster: DaskCluster, dask_store: str
) -> None:
    book(pipetester)
    kill_driver_in_c2(pipetester, on_dask(dask_cluster))
    assert calls(pipetester) == ["c0", "c1", "c2"]
    assert map_status(pipetester) == "map chapter: 2 done, 0 failed, 6 in all"

    # The killed run's task still waits in c2 on its worker; the rerun's runs on the other.
    resumed = pipetester.run_subprocess(*on_dask(dask_cluster))
    assert calls(pipetester) == ["c2", "c3", "c4", "c5"]
    assert_resumed(resumed)

    # Released, the orphaned task finishes its c2 and starts no other sub-item: its driver is gone.
    (pipetester.path / "hold").unlink()
    wait_until_idle(dask_cluster)
    assert calls(pipetester) == []


def test_a_dask_worker_killed_mid_map_reruns_only_the_unfinished(
    pipetester: PipeTester, dask_cluster: DaskCluster, dask_store: str
) -> None:
    book(pipetester, size=200_000)  # results kept in the outputs folder, by the worker
    (pipetester.path / "kill-worker-at-c3").touch()
    lost = pipetester.run_subprocess(*on_dask(dask_cluster))
    assert lost.ret == 1, lost
    assert lost.state("a").phases[1].reason == "worker_lost"
    assert calls(pipetester) == ["c0", "c1", "c2", "c3"]
    dask_cluster.wait_for_workers()

    resumed = pipetester.run_subprocess(*on_dask(dask_cluster))
    assert resumed.ret == 0, resumed
    assert calls(pipetester) == ["c3", "c4", "c5"]  # the one the worker died in, and the two never started
    # c0-c3 paid in the lost attempt, c3-c5 now: seven calls, each counted once.
    phase = resumed.state("a").phases[1]
    assert (phase.tokens_in, phase.tokens_out, round(phase.cost_usd, 6)) == (700, 70, 0.07)
    assert round(resumed.state("a").total_cost_usd, 6) == 0.07


def test_progress_and_sub_items_of_a_dask_task_reach_the_driver(
    pipetester: PipeTester, dask_cluster: DaskCluster
) -> None:
    book(pipetester)
    result = pipetester.run_subprocess(*on_dask(dask_cluster))
    assert result.ret == 0, result
    progress = [(e["done"], e["total"], e["label"]) for name, e in result.events if name == "phase_progress"]
    assert progress[0] == (0, 1, "pages") and progress[-1] == (6, 6, "chapter"), progress
    finished = sorted((e["key"], e["status"]) for name, e in result.events if name == "subitem_finish")
    assert finished == [(str(n), "done") for n in range(6)]
    names = [name for name, _ in result.events]
    assert names.index("phase_complete") > max(i for i, name in enumerate(names) if name == "subitem_finish")
    assert "sub-items: 6 done, 0 failed" in result.stderr, result.stderr
