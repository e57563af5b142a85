"""`--log-format json`: one JSON object per log line, for log collectors.

Each line has `time`, `level`, `logger` and `message`, plus the structured
fields a call logs with `extra=` (`event`, `outcome`, `duration`, `session`,
`request_id`, …: see docs/observability.md), and `trace_id`/`span_id` when
OpenTelemetry has a span current. Messages are the same text the plain format
prints: what is masked there is masked here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

__all__ = ["LOG_FORMATS", "JsonFormatter", "use_log_format"]

LOG_FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]

# what every LogRecord has; anything else on a record came from `extra=`
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """A LogRecord as one line of JSON (non-JSON values as their `str`)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and value is not None:
                line[key] = value
        _add_trace(line)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _add_trace(line: dict[str, Any]) -> None:
    # only when OpenTelemetry is already loaded: formatting a line never imports it
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        line["trace_id"] = f"{context.trace_id:032x}"
        line["span_id"] = f"{context.span_id:016x}"


def use_log_format(log_format: str, logger: logging.Logger | None = None) -> None:
    """Give every handler of `logger` (default: the root logger) the chosen format.

    "text" leaves the handlers as they are.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    if log_format == "text":
        return
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter())
