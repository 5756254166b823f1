"""End-of-run totals on stderr: items, phases, tokens, cost, failures."""

from __future__ import annotations

import sys
from typing import IO

from pipekit.config import Config
from pipekit.hookspecs import hookimpl
from pipekit.runner import Run


#: Failures listed without ``-v``.
FIRST_FAILURES = 10


class Summary:
    """Prints the run's totals when it finishes."""

    name = "summary-reporter"

    def __init__(self, stream: IO[str], verbose: int = 0) -> None:
        self.stream = stream
        self.verbose = verbose

    @hookimpl
    def pipekit_run_finish(self, run: Run, exitstatus: int) -> None:
        noun = run.pipeline.item_noun
        c = run.control
        parts = [f"{run.items_completed} completed"]
        for count, label in (
            (run.items_failed, "failed"),
            (run.items_interrupted, "interrupted"),
            (run.items_busy, "busy elsewhere"),
            (run.items_unreadable, "unreadable state"),
        ):
            if count:
                parts.append(f"{count} {label}")
        if run.items_already_done:
            parts.append(f"{run.items_already_done} already done")
        lines = [
            f"pipekit: {run.total_items} {noun}: {', '.join(parts)}",
            f"pipekit: phases: {c.phases_completed} completed, {c.phases_failed} failed, "
            f"{c.phases_skipped} skipped; tokens {c.tokens_in:,} in / {c.tokens_out:,} out; "
            f"${c.cost_usd:.4f} this run; {run.elapsed_seconds:.1f}s",
        ]
        failures = [
            (item_id, p.phase, p.name, (p.error or "").splitlines()[0] if p.error else "")
            for item_id, state in run.failed_states.items()
            for p in state.phases.values()
            if p.status == "failed"
        ]
        limit = None if self.verbose else FIRST_FAILURES
        for item_id, num, name, error in failures[:limit]:
            lines.append(f"pipekit:   FAILED {item_id} phase {num} {name}: {error}")
        if limit is not None and len(failures) > limit:
            lines.append(f"pipekit:   ... and {len(failures) - limit} more (-v shows all)")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


@hookimpl
def pipekit_configure(config: Config) -> None:
    """Register the summary unless ``-q``."""
    if config.getoption("quiet"):
        return
    summary = Summary(sys.stderr, verbose=config.getoption("verbose") or 0)
    config.pluginmanager.register(summary, Summary.name)
    config.add_cleanup(lambda: config.pluginmanager.unregister(summary))
