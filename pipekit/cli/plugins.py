"""``pipekit plugins [MODULE] [--all] [--hook NAME]``: what is registered, from where."""

from __future__ import annotations

from typing import Any

from pipekit.cli.parsing import command_parser
from pipekit.manager import make_plugin_manager
from pipekit.manager import register_pipeline_module
from pipekit.outcomes import ExitCode
from pipekit.outcomes import UsageError
from pipekit.pipeline.loader import load


def plugins_command(args: list[str], plugins: list[Any]) -> ExitCode:
    """``pipekit plugins [MODULE] [--all] [--hook NAME]``: what is registered, from where."""
    parser = command_parser("pipekit plugins", "List registered plugins and where they came from.", module=False)
    parser.add_argument("module", nargs="?", help="also show the hooks of this pipeline module")
    parser.add_argument("--all", action="store_true", help="include built-in plugins")
    parser.add_argument("--hook", metavar="NAME", help="only plugins implementing this hook")
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME")
    option = parser.parse_args(args)
    if option.help:
        parser.print_help()
        return ExitCode.OK
    pm = make_plugin_manager(args, plugins)
    if option.module:
        register_pipeline_module(pm, load(option.module).module)
    hook_filter = option.hook
    if hook_filter and not hook_filter.startswith("pipekit_"):
        hook_filter = f"pipekit_{hook_filter}"
    if hook_filter and not hasattr(pm.hook, hook_filter):
        known = ", ".join(sorted(n for n in vars(pm.hook) if n.startswith("pipekit_")))
        raise UsageError(f"pipekit plugins: unknown hook {option.hook!r} (hooks: {known})")
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked with -p no:NAME
            continue
        source = pm.sources.get(name, "registered at run time")
        if source == "built-in" and not option.all:
            continue
        hooks = sorted(
            caller.name for caller in pm.get_hookcallers(plugin) or [] if caller.name.startswith("pipekit_")
        )
        if hook_filter and hook_filter not in hooks:
            continue
        rows.append((name, pm.plugin_version(name), source, hooks))
    if not rows:
        print("no plugins" + ("" if option.all else " (built-ins hidden; --all shows them)"))
    for name, version, source, hooks in rows:
        label = f"{name} {version}".strip()
        print(f"{label}  [{source}]")
        print(f"    hooks: {', '.join(hooks) or '-'}")
    return ExitCode.OK
