"""A short crash campaign: SIGKILL at random moments, resume, nothing lost or paid twice.

The long variant is ``python benchmarks/crash_campaign.py --kills 500``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
import sys
from types import ModuleType

import pytest


def load_campaign() -> ModuleType:
    path = Path(__file__).parents[1] / "benchmarks" / "crash_campaign.py"
    spec = importlib.util.spec_from_file_location("crash_campaign", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_campaign"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["crash_campaign"]
    return module


@pytest.mark.slow
def test_thirty_random_kills_lose_nothing_and_repeat_no_completed_phase(tmp_path: Path) -> None:
    campaign = load_campaign()
    report = campaign.run_campaign(tmp_path, 30, items=2, phases=6, seed=3, max_seconds=300)
    assert report.problems == []
    assert report.kills == 30
    assert report.torn_files == 0
    assert report.reexecuted_completed == 0
    assert report.unexpected_reruns == 0
    assert report.damaged_outputs == 0
    assert report.ok


def test_the_campaign_checker_notices_a_torn_file_and_a_repeated_phase(tmp_path: Path) -> None:
    """The checks can fail: damage a finished round by hand and look."""
    campaign = load_campaign().Campaign(tmp_path, items=1, phases=3)
    proc = campaign._start()
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert campaign.check(killed=False)
    assert campaign.report.ok
    item = campaign.items[0]
    with campaign.log.open("a") as log:
        log.write(f'["{item}", 2, 1]\n')
    state_file = next(campaign.state_dir.glob("*.json"))
    state_file.write_text(state_file.read_text()[:50])
    campaign.check(killed=True)
    assert campaign.report.torn_files >= 2  # the raw parse and the load
    assert campaign.report.reexecuted_completed == 1
    assert not campaign.report.ok


@pytest.mark.slow
def test_kills_among_three_processes_sharing_one_sqlite_database_lose_nothing(tmp_path: Path) -> None:
    report = load_campaign().run_campaign(
        tmp_path, 12, items=4, phases=6, store="sqlite", processes=3, seed=5, max_seconds=120
    )
    assert report.problems == []
    assert report.kills == 12
    assert report.concurrent_executions == 0
    assert report.ok
