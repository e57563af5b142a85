"""The one place tool calls are observed: an INFO line each, and span attributes.

The MCP SDK (2.3) already opens a SERVER span per request, named
`tools/call <tool>`, continuing the client's trace when the request's `_meta`
carries W3C trace context (`traceparent`, `tracestate`); the facade's spans
(and their HTTP requests) nest under it. `observed` adds what only this server
knows to that span -- the outcome and the client's short session handle -- and
logs one line per call: tool, outcome, duration, handle, JSON-RPC request id.
Arguments (the user's code, file contents) are never logged.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["observed"]

log = logging.getLogger("agentrun_ci_mcp")


def observed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`fn` (a tool taking keyword arguments, `ctx` among them) with its call observed."""

    @functools.wraps(fn)
    async def call(**kwargs: Any) -> Any:
        started = time.perf_counter()
        request_id = _request_id(kwargs.get("ctx"))
        try:
            result = await fn(**kwargs)
        except BaseException as exc:
            _finish(name, "failed", started, request_id, None, type(exc).__name__)
            raise
        outcome, handle = _outcome(result)
        _finish(name, outcome, started, request_id, handle, None)
        await _flush_logs(kwargs.get("ctx"))
        return result

    return call


async def _flush_logs(ctx: Any) -> None:
    """The call's log notifications before its result (for clients that asked for them)."""
    try:
        logs = ctx.request_context.lifespan_context.logs
    except (AttributeError, LookupError, ValueError):  # outside a request (tests)
        return
    await logs.flush()


def _request_id(ctx: Any) -> str | None:
    try:
        return str(ctx.request_id) if ctx is not None else None
    except (AttributeError, LookupError, ValueError):  # outside a request (tests)
        return None


def _outcome(result: Any) -> tuple[str, str | None]:
    """(outcome, session handle) of a tool's return value."""
    structured = getattr(result, "structured_content", None)
    if structured is None and hasattr(result, "model_dump"):
        structured = result.model_dump()
    handle = structured.get("session") if isinstance(structured, dict) else None
    if getattr(result, "is_error", False):
        status = structured.get("status") if isinstance(structured, dict) else None
        outcome = status if isinstance(status, str) and status not in ("", "ok") else "error"
    else:
        outcome = "ok"
    return outcome, handle if isinstance(handle, str) else None


def _finish(
    name: str,
    outcome: str,
    started: float,
    request_id: str | None,
    handle: str | None,
    error_type: str | None,
) -> None:
    elapsed = time.perf_counter() - started
    # agentrun_ci is loaded by the tool itself (the server imports it after the handshake)
    telemetry = sys.modules.get("agentrun_ci._telemetry")
    if telemetry is not None and telemetry.get() is not None:
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("agentrun_ci.outcome", outcome)
            if handle:
                span.set_attribute("agentrun_ci_mcp.session", handle)
    if not log.isEnabledFor(logging.INFO):
        return
    short = handle if handle is None or len(handle) <= 10 else "…" + handle[-8:]
    log.info(
        "tool %s %s in %.3fs (session %s, request %s%s)",
        name,
        outcome,
        elapsed,
        short,
        request_id,
        f", {error_type}" if error_type else "",
        extra={
            "event": "tool_call",
            "tool": name,
            "outcome": outcome,
            "duration": round(elapsed, 6),
            "session": short,
            "request_id": request_id,
            "error_type": error_type,
        },
    )
