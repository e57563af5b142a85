"""The real OpenTelemetry SDK with in-memory exporters, installed once per test process.

OpenTelemetry's global providers can be set only once per process, so every
telemetry test shares these; `Captured.clear()` forgets what earlier tests
recorded, and metric assertions compare against a reading taken before the workload.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@attrs.define
class Captured:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def clear(self) -> None:
        self.spans.clear()

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        found = list(self.spans.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.finished(name)
        names = sorted({s.name for s in self.finished()})
        assert len(found) == 1, f"expected one span {name!r}, got {len(found)} (have: {names})"
        return found[0]

    def points(self, metric: str) -> list[Any]:
        """The data points of `metric` in a fresh reading (cumulative since the start)."""
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        out.extend(m.data.data_points)
        return out

    def value(self, metric: str, **attributes: Any) -> float:
        """Sum (counters, gauges) or count (histograms) of the points matching `attributes`."""
        total = 0.0
        for point in self.points(metric):
            if all(point.attributes.get(k) == v for k, v in attributes.items()):
                total += point.count if hasattr(point, "count") else point.value
        return total


_captured: Captured | None = None


def install() -> Captured:
    global _captured
    if _captured is None:
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _captured = Captured(spans, reader)
    return _captured


def capture() -> Iterator[Captured]:
    """Body of a test module's `otel` fixture: the shared SDK, emptied before and after."""
    captured = install()
    captured.clear()
    yield captured
    captured.clear()


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    for candidate in spans:
        if candidate.context.span_id == span.parent.span_id:
            return candidate
    return None


def attrs_of(span: ReadableSpan) -> Mapping[str, Any]:
    return dict(span.attributes or {})
