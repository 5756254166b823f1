"""Summarise public-domain books, chapter by chapter, into one Markdown report each.

    pipekit run examples/books/pipeline.py --state-dir .books --output-dir books-out

Phases: load → clean → split → summarise → review (non-critical) → assemble.
``summarise`` maps over the chapters with ``ctx.map``; ``review`` returns a pydantic
``Review`` (``@phase(output=Review)``) that ``assemble`` receives as an instance.
Each chapter is a sub-item saved as soon as it is summarised, so a run stopped
half way (Ctrl-C, a crash, ``kill -9``) resumes with the chapters not done yet.
Every phase also writes its work to files in ``ctx.output_dir``, and a file that
exists is not paid for again. It needs pydantic: ``pip install 'pipekit[pydantic]'``.
The model is offline by default; ``--model gpt-4o-mini`` uses the ``llm``
library instead (see README.md).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
import re
from typing import Any

from bookmodel import Model
from bookmodel import OfflineModel
from bookmodel import Reply
from bookmodel import make_model


try:
    from pydantic import BaseModel
    from pydantic import Field
except ImportError:
    raise ImportError(
        "the books example validates its review with pydantic: pip install 'pipekit[pydantic]'"
    ) from None

from pipekit import PhaseResult
from pipekit import UsageError
from pipekit import hookimpl
from pipekit import phase


PIPELINE_NAME = "books"
ITEM_NOUN = "books"
TEXTS = Path(__file__).parent / "texts"


# --8<-- [start:options]
@hookimpl
def pipekit_addoption(parser: Any) -> None:
    """This pipeline's own options, beside pipekit's."""
    group = parser.getgroup("books")
    group.addoption(
        "--model",
        default=os.environ.get("BOOKS_MODEL", "offline"),
        help="offline (default) or an llm model id, e.g. gpt-4o-mini; env BOOKS_MODEL",
    )
    group.addoption(
        "--model-latency",
        type=float,
        default=float(os.environ.get("BOOKS_MODEL_LATENCY", "0.2")),
        metavar="SECONDS",
        help="how long each offline model call pretends to take (default 0.2)",
    )


@hookimpl
def pipekit_configure(config: Any) -> None:
    """Check the model now (one that cannot be used is a usage error) and pass the choice
    on through the environment, which worker processes (``--executor processes``) inherit."""
    name, latency = config.getoption("model"), config.getoption("model_latency")
    try:
        make_model(name, latency)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    os.environ["BOOKS_MODEL"] = name
    os.environ["BOOKS_MODEL_LATENCY"] = str(latency)


def model() -> Model:
    """The model this run chose, in the driver and in every worker process."""
    return _cached_model(os.environ.get("BOOKS_MODEL", "offline"), float(os.environ.get("BOOKS_MODEL_LATENCY", "0.2")))


@functools.cache
def _cached_model(name: str, latency: float) -> Model:
    return make_model(name, latency)


# --8<-- [end:options]


def describe(path: Path) -> dict[str, str]:
    """A book's metadata from the header of its text file."""
    header = path.read_text(encoding="utf-8").split("***", 1)[0] if path.exists() else ""
    title = re.search(r"^Title:\s*(.+?)\s*$", header, re.M)
    author = re.search(r"^Author:\s*(.+?)\s*$", header, re.M)
    return {
        "title": title.group(1) if title else path.stem,
        "author": author.group(1) if author else "",
        "path": str(path),
    }


def items() -> list[tuple[str, dict[str, str]]]:
    """Every ``texts/*.txt``: the id is the file's stem."""
    return [(path.stem, describe(path)) for path in sorted(TEXTS.glob("*.txt"))]


def book(item_id: str, metadata: dict[str, str]) -> dict[str, str]:
    """The item's metadata, completed from ``texts/<id>.txt`` when it came from ``--item ID``."""
    path = Path(metadata["path"]) if "path" in metadata else TEXTS / f"{item_id}.txt"
    return {**describe(path), **metadata}


