"""MkDocs hooks for pipekit's documentation (``hooks:`` in mkdocs.yml).

- ``<!-- pipekit-help: ARGS -->`` in a page becomes the output of
  ``pipekit ARGS``, so the command-line reference is the program's own help.
- A page the nav names but that is not written yet (the hook reference and
  the plugin guide are written separately) is generated as a short page that
  renders the hook specs' docstrings, so the site still builds strictly.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Any

from mkdocs.structure.files import File
from mkdocs.structure.files import Files


_HELP = re.compile(r"<!-- pipekit-help: (.*?) -->")

#: Pages other documents link to, and what stands in for them until they exist.
STAND_INS = {
    "hooks.md": (
        "# Hook reference\n\n"
        "Every hook pipekit calls, rendered from the specs in `pipekit/hookspecs.py`.\n\n"
        "::: pipekit.hookspecs\n"
        "    options:\n"
        "      show_root_heading: false\n"
        "      members_order: source\n"
    ),
    "plugins.md": (
        "# Writing plugins\n\n"
        "A plugin is a module or object with `pipekit_*` functions marked `@pipekit.hookimpl`. "
        "See the [hook reference](hooks.md), the [lifecycle](lifecycle.md), and the `examples/plugin/` "
        "example in the repository (a plugin in the pipeline module, and one loaded with `-p` or installed).\n"
    ),
}


def pipekit_help(args: str) -> str:
    """What ``pipekit ARGS`` prints, with installed plugins left out."""
    from pipekit.cli import main

    os.environ["PIPEKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(args.split())
    return "```text\n$ pipekit " + args + "\n" + out.getvalue().rstrip() + "\n```"


def on_files(files: Files, config: Any) -> Files:
    for name, text in STAND_INS.items():
        if files.get_file_from_path(name) is None:
            files.append(File.generated(config, name, content=text))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return _HELP.sub(lambda match: pipekit_help(match.group(1)), markdown)
