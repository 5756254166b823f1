"""The built-in ``jsonl`` plugin: CONTRACT §6 events on stdout, live."""

from __future__ import annotations

from datetime import datetime
import json
import os
import subprocess
import sys

import pytest

from pipekit.testing import PipeTester

from .pipelines import BOOKS
from .pipelines import CACHED_AND_FLAKY
from .pipelines import GATED


def records(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_events_carry_the_contract_fields(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    result = pipetester.run("pipeline.py", "--item", "good", "--item", "bad", "--jsonl")
    assert result.ret == 1, result
    events = records(result.stdout)  # every stdout line is an event
    names = [e["event"] for e in events]
    assert names[0] == "run_start" and names[-1] == "run_finish"
    assert {"item_start", "phase_start", "phase_complete", "phase_fail", "item_finish"} <= set(names)
    for event in events:
        datetime.fromisoformat(str(event["time"]))
        if str(event["event"]).startswith("phase_"):
            assert {"item_id", "phase", "phase_name"} <= set(event)
    complete = next(e for e in events if e["event"] == "phase_complete" and e["phase"] == 3)
    assert complete["tokens_in"] == 10 and complete["cost_usd"] == 0.5 and complete["attempt"] == 1
    assert isinstance(complete["duration_seconds"], float)
    fail = next(e for e in events if e["event"] == "phase_fail")
    assert fail["item_id"] == "bad" and fail["phase"] == 2 and fail["phase_name"] == "draft"
    assert fail["tokens_in"] == 1000 and fail["cost_usd"] == 0.25 and fail["attempt"] == 1
    assert str(fail["error"]).startswith("RuntimeError: model refused bad")
    finish = events[-1]
    assert finish["exit_status"] == 1
    assert finish["items_completed"] == 1 and finish["items_failed"] == 1
    assert finish["cost_usd"] == 1.0
    assert "reviewing good" in result.stderr  # a handler's print never lands on stdout


def test_retry_reports_the_failed_attempt_and_skip_its_reason(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(CACHED_AND_FLAKY)
    result = pipetester.run("pipeline.py", "--item", "a", "--jsonl")
    events = records(result.stdout)
    skip = next(e for e in events if e["event"] == "phase_skip")
    assert skip["reason"] == "cache" and skip["phase"] == 1
    retry = next(e for e in events if e["event"] == "phase_retry")
    assert retry["attempt"] == 1 and retry["tokens_in"] == 5 and retry["cost_usd"] == 0.01
    assert retry["error"] == "ConnectionError: try again"
    complete = next(e for e in events if e["event"] == "phase_complete")
    assert complete["attempt"] == 2 and complete["tokens_in"] == 5


@pytest.mark.slow
def test_events_are_flushed_as_they_happen(pipetester: PipeTester) -> None:
    """Another program sees phase_start while the phase is still running."""
    pipetester.make_pipeline(GATED)
    release = pipetester.path / "release"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipekit", "run", "pipeline.py", "--item", "x", "--jsonl"],
        cwd=pipetester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RELEASE": str(release)},
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(json.loads(line)["event"])
            if seen[-1] == "phase_start":
                break
        assert seen == ["run_start", "item_start", "phase_start"]
        assert proc.poll() is None  # still waiting in the phase
        release.touch()
        rest, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert [json.loads(line)["event"] for line in rest.splitlines()][-1] == "run_finish"
    assert "handler output for x" in stderr
    assert "handler output" not in rest
