"""`OTelTracer`: runs as OpenTelemetry spans, named and attributed per the GenAI conventions.

Needs the ``chatstream[otel]`` extra. Spans go to whatever tracer provider the application set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from ..messages import AIMessageChunk
    from ..runs import Run

__all__ = ["OTelTracer"]

_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OTelTracer:
    """Opens a span when a run starts and ends it with the run's outcome."""

    inherit = False

    def __init__(self) -> None:
        self._tracer = trace.get_tracer("chatstream")
        self._spans: dict[Any, trace.Span] = {}

    def on_start(self, run: Run) -> None:
        """Open the run's span, as a child of its parent run's span."""
        parent = self._spans.get(run.parent_run_id)
        context = trace.set_span_in_context(parent) if parent is not None else None
        if run.run_type == "chat_model":
            model = str(run.invocation_params.get("model", run.name))
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
            }
            for key, attribute in _REQUEST_PARAMS.items():
                value = run.invocation_params.get(key)
                if isinstance(value, (int, float)):
                    attributes[attribute] = value
            if run.invocation_params.get("stop"):
                attributes["gen_ai.request.stop_sequences"] = list(run.invocation_params["stop"])
            name, kind = f"chat {model}", SpanKind.CLIENT
        else:
            attributes = {"gen_ai.operation.name": "invoke_agent"}
            name, kind = run.name, SpanKind.INTERNAL
        self._spans[run.id] = self._tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=_ns(run.start_time)
        )

    def on_chunk(self, run: Run, chunk: AIMessageChunk) -> None:
        """Nothing per chunk: the span is filled in at the end."""

    def on_end(self, run: Run) -> None:
        """Record usage, finish reasons and the response model, and end the span."""
        span = self._spans.pop(run.id, None)
        if span is None:
            return
        if run.run_type == "chat_model" and run.items:
            usage = run.usage
            if usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage["input_tokens"])
                span.set_attribute("gen_ai.usage.output_tokens", usage["output_tokens"])
            reasons = [
                str(o.response_metadata.get("finish_reason"))
                for o in run.outputs
                if o.response_metadata.get("finish_reason")
            ]
            if reasons:
                span.set_attribute("gen_ai.response.finish_reasons", reasons)
            metadata = run.output.response_metadata
            if metadata.get("model_name"):
                span.set_attribute("gen_ai.response.model", str(metadata["model_name"]))
            if run.output.id:
                span.set_attribute("gen_ai.response.id", run.output.id)
        span.end(end_time=_ns(run.end_time or run.start_time))

    def on_error(self, run: Run, error: BaseException) -> None:
        """Mark the span failed with the error's type, and end it."""
        span = self._spans.pop(run.id, None)
        if span is None:
            return
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end(end_time=_ns(run.end_time or run.start_time))
