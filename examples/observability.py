"""Observability: OpenTelemetry spans and metrics, resource usage, log lines.

    python -m venv .venv && .venv/bin/pip install -e '.[local,otel]' opentelemetry-sdk
    .venv/bin/python examples/observability.py

The library only uses the OpenTelemetry API; the application (this script) brings
the SDK and an exporter -- here the console exporters, which print each span and
the metrics as JSON. Without credentials this runs on the local emulator.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from agentrun_ci import CodeInterpreter


def configure_opentelemetry() -> MeterProvider:
    """The application's part: a provider and an exporter for traces and for metrics."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    # a long interval: the metrics are printed once, at shutdown
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=3600_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    return meter_provider


def main() -> None:
    meter_provider = configure_opentelemetry()
    # one INFO line per execution (duration, outcome, short ids) on stderr
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its own line per request

    tracer = trace.get_tracer("examples.observability")
    with CodeInterpreter.from_env() as interpreter:
        interpreter.create_interpreter(name="observability", cpu=1.0, memory=1024)
        interpreter.start_session()
        # the application's own span: the library's spans nest under it
        with tracer.start_as_current_span("analyse"):
            interpreter.execute_code("data = bytearray(64 * 1024 * 1024)")  # 64 MiB
            execution = interpreter.execute_code("sum(i * i for i in range(2_000_000))")
        usage = execution.usage
        print("result:", execution.text)
        print("wall time (s):", usage.wall_time)
        print("cpu time (s):", usage.cpu_time)
        print("peak memory (MiB):", usage.peak_memory_mb)
    meter_provider.shutdown()  # prints the metrics once


if __name__ == "__main__":
    main()
