"""How pipekit writes money, durations and token counts, everywhere it shows them.

One function per format, named by what it writes; a command that shows one
of these calls the function here rather than spelling its own f-string.
"""

from __future__ import annotations


def money(dollars: float) -> str:
    """What a run shows while and after it runs: ``$1,234.56`` from a dollar up,
    ``$0.0123`` below (a cheap call's cost is in the third and fourth places)."""
    return f"${dollars:,.2f}" if dollars >= 1 else f"${dollars:.4f}"


def money_cents(dollars: float) -> str:
    """``$1,234.56``: budgets and forecasts, which a person sets and reads in cents."""
    return f"${dollars:,.2f}"


def money_exact(dollars: float | None) -> str:
    """``$1,234.5678`` (``unknown`` for None): records of what was spent, in
    columns (``status``, the report) and in estimates (``plan``, ``why``)."""
    return "unknown" if dollars is None else f"${dollars:,.4f}"


def money_as_given(dollars: float) -> str:
    """``$0.5``: a limit echoed as its user wrote it (a phase's ``max_cost``)."""
    return f"${dollars:g}"


def clock(seconds: float | None) -> str:
    """``H:MM:SS`` (``--:--:--`` when unknown): elapsed time and ETA."""
    if seconds is None:
        return "--:--:--"
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def running(seconds: float) -> str:
    """A short running time: ``4.2s``, ``12:05``, ``1:02:03``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        whole = int(seconds)
        return f"{whole // 60}:{whole % 60:02d}"
    return clock(seconds)


def duration(seconds: float | None) -> str:
    """How long something took: ``1.23s``, ``2m03.4s`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"



#: Plurals no rule below gives the singular of (lower case).
_IRREGULAR = {
    "people": "person", "children": "child", "men": "man", "women": "woman", "mice": "mouse",
    "quizzes": "quiz", "caches": "cache", "niches": "niche", "headaches": "headache",
    "avalanches": "avalanche", "cliches": "cliche", "quiches": "quiche",
    "movies": "movie", "cookies": "cookie", "zombies": "zombie", "calories": "calorie",
    "selfies": "selfie", "rookies": "rookie", "brownies": "brownie", "smoothies": "smoothie",
    "heroes": "hero", "potatoes": "potato", "tomatoes": "tomato", "echoes": "echo", "vetoes": "veto",
    "leaves": "leaf", "lives": "life", "knives": "knife", "wives": "wife", "wolves": "wolf",
    "halves": "half", "shelves": "shelf", "thieves": "thief", "loaves": "loaf", "calves": "calf",
    "analyses": "analysis", "theses": "thesis", "crises": "crisis", "diagnoses": "diagnosis",
    "hypotheses": "hypothesis", "synopses": "synopsis", "axes": "axis",
    "statuses": "status", "viruses": "virus", "campuses": "campus", "buses": "bus", "bonuses": "bonus",
    "censuses": "census", "corpuses": "corpus", "focuses": "focus", "canvases": "canvas",
    "aliases": "alias", "atlases": "atlas", "gases": "gas", "lenses": "lens",
}
#: Endings of nouns in s that are singular already (``class``, ``analysis``).
_KEPT_ENDINGS = ("ss", "sis")
#: Nouns in s that are singular already, or the same in both numbers.
_KEPT = {"series", "species", "news", "means", "status", "corpus", "campus", "virus", "bonus", "census",
         "focus", "chorus", "genus", "bus", "lens", "atlas", "canvas", "alias", "gas"}
#: Endings after which the plural adds ``es``: ``batch`` -> ``batches``.
_ES_AFTER = ("sses", "shes", "ches", "xes", "zzes")


def singular(noun: str) -> str:
    """The singular of an item noun, for a count of one: ``books`` -> ``book``,
    ``batches`` -> ``batch``, ``categories`` -> ``category``, ``sub-items`` ->
    ``sub-item``; a noun that is singular already (``data``, ``status``) is kept.
    The last word is changed, in its own case (``BATCHES`` -> ``BATCH``)."""
    cut = max(noun.rfind(mark) for mark in " -_") + 1
    head, word = noun[:cut], noun[cut:]
    lower = word.lower()
    one = _IRREGULAR.get(lower)
    if one is None:
        if not lower.endswith("s") or len(lower) < 2 or lower.endswith(_KEPT_ENDINGS) or lower in _KEPT:
            return noun
        if lower.endswith("ies") and len(lower) > 4:
            one = lower[:-3] + "y"
        elif lower.endswith(_ES_AFTER):
            one = lower[:-2]
        else:
            one = lower[:-1]
    same = 0  # the singular shares the plural's start: keep the word's own letters there
    while same < min(len(one), len(word)) and one[same] == lower[same]:
        same += 1
    rest = one[same:]
    return head + word[:same] + (rest.upper() if word.isupper() else rest)


def count_of(count: int, noun: str) -> str:
    """``1 book``, ``3 books``: a count with its item noun in the right number."""
    return f"{count:,} {singular(noun) if count == 1 else noun}"


def number(value: float) -> str:
    """A rate or a limit as a person writes it: ``2,000,000``, ``0.5``."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def estimate(seconds: float | None) -> str:
    """A rough time to come: ``1.5 s``, ``12 min``, ``3.2 h`` (``unknown`` for None)."""
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def tokens(count: int) -> str:
    """A token count with thousands separators: ``12,345``."""
    return f"{count:,}"
