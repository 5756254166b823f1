"""Tracer and meter providers from the standard ``OTEL_*`` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import importlib.metadata
import sys
from typing import Any

from opentelemetry import metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pipekit.outcomes import UsageError


@dataclass
class Providers:
    """The providers telemetry goes to; ``owned`` ones are shut down (flushed) at the end."""

    tracer_provider: Any
    meter_provider: Any
    owned: bool

    def close(self) -> None:
        """Flush what is pending; shut down the providers this plugin made."""
        for provider in (self.tracer_provider, self.meter_provider):
            if self.owned:
                provider.shutdown()
            elif hasattr(provider, "force_flush"):
                provider.force_flush()


def providers_from_env(environ: Mapping[str, str]) -> Providers | None:
    """Providers as the OpenTelemetry SDK's environment variables describe them.

    - ``OTEL_SDK_DISABLED=true``: none (the plugin stays quiet).
    - An SDK provider the application already installed globally (for example
      through ``opentelemetry-instrument``) is used as it is.
    - Otherwise ``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER`` name the
      exporters (``console``, ``otlp`` with ``opentelemetry-exporter-otlp``
      installed, ...); when neither is set, ``OTEL_EXPORTER_OTLP_ENDPOINT``
      means ``otlp``, and with none of them there is nothing to export to.
      ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``,
      ``OTEL_METRIC_EXPORT_INTERVAL`` and the exporters' own variables apply.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    tracer_provider, meter_provider = trace.get_tracer_provider(), metrics.get_meter_provider()
    if isinstance(tracer_provider, TracerProvider) or isinstance(meter_provider, MeterProvider):
        return Providers(tracer_provider, meter_provider, owned=False)
    otlp = "otlp" if any(k.startswith("OTEL_EXPORTER_OTLP_") and k.endswith("ENDPOINT") for k in environ) else "none"
    span_exporters = _exporters("traces", environ.get("OTEL_TRACES_EXPORTER", otlp))
    metric_exporters = _exporters("metrics", environ.get("OTEL_METRICS_EXPORTER", otlp))
    if not span_exporters and not metric_exporters:
        return None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "pipekit"}))
    tracer_provider = TracerProvider(resource=resource)
    for exporter in span_exporters:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers = [PeriodicExportingMetricReader(exporter) for exporter in metric_exporters]
    return Providers(tracer_provider, MeterProvider(resource=resource, metric_readers=readers), owned=True)


def _exporters(signal: str, names: str) -> list[Any]:
    exporters = []
    available = {ep.name: ep for ep in importlib.metadata.entry_points(group=f"opentelemetry_{signal}_exporter")}
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name == "none":
            continue
        if name not in available:
            hint = " (pip install 'pipekit-otel[otlp]')" if name.startswith("otlp") else ""
            raise UsageError(
                f"OTEL_{signal.upper()}_EXPORTER={name}: no OpenTelemetry {signal} exporter of that name "
                f"is installed{hint}; installed: {', '.join(sorted(available)) or 'none'}"
            )
        cls = available[name].load()
        # pipekit's stdout carries --jsonl events: console output goes to stderr.
        exporters.append(cls(out=sys.stderr) if name == "console" else cls())
    return exporters
