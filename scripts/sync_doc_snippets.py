"""Copy marked regions of tested source files into the code blocks of the docs.

A page shows its code inline, so it reads as a file too, and each block says
where its code comes from in its title, ``PATH:NAME``::

    ```python title="docs/snippets/concepts.py:items"
    def items():
        ...
    ```

The block holds the lines between ``# --8<-- [start:NAME]`` and
``# --8<-- [end:NAME]`` in ``PATH`` (relative to the repository), the region
``pymdownx.snippets`` would include, without its leading and trailing blank
lines. Edit the source, then:

    python scripts/sync_doc_snippets.py          # rewrite the blocks of every page
    python scripts/sync_doc_snippets.py --check  # exit 1 if a block is out of date
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import re
import sys


ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: A fenced block whose title names a source region.
_BLOCK = re.compile(
    r'^(?P<fence>```+)(?P<lang>\w+) title="(?P<path>[^":]+):(?P<name>[\w-]+)"[^\n]*\n'
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)
_MARKER = re.compile(r"^\s*# --8<-- \[(?P<end>start|end):(?P<name>[\w-]+)\]\s*$")


class SnippetError(ValueError):
    """A block names a file or region that does not exist."""


@dataclass(frozen=True)
class Block:
    """One titled code block of a page."""

    path: str
    name: str
    body: str
    start: int  # offsets of the body in the page's text
    end: int


def region(path: str, name: str) -> str:
    """The lines between ``path``'s ``start:name`` and ``end:name`` markers,
    other markers left out, stripped of blank lines at both ends."""
    source = ROOT / path
    if not source.is_file():
        raise SnippetError(f"{path}: no such file")
    inside, found, lines = False, False, []
    for line in source.read_text().splitlines():
        marker = _MARKER.match(line)
        if marker:
            if marker["name"] == name:
                inside = marker["end"] == "start"
                found = True
            continue
        if inside:
            lines.append(line)
    if not found:
        raise SnippetError(f"{path}: no region {name!r} (# --8<-- [start:{name}] ... [end:{name}])")
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines) + "\n"


def blocks(text: str) -> list[Block]:
    """The titled code blocks of a page's text, in order."""
    return [
        Block(match["path"], match["name"], match["body"], match.start("body"), match.end("body"))
        for match in _BLOCK.finditer(text)
    ]


def synced(text: str) -> str:
    """``text`` with every titled block replaced by its region."""
    out, done = [], 0
    for block in blocks(text):
        out += [text[done : block.start], region(block.path, block.name)]
        done = block.end
    return "".join(out) + text[done:]


def pages() -> list[Path]:
    """Every Markdown page of the docs."""
    return sorted(DOCS.rglob("*.md"))


def main(argv: list[str]) -> int:
    stale = []
    for page in pages():
        text = page.read_text()
        try:
            new = synced(text)
        except SnippetError as exc:
            print(f"{page.relative_to(ROOT)}: {exc}", file=sys.stderr)
            return 1
        if new == text:
            continue
        stale.append(page)
        if "--check" not in argv:
            page.write_text(new)
            print(f"wrote {page.relative_to(ROOT)}")
    if stale and "--check" in argv:
        for page in stale:
            print(f"{page.relative_to(ROOT)} is out of date: run python scripts/sync_doc_snippets.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
