"""The built-in ``summary`` plugin: per-phase table, run totals, failures."""

from __future__ import annotations

import pytest

from pipekit.builtin.summary import percentile
from pipekit.testing import PipeTester

from .pipelines import BOOKS


def test_summary_table_per_phase_and_totals(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    result = pipetester.run("pipeline.py", "--item", "good", "--item", "bad", "--progress", "none")
    assert result.ret == 1, result
    result.fnmatch_lines(
        [
            "pipekit: summary of pipeline",
            "phase * executed  completed  failed  skipped   mean    p95  tokens in  tokens out     cost",
            "1 research  * 2 * 2 * 0 * 0 * *s * *s * 0 * 0 * $0.0000",
            "2 draft * 2 * 1 * 1 * 0 * *s * *s * 2,000 * 400 * $0.5000",
            "3 review * 1 * 1 * 0 * 0 * *s * *s * 10 * 5 * $0.5000",
            "total * 5 * 4 * 1 * 0 * *s * *s * 2,010 * 405 * $1.00",
            "books: 2 selected: 1 completed, 1 failed, 0 remaining",
            "wall time *s; tokens 2,010 in / 405 out; cost $1.00 this run",
            "failures (1):",
            "  bad  phase 2 draft: RuntimeError: model refused bad",
        ]
    )
    assert "second line of the error" not in result.stderr
    assert "\x1b" not in result.stderr
    assert "throughput" not in result.stderr


def test_summary_counts_cache_skips_and_earlier_runs(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    pipetester.run("pipeline.py", "--item", "good", "--item", "done")
    again = pipetester.run("pipeline.py", "--item", "good", "--item", "done", "--from-phase", "3", "--item", "new")
    assert again.ret == 0, again
    again.fnmatch_lines(
        [
            "1 research * 1 * 1 * 0 * 0 *",
            "3 review * 3 * 3 * 0 * 0 *",
            "books: 3 selected: 3 completed, 0 failed, 0 remaining",
            "wall time *; cost $1.75 this run + $1.50 in earlier runs = $3.25",
        ]
    )
    pipetester.make_pipeline(BOOKS.replace("@phase(1)", "@phase(1, cache=lambda: True)"))
    cached = pipetester.run("pipeline.py", "--item", "fresh")
    cached.fnmatch_lines(["1 research * 0 * 0 * 0 * 1 * - * - *"])


def test_summary_lists_ten_failures_and_all_with_verbose(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    ids = [f"bad-{n:02d}" for n in range(12)]
    pipetester.make_items(*ids)
    first = pipetester.run("pipeline.py", "--items", "items.txt", "--progress", "none", "-j", "4")
    assert first.stderr.count("RuntimeError: model refused") == 10
    first.fnmatch_lines(["failures (12):", "  ... and 2 more (-v lists them all)"])
    verbose = pipetester.run("pipeline.py", "--items", "items.txt", "--progress", "none", "-j", "4", "-v")
    assert verbose.stderr.count("RuntimeError: model refused") == 12
    verbose.fnmatch_lines(["throughput * phases/min; concurrency reached 4 of -j 4"])


def test_blocked_summary_prints_nothing(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(BOOKS)
    result = pipetester.run("pipeline.py", "--item", "good", "-p", "no:summary")
    assert result.ret == 0
    assert "summary of" not in result.stderr
    assert "[1/1] good completed" in result.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([3.0], 3.0), ([float(n) for n in range(1, 101)], 95.0), ([1.0, 2.0, 10.0], 10.0)],
)
def test_percentile_is_nearest_rank(values: list[float], expected: float | None) -> None:
    assert percentile(values, 95) == expected
