"""The batch recipe's pipeline: the books example's summarise phase through OpenAI's Batch API.

    pipekit run docs/snippets/batch_recipe.py --state-dir .books-batch

Phase 1 splits each book of ``examples/books/texts`` into chapters; phase 2
asks for one summary per chapter, all of them in one OpenAI batch at half the
price; phase 3 writes the report from the answers. The tests of
``plugins/pipekit-batch`` run it against the fake OpenAI server.
"""

from __future__ import annotations

from pathlib import Path
import re
from typing import Any

from pipekit import phase
from pipekit_batch import OpenAIBatch


PIPELINE_NAME = "books-batch"
ITEM_NOUN = "books"
TEXTS = Path(__file__).resolve().parents[2] / "examples" / "books" / "texts"
MODEL = "gpt-4o-mini"


def items() -> list[str]:
    """Every book of the books example."""
    return sorted(path.stem for path in TEXTS.glob("*.txt"))


# --8<-- [start:declare]
#: Declared once, by name, as limits are; no key is needed until a batch is sent.
#: ``price`` is gpt-4o-mini's online price per million tokens (in, out): batches cost half.
BATCHES = {"openai": OpenAIBatch(endpoint="/v1/chat/completions", price=(0.15, 0.60))}
# --8<-- [end:declare]


@phase(1)
def split(item_id: str) -> list[dict[str, Any]]:
    """The book's chapters: number, title and text."""
    text = (TEXTS / f"{item_id}.txt").read_text(encoding="utf-8")
    body = text.split("*** START OF", 1)[-1].split("*** END OF", 1)[0]
    parts = re.split(r"^CHAPTER ([IVXLC]+)\.?\s*(.*)$", body, flags=re.M)[1:]
    return [
        {"number": n, "title": heading.strip().title(), "text": " ".join(chapter.split())}
        for n, (_, heading, chapter) in enumerate(zip(*[iter(parts)] * 3, strict=False), 1)
    ]


# --8<-- [start:summarise]
@phase(2, batch="openai", retries=2)
def summarise(item_id: str, split: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One request per chapter: the handler runs once, pipekit sends and collects the batch."""
    return [
        {
            "custom_id": f"{item_id}-{chapter['number']:02d}",
            "body": {
                "model": MODEL,
                "max_tokens": 200,
                "messages": [
                    {"role": "system", "content": "Summarise this chapter in three sentences."},
                    {"role": "user", "content": chapter["text"]},
                ],
            },
        }
        for chapter in split
    ]


# --8<-- [end:summarise]


# --8<-- [start:assemble]
@phase(3)
def assemble(item_id: str, split: list[dict[str, Any]], summarise: dict[str, Any], output_dir: Path) -> str:
    """The report, from each chapter's answer: ``summarise`` maps custom_id to the response body."""
    lines = [f"# {item_id}", ""]
    for chapter in split:
        answer = summarise[f"{item_id}-{chapter['number']:02d}"]
        lines += [f"## {chapter['number']}. {chapter['title']}", "", answer["choices"][0]["message"]["content"], ""]
    (output_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return "report.md"


# --8<-- [end:assemble]
