"""The one place the books example talks to a model.

Two adapters with the same two methods, ``summarise(title, text)`` and
``review(title, summaries)``, each returning a :class:`Reply` with the text,
the tokens spent and what they cost:

- :class:`OfflineModel` (the default): a deterministic extractive summariser.
  It needs no network and no key, yet reports token counts the way a hosted
  model would (about four characters a token, prompt included) and prices
  them like a small hosted model, so the run's cost summary means something.
  Like a provider's bill, it appends each call it charges for (which method,
  the process, its cost) to the file ``BOOKS_CALLS_LOG`` names, when that is set.
- :class:`LlmModel`: any model of the `llm <https://llm.datasette.io>`_
  library, e.g. ``--model gpt-4o-mini`` after ``pip install llm`` and
  ``llm keys set openai``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
import json
import os
import re
import time
from typing import Any
from typing import Protocol


#: Dollars per million tokens (input, output) of the offline model, priced like a
#: small hosted model. Real models are priced by a pricing plugin (``pipekit-prices``)
#: through ``ctx.record_usage``; without one they record tokens and $0.
OFFLINE_PRICE_PER_MILLION = (0.15, 0.60)

SUMMARY_PROMPT = (
    "Summarise this chapter of {title!r} in two or three sentences, "
    "keeping the names of the characters and the moral if there is one."
)
REVIEW_PROMPT = (
    "You review chapter summaries of {title!r}. Say in a short paragraph whether they "
    "read well together, and list any summary that looks empty, too long or repetitive."
)

_WORD = re.compile(r"[a-z']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z])")
#: Words too common to say what a sentence is about.
_STOPWORDS = frozenset(
    "a an and are as at be but by for from had has have he her him his i if in into is it its "
    "me my no not of on or our she so that the their them then there they this to was we were "
    "what when which who will with would you your said".split()
)


@dataclass(frozen=True)
class Reply:
    """What one model call produced and spent (``cost_usd`` 0.0 when the adapter
    leaves pricing to ``ctx.record_usage``)."""

    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model: str


class Model(Protocol):
    """What the pipeline needs from a model."""

    name: str

    def summarise(self, title: str, text: str) -> Reply: ...

    def review(self, title: str, summaries: list[str]) -> Reply: ...


def estimate_tokens(text: str) -> int:
    """About four characters a token, as for English with common tokenisers."""
    return max(1, round(len(text) / 4))


def offline_price(tokens_in: int, tokens_out: int) -> float:
    """Dollars for this many tokens of the offline model."""
    per_in, per_out = OFFLINE_PRICE_PER_MILLION
    return (tokens_in * per_in + tokens_out * per_out) / 1_000_000


def sentences(text: str) -> list[str]:
    """Split prose into sentences (good enough for nineteenth-century English)."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


class OfflineModel:
    """Extractive summaries and a rule-based review: deterministic, free, offline.

    :param latency: seconds each call pretends to take, so the live display and
        Ctrl-C behave as they would with a hosted model (0 in tests).
    """

    name = "offline-extractive"

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency

    def _reply(self, call: str, prompt: str, text: str) -> Reply:
        if self.latency:
            time.sleep(self.latency)
        tokens_in = estimate_tokens(prompt)
        tokens_out = estimate_tokens(text)
        reply = Reply(text, tokens_in, tokens_out, offline_price(tokens_in, tokens_out), self.name)
        bill = os.environ.get("BOOKS_CALLS_LOG")
        if bill:
            with open(bill, "a", encoding="utf-8") as log:  # one short append a call: whole even under a kill
                log.write(json.dumps({"call": call, "pid": os.getpid(), "cost_usd": reply.cost_usd}) + "\n")
        return reply

    def summarise(self, title: str, text: str) -> Reply:
        """The two or three sentences whose words matter most in the chapter, in order."""
        found = sentences(text)
        words = Counter(w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)

        def score(sentence: str) -> float:
            tokens = [w for w in _WORD.findall(sentence.lower()) if w not in _STOPWORDS]
            return sum(words[w] for w in tokens) / (len(tokens) + 5) if tokens else 0.0

        keep = 3 if len(found) > 12 else 2
        best = sorted(sorted(range(len(found)), key=lambda i: -score(found[i]))[:keep])
        # The last sentence of a fable is often its moral: keep it when it is short.
        if found and len(found[-1]) < 160 and len(found) - 1 not in best:
            best = best[: keep - 1] + [len(found) - 1]
        summary = " ".join(found[i] for i in best)
        return self._reply("summarise", SUMMARY_PROMPT.format(title=title) + "\n\n" + text, summary)

    def review(self, title: str, summaries: list[str]) -> Reply:
        """Flag summaries that are empty, long, or share an opening with another."""
        notes = []
        openings: dict[str, int] = {}
        for number, summary in enumerate(summaries, 1):
            if not summary.strip():
                notes.append(f"- Chapter {number}: the summary is empty.")
            elif len(summary.split()) > 120:
                notes.append(f"- Chapter {number}: {len(summary.split())} words is long for a summary.")
            opening = " ".join(summary.split()[:4]).lower()
            if opening in openings:
                notes.append(f"- Chapter {number} opens like chapter {openings[opening]}.")
            openings.setdefault(opening, number)
        words = sum(len(s.split()) for s in summaries)
        verdict = (
            f"The {len(summaries)} summaries of {title} run to {words} words "
            f"and {'read cleanly' if not notes else 'need a look'}."
        )
        text = verdict + ("\n\n" + "\n".join(notes) if notes else "")
        return self._reply("review", REVIEW_PROMPT.format(title=title) + "\n\n" + "\n\n".join(summaries), text)


class LlmModel:
    """A model of the ``llm`` library, with its own key and plugins.

    :param name: a model id or alias that ``llm models`` lists.
    """

    def __init__(self, name: str) -> None:
        try:
            import llm
        except ImportError:
            raise RuntimeError(
                f"--model {name} needs the llm library: pip install llm (and set a key: llm keys set openai)"
            ) from None
        self.name = name
        self._model: Any = llm.get_model(name)

    def _ask(self, system: str, text: str) -> Reply:
        response = self._model.prompt(text, system=system)
        answer = response.text().strip()
        usage = response.usage() if hasattr(response, "usage") else None
        tokens_in = getattr(usage, "input", None) or estimate_tokens(system + text)
        tokens_out = getattr(usage, "output", None) or estimate_tokens(answer)
        return Reply(answer, tokens_in, tokens_out, 0.0, self.name)  # priced by ctx.record_usage

    def summarise(self, title: str, text: str) -> Reply:
        """Ask the model for a two- or three-sentence summary."""
        return self._ask(SUMMARY_PROMPT.format(title=title), text)

    def review(self, title: str, summaries: list[str]) -> Reply:
        """Ask the model to review the summaries as a whole."""
        numbered = "\n\n".join(f"Chapter {n}: {s}" for n, s in enumerate(summaries, 1))
        return self._ask(REVIEW_PROMPT.format(title=title), numbered)


def make_model(name: str, latency: float = 0.0) -> Model:
    """``offline`` (the default) or the name of an ``llm`` model."""
    if name in ("offline", OfflineModel.name):
        return OfflineModel(latency)
    return LlmModel(name)
