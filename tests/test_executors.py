"""The same pipeline on every executor: local, a process pool, a Dask cluster."""

from __future__ import annotations

import json
from pathlib import Path
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from pipekit.testing import PipeTester


PIPELINE = '''
    import asyncio, json, os, time
    from pathlib import Path
    from pipekit import phase, PhaseResult

    def log(item_id, name):
        with open(os.path.join(os.environ["EXEC_LOG_DIR"], "executions.log"), "a") as f:
            f.write(json.dumps([item_id, name, os.getpid()]) + "\\n")

    @phase(1)
    def parse(item_id, metadata, ctx):
        log(item_id, "parse")
        ctx.record_cost(tokens_in=10, cost_usd=0.5)
        return f"parsed {item_id} ({metadata.get('pages', 0)} pages)"

    @phase(2, retries=1, retry_backoff=0.01)
    def crunch(item_id, parse, ctx):
        log(item_id, "crunch")
        marker = Path(os.environ["EXEC_LOG_DIR"]) / f"died-{item_id}"
        if item_id == os.environ.get("DIE_ON") and not marker.exists():
            marker.touch()
            os._exit(1)  # the worker dies mid-phase, once
        ctx.executor = ctx.executor or "cruncher"
        return PhaseResult(output=parse.upper() + "x" * int(os.environ.get("BIG", "0")), tokens_out=3)

    @phase(3)
    async def finish(item_id, crunch, previous_outputs):
        log(item_id, "finish")
        await asyncio.sleep(0)
        return f"{len(crunch)}:{sorted(previous_outputs)}"
'''

EXECUTORS = ["local", "processes", "dask"]


