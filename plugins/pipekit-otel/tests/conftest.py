from __future__ import annotations

import os

import pytest

# In a repository of its own, a plugin's top-level conftest says
# ``pytest_plugins = ["pipekit.testing"]``; here the tests also run from pipekit's
# root, where pytest allows that only in the top-level conftest, so import the fixture.
from pipekit.testing import pipetester  # noqa: F401


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set the OTEL_* variables they mean; none leak in from the machine."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
