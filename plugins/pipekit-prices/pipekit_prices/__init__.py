"""pipekit-prices: price ``ctx.record_usage`` calls from the genai-prices database.

Installed, it answers pipekit's ``pipekit_price_usage`` hook, so a handler that
reports ``ctx.record_usage(model="gpt-4o", tokens_in=..., tokens_out=...)``
gets its ``cost_usd`` filled in. The prices ship inside the ``genai-prices``
package: nothing is fetched at run time. A model the database does not know
is reported once on stderr and costs 0; it never fails a phase.
"""

from __future__ import annotations

from collections.abc import Callable
import importlib.metadata
import sys
import threading

from pipekit import hookimpl
from pipekit.config import Config


__version__ = importlib.metadata.version("pipekit-prices")

#: Registration name of the per-run ``PriceBook``.
PLUGIN_NAME = "prices-book"


class PriceBook:
    """Prices usage for one run; safe to call from many handler threads at once.

    :param report: where the one-time warning about an unknown model goes
        (stderr by default).
    """

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self._report = report or _to_stderr
        # genai-prices keeps lookup caches in plain dicts; sync handlers call from threads.
        self._lock = threading.Lock()
        self._unknown: set[str] = set()
        self._providers: set[str] | None = None
        #: Calls priced and calls that could not be, in this run.
        self.priced = 0
        self.unpriced = 0

    def price(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Dollars for one call; 0 (warned once per model) when the model is unknown.

        ``provider:model`` (``"openai:gpt-4o"``) picks the provider; a bare
        model name lets genai-prices find the most likely one.
        """
        import genai_prices  # on first use: a run that prices nothing does not load the database

        usage = genai_prices.Usage(input_tokens=tokens_in, output_tokens=tokens_out)
        with self._lock:
            provider, name = self._split(model)
            try:
                calculation = genai_prices.calc_price(usage, name, provider_id=provider)
            except LookupError as exc:
                self.unpriced += 1
                if model not in self._unknown:
                    self._unknown.add(model)
                    self._report(
                        f"pipekit-prices: warning: no price for model {model!r} ({exc}); "
                        f"its usage is recorded with cost 0 (reported once per model)"
                    )
                return 0.0
            self.priced += 1
        return float(calculation.total_price)

    def _split(self, model: str) -> tuple[str | None, str]:
        # Only a known provider id counts as a prefix: "ft:gpt-4o:org:id" is one model name.
        if self._providers is None:
            import genai_prices

            self._providers = {p.id for p in genai_prices.data_snapshot.get_snapshot().providers}
        provider, sep, name = model.partition(":")
        return (provider, name) if sep and provider in self._providers else (None, model)

    @hookimpl(trylast=True)
    def pipekit_price_usage(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Answer pipekit's pricing hook from the genai-prices database, after any
        other implementation (a pipeline module pricing its own model) declined."""
        return self.price(model, tokens_in, tokens_out)


@hookimpl
def pipekit_configure(config: Config) -> None:
    """Register a fresh ``PriceBook`` for this run (its warnings are per run)."""
    config.pluginmanager.register(PriceBook(), PLUGIN_NAME)


@hookimpl
def pipekit_unconfigure(config: Config) -> None:
    """Drop this run's ``PriceBook``."""
    book = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if book is not None:
        config.pluginmanager.unregister(book)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
