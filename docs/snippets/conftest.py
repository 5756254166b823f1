from __future__ import annotations


# --8<-- [start:all]
pytest_plugins = ["pipekit.testing"]  # the pipetester fixture
# --8<-- [end:all]
