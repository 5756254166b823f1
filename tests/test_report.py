"""`pipekit report`: one self-contained HTML file, checked in a real (headless) browser."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from datetime import timezone
from html.parser import HTMLParser
from pathlib import Path
import re
import shutil
import subprocess
import tempfile

from batch_helpers import make_batch
from batch_helpers import state_dir
import pytest

from pipekit.cli.report import render_report
from pipekit.cli.target import Target
from pipekit.pipeline.loader import load
from pipekit.state.jsondir import JsonDirStore
from pipekit.state.model import PhaseState
from pipekit.state.model import PipelineState
from pipekit.testing import PipeTester


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")


def chromium(page: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` (as root: no sandbox); returns stdout."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                *args,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class Resources(HTMLParser):
    """Collects every URL the page would fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_report_is_one_self_contained_file(pipetester: PipeTester) -> None:
    make_batch(pipetester, "a", "b-c", "bad-1", "<script>alert(1)</script>")
    result = pipetester.run("report", "pipeline.py", "-o", "report.html")
    assert result.ret == 0, result
    assert result.stdout == "wrote report.html (4 items)\n"
    page = (pipetester.path / "report.html").read_text()
    parser = Resources()
    parser.feed(page)
    assert parser.urls == []
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the cost table, escaped
    assert "RuntimeError: draft broke on bad-1" in page
    assert "Traceback (most recent call last)" in page
    assert re.search(r"<h2>Failures \(1\)</h2>", page)


