"""Every command is listed in `pipekit --help` and answers `--help` itself."""

from __future__ import annotations

import pytest

from pipekit.cli.main import COMMANDS
from pipekit.cli.main import TOP_HELP
from pipekit.testing import PipeTester


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_is_listed_and_has_help(pipetester: PipeTester, command: str) -> None:
    assert f"\n  {command} " in TOP_HELP
    result = pipetester.run(command, "--help")
    assert result.ret == 0, result
    assert f"pipekit {command}" in result.stdout
