"""Running a pipeline from Python; tests/test_docs.py runs this file."""

from __future__ import annotations

# --8<-- [start:run]
from pathlib import Path

import pipekit


HERE = Path(__file__).parent  # the folder of concepts.py
pipeline = pipekit.load(str(HERE / "concepts.py"))
print(pipeline.name, [phase.name for phase in pipeline.phases])

result = pipekit.run(str(HERE / "concepts.py"), ["intro", "faq"], state_dir="concepts-state", progress="none")
print(result.exit_status, result.states["faq"].phases[3].status)
# --8<-- [end:run]
