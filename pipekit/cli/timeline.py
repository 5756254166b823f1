"""The report's time view: how many phases truly ran at once, where runs began.

A phase runs from its ``started_at`` to its ``completed_at``. Overlaps are
counted by a sweep over those start and end events (a phase ending at ``t``
and one starting at ``t`` do not overlap), never by the time slices a phase
touches. The state keeps no run ids: a stretch of more than ``RUN_GAP_SECONDS``
in which no phase ran is where one run ended and the next began.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone
import html


#: Idle seconds (no phase running) that separate two runs.
RUN_GAP_SECONDS = 2.0
#: Columns of the concurrency chart.
BUCKETS = 120
#: Labelled ticks on a time axis.
TICKS = 6


@dataclass(frozen=True)
class Overlap:
    """Phases running at once over ``t0``..``t1``: the peak, and per bucket the
    most that ran together at any instant of it."""

    peak: int
    buckets: list[int]
    t0: float
    t1: float
    #: ``(end of a run, start of the next)``, in order.
    run_gaps: list[tuple[float, float]]


def overlap(spans: Iterable[tuple[float, float]], buckets: int = BUCKETS) -> Overlap | None:
    """The true overlap of ``(start, end)`` spans (seconds since the epoch);
    None without a span."""
    # A span of no length overlaps nothing; at one instant -1 sorts before +1:
    # a phase ending there and one starting there do not overlap.
    kept = [(start, end) for start, end in spans if end > start]
    events = sorted([(start, 1) for start, _ in kept] + [(end, -1) for _, end in kept])
    if not events:
        return None
    t0, t1 = events[0][0], events[-1][0]
    width = max(t1 - t0, 1e-6) / buckets
    levels = [0] * buckets
    level = peak = 0
    gaps: list[tuple[float, float]] = []
    for index, (moment, delta) in enumerate(events):
        level += delta
        peak = max(peak, level)
        following = events[index + 1][0] if index + 1 < len(events) else moment
        if level == 0 and following - moment > RUN_GAP_SECONDS:
            gaps.append((moment, following))
        if level and following > moment:
            first = min(buckets - 1, int((moment - t0) / width))
            last = min(buckets - 1, max(first, int((following - t0) / width - 1e-9)))
            for bucket in range(first, last + 1):
                levels[bucket] = max(levels[bucket], level)
    return Overlap(peak, levels, t0, t1, gaps)


def ticks(t0: float, t1: float, count: int = TICKS) -> list[tuple[float, str]]:
    """``count`` evenly spaced ``(fraction of the span, label)``: the UTC clock
    time and the time elapsed since ``t0``."""
    span = max(t1 - t0, 0.0)
    marks = []
    for index in range(count):
        fraction = index / (count - 1) if count > 1 else 0.0
        moment = t0 + span * fraction
        marks.append((fraction, f"{clock(moment, seconds=True)} (+{elapsed(moment - t0)})"))
    return marks


def clock(epoch: float, *, seconds: bool = False) -> str:
    """``2026-01-01 12:00:01 UTC``, or with ``seconds`` only ``12:00:01``."""
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%H:%M:%S") if seconds else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def elapsed(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h03m``."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def chart(view: Overlap, height: int = 80) -> str:
    """The concurrency chart: bars per bucket, dashed lines where a run ended and
    the next began, and a time axis below."""
    top = view.peak or 1
    width = 6
    total = len(view.buckets) * width
    span = max(view.t1 - view.t0, 1e-6)
    bars = "".join(
        f'<rect x="{i * width}" y="{height - v * height / top:.1f}" width="{width - 1}" '
        f'height="{v * height / top:.1f}"><title>{v}</title></rect>'
        for i, v in enumerate(view.buckets)
    )
    marks = "".join(
        f'<line class="run-gap" x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}">'
        f"<title>a run ended at {html.escape(clock(end))}; the next began at {html.escape(clock(start))}</title></line>"
        for end, start in view.run_gaps
        for x in (total * ((end + start) / 2 - view.t0) / span,)
    )
    axis = "".join(
        f'<span class="tick" style="left:{100 * fraction:.1f}%">{html.escape(label)}</span>'
        for fraction, label in ticks(view.t0, view.t1)
    )
    return (
        f'<svg class="conc" viewBox="0 0 {total} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="phases running over time">{bars}{marks}</svg>'
        f'<div class="axis">{axis}</div>'
    )
