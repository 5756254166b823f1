"""``@phase(resources=...)`` and ``--resources`` on the local and processes executors.

The phases record when they ran into a file; a phase meant to overlap another
waits until a second one has started (a barrier), so "they overlap" never
depends on the machine's speed, and "they never overlap" is checked on
intervals that would overlap if the cap were not there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

import pipekit
from pipekit.outcomes import UsageError
from pipekit.pipeline.resources import ResourcePool
from pipekit.pipeline.resources import parse_resources
from pipekit.testing import PipeTester


GPU_PIPELINE = '''
    import json, os, time
    from pathlib import Path
    from pipekit import phase

    HERE = Path(__file__).parent

    def record(name, item_id, start):
        with open(HERE / "times.log", "a") as f:
            f.write(json.dumps([name, item_id, start, time.time()]) + "\\n")

    @phase(1)
    def cheap(item_id):
        start = time.time()
        (HERE / f"started-{item_id}").touch()
        while len(list(HERE.glob("started-*"))) < BARRIER and time.time() < start + 20:
            time.sleep(0.01)  # until a second cheap phase runs beside this one
        time.sleep(0.05)
        record("cheap", item_id, start)
        return "cheap"

    @phase(2, resources=NEEDS)
    def gpu(item_id):
        start = time.time()
        time.sleep(0.1)
        record("gpu", item_id, start)
        return "gpu"
'''


def intervals(tester: PipeTester, name: str) -> list[tuple[float, float]]:
    log = tester.path / "times.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sorted((start, end) for phase, _, start, end in map(json.loads, lines) if phase == name)


def overlaps(spans: list[tuple[float, float]]) -> int:
    spans = sorted(spans)
    return sum(1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False) if start < end)


def gpu_pipeline(tester: PipeTester, needs: str = '{"GPU": 1}', barrier: int = 1) -> None:
    """The pipeline above; its cheap phase waits until ``barrier`` of them have started."""
    tester.make_pipeline(GPU_PIPELINE.replace("NEEDS", needs).replace("BARRIER", str(barrier)))
    tester.make_items(*[f"item{n}" for n in range(8)])


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "processes"])
def test_a_gpu_phase_runs_one_at_a_time_while_cheap_phases_overlap(pipetester: PipeTester, executor: str) -> None:
    gpu_pipeline(pipetester, barrier=2)
    result = pipetester.run_subprocess(
        "pipeline.py", "--items", "items.txt", "-j", "8", "--executor", executor, "--resources", "GPU=1"
    )
    assert result.ret == 0, result
    gpu, cheap = intervals(pipetester, "gpu"), intervals(pipetester, "cheap")
    assert len(gpu) == len(cheap) == 8
    assert overlaps(gpu) == 0, gpu
    assert overlaps(cheap) >= 1, cheap
    assert "waited: " in result.stderr and "resource 'GPU'" in result.stderr


def test_amounts_share_what_the_machine_declares(pipetester: PipeTester) -> None:
    gpu_pipeline(pipetester, '{"MEM": 2}')
    result = pipetester.run("pipeline.py", "--items", "items.txt", "-j", "8", "--resources", "MEM=4,GPU=1")
    assert result.ret == 0, result
    spans = intervals(pipetester, "gpu")
    assert len(spans) == 8
    at_once = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert at_once <= 2, spans  # 4 MEM, 2 each


def test_a_phase_needing_an_undeclared_resource_is_a_usage_error_before_any_item_runs(
    pipetester: PipeTester,
) -> None:
    gpu_pipeline(pipetester, '{"GPU": 1, "TPU": 1}')
    result = pipetester.run("pipeline.py", "--items", "items.txt", "-j", "8", "--resources", "GPU=1")
    assert result.ret == 4, result
    assert "phase 'gpu' needs resource 'TPU', which this machine does not declare" in result.stderr
    assert "declared: GPU=1" in result.stderr
    assert not (pipetester.path / "times.log").exists()  # not even the cheap phase ran
    assert not any(result.has_state(f"item{n}") for n in range(8))

    result = pipetester.run("pipeline.py", "--items", "items.txt", "--resources", "GPU=0.5,TPU=1")
    assert result.ret == 4, result
    assert "phase 'gpu' needs GPU=1, TPU=1, more than this machine declares" in result.stderr
    assert not (pipetester.path / "times.log").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("GPU=many", "argument --resources: GPU=many: the amount must be a positive number"),
        ("GPU=0", "argument --resources: GPU=0: the amount must be a positive number"),
        ("GPU", "argument --resources: 'GPU' is not NAME=AMOUNT"),
        ("GPU=1,GPU=2", "argument --resources: GPU is given twice"),
    ],
)
def test_a_bad_resources_option_is_a_usage_error_naming_it(
    pipetester: PipeTester, option: str, message: str
) -> None:
    gpu_pipeline(pipetester)
    result = pipetester.run("pipeline.py", "--item", "a", "--resources", option)
    assert result.ret == 4, result
    assert message in result.stderr


def test_repeated_resources_options_add_up_and_a_name_twice_is_an_error(pipetester: PipeTester) -> None:
    gpu_pipeline(pipetester, '{"GPU": 1, "MEM": 8}')
    result = pipetester.run("pipeline.py", "--item", "a", "--resources", "GPU=1", "--resources", "MEM=16")
    assert result.ret == 0, result
    result = pipetester.run("pipeline.py", "--item", "b", "--resources", "GPU=1", "--resources", "GPU=2")
    assert result.ret == 4, result
    assert "--resources: GPU is given twice" in result.stderr


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        ('{"GPU": 0}', "@phase(2) gpu: resource 'GPU' needs a positive number, not 0"),
        ('{"GPU": True}', "@phase(2) gpu: resource 'GPU' needs a positive number, not True"),
        ('{"GPU": "1"}', "@phase(2) gpu: resource 'GPU' needs a positive number, not '1'"),
        ('["GPU"]', "@phase(2) gpu: resources must be a dict of names to amounts"),
        ('{"": 1}', "@phase(2) gpu: resource name '' must be a non-empty string"),
        ('{"GPU,MEM": 1}', "@phase(2) gpu: resource name 'GPU,MEM' must be a non-empty string without ','"),
    ],
)
def test_bad_resources_in_a_declaration_name_the_phase(pipetester: PipeTester, needs: str, message: str) -> None:
    gpu_pipeline(pipetester, needs)
    result = pipetester.run("pipeline.py", "--item", "a", "--resources", "GPU=1")
    assert result.ret == 4, result
    assert message in result.stderr


def test_declaring_resources_does_not_make_completed_phases_stale(pipetester: PipeTester) -> None:
    gpu_pipeline(pipetester, "None")
    first = pipetester.run("pipeline.py", "--item", "a")
    assert first.ret == 0, first
    gpu_pipeline(pipetester, '{"GPU": 1}')
    second = pipetester.run("pipeline.py", "--item", "a", "--resources", "GPU=1", "--rerun-stale")
    assert second.ret == 0, second
    assert len(intervals(pipetester, "gpu")) == 1  # not run again
    assert second.state("a").phases[2].fingerprint == first.state("a").phases[2].fingerprint


def test_the_library_takes_resources_as_a_dict(pipetester: PipeTester) -> None:
    gpu_pipeline(pipetester)
    result = pipekit.run(
        pipetester.path / "pipeline.py", ["a", "b"], state_dir=pipetester.path / "state", workers=2,
        resources={"GPU": 1}, progress="none",
    )
    assert result.exit_status == 0
    assert overlaps(intervals(pipetester, "gpu")) == 0
    with pytest.raises(UsageError, match="phase 'gpu' needs resource 'GPU'"):
        pipekit.run(pipetester.path / "pipeline.py", ["c"], state_dir=pipetester.path / "state", progress="none")


def test_parse_resources_reads_names_and_amounts() -> None:
    assert parse_resources("GPU=1, MEM=4.5") == {"GPU": 1, "MEM": 4.5}
    assert isinstance(parse_resources("GPU=2")["GPU"], int)
    for bad in ("", "=1", "GPU=", "GPU=-1", "GPU=inf", "GPU=nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_resources(bad)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.dictionaries(st.sampled_from("ABC"), st.integers(1, 4), min_size=1),
    needs=st.lists(st.dictionaries(st.sampled_from("ABC"), st.integers(1, 4), min_size=1), min_size=1, max_size=12),
)
def test_a_pool_never_lends_more_than_it_has_and_every_phase_gets_its_turn(
    capacity: dict[str, int], needs: list[dict[str, int]]
) -> None:
    needs = [n for n in needs if all(capacity.get(k, 0) >= v for k, v in n.items())]  # what could ever run

    async def scenario() -> list[dict[str, float]]:
        pool = ResourcePool(capacity)
        lowest: list[dict[str, float]] = []

        async def one(want: dict[str, int]) -> None:
            await pool.take(want)
            lowest.append(dict(pool.free))
            await asyncio.sleep(0)
            pool.give_back(want)

        await asyncio.wait_for(asyncio.gather(*(one(n) for n in needs)), timeout=5)
        assert pool.free == capacity
        return lowest

    for free in asyncio.run(scenario()):
        assert all(amount >= 0 for amount in free.values()), free


def test_a_cancelled_wait_holds_nothing() -> None:
    async def scenario() -> None:
        pool = ResourcePool({"GPU": 1})
        await pool.take({"GPU": 1})
        waiting = asyncio.ensure_future(pool.take({"GPU": 1}))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.wait({waiting})
        pool.give_back({"GPU": 1})
        assert pool.free == {"GPU": 1}
        await asyncio.wait_for(pool.take({"GPU": 1}), timeout=1)

    asyncio.run(scenario())


def test_resources_with_the_dask_executor_are_a_usage_error(pipetester: PipeTester) -> None:
    pytest.importorskip("distributed")
    gpu_pipeline(pipetester)
    result = pipetester.run("pipeline.py", "--item", "a", "--executor", "dask", "--resources", "GPU=1")
    assert result.ret == 4, result
    assert "with --executor dask each worker declares its own (dask worker --resources GPU=1)" in result.stderr
    assert not Path(pipetester.path / "times.log").exists()
