"""MkDocs hooks for pipekit's documentation (``hooks:`` in mkdocs.yml).

``<!-- pipekit-help: ARGS -->`` in a page becomes the output of ``pipekit
ARGS``, so the command-line reference is the program's own help.

Pages link to each other and to the examples by paths relative to their file
in the repository (``../examples/books/README.md``), which is what a file
view of the repository follows. The site is built from ``docs/``, so these
hooks publish ``examples/`` inside it too and rewrite the links that cross
between the two (``site_link``).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
import posixpath
import re
from typing import Any

from mkdocs.structure.files import File
from mkdocs.structure.files import Files


ROOT = Path(__file__).resolve().parents[1]
#: Folders beside docs/ that the site carries, at the same place relative to its pages.
PUBLISHED = ("examples",)

_HELP = re.compile(r"<!-- pipekit-help: (.*?) -->")
#: The target of an inline Markdown link or image: ``](target)`` or ``](target#anchor)``.
_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")


def pipekit_help(args: str) -> str:
    """What ``pipekit ARGS`` prints, with installed plugins left out."""
    from pipekit.cli.main import main

    os.environ["PIPEKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(args.split())
    return "```text\n$ pipekit " + args + "\n" + out.getvalue().rstrip() + "\n```"


def _site_path(repo_path: str) -> str | None:
    """Where a file of the repository is on the site, if it is there."""
    top = repo_path.split("/", 1)[0]
    if top == "docs":
        return repo_path[len("docs/") :]
    return repo_path if top in PUBLISHED else None


def site_link(page_uri: str, target: str) -> str:
    """``target``, a link in the page ``page_uri`` (its place on the site),
    as the site needs it. Links are written relative to the page's file in the
    repository; a site page is at its place in docs/, or in a published folder
    at the same place as in the repository, so only links that cross between
    docs/ and a published folder change."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return target
    in_repo = page_uri if page_uri.split("/", 1)[0] in PUBLISHED else f"docs/{page_uri}"
    linked = posixpath.normpath(posixpath.join(posixpath.dirname(in_repo), target))
    on_site = _site_path(linked)
    if on_site is None:
        return target  # not on the site: MkDocs reports it
    return posixpath.relpath(on_site, posixpath.dirname(page_uri) or ".")


def on_files(files: Files, config: Any) -> Files:
    for folder in PUBLISHED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append(
                    File(
                        path.relative_to(ROOT).as_posix(),
                        src_dir=str(ROOT),
                        dest_dir=config["site_dir"],
                        use_directory_urls=config["use_directory_urls"],
                    )
                )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = _HELP.sub(lambda match: pipekit_help(match.group(1)), markdown)
    return _LINK.sub(
        lambda m: f"]({site_link(page.file.src_uri, m['target'])}{m['anchor'] or ''})", markdown
    )
