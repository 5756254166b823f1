# --8<-- [start:all]
"""words.py: count the words of some files, then report the longest one."""

from __future__ import annotations

from pathlib import Path

from pipekit import phase


ITEM_NOUN = "files"


def items():
    """Every text file in the current folder is an item; its id is the file name."""
    return [path.name for path in sorted(Path(".").glob("*.txt"))]


@phase(1)
def count(item_id: str) -> str:
    """The number of words in the file."""
    return str(len(Path(item_id).read_text().split()))


@phase(2, critical=False)
def longest(item_id: str, count: str) -> str:
    """The longest word (this phase may fail without stopping the item)."""
    words = Path(item_id).read_text().split()
    return f"{max(words, key=len)} (of {count} words)"


# --8<-- [end:all]
