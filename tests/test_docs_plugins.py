"""The plugin and test shown in docs/plugins.md work as shown."""

from __future__ import annotations

from pathlib import Path
import re

import pytest

from pipekit.testing import PipeTester


DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def examples() -> dict[str, str]:
    """Code blocks preceded by ``<!-- example: FILE -->``, by file name."""
    found = re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    return dict(found)


def test_the_documented_plugin_and_its_test_work(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    code = examples()
    assert set(code) == {"pipekit_slowest.py", "test_slowest.py"}
    (pipetester.path / "pipekit_slowest.py").write_text(code["pipekit_slowest.py"])
    monkeypatch.syspath_prepend(str(pipetester.path))
    namespace: dict[str, object] = {}
    exec(compile(code["test_slowest.py"], str(DOC), "exec"), namespace)
    namespace["test_slowest_names_the_slowest_phase"](pipetester)  # type: ignore[operator]
