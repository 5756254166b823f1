"""pipekit-otel: OpenTelemetry traces and metrics for pipekit runs.

Installed, it records a span for the run, each item and each phase, and
counters and histograms for phases, durations, tokens and cost, whenever the
standard ``OTEL_*`` environment variables name an exporter (for example
``OTEL_TRACES_EXPORTER=otlp`` and ``OTEL_EXPORTER_OTLP_ENDPOINT``), or the
application installed an SDK provider globally. Otherwise it does nothing.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from typing import TYPE_CHECKING
from typing import Any

from pipekit import hookimpl
from pipekit.config import Config


if TYPE_CHECKING:
    from pipekit_otel.providers import Providers
    from pipekit_otel.telemetry import Telemetry

__version__ = importlib.metadata.version("pipekit-otel")


#: Registration name of the per-run ``Telemetry``.
PLUGIN_NAME = "otel-telemetry"


@hookimpl
def pipekit_configure(config: Config) -> None:
    """Set up providers from ``OTEL_*`` and register this run's ``Telemetry``."""
    if not any(k.startswith("OTEL_") for k in os.environ) and "opentelemetry.trace" not in sys.modules:
        return  # nothing to export to, and no application provider: skip importing the SDK
    from pipekit_otel.providers import providers_from_env
    from pipekit_otel.telemetry import Telemetry

    providers = providers_from_env(os.environ)
    if providers is None:
        return
    telemetry = Telemetry(providers.tracer_provider, providers.meter_provider)
    config.pluginmanager.register(telemetry, PLUGIN_NAME)
    config.add_cleanup(providers.close)


@hookimpl
def pipekit_unconfigure(config: Config) -> None:
    """Unregister this run's ``Telemetry`` (the cleanup then flushes the exporters)."""
    telemetry = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if telemetry is not None:
        config.pluginmanager.unregister(telemetry)


def __getattr__(name: str) -> Any:
    # Telemetry and providers_from_env import the OpenTelemetry SDK: only on use.
    if name in ("Telemetry", "Providers", "providers_from_env"):
        from pipekit_otel import providers
        from pipekit_otel import telemetry

        return getattr(telemetry if name == "Telemetry" else providers, name)
    raise AttributeError(name)


__all__ = ["Providers", "Telemetry", "__version__", "providers_from_env"]
