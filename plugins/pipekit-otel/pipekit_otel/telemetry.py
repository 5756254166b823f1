"""Spans and metrics for one run, built from pipekit's observer hooks.

The span tree is ``pipekit.run`` > ``pipekit.item`` > ``pipekit.phase <name>``.
Parents are passed explicitly: items run concurrently on one event loop, so
"the current span" would mix them up. While a phase runs, its span is made
current in its item's task, whose context pipekit copies into the handler (a
coroutine or a thread): spans the handler or its instrumented clients start
nest under the phase.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.trace import Status
from opentelemetry.trace import StatusCode

from pipekit import hookimpl


#: The instrumentation scope name of everything this plugin records.
SCOPE = "pipekit"


class Telemetry:
    """Records a run's spans and metrics on the given providers.

    :param tracer_provider: an OpenTelemetry ``TracerProvider``.
    :param meter_provider: an OpenTelemetry ``MeterProvider``.
    """

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from pipekit_otel import __version__

        #: The provider spans go to.
        self.tracer_provider = tracer_provider
        self.tracer = tracer_provider.get_tracer(SCOPE, __version__)
        meter = meter_provider.get_meter(SCOPE, __version__)
        self.phases = meter.create_counter("pipekit.phases", "{phase}", "Phases ended, by status")
        self.items = meter.create_counter("pipekit.items", "{item}", "Items ended, by status")
        self.duration = meter.create_histogram("pipekit.phase.duration", "s", "Time a phase took, retries included")
        self.tokens = meter.create_counter("pipekit.tokens", "{token}", "Tokens used, by type (input, output)")
        self.cost = meter.create_counter("pipekit.cost", "USD", "Dollars spent")
        self._pipeline = ""
        self._run_span: Span | None = None
        self._item_spans: dict[str, Span] = {}
        self._phase_spans: dict[tuple[str, int], Span] = {}
        self._tokens: dict[tuple[str, int], object] = {}

    # -- run --------------------------------------------------------------------

    @hookimpl
    def pipekit_run_start(self, run: Any) -> None:
        self._pipeline = run.pipeline.name
        self._run_span = self.tracer.start_span(
            "pipekit.run",
            attributes={
                "pipekit.pipeline": self._pipeline,
                "pipekit.items.total": run.total_items,
                "pipekit.workers": getattr(run, "workers", 1),
            },
        )

    @hookimpl
    def pipekit_run_finish(self, run: Any, exitstatus: int) -> None:
        for span in [*self._phase_spans.values(), *self._item_spans.values()]:
            span.end()  # left open by an interruption or an internal error
        self._phase_spans.clear()
        self._item_spans.clear()
        self._tokens.clear()
        run_span = self._run_span
        if run_span is None:
            return
        run_span.set_attributes(
            {
                "pipekit.exit_status": exitstatus,
                "pipekit.items.completed": run.items_completed,
                "pipekit.items.failed": run.items_failed,
                "pipekit.tokens.in": run.tokens_in,
                "pipekit.tokens.out": run.tokens_out,
                "pipekit.cost_usd": run.cost_usd,
            }
        )
        if exitstatus != 0:
            run_span.set_status(Status(StatusCode.ERROR, f"exit status {exitstatus}"))
        run_span.end()
        self._run_span = None

    # -- item -------------------------------------------------------------------

    @hookimpl
    def pipekit_item_start(self, item: Any) -> None:
        self._item_spans[item.id] = self.tracer.start_span(
            "pipekit.item",
            context=_under(self._run_span),
            attributes={"pipekit.pipeline": self._pipeline, "pipekit.item.id": item.id},
        )

    @hookimpl
    def pipekit_item_finish(self, item: Any) -> None:
        span = self._item_spans.pop(item.id, None)
        status = item.state.status
        self.items.add(1, {"pipekit.pipeline": self._pipeline, "pipekit.item.status": status})
        if span is None:
            return
        span.set_attribute("pipekit.item.status", status)
        if status not in ("completed",):
            failed = [f"{n}" for n, p in sorted(item.state.phases.items()) if p.status == "failed"]
            span.set_status(Status(StatusCode.ERROR, f"{status}; failed phases: {', '.join(failed) or '-'}"))
        span.end()

    # -- phase --------------------------------------------------------------------

    @hookimpl
    def pipekit_phase_start(self, item: Any, phase: Any) -> None:
        key = (item.id, phase.num)
        span = self._phase_spans[key] = self._start_phase(item, phase)
        # Hooks run in the item's task: the handler started next inherits this context.
        self._tokens[key] = otel_context.attach(trace.set_span_in_context(span))

    @hookimpl
    def pipekit_phase_complete(self, item: Any, phase: Any, result: Any) -> None:
        self._detach(item, phase)
        span = self._phase_spans.pop((item.id, phase.num), None) or self._start_phase(item, phase)
        self._end_phase(
            span, item, phase, "completed", result.attempt, result.duration_seconds,
            result.tokens_in, result.tokens_out, result.cost_usd,
        )

    @hookimpl
    def pipekit_phase_retry(self, item: Any, phase: Any, error: BaseException, attempt: int) -> None:
        span = self._phase_spans.get((item.id, phase.num))
        if span is not None:
            span.record_exception(error, attributes={"pipekit.phase.attempt": attempt, "pipekit.retried": True})
        self.phases.add(1, self._labels(phase, "retried"))

    @hookimpl
    def pipekit_phase_fail(self, item: Any, phase: Any, error: BaseException) -> None:
        self._detach(item, phase)
        span = self._phase_spans.pop((item.id, phase.num), None) or self._start_phase(item, phase)
        state = item.state.phases[phase.num]
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.set_attribute("pipekit.phase.reason", state.reason or "error")
        self._end_phase(
            span, item, phase, "failed", state.attempts, state.duration_seconds or 0.0,
            state.tokens_in, state.tokens_out, state.cost_usd,
        )

    @hookimpl
    def pipekit_phase_skip(self, item: Any, phase: Any, reason: str) -> None:
        span = self._start_phase(item, phase)
        span.set_attributes({"pipekit.phase.reason": reason, "pipekit.phase.cached": reason == "cache"})
        span.set_attribute("pipekit.phase.status", "skipped")
        span.end()
        self.phases.add(1, self._labels(phase, "skipped"))

    def _detach(self, item: Any, phase: Any) -> None:
        token = self._tokens.pop((item.id, phase.num), None)
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def _start_phase(self, item: Any, phase: Any) -> Span:
        span: Span = self.tracer.start_span(
            f"pipekit.phase {phase.name}",
            context=_under(self._item_spans.get(item.id)),
            attributes={
                "pipekit.pipeline": self._pipeline,
                "pipekit.item.id": item.id,
                "pipekit.phase.num": phase.num,
                "pipekit.phase.name": phase.name,
                "pipekit.phase.critical": bool(phase.critical),
                "pipekit.phase.cached": False,
            },
        )
        return span

    def _end_phase(
        self,
        span: Span,
        item: Any,
        phase: Any,
        status: str,
        attempt: int,
        duration: float,
        tokens_in: int,
        tokens_out: int,
        cost: float,
    ) -> None:
        span.set_attributes(
            {
                "pipekit.phase.status": status,
                "pipekit.phase.attempt": attempt,
                "pipekit.tokens.in": tokens_in,
                "pipekit.tokens.out": tokens_out,
                "pipekit.cost_usd": cost,
            }
        )
        span.end()
        labels = self._labels(phase, status)
        self.phases.add(1, labels)
        self.duration.record(duration, labels)
        named = self._labels(phase)
        if tokens_in:
            self.tokens.add(tokens_in, {**named, "pipekit.token.type": "input"})
        if tokens_out:
            self.tokens.add(tokens_out, {**named, "pipekit.token.type": "output"})
        if cost:
            self.cost.add(cost, named)

    def _labels(self, phase: Any, status: str | None = None) -> dict[str, Any]:
        labels = {"pipekit.pipeline": self._pipeline, "pipekit.phase.name": phase.name}
        if status is not None:
            labels["pipekit.phase.status"] = status
        return labels


def _under(parent: Span | None) -> Any:
    return trace.set_span_in_context(parent) if parent is not None else None
