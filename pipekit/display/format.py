"""How pipekit writes durations and money, everywhere it shows them."""

from __future__ import annotations


def format_seconds(seconds: float | None) -> str:
    """``H:MM:SS`` (``--:--:--`` when unknown)."""
    if seconds is None:
        return "--:--:--"
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_running(seconds: float) -> str:
    """A short running time: ``4.2s``, ``12:05``, ``1:02:03``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        whole = int(seconds)
        return f"{whole // 60}:{whole % 60:02d}"
    return format_seconds(seconds)


def format_cost(cost: float) -> str:
    """Dollars with cents, and tenths of a cent below a dollar."""
    return f"${cost:,.2f}" if cost >= 1 else f"${cost:.4f}"



def singular(noun: str) -> str:
    """The singular of an item noun: ``books`` -> ``book`` (a noun without ``s`` is kept)."""
    return noun[:-1] if noun.endswith("s") and len(noun) > 1 else noun


def count_of(count: int, noun: str) -> str:
    """``1 book``, ``3 books``: a count with its item noun in the right number."""
    return f"{count:,} {singular(noun) if count == 1 else noun}"


def format_number(value: float) -> str:
    """A rate or a limit as a person writes it: ``2,000,000``, ``0.5``."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"
