"""A pipeline that is also a plugin: its ``pipekit_*`` hooks run like any plugin's.

    pipekit run examples/plugin/pipeline.py --state-dir .plugin-demo

Each finished item adds a line to ``audit.log`` (``--audit-log`` moves it).
The second way to write a plugin, a module of its own, is ``phase_timer.py``.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timezone
from pathlib import Path
import time
from typing import Any

from pipekit import hookimpl
from pipekit import phase


PIPELINE_NAME = "plugin-demo"
ITEM_NOUN = "words"


def items() -> list[str]:
    """The words to work on."""
    return ["pluggy", "pytest", "pipekit"]


@phase(1)
def measure(item_id: str) -> str:
    """Count the word's letters."""
    time.sleep(0.01)
    return str(len(item_id))


@phase(2)
def shout(item_id: str, measure: str) -> str:
    """Say it loudly."""
    return f"{item_id.upper()} has {measure} letters"


# --8<-- [start:hooks]
@hookimpl
def pipekit_addoption(parser: Any) -> None:
    """An option for this pipeline only."""
    parser.addoption("--audit-log", default="audit.log", metavar="FILE", help="where finished items are logged")


@hookimpl
def pipekit_item_finish(item: Any) -> None:
    """Append one line per finished item: when, which, and how it ended."""
    path = Path(AUDIT_LOG)
    with path.open("a", encoding="utf-8") as log:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"{stamp} {item.id} {item.state.status}\n")


@hookimpl
def pipekit_configure(config: Any) -> None:
    """Read the option once, when the run is configured."""
    global AUDIT_LOG
    AUDIT_LOG = config.getoption("audit_log")


# --8<-- [end:hooks]


AUDIT_LOG = "audit.log"
