"""pipekit-otel with the OpenTelemetry SDK's in-memory exporters."""

from __future__ import annotations

import json

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
import pytest

from pipekit.testing import PipeTester
from pipekit_otel import Telemetry


PIPELINE = '''
    import time
    from pipekit import phase, PhaseResult

    PIPELINE_NAME = "books"

    def already_fetched(item_id):
        return "cached text" if item_id == "emma" else None

    @phase(1, cache=already_fetched)
    def fetch(item_id):
        time.sleep(0.01)
        return "fetched text"

    @phase(2, retries=1, retry_backoff=0.01)
    def draft(item_id, fetch, ctx):
        ctx.record_cost(tokens_in=100, tokens_out=10, cost_usd=0.5)
        if item_id == "moby":
            raise ValueError("the whale got away")
        return PhaseResult(output=fetch + " drafted", tokens_in=1000, tokens_out=200, cost_usd=0.25)
'''


class Recorded:
    """Telemetry wired to in-memory exporters."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.plugin = Telemetry(tracer_provider, MeterProvider(metric_readers=[self.metrics]))

    def points(self, name: str) -> dict[tuple[tuple[str, object], ...], float]:
        """Summed data points of metric ``name`` by their attributes."""
        found: dict[tuple[tuple[str, object], ...], float] = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            key = tuple(sorted(point.attributes.items()))
                            found[key] = getattr(point, "value", None) or getattr(point, "count", 0)
        return found


def test_span_tree_attributes_and_metrics_of_a_run_with_a_failure_and_a_cached_skip(pipetester: PipeTester) -> None:
    pipetester.make_pipeline(PIPELINE)
    recorded = Recorded()
    result = pipetester.run("pipeline.py", "--item", "emma", "--item", "moby", plugins=[recorded.plugin])
    assert result.ret == 1, result
    spans = recorded.spans.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (run,) = by_name["pipekit.run"]
    assert run.parent is None
    assert run.attributes["pipekit.pipeline"] == "books"
    assert run.attributes["pipekit.exit_status"] == 1
    assert run.status.status_code is StatusCode.ERROR
    items = {s.attributes["pipekit.item.id"]: s for s in by_name["pipekit.item"]}
    assert set(items) == {"emma", "moby"}
    phases = {
        (s.attributes["pipekit.item.id"], s.attributes["pipekit.phase.num"]): s
        for s in spans
        if s.name.startswith("pipekit.phase ")
    }
    assert set(phases) == {("emma", 1), ("emma", 2), ("moby", 1), ("moby", 2)}
    assert len(spans) == 1 + 2 + 4
    # Parents and timings: every span lies inside its parent, in one trace.
    for item in items.values():
        assert item.parent.span_id == run.context.span_id
        assert run.start_time <= item.start_time <= item.end_time <= run.end_time
    for (item_id, _), span in phases.items():
        parent = items[item_id]
        assert span.parent.span_id == parent.context.span_id
        assert span.context.trace_id == run.context.trace_id
        assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time
    assert phases["moby", 1].end_time <= phases["moby", 2].start_time

    cached = phases["emma", 1]
    assert cached.name == "pipekit.phase fetch"
    assert cached.attributes["pipekit.phase.cached"] is True
    assert cached.attributes["pipekit.phase.status"] == "skipped"
    assert cached.attributes["pipekit.phase.reason"] == "cache"

    done = phases["emma", 2]
    assert done.attributes["pipekit.phase.status"] == "completed"
    assert done.attributes["pipekit.phase.name"] == "draft"
    assert (done.attributes["pipekit.tokens.in"], done.attributes["pipekit.tokens.out"]) == (1100, 210)
    assert done.attributes["pipekit.cost_usd"] == pytest.approx(0.75)
    assert done.attributes["pipekit.phase.attempt"] == 1
    assert done.status.status_code is StatusCode.UNSET
    assert items["emma"].attributes["pipekit.item.status"] == "completed"

    failed = phases["moby", 2]
    assert failed.attributes["pipekit.phase.status"] == "failed"
    assert failed.attributes["pipekit.phase.attempt"] == 2
    # Both attempts spent their recorded usage.
    assert failed.attributes["pipekit.cost_usd"] == pytest.approx(1.0)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: the whale got away"
    exceptions = [e for e in failed.events if e.name == "exception"]
    assert [e.attributes.get("pipekit.retried", False) for e in exceptions] == [True, False]
    assert all(e.attributes["exception.message"] == "the whale got away" for e in exceptions)
    assert items["moby"].status.status_code is StatusCode.ERROR
    assert items["moby"].attributes["pipekit.item.status"] == "failed"
    assert phases["moby", 1].attributes["pipekit.phase.cached"] is False

    phases_counted = recorded.points("pipekit.phases")
    def count(name: str, status: str) -> float:
        key = (("pipekit.phase.name", name), ("pipekit.phase.status", status), ("pipekit.pipeline", "books"))
        return phases_counted.get(key, 0)
    assert count("fetch", "skipped") == 1
    assert count("fetch", "completed") == 1
    assert count("draft", "completed") == 1
    assert count("draft", "retried") == 1
    assert count("draft", "failed") == 1
    costs = recorded.points("pipekit.cost")
    assert costs[(("pipekit.phase.name", "draft"), ("pipekit.pipeline", "books"))] == pytest.approx(1.75)
    tokens = recorded.points("pipekit.tokens")
    key = (("pipekit.phase.name", "draft"), ("pipekit.pipeline", "books"), ("pipekit.token.type", "input"))
    assert tokens[key] == 1100 + 200
    durations = recorded.points("pipekit.phase.duration")
    key = (("pipekit.phase.name", "draft"), ("pipekit.phase.status", "failed"), ("pipekit.pipeline", "books"))
    assert durations[key] == 1
    items_counted = recorded.points("pipekit.items")
    assert items_counted[(("pipekit.item.status", "failed"), ("pipekit.pipeline", "books"))] == 1


def test_configured_by_otel_environment_variables(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    pipetester.make_pipeline(PIPELINE)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "book-factory")
    result = pipetester.run("pipeline.py", "--item", "emma", "-p", "otel", "--jsonl")
    assert result.ret == 0, result
    # Spans go to stderr: stdout stays pure --jsonl.
    assert all(json.loads(line)["event"] for line in result.stdout.splitlines())
    assert '"name": "pipekit.run"' in result.stderr
    assert '"name": "pipekit.phase draft"' in result.stderr
    assert '"service.name": "book-factory"' in result.stderr


@pytest.mark.parametrize(
    "env",
    [{}, {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}],
)
def test_quiet_without_an_exporter(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", "--item", "emma", "-p", "otel")
    assert result.ret == 0, result
    assert "pipekit.run" not in result.stderr


def test_an_exporter_that_is_not_installed_is_a_usage_error(
    pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    pipetester.make_pipeline(PIPELINE)
    result = pipetester.run("pipeline.py", "--item", "emma", "-p", "otel")
    assert result.ret == 4, result
    assert "OTEL_TRACES_EXPORTER=zipkin: no OpenTelemetry traces exporter of that name is installed" in result.stderr


def test_a_provider_the_application_installed_is_used_and_not_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from pipekit_otel import providers_from_env

    installed = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: installed)
    providers = providers_from_env({})
    assert providers is not None
    assert providers.tracer_provider is installed
    assert providers.owned is False
    assert providers_from_env({"OTEL_SDK_DISABLED": "true"}) is None


def test_spans_a_handler_starts_nest_under_its_phase(pipetester: PipeTester, monkeypatch: pytest.MonkeyPatch) -> None:
    pipetester.make_pipeline('''
        from opentelemetry import trace
        from pipekit import phase

        tracer = trace.get_tracer("books.client")

        @phase(1)
        def in_a_thread(item_id):
            with tracer.start_as_current_span("llm call"):
                pass

        @phase(2)
        async def on_the_loop(item_id):
            with tracer.start_as_current_span("llm call"):
                pass
    ''')
    recorded = Recorded()
    # The handler's tracer comes from the global API: let it reach the same provider.
    from opentelemetry import trace

    provider = recorded.plugin.tracer_provider
    monkeypatch.setattr(trace, "get_tracer", lambda name, *args, **kwargs: provider.get_tracer(name, *args, **kwargs))
    result = pipetester.run("pipeline.py", "--item", "a", "--item", "b", "-j", "2", plugins=[recorded.plugin])
    assert result.ret == 0, result
    spans = recorded.spans.get_finished_spans()
    phases = {s.context.span_id: s for s in spans if s.name.startswith("pipekit.phase ")}
    calls = [s for s in spans if s.name == "llm call"]
    assert len(calls) == 4
    parents = [phases[call.parent.span_id] for call in calls]
    assert all(p.context.trace_id == c.context.trace_id for p, c in zip(parents, calls, strict=True))
    assert sorted((p.attributes["pipekit.item.id"], p.name) for p in parents) == [
        ("a", "pipekit.phase in_a_thread"), ("a", "pipekit.phase on_the_loop"),
        ("b", "pipekit.phase in_a_thread"), ("b", "pipekit.phase on_the_loop"),
    ]