def file_exists(name: str):  # type: ignore[no-untyped-def]
    """A cache check: the phase's work exists when its file does (its name is the output)."""

    def check(output_dir: Path) -> str | bool:
        return name if (output_dir / name).exists() else False

    check.__name__ = f"{name}_exists"
    return check


def write_atomically(path: Path, text: str) -> None:
    """Write a file whole or not at all, so a crash never leaves half a summary behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


# --8<-- [start:load]
@phase(1, cache=file_exists("raw.txt"), timeout=30)
def load(item_id: str, metadata: dict[str, str], output_dir: Path) -> str:
    """Copy the book's text into its output folder, as a download would."""
    source = Path(book(item_id, metadata)["path"])
    if not source.exists():
        raise FileNotFoundError(f"no text for this book at {source}")
    write_atomically(output_dir / "raw.txt", source.read_bytes().decode("utf-8"))
    return "raw.txt"


# --8<-- [end:load]


@phase(2, cache=file_exists("clean.txt"), timeout=30)
def clean(output_dir: Path) -> str:
    """Keep the text between the START and END markers, one paragraph a line."""
    raw = (output_dir / "raw.txt").read_text(encoding="utf-8").replace("\r\n", "\n")
    match = re.search(r"^\*\*\* START OF.*?\*\*\*$(.*?)^\*\*\* END OF", raw, re.S | re.M)
    body = match.group(1) if match else raw
    paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", body)]
    write_atomically(output_dir / "clean.txt", "\n\n".join(p for p in paragraphs if p) + "\n")
    return "clean.txt"


@phase(3, cache=file_exists("chapters.json"), timeout=30)
def split(output_dir: Path) -> str:
    """One file per chapter under ``chapters/``, and ``chapters.json`` listing them."""
    text = (output_dir / "clean.txt").read_text(encoding="utf-8")
    parts = re.split(r"^CHAPTER ([IVXLC]+)\.?\s*(.*)$", text, flags=re.M)
    chapters = []
    if len(parts) == 1:  # no headings: the whole book is one chapter
        parts = ["", "I", "", text]
    for number, (_, heading, body) in enumerate(zip(*[iter(parts[1:])] * 3, strict=False), 1):
        name = f"chapters/{number:02d}.txt"
        write_atomically(output_dir / name, body.strip() + "\n")
        chapters.append({"number": number, "title": title_case(heading) or f"Chapter {number}", "file": name})
    write_atomically(output_dir / "chapters.json", json.dumps(chapters, indent=2) + "\n")
    return "chapters.json"


def title_case(heading: str) -> str:
    """``THE WOLF AND THE LAMB`` → ``The Wolf and the Lamb``."""
    small = {"a", "an", "and", "the", "of", "in", "on", "to", "for", "by"}
    words = heading.strip().lower().split()
    return " ".join(w if i and w in small else w[:1].upper() + w[1:] for i, w in enumerate(words))


# --8<-- [start:spend]
def spend(ctx: Any, reply: Reply) -> None:
    """Record one model call: the offline model prices itself; a real model's tokens
    go to ``ctx.record_usage``, which a pricing plugin (``pipekit-prices``) turns into dollars."""
    if reply.model == OfflineModel.name:
        ctx.record_cost(reply.tokens_in, reply.tokens_out, reply.cost_usd)
    else:
        ctx.record_usage(reply.model, reply.tokens_in, reply.tokens_out)


# --8<-- [end:spend]


def summaries_exist(output_dir: Path) -> str | bool:
    """The summarise phase is done when every chapter has its summary file."""
    index = output_dir / "chapters.json"
    if not index.exists():
        return False
    chapters = json.loads(index.read_text(encoding="utf-8"))
    done = all((output_dir / f"summaries/{c['number']:02d}.md").exists() for c in chapters)
    return f"{len(chapters)} summaries" if done else False