def setup(tester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    tester.make_pipeline(PIPELINE)
    tester.make_items(*({"id": f"doc-{n}", "pages": n} for n in range(4)), name="items.jsonl")
    monkeypatch.setenv("EXEC_LOG_DIR", str(tester.path))


def executions(tester: PipeTester) -> list[tuple[str, str]]:
    log = tester.path / "executions.log"
    return [tuple(json.loads(line)[:2]) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize("executor", EXECUTORS)
def test_same_final_state_and_hook_order_on_every_executor(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    setup(pipetester, monkeypatch)
    result = pipetester.run_subprocess("pipeline.py", "--items", "items.jsonl", "-j", "2", "--executor", executor)
    assert result.ret == 0, result
    for n in range(4):
        state = result.state(f"doc-{n}")
        assert state.phase_outputs == {
            1: f"parsed doc-{n} ({n} pages)",
            2: f"PARSED DOC-{n} ({n} PAGES)",
            3: f"{len(f'PARSED DOC-{n} ({n} PAGES)')}:[1, 2]",
        }
        assert (state.total_tokens_in, state.total_tokens_out, state.total_cost_usd) == (10, 3, 0.5)
        assert result.event_names(f"doc-{n}") == [
            "item_start", *["phase_start", "phase_complete"] * 3, "item_finish"
        ]
    assert sorted(executions(pipetester)) == sorted(
        (f"doc-{n}", name) for n in range(4) for name in ("parse", "crunch", "finish")
    ), (pipetester.path / "executions.log").read_text()  # [item, phase, pid]: which worker ran what


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_a_worker_that_dies_fails_only_its_phase_and_is_retried(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    setup(pipetester, monkeypatch)
    monkeypatch.setenv("DIE_ON", "doc-1")
    result = pipetester.run_subprocess("pipeline.py", "--items", "items.jsonl", "-j", "2", "--executor", executor)
    assert result.ret == 0, result
    retries = [p for name, p in result.events if name == "phase_retry"]
    assert [(p["item_id"], p["phase"]) for p in retries] == [("doc-1", 2)]
    assert "died" in retries[0]["error"]
    state = result.state("doc-1")
    assert state.phases[2].attempts == 2 and state.status == "completed"
    # the other items' phases ran exactly once: nothing was resubmitted behind pipekit's back
    runs = executions(pipetester)
    for n in (0, 2, 3):
        assert runs.count((f"doc-{n}", "crunch")) == 1


@pytest.mark.slow
def test_dead_worker_without_retries_fails_the_phase_with_reason_worker_lost(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(pipetester, monkeypatch)
    pipetester.make_pipeline(PIPELINE.replace("retries=1", "retries=0"))
    monkeypatch.setenv("DIE_ON", "doc-2")
    result = pipetester.run_subprocess("pipeline.py", "--items", "items.jsonl", "--executor", "processes")
    assert result.ret == 1, result
    phase = result.state("doc-2").phases[2]
    assert (phase.status, phase.reason) == ("failed", "worker_lost")
    assert "worker process" in (phase.error or "")
    assert result.state("doc-3").status == "completed"


@pytest.mark.slow
def test_process_executor_kills_a_stuck_sync_phase_at_its_timeout_and_retries_it(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import time
        from pathlib import Path
        from pipekit import phase

        @phase(1, timeout=1, retries=1, retry_backoff=0.01)
        def stuck(item_id):
            marker = Path(f"tried-{item_id}")
            if not marker.exists():
                marker.touch()
                time.sleep(60)  # stuck: only killing the process stops it
            return "second attempt"
    ''')
    started = time.monotonic()
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "processes")
    assert time.monotonic() - started < 30
    assert result.ret == 0, result
    phase = result.state("a").phases[1]
    assert (phase.status, phase.attempts) == ("completed", 2)
    assert [p["error"] for n, p in result.events if n == "phase_retry"] == [
        "PhaseTimeoutError: phase 'stuck' timed out after 1s"
    ]


@pytest.mark.slow
def test_resume_after_kill_9_of_the_driver(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    setup(pipetester, monkeypatch)
    killed = pipetester.run_subprocess(
        "pipeline.py", "--items", "items.jsonl", "--executor", "processes", kill_at=("phase_complete", "doc-1", 2)
    )
    assert killed.killed
    resumed = pipetester.run_subprocess("pipeline.py", "--items", "items.jsonl", "--executor", "processes")
    assert resumed.ret == 0, resumed
    runs = executions(pipetester)
    assert runs.count(("doc-0", "parse")) == 1 and runs.count(("doc-1", "crunch")) == 1
    assert all(resumed.state(f"doc-{n}").status == "completed" for n in range(4))


@pytest.mark.slow
def test_large_outputs_come_back_through_the_shared_dir(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(pipetester, monkeypatch)
    monkeypatch.setenv("BIG", str(200_000))
    shared = pipetester.path / "shared"
    result = pipetester.run_subprocess(
        "pipeline.py", "--items", "items.jsonl", "-j", "2", "--executor", "dask", "--shared-dir", str(shared)
    )
    assert result.ret == 0, result
    assert len(result.state("doc-0").phase_outputs[2]) > 200_000
    # The worker reaches the state dir, so the output went to the store; the shared dir holds nothing.
    assert not shared.exists() or list(shared.iterdir()) == []


def test_unknown_executor_is_a_usage_error(pipetester: PipeTester) -> None:
    pipetester.make_pipeline("from pipekit import phase\n@phase(1)\ndef a(): ...\n")
    result = pipetester.run("pipeline.py", "--item", "x", "--executor", "gpu-farm")
    assert result.ret == 4
    assert "unknown --executor 'gpu-farm'" in result.stderr


def test_a_value_that_cannot_travel_back_fails_the_phase_clearly(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        import threading
        from pipekit import phase

        @phase(1)
        def bad(item_id):
            return threading.Lock()
    ''')
    result = pipetester.run("pipeline.py", "--item", "x", "--executor", "processes")
    assert result.ret == 1, result
    # The worker checks the output as the driver stores it, so it says what a local run says.
    assert "phase 'bad' returned _thread.lock, which cannot be stored" in (result.state("x").phases[1].error or "")


@pytest.mark.slow
def test_dask_cluster_start_up_does_not_count_against_the_first_phase_timeout(pipetester: PipeTester) -> None:
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1, timeout=0.5)
        def quick(item_id):
            return item_id
    ''')
    result = pipetester.run_subprocess("pipeline.py", "--item", "a", "--executor", "dask")
    assert result.ret == 0, result
    assert result.state("a").phases[1].status == "completed"
    # The LocalCluster pipekit starts has a dashboard: the run says where.
    assert re.search(r"^pipekit: Dask dashboard: http://\S+:\d+/status$", result.stderr, re.M), result.stderr


@pytest.mark.slow
def test_the_dask_cluster_pipekit_starts_never_runs_a_task_twice(pipetester: PipeTester) -> None:
    # No work stealing (its races can start a task twice) and no rerun of a task whose worker died.
    pipetester.make_pipeline('''
        from pipekit import phase

        @phase(1)
        def one(item_id):
            return item_id
    ''')
    (pipetester.path / "inspect_cluster.py").write_text(textwrap.dedent('''
        import asyncio
        from pipekit.execution.dask import DaskExecutor

        async def main():
            executor = DaskExecutor("pipeline.py", 1)
            await executor.astart()
            scheduler = executor._cluster.scheduler
            print("stealing" in scheduler.extensions, scheduler.allowed_failures)
            await executor.aclose()

        if __name__ == "__main__":
            asyncio.run(main())
    '''))
    out = subprocess.run(
        [sys.executable, "inspect_cluster.py"], cwd=pipetester.path, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["False", "0"], out.stderr


def test_a_worker_without_the_module_file_runs_the_source_the_driver_sent(tmp_path: Path) -> None:
    # As on a worker host where the pipeline's folder does not exist: the driver reads
    # the code, the folder is gone, and a fresh process runs a phase from that code alone.
    project = tmp_path / "project"
    project.mkdir()
    (project / "helpers.py").write_text("GREETING = 'hello'\n")
    (project / "pipeline.py").write_text(textwrap.dedent('''
        from pipekit import phase
        from helpers import GREETING

        @phase(1)
        def greet(item_id):
            return f"{GREETING} {item_id}"
    '''))
    driver = f'''
import pickle, sys
from pipekit.execution.code import capture
from pipekit.pipeline.loader import import_pipeline_module
import_pipeline_module({str(project / "pipeline.py")!r})
sys.stdout.buffer.write(pickle.dumps(capture({str(project / "pipeline.py")!r})))
'''
    code = subprocess.run([sys.executable, "-c", driver], capture_output=True, check=True, cwd=tmp_path).stdout
    shutil.rmtree(project)
    worker = '''
import pickle, sys
from pipekit.execution.remote import RemoteCall, execute_call
code = pickle.loads(sys.stdin.buffer.read())
outcome = execute_call(RemoteCall(code.module_path, "greet", "handler", {"item_id": "a"}, None, code=code))
print(outcome.error or outcome.value)
'''
    out = subprocess.run(
        [sys.executable, "-c", worker], input=code, capture_output=True, cwd=tmp_path, timeout=60
    )
    assert out.stdout.decode().strip() == "hello a", out.stderr.decode()
