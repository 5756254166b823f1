"""A command's configuration: parsed options, the plugin manager, the cleanup stack."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import sys
from typing import IO
from typing import TYPE_CHECKING
from typing import Any

import pluggy

from pipekit.outcomes import UsageError


if TYPE_CHECKING:
    from pipekit.pipeline.loader import Pipeline


class OptionGroup:
    """A titled group of options in ``--help``, as pytest's ``OptionGroup``."""

    def __init__(self, group: Any) -> None:
        self._group = group

    def addoption(self, *flags: str, **kwargs: Any) -> None:
        """Add an option; arguments are those of ``argparse.add_argument``."""
        self._group.add_argument(*flags, **kwargs)


class Parser:
    """What ``pipekit_addoption`` receives: ``addoption`` and ``getgroup``."""

    def __init__(self, argparser: argparse.ArgumentParser) -> None:
        self._argparser = argparser
        self._groups: dict[str, OptionGroup] = {}

    def addoption(self, *flags: str, **kwargs: Any) -> None:
        """Add an option; arguments are those of ``argparse.add_argument``."""
        try:
            self._argparser.add_argument(*flags, **kwargs)
        except argparse.ArgumentError as exc:
            raise UsageError(f"a plugin added a conflicting option: {exc}") from None

    def getgroup(self, name: str, description: str = "") -> OptionGroup:
        """The option group called ``name``, created on first use."""
        if name not in self._groups:
            # A group the command itself made (run's "output") is extended, not repeated.
            existing = [g for g in self._argparser._action_groups if g.title == name]
            group = existing[0] if existing else self._argparser.add_argument_group(name, description or None)
            self._groups[name] = OptionGroup(group)
        return self._groups[name]


class Config:
    """Per-command configuration handed to ``pipekit_configure`` and friends.

    :param option: the parsed options.
    :param pluginmanager: the command's plugin manager (a ``PipekitPluginManager``;
        typed as pluggy's, which is all a configuration uses of it, so that this
        module, which hooks receive, does not import the hook specs).
    :param pipeline: the loaded pipeline, when the command has one.
    """

    def __init__(
        self,
        option: argparse.Namespace,
        pluginmanager: pluggy.PluginManager,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.option = option
        self.pluginmanager = pluginmanager
        self.pipeline = pipeline
        #: The command's real stdout (``--jsonl`` writes here; ``sys.stdout`` is
        #: pointed at stderr while a run is in progress).
        self.stdout: IO[str] = sys.stdout
        self._cleanups: list[Callable[[], None]] = []
        self._configured = False

    @property
    def hook(self) -> Any:
        """The plugin manager's hook relay (``config.hook.pipekit_...``)."""
        return self.pluginmanager.hook

    def getoption(self, name: str, default: Any = None) -> Any:
        """The value of option ``name`` (its ``dest``, e.g. ``"workers"``, or ``"--workers"``)."""
        dest = name.lstrip("-").replace("-", "_")
        return getattr(self.option, dest, default)

    def add_cleanup(self, func: Callable[[], None]) -> None:
        """Call ``func`` when the command ends (last added, first called)."""
        self._cleanups.append(func)

    def do_configure(self) -> None:
        """Call ``pipekit_configure`` (historic: later plugins are called too)."""
        self._configured = True
        self.hook.pipekit_configure.call_historic(kwargs={"config": self})

    def ensure_unconfigure(self) -> None:
        """Call ``pipekit_unconfigure`` if configured, then every cleanup."""
        try:
            if self._configured:
                self._configured = False
                self.hook.pipekit_unconfigure(config=self)
        finally:
            while self._cleanups:
                self._cleanups.pop()()
