from __future__ import annotations

# In a repository of its own, a plugin's top-level conftest says
# ``pytest_plugins = ["pipekit.testing"]``; here the tests also run from pipekit's
# root, where pytest allows that only in the top-level conftest, so import the fixture.
from pipekit.testing import pipetester  # noqa: F401