# --8<-- [start:summarise]
@phase(4, cache=summaries_exist, timeout=600, retries=2)
def summarise(item_id: str, metadata: dict[str, str], ctx: Any) -> PhaseResult:
    """Summarise every chapter as a sub-item of this phase (``ctx.map``): each chapter's
    status and cost are saved as soon as it is done, so a re-run calls the model only
    for the chapters that are not."""
    chapters = json.loads((ctx.output_dir / "chapters.json").read_text(encoding="utf-8"))
    title = book(item_id, metadata)["title"]
    called: list[int] = []  # chapters the model was asked about in this run

    def summarise_chapter(chapter: dict[str, Any], ctx: Any) -> str:
        """One chapter: ``ctx`` is the sub-item's, so its tokens and cost are its own."""
        target = ctx.output_dir / f"summaries/{chapter['number']:02d}.md"
        if not target.exists():  # a file left by a run whose state was lost: paid for already
            text = (ctx.output_dir / chapter["file"]).read_text(encoding="utf-8")
            reply = model().summarise(title, text)
            spend(ctx, reply)
            write_atomically(target, reply.text + "\n")
            called.append(chapter["number"])
        return str(target.relative_to(ctx.output_dir))

    ctx.map(summarise_chapter, chapters, key=lambda c: f"{c['number']:02d}", concurrency=4)
    ctx.executor = model().name
    return PhaseResult(output=f"{len(called)} of {len(chapters)} chapters summarised this run")


# --8<-- [end:summarise]


# --8<-- [start:review]
class Review(BaseModel):
    """The review phase's output: pipekit validates it and hands ``assemble`` an instance."""

    verdict: str = Field(min_length=1)
    #: One line per summary that needs a look (empty: they read cleanly).
    notes: list[str]
    chapters: int = Field(ge=1)


def parse_review(text: str, chapters: int) -> Review:
    """The model's reply as a :class:`Review`: its first paragraph is the verdict,
    its ``- `` lines the notes."""
    verdict, _, rest = text.strip().partition("\n\n")
    notes = [line[2:].strip() for line in rest.splitlines() if line.startswith("- ")]
    return Review(verdict=" ".join(verdict.split()), notes=notes, chapters=chapters)


@phase(5, critical=False, output=Review, timeout=300, retries=1)
def review(item_id: str, metadata: dict[str, str], ctx: Any) -> Review:
    """A second look at the summaries; if it fails the report goes out without it."""
    saved = ctx.output_dir / "review.json"
    if saved.exists():  # written by a run whose state was lost: paid for already
        return Review.model_validate_json(saved.read_text(encoding="utf-8"))
    chapters = json.loads((ctx.output_dir / "chapters.json").read_text(encoding="utf-8"))
    summaries = [(ctx.output_dir / f"summaries/{c['number']:02d}.md").read_text(encoding="utf-8") for c in chapters]
    reply = model().review(book(item_id, metadata)["title"], summaries)
    spend(ctx, reply)
    result = parse_review(reply.text, len(chapters))
    write_atomically(saved, result.model_dump_json(indent=2) + "\n")
    ctx.executor = model().name
    return result


# --8<-- [end:review]


@phase(6, timeout=30)
def assemble(item_id: str, metadata: dict[str, str], review: Review | None, output_dir: Path) -> PhaseResult:
    """Write ``report.md``: title, the review (when there is one), each chapter's summary."""
    chapters = json.loads((output_dir / "chapters.json").read_text(encoding="utf-8"))
    metadata = book(item_id, metadata)
    lines = [f"# {metadata['title']}", ""]
    if metadata.get("author"):
        lines += [f"*{metadata['author']}* · {len(chapters)} chapters", ""]
    if review is not None:
        lines += ["## Review", "", review.verdict, ""]
        lines += [f"- {note}" for note in review.notes] + ([""] if review.notes else [])
    else:
        lines += ["> The review phase failed or did not run; see `pipekit` state for why.", ""]
    lines += ["## Chapters", ""]
    for chapter in chapters:
        summary = (output_dir / f"summaries/{chapter['number']:02d}.md").read_text(encoding="utf-8").strip()
        lines += [f"### {chapter['number']}. {chapter['title']}", "", summary, ""]
    report = output_dir / "report.md"
    write_atomically(report, "\n".join(lines))
    return PhaseResult(output=f"report for {item_id}: {len(chapters)} chapters", output_file=str(report))
