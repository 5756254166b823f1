"""The one set of formats for money, durations and token counts (``pipekit.display.format``)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from pipekit.display.format import clock
from pipekit.display.format import count_of
from pipekit.display.format import duration
from pipekit.display.format import estimate
from pipekit.display.format import money
from pipekit.display.format import money_as_given
from pipekit.display.format import money_cents
from pipekit.display.format import money_exact
from pipekit.display.format import running
from pipekit.display.format import singular
from pipekit.display.format import tokens


PACKAGE = Path(__file__).resolve().parent.parent / "pipekit"


@pytest.mark.parametrize(
    ("write", "value", "text"),
    [
        (money, 0.0123, "$0.0123"),
        (money, 1234.5, "$1,234.50"),
        (money_cents, 0.0, "$0.00"),
        (money_cents, 41204.2, "$41,204.20"),
        (money_exact, 1.3, "$1.3000"),
        (money_exact, 12345.67891, "$12,345.6789"),
        (money_exact, None, "unknown"),
        (money_as_given, 0.5, "$0.5"),
        (clock, 3723.4, "1:02:03"),
        (clock, None, "--:--:--"),
        (running, 4.25, "4.2s"),
        (running, 725, "12:05"),
        (running, 3723, "1:02:03"),
        (duration, 1.234, "1.23s"),
        (duration, 123.4, "2m03.4s"),
        (duration, None, "-"),
        (estimate, 90, "90.0 s"),
        (estimate, 720, "12 min"),
        (estimate, 11520, "3.2 h"),
        (estimate, None, "unknown"),
        (tokens, 1234567, "1,234,567"),
        (tokens, 40, "40"),
    ],
)
def test_each_format_writes_what_its_name_says(write, value, text):
    assert write(value) == text


def _money_fstrings(path: Path) -> list[int]:
    """Lines of ``path`` with an f-string that puts a ``$`` before a formatted value."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.JoinedStr):
            for before, after in itertools.pairwise(node.values):
                if (
                    isinstance(before, ast.Constant)
                    and str(before.value).endswith("$")
                    and isinstance(after, ast.FormattedValue)
                ):
                    found.append(node.lineno)
    return found


def test_money_is_formatted_only_in_display_format():
    # One owner: a second "$" f-string is a second money format in the making.
    spelled = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "format.py" and (lines := _money_fstrings(path))
    }
    assert spelled == {}


def test_status_writes_token_counts_with_thousands_separators(pipetester):
    pipetester.make_pipeline(
        """
        from pipekit import phase

        @phase(1)
        def write(item_id, ctx):
            ctx.record_cost(tokens_in=12345, tokens_out=6789, cost_usd=1234.5)
            return "ok"
        """
    )
    pipetester.make_items("a")
    assert pipetester.run("run", "pipeline.py", "--items", "items.txt", "--progress", "none").ret == 0
    matrix = pipetester.run("status", "pipeline.py")
    matrix.fnmatch_lines(["*tokens 12,345 in / 6,789 out; cost $1,234.5000"], stream="stdout")
    item = pipetester.run("status", "pipeline.py", "--item", "a")
    item.fnmatch_lines(["*cost: $1,234.5000   tokens: 12,345 in / 6,789 out", "*tokens 12,345/6,789*"], stream="stdout")


#: What pipekit counts itself, and item nouns a module may declare (``ITEM_NOUN``).
SINGULARS = {
    # pipekit's own words
    "items": "item", "phases": "phase", "batches": "batch", "requests": "request", "sub-items": "sub-item",
    # the examples' and docs' item nouns
    "books": "book", "chapters": "chapter", "documents": "document", "courses": "course", "files": "file",
    "questions": "question", "articles": "article", "greetings": "greeting", "words": "word",
    # -es after s, x, z, ch, sh
    "addresses": "address", "classes": "class", "processes": "process", "boxes": "box", "indexes": "index",
    "dishes": "dish", "matches": "match", "speeches": "speech", "quizzes": "quiz", "buzzes": "buzz",
    # -es that is -e + s
    "cases": "case", "responses": "response", "databases": "database", "purchases": "purchase",
    "caches": "cache", "niches": "niche", "sizes": "size", "images": "image", "pages": "page",
    # -ies
    "categories": "category", "entries": "entry", "stories": "story", "queries": "query",
    "companies": "company", "movies": "movie", "cookies": "cookie", "pies": "pie", "ties": "tie",
    # -ys, -oes, -ves, -is, -us, Latin and Greek
    "keys": "key", "days": "day", "surveys": "survey", "heroes": "hero", "videos": "video", "photos": "photo",
    "leaves": "leaf", "archives": "archive", "lives": "life", "analyses": "analysis", "theses": "thesis",
    "statuses": "status", "viruses": "virus", "campuses": "campus", "buses": "bus",
    "menus": "menu", "gurus": "guru", "emojis": "emoji", "taxis": "taxi", "canvases": "canvas",
    # already singular, invariable or irregular
    "status": "status", "analysis": "analysis", "class": "class", "news": "news", "series": "series",
    "species": "species", "data": "data", "media": "media", "people": "person", "children": "child",
    "men": "man", "women": "woman", "s": "s", "": "",
    # case and several words
    "BATCHES": "BATCH", "Stories": "Story", "pull requests": "pull request", "test_cases": "test_case",
    "Sub-Categories": "Sub-Category", "PEOPLE": "PERSON",
}


@pytest.mark.parametrize(("plural", "one"), SINGULARS.items())
def test_the_singular_of_a_plural_noun(plural: str, one: str) -> None:
    assert singular(plural) == one
    assert count_of(1, plural) == f"1 {one}"
    assert count_of(2, plural) == f"2 {plural}"


def test_every_count_in_words_goes_through_count_of() -> None:
    """A second way of writing "N batches" would be a second rule to fix."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "{'es' if" not in text and "{'s' if" not in text, path
