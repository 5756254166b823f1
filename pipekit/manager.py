"""The plugin manager: which plugins load, in which order, and from where."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
import importlib
import importlib.metadata
import os
from types import ModuleType
from typing import Any
from typing import Final

import pluggy

from pipekit import hookspecs
from pipekit.outcomes import UsageError


ENTRY_POINT_GROUP: Final = "pipekit"
#: Built-in plugins, imported as ``pipekit.builtin.<name>`` and registered under ``<name>``.
BUILTIN_PLUGINS: Final = ("items", "executors", "progress", "jsonl", "summary")
#: Built-ins that ``-p no:NAME`` may not block: pipekit cannot work without them.
ESSENTIAL_PLUGINS: Final = ("items",)


def parse_plugin_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Find ``-p NAME`` and ``-p no:NAME`` in raw arguments: (to load, to block)."""
    load: list[str] = []
    block: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--":
            break
        if arg == "-p":
            value = next(it, None)
        elif arg.startswith("-p") and not arg.startswith("--"):
            value = arg[2:].lstrip("=")
        else:
            continue
        if value is None:
            continue
        if value.startswith("no:"):
            block.append(value[3:])
        else:
            load.append(value)
    return load, block


class PipekitPluginManager(pluggy.PluginManager):
    """pluggy's manager with pipekit's rules: only ``pipekit_*`` names are hooks,
    and every plugin remembers where it came from (for ``pipekit plugins``).
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        #: Registration name -> where the plugin came from.
        self.sources: dict[str, str] = {}

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        # A pipeline module is full of functions; only pipekit_* ones can be hooks,
        # and they must carry the marker.
        if not name.startswith("pipekit_"):
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def register_from(self, plugin: Any, name: str, source: str) -> str | None:
        """Register ``plugin`` under ``name`` and remember its ``source``."""
        if self.is_blocked(name) or self.has_plugin(name):
            return None
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr) if attr.startswith("pipekit_") else None
            if opts and opts.get("hookwrapper"):
                raise UsageError(
                    f"{attr} of plugin {name!r} ({source}) uses hookwrapper=True, which pipekit does not "
                    f"support: use @pipekit.hookimpl(wrapper=True)"
                )
        try:
            registered = self.register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise UsageError(f"invalid plugin {name!r} ({source}): {exc}") from None
        if registered is not None:
            self.sources[registered] = source
        return registered

    def check_hook_names(self) -> None:
        """Turn a misspelled ``pipekit_*`` hook into a usage error naming it."""
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            raise UsageError(f"unknown hook: {exc}") from None
        for name, plugin in self.list_name_plugin():
            for attr in dir(plugin):
                if attr.startswith("pipekit_") and callable(getattr(plugin, attr, None)):
                    if self.parse_hookimpl_opts(plugin, attr) is None:
                        where = getattr(plugin, "__file__", name)
                        raise UsageError(
                            f"{attr} in {where} looks like a hook but is not marked "
                            f"with @pipekit.hookimpl"
                        )

    def import_plugin(self, modname: str, source: str) -> None:
        """Import ``modname`` (or the entry point of that name) and register it."""
        if self.is_blocked(modname) or self.has_plugin(modname):
            return
        for ep in _entry_points():
            if ep.name == modname:
                self._load_entry_point(ep)
                return
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            raise UsageError(f"error importing plugin {modname!r}: {exc}") from exc
        except SystemExit as exc:
            # Not a way to end the command (it would end with that status and no word).
            code = "" if exc.code is None else repr(exc.code)
            raise UsageError(f"plugin {modname!r} called sys.exit({code}) while being imported") from None
        except Exception as exc:
            raise UsageError(f"error importing plugin {modname!r}: {type(exc).__name__}: {exc}") from exc
        self.register_from(module, modname, source)

    def load_builtins(self) -> None:
        """Register the built-in plugins that are not blocked."""
        for name in BUILTIN_PLUGINS:
            if not self.is_blocked(name):
                module = importlib.import_module(f"pipekit.builtin.{name}")
                self.register_from(module, name, "built-in")

    def load_entry_points(self) -> None:
        """Register every installed ``pipekit`` entry point not blocked."""
        for ep in _entry_points():
            if not self.is_blocked(ep.name) and not self.has_plugin(ep.name):
                self._load_entry_point(ep)

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        try:
            plugin = ep.load()
        except Exception as exc:
            owner = ep.dist.name if ep.dist else "?"
            raise UsageError(
                f"error loading plugin {ep.name!r} (entry point {ep.value} of {owner}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        source = f"entry point of {ep.dist.name} {ep.dist.version}" if ep.dist else "entry point"
        self.register_from(plugin, ep.name, source)

    def block_all(self, names: Iterable[str]) -> None:
        """Block ``names`` (and their ``pipekit_`` forms); essential ones are refused."""
        for name in names:
            if name in ESSENTIAL_PLUGINS:
                raise UsageError(f"plugin {name!r} is essential and cannot be blocked")
            self.set_blocked(name)
            if not name.startswith("pipekit_"):
                self.set_blocked(f"pipekit_{name}")

    def plugin_version(self, name: str) -> str:
        """The version of the distribution a plugin came from, or ``""``."""
        source = self.sources.get(name, "")
        if source.startswith("entry point of "):
            return source.rsplit(" ", 1)[-1]
        plugin = self.get_plugin(name)
        return str(getattr(plugin, "__version__", ""))


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def make_plugin_manager(
    args: Sequence[str] = (),
    plugins: Iterable[Any] = (),
    pipeline_module: ModuleType | None = None,
) -> PipekitPluginManager:
    """Build a fresh manager for one command, loading plugins in pipekit's order.

    1. ``-p no:NAME`` blocks; 2. built-ins; 3. entry points (unless
    ``PIPEKIT_DISABLE_PLUGIN_AUTOLOAD``); 4. ``PIPEKIT_PLUGINS``; 5. ``-p NAME``;
    6. plugin objects passed in (tests, the library API).
    The pipeline module is registered later, by ``register_pipeline_module``.
    """
    to_load, to_block = parse_plugin_args(args)
    pm = PipekitPluginManager()
    pm.block_all(to_block)
    pm.load_builtins()
    if not os.environ.get("PIPEKIT_DISABLE_PLUGIN_AUTOLOAD"):
        pm.load_entry_points()
    for modname in filter(None, (s.strip() for s in os.environ.get("PIPEKIT_PLUGINS", "").split(","))):
        pm.import_plugin(modname, "PIPEKIT_PLUGINS")
    for modname in to_load:
        pm.import_plugin(modname, "-p")
    for index, plugin in enumerate(plugins):
        name = getattr(plugin, "name", None) or f"{type(plugin).__name__}-{index}-{id(plugin):x}"
        pm.register_from(plugin, str(name), "passed to pipekit")
    if pipeline_module is not None:
        register_pipeline_module(pm, pipeline_module)
    return pm


def register_pipeline_module(pm: PipekitPluginManager, module: ModuleType) -> None:
    """Register the pipeline module as a plugin (it may define hooks, as a conftest does)."""
    path = getattr(module, "__file__", None) or module.__name__
    pm.register_from(module, f"pipeline:{module.__name__}", f"pipeline module {path}")
    pm.check_hook_names()