def test_report_needs_an_output_and_a_pipeline(pipetester: PipeTester) -> None:
    make_batch(pipetester, "a")
    missing = pipetester.run("report", "pipeline.py")
    assert missing.ret == 4 and "-o report.html" in missing.stderr, missing
    corrupt = state_dir(pipetester) / "a.json"
    corrupt.write_text("[]")
    named = pipetester.run("report", "pipeline.py", "-o", "r.html")
    assert named.ret == 4 and f"corrupt state file {corrupt}" in named.stderr, named
    assert corrupt.read_text() == "[]"


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_chromium(pipetester: PipeTester) -> None:
    make_batch(pipetester)
    pipetester.run("report", "pipeline.py", "-o", "report.html")
    page = pipetester.path / "report.html"
    dom = chromium(page, "--dump-dom")
    assert 'data-rendered="yes"' in dom
    matrix = dom.split('id="matrix"')[1].split("</table>")[0]
    assert [re.sub("<.*?>", "", m) for m in re.findall(r'<td class="id">.*?</td>', matrix)] == [
        "a",
        "b-c",
        "bad-1",
        "meh",
    ]
    assert matrix.count("dot s-failed") == 2 and matrix.count("dot s-skipped") == 1
    timeline = dom.split('id="timeline"')[1].split("</section>")[0]
    assert timeline.count('class="tl-row"') == 4
    assert timeline.count("tl-bar s-failed") == 2
    assert "page 1 of 1 (4 of 4 items)" in dom
    shot = pipetester.path / "report.png"
    chromium(page, f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def synthetic_states(count: int) -> list[PipelineState]:
    """``count`` items of a three-phase pipeline, as a long run would leave them."""
    states = []
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(count):
        phases = {}
        for num, name in ((1, "research"), (2, "draft"), (3, "review")):
            start = t0 + timedelta(seconds=i * 0.5 + num)
            failed = num == 2 and i % 97 == 0
            phases[num] = PhaseState(
                phase=num,
                name=name,
                status="failed" if failed else ("pending" if num == 3 and i % 97 == 0 else "completed"),
                started_at=None if num == 3 and i % 97 == 0 else start.isoformat(),
                completed_at=None if num == 3 and i % 97 == 0 else (start + timedelta(seconds=0.9)).isoformat(),
                duration_seconds=0.9,
                cost_usd=0.001 * num,
                attempts=1,
                error="RuntimeError: boom" if failed else None,
                reason="error" if failed else None,
            )
        state = PipelineState(
            item_id=f"book-{i}",
            metadata={},
            status="completed",
            current_phase=3,
            started_at=t0.isoformat(),
            last_updated=t0.isoformat(),
            phases=phases,
            total_cost_usd=sum(p.cost_usd for p in phases.values()),
        )
        states.append(state)
    return states


@pytest.mark.slow
@needs_chromium
def test_five_thousand_items_stay_usable(pipetester: PipeTester) -> None:
    # 5,000 state files cost more to create than to report on: the states are
    # built in memory; reading many files is what benchmarks/status_bench.py measures.
    path = pipetester.make_pipeline(__import__("batch_helpers").BATCH)
    target = Target(load(str(path)), JsonDirStore(state_dir(pipetester)))
    page = pipetester.path / "big.html"
    page.write_text(render_report(target, synthetic_states(5000), []))
    assert page.stat().st_size < 3_000_000
    dom = chromium(page, "--dump-dom")
    assert "page 1 of 50 (5000 of 5000 items)" in dom
    matrix = dom.split('id="matrix"')[1].split("</table>")[0]
    assert matrix.count('<td class="id">') == 100
    assert "<h2>Failures (52)</h2>" in dom


def test_report_counts_as_the_run_does_and_shows_previews(pipetester: PipeTester) -> None:
    import json as _json

    from pipekit.cli.timeline import overlap

    ran = make_batch(pipetester)
    assert "3 completed (1 with errors), 1 failed" in ran.stderr, ran
    status = pipetester.run("status", "pipeline.py")
    assert "3 completed (1 with errors), 1 failed" in status.stdout, status
    (pipetester.path / "all.txt").write_text("a\nb-c\nbad-1\nmeh\nnew-1\n")
    result = pipetester.run("report", "pipeline.py", "-o", "report.html", "--items", "all.txt")
    assert result.ret == 0 and result.stdout == "wrote report.html (5 items)\n", result
    page = (pipetester.path / "report.html").read_text()
    assert re.search(r'id="card-completed"><b>3</b><span>completed \(1 with errors\)', page), page
    assert re.search(r'id="card-failed"><b>1</b>', page) and re.search(r'id="card-pending"><b>1</b>', page)
    data = _json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page).group(1))
    rows = {row[0]: row for row in data["rows"]}
    assert rows["a"][4][0][3] == "notes on a" and rows["new-1"][1] == "pending"
    peak = re.search(r"peak (\d+)", page)
    assert peak is not None and peak.group(1) == "1", page[page.find("Phases running"):][:300]  # -j 1: one at a time
    assert 'class="tick"' in page
    # A phase ending at t and one starting at t do not overlap; a long idle stretch separates runs.
    assert overlap([(0.0, 1.0), (1.0, 2.0), (1.0, 2.0)]).peak == 2  # type: ignore[union-attr]
    assert overlap([(0.0, 1.0), (1.0, 2.0)]).peak == 1  # type: ignore[union-attr]
    assert overlap([(0.0, 1.0), (10.0, 11.0)]).run_gaps == [(1.0, 10.0)]  # type: ignore[union-attr]


@pytest.mark.slow
def test_report_names_an_interrupted_item(pipetester: PipeTester) -> None:
    import signal

    pipetester.make_pipeline(__import__("batch_helpers").BATCH)
    (pipetester.path / "hang-b").touch()
    killed = pipetester.run_subprocess(
        "run", "pipeline.py", "--item", "b", "--progress", "none",
        kill_at=("phase_start", "b", 1), signal=signal.SIGKILL,
    )
    assert killed.killed, killed
    pipetester.run("report", "pipeline.py", "-o", "r.html")
    page = (pipetester.path / "r.html").read_text()
    assert "interrupted: no process runs it" in page
    assert re.search(r'id="card-in_progress"><b>1</b><span>in progress \(0 running, 1 interrupted\)', page), page
