"""MkDocs hooks for pipekit's documentation (``hooks:`` in mkdocs.yml).

``<!-- pipekit-help: ARGS -->`` in a page becomes the output of ``pipekit
ARGS``, so the command-line reference is the program's own help.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from typing import Any

from mkdocs.structure.files import Files


_HELP = re.compile(r"<!-- pipekit-help: (.*?) -->")


def pipekit_help(args: str) -> str:
    """What ``pipekit ARGS`` prints, with installed plugins left out."""
    from pipekit.cli.main import main

    os.environ["PIPEKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(args.split())
    return "```text\n$ pipekit " + args + "\n" + out.getvalue().rstrip() + "\n```"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    return _HELP.sub(lambda match: pipekit_help(match.group(1)), markdown)
