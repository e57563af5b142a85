"""OpenTelemetry traces and metrics, optional and lazily imported.

`opentelemetry-api` is an optional dependency (the `otel` extra). The
application brings the SDK and its exporters, as OpenTelemetry asks libraries
to do; without a configured provider the API's no-op tracer and meter answer.

Three places are instrumented, each through one function of this module:

* `HttpSpan` -- every HTTP request either plane sends, one span per attempt,
  after OpenTelemetry's HTTP client semantic conventions. The data plane wraps
  its own `httpx` send; the control plane goes through Alibaba's package, so it
  wraps each package call at our `ControlPlane` boundary (method and URL
  template from the action table below).
* `traced` -- the facade's calls (execute, command, file operations, context and
  session lifecycle), on `AsyncLease` and `Runtime`.
* the MCP server's tool calls get their SERVER span from the MCP SDK (it continues
  the client's trace from `_meta`); `agentrun_ci_mcp` adds its attributes and log line.

Cost when off: `AVAILABLE` is decided once, from the import system's index and
without importing OpenTelemetry. When it is false, `traced` returns the method
unchanged and the planes see `get() is None`: one None check per request, no
allocation. OpenTelemetry itself is imported when the first plane is made. When
it is installed but the application set no provider, `Telemetry.active()` says so
and nothing is recorded (two provider look-ups per call, no span objects).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._version import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Span

__all__ = [
    "AVAILABLE",
    "HttpSpan",
    "Telemetry",
    "get",
    "short_id",
    "traced",
    "watch",
]

log = logging.getLogger("agentrun_ci.interpreter")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

SCOPE = "agentrun_ci"


def _installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


#: opentelemetry-api is importable (decided once; OpenTelemetry is not imported here)
AVAILABLE: bool = _installed()

_lock = threading.Lock()
_telemetry: Telemetry | None = None
_failed = False

# What the observable gauges read (weak: instrumentation never keeps anything alive).
_trackers: weakref.WeakSet[Any] = weakref.WeakSet()
_leases: weakref.WeakSet[Any] = weakref.WeakSet()
_pools: weakref.WeakSet[Any] = weakref.WeakSet()

# OpenTelemetry's recommended buckets for http.client.request.duration (seconds).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
EXECUTION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)

#: control-plane actions (Alibaba's package sends them) -> HTTP method and URL template
CONTROL_ROUTES: Mapping[str, tuple[str, str]] = {
    "CreateTemplate": ("POST", "/2025-09-10/templates"),
    "GetTemplate": ("GET", "/2025-09-10/templates/{templateName}"),
    "ListTemplates": ("GET", "/2025-09-10/templates"),
    "DeleteTemplate": ("DELETE", "/2025-09-10/templates/{templateName}"),
    "CreateSandbox": ("POST", "/2025-09-10/sandboxes"),
    "GetSandbox": ("GET", "/2025-09-10/sandboxes/{sandboxId}"),
    "ListSandboxes": ("GET", "/2025-09-10/sandboxes"),
    "StopSandbox": ("POST", "/2025-09-10/sandboxes/{sandboxId}/stop"),
    "DeleteSandbox": ("DELETE", "/2025-09-10/sandboxes/{sandboxId}"),
    "PauseSandbox": ("PUT", "/2025-09-10/sandboxes/{sandboxId}/pause"),
    "ResumeSandbox": ("PUT", "/2025-09-10/sandboxes/{sandboxId}/resume"),
}

# Data-plane paths carry ids; the URL template names them (low cardinality for span names).
_ID_SEGMENTS = re.compile(r"/(sandboxes|contexts|processes)/(?!execute(?:/|$))[^/]+")
_ID_NAMES = {"sandboxes": "sandboxId", "contexts": "contextId", "processes": "pid"}
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


@functools.lru_cache(maxsize=512)
def url_template(path: str) -> str:
    """`/sandboxes/01K…/contexts/c-1` -> `/sandboxes/{sandboxId}/contexts/{contextId}`."""
    return _ID_SEGMENTS.sub(lambda m: f"/{m[1]}/{{{_ID_NAMES[m[1]]}}}", path)


def short_id(value: str | None) -> str | None:
    """The last 8 characters of an id (enough to tell sessions apart in a log line)."""
    if not value:
        return None
    return value if len(value) <= 10 else "…" + value[-8:]


def get() -> Telemetry | None:
    """The instruments, made at the first call; None when OpenTelemetry is not installed."""
    if _telemetry is not None or not AVAILABLE or _failed:
        return _telemetry
    return _load()


def _load() -> Telemetry | None:
    global _telemetry, _failed
    with _lock:
        if _telemetry is None and not _failed:
            try:
                _telemetry = Telemetry()
            except ImportError as exc:  # a broken install: say so once, then stay off
                _failed = True
                log.warning("OpenTelemetry is installed but could not be imported: %s", exc)
        return _telemetry


def watch(kind: str, obj: Any) -> None:
    """Let the gauges read `obj` (kind: "tracker", "lease" or "pool"); no-op when off."""
    if AVAILABLE:
        {"tracker": _trackers, "lease": _leases, "pool": _pools}[kind].add(obj)


class Telemetry:
    """The tracer, the meter and every instrument, made once per process."""

    def __init__(self) -> None:
        import opentelemetry.metrics._internal as metrics_internal
        from opentelemetry import metrics, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        # `active()` reads where the API keeps the providers the application set (None
        # until then): the API's getters look up an environment variable on every call
        # (several µs). Asked once here, they load a provider named in that variable.
        trace.get_tracer_provider()
        metrics.get_meter_provider()
        self._trace, self._metrics = trace, metrics
        self._metrics_internal = metrics_internal
        self._active = False
        self.SpanKind = SpanKind
        self.error_status = Status(StatusCode.ERROR)
        self.tracer = trace.get_tracer(SCOPE, __version__)
        meter = metrics.get_meter(SCOPE, __version__)
        self.http_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP requests to the AgentRun control and data planes.",
            explicit_bucket_boundaries_advisory=HTTP_BUCKETS,
        )
        self.execution_duration = meter.create_histogram(
            "agentrun_ci.execution.duration",
            unit="s",
            description="Wall time of execute_code calls, by outcome.",
            explicit_bucket_boundaries_advisory=EXECUTION_BUCKETS,
        )
        self.errors = meter.create_counter(
            "agentrun_ci.errors",
            unit="{error}",
            description="Facade calls that raised, by operation and error type.",
        )
        self.retries = meter.create_counter(
            "agentrun_ci.retries",
            unit="{retry}",
            description="HTTP requests re-sent by the retry policy.",
        )
        meter.create_observable_up_down_counter(
            "agentrun_ci.sessions.active",
            callbacks=[_observe_sessions],
            unit="{session}",
            description="Sessions (sandboxes) created and not yet deleted.",
        )
        meter.create_observable_up_down_counter(
            "agentrun_ci.contexts.active",
            callbacks=[_observe_contexts],
            unit="{context}",
            description="Contexts (kernels) held by live leases.",
        )
        meter.create_observable_up_down_counter(
            "agentrun_ci.pool.sessions",
            callbacks=[_observe_pool_sessions],
            unit="{session}",
            description="Pool sessions by state (idle: parked, busy: leased or starting).",
        )
        meter.create_observable_up_down_counter(
            "agentrun_ci.pool.waiting",
            callbacks=[_observe_pool_waiting],
            unit="{lease}",
            description="Leases waiting for a pool session.",
        )

    def active(self) -> bool:
        """Whether the application configured a tracer or meter provider (once true, stays
        so: OpenTelemetry sets its global providers once). Until then the API's no-op
        objects would answer every call, so we make none: no span, no attribute dict."""
        if self._active:
            return True
        tracer_provider = getattr(self._trace, "_TRACER_PROVIDER", _ASK)
        meter_provider = getattr(self._metrics_internal, "_METER_PROVIDER", _ASK)
        if tracer_provider is _ASK or meter_provider is _ASK:  # another API layout: ask it
            tracer_provider = self._trace.get_tracer_provider()
            meter_provider = self._metrics.get_meter_provider()
        on = not _unset(tracer_provider) or not _unset(meter_provider)
        self._active = on
        return on

    # ------------------------------------------------------------ HTTP

    def http(self, request: Any, path: str, resend_count: int) -> HttpSpan:
        """A span for one data-plane request attempt (`request` is the httpx.Request)."""
        url = request.url
        full = str(url)
        query = full.find("?")
        return HttpSpan(
            self,
            request.method,
            url_template(path),
            url.host,
            url.port,
            resend_count,
            full if query < 0 else full[:query],  # file paths travel in the query: left out
        )

    def control(
        self, action: str, host: str | None, port: int | None, resend_count: int
    ) -> HttpSpan:
        """A span for one control-plane package call (`action` as the package names it)."""
        method, template = CONTROL_ROUTES.get(action, ("_OTHER", action))
        return HttpSpan(self, method, template, host, port, resend_count, None, action=action)


_ASK = object()


def _unset(provider: Any) -> bool:
    """No provider, the API's placeholder (nothing configured) or an explicit no-op one."""
    return provider is None or type(provider).__name__ in _PLACEHOLDERS


# opentelemetry-api's classes for "no provider": the proxy handed out until one is set
# (the meter's is private, hence names rather than classes) and the explicit no-ops
_PLACEHOLDERS = frozenset(
    {"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider"}
)


class HttpSpan:
    """One HTTP request attempt: a CLIENT span and one duration measurement.

    `with tel.http(...) as span: response = send(); span.status = response.status_code`

    The span is made when the attempt ends, with the start time taken when it began: one
    call into the SDK with every attribute, instead of a start, an attribute set and an end
    (each of which takes the span's lock). The span is never the current one in between
    (nothing nests under an HTTP request), so a trace shows the same span either way.
    """

    __slots__ = ("_attrs", "_extra", "_name", "_started", "_started_ns", "_tel", "status")

    def __init__(
        self,
        tel: Telemetry,
        method: str,
        template: str,
        host: str | None,
        port: int | None,
        resend_count: int,
        full_url: str | None,
        *,
        action: str | None = None,
    ) -> None:
        self._tel = tel
        known = method if method in _KNOWN_METHODS else "_OTHER"
        attrs: dict[str, Any] = {"http.request.method": known, "url.template": template}
        if host:
            attrs["server.address"] = host
        if port:
            attrs["server.port"] = port
        self._attrs = attrs  # the measurement's: low cardinality
        extra: dict[str, Any] = {}  # the span's only
        if known != method:
            extra["http.request.method_original"] = method
        if full_url is not None:
            extra["url.full"] = full_url
        if action is not None:
            extra["rpc.method"] = action
        if resend_count:
            extra["http.request.resend_count"] = resend_count
            tel.retries.add(1, {"url.template": template})
        self._extra = extra
        self._name = f"{known} {template}" if known != "_OTHER" else (action or "HTTP")
        self.status: int | None = None
        self._started_ns = time.time_ns()  # the span's start (wall clock, as the SDK's)
        self._started = time.perf_counter_ns()  # the duration's (monotonic)

    def __enter__(self) -> HttpSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter_ns() - self._started
        tel, attrs = self._tel, self._attrs
        error_type: str | None = None
        if self.status is not None:
            attrs["http.response.status_code"] = self.status
            if self.status >= 400:
                error_type = str(self.status)
        elif exc_type is not None:
            error_type = _error_type(exc_type)
        if error_type is not None:
            attrs["error.type"] = error_type
        span: Span = tel.tracer.start_span(
            self._name,
            kind=tel.SpanKind.CLIENT,
            attributes={**attrs, **self._extra},
            start_time=self._started_ns,
        )
        if error_type is not None:
            if exc is not None:
                span.record_exception(exc)
            span.set_status(tel.error_status)
        span.end(end_time=self._started_ns + elapsed)
        tel.http_duration.record(elapsed / 1e9, attrs)


def _error_type(exc_type: type[BaseException]) -> str:
    module = exc_type.__module__
    if module.startswith(("agentrun_ci", "builtins")):
        return exc_type.__qualname__
    return f"{module}.{exc_type.__qualname__}"


# ------------------------------------------------------------------ facade calls


def traced(operation: str) -> Callable[[F], F]:
    """Wrap a facade coroutine method in a span (and, for execute, a log line and a
    duration measurement). Without OpenTelemetry the method is returned unchanged --
    except execute_code, whose INFO line is logged either way."""

    def decorate(method: F) -> F:
        if not AVAILABLE and operation != "execute_code":
            return method

        @functools.wraps(method)
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            tel = get()
            if tel is None or not tel.active():
                if operation == "execute_code":
                    return await _logged_execute(method, self, args, kwargs)
                return await method(self, *args, **kwargs)
            return await _traced_call(tel, operation, method, self, args, kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


async def _logged_execute(
    method: Callable[..., Awaitable[Any]], owner: Any, args: Any, kwargs: Any
) -> Any:
    started = time.perf_counter()
    try:
        result = await method(owner, *args, **kwargs)
    except BaseException as exc:
        _log_execution(owner, kwargs, None, exc, time.perf_counter() - started)
        raise
    _log_execution(owner, kwargs, result, None, time.perf_counter() - started)
    return result


async def _traced_call(
    tel: Telemetry,
    operation: str,
    method: Callable[..., Awaitable[Any]],
    owner: Any,
    args: Any,
    kwargs: Any,
) -> Any:
    attributes: dict[str, Any] = {"agentrun_ci.operation": operation}
    language = kwargs.get("language")
    if operation in ("execute_code", "create_context"):
        language = language or (args[1] if operation == "create_context" and args else None)
        attributes["agentrun_ci.language"] = language or "python"
    sandbox_id = getattr(owner, "session_id", None)
    if operation == "delete_session" and args:
        sandbox_id = args[0]
    if sandbox_id:
        attributes["agentrun_ci.sandbox_id"] = sandbox_id
    key = getattr(owner, "key", None)
    if isinstance(key, str):
        attributes["agentrun_ci.lease"] = key
    started = time.perf_counter()
    with tel.tracer.start_as_current_span(
        f"agentrun_ci.{operation}",
        kind=tel.SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        try:
            result = await method(owner, *args, **kwargs)
        except BaseException as exc:
            elapsed = time.perf_counter() - started
            error_type = _error_type(type(exc))
            span.set_attribute("error.type", error_type)
            span.set_attribute("agentrun_ci.outcome", "failed")
            tel.errors.add(1, {"agentrun_ci.operation": operation, "error.type": error_type})
            if operation == "execute_code":
                tel.execution_duration.record(elapsed, {"agentrun_ci.outcome": "failed"})
                _log_execution(owner, kwargs, None, exc, elapsed)
            raise
        elapsed = time.perf_counter() - started
        _describe(span, operation, owner, result)
        if operation == "execute_code":
            outcome = getattr(result, "status", "ok")
            tel.execution_duration.record(elapsed, {"agentrun_ci.outcome": outcome})
            _log_execution(owner, kwargs, result, None, elapsed)
        return result


def _describe(span: Span, operation: str, owner: Any, result: Any) -> None:
    """Attributes known once the call returned (ids may be new: a first call takes a session)."""
    sandbox_id = getattr(owner, "session_id", None)
    if operation == "start_session":
        sandbox_id = getattr(result, "id", None)  # the HeldSession just started
    if isinstance(sandbox_id, str) and sandbox_id:
        span.set_attribute("agentrun_ci.sandbox_id", sandbox_id)
    if operation == "create_context" and isinstance(getattr(result, "id", None), str):
        span.set_attribute("agentrun_ci.context_id", result.id)
    if operation != "execute_code" or result is None:
        return
    if result.context_id:
        span.set_attribute("agentrun_ci.context_id", result.context_id)
    if result.execution_count is not None:
        span.set_attribute("agentrun_ci.execution_count", result.execution_count)
    span.set_attribute("agentrun_ci.outcome", result.status)
    span.set_attribute("agentrun_ci.state_reset", bool(result.state_reset))
    if result.error is not None:
        span.set_attribute("agentrun_ci.error_name", result.error.name)


def _log_execution(
    owner: Any, kwargs: Mapping[str, Any], result: Any, exc: BaseException | None, elapsed: float
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    session = short_id(getattr(owner, "session_id", None))
    language = kwargs.get("language") or "python"
    if exc is not None:
        request_id = getattr(exc, "request_id", None)
        log.info(
            "execute %s failed in %.3fs: %s (session %s, request %s)",
            language,
            elapsed,
            type(exc).__name__,
            session,
            request_id,
            extra={
                "event": "execute",
                "outcome": "failed",
                "duration": round(elapsed, 6),
                "language": language,
                "session": session,
                "error_type": type(exc).__name__,
                "request_id": request_id,
            },
        )
        return
    context = short_id(getattr(result, "context_id", None))
    usage = getattr(result, "usage", None)
    log.info(
        "execute %s %s in %.3fs (session %s, context %s, count %s, request %s%s)",
        language,
        result.status,
        elapsed,
        session,
        context,
        result.execution_count,
        getattr(result, "request_id", None),
        ", state reset" if result.state_reset else "",
        extra={
            "event": "execute",
            "outcome": result.status,
            "duration": round(elapsed, 6),
            "language": language,
            "session": session,
            "context": context,
            "execution_count": result.execution_count,
            "state_reset": bool(result.state_reset),
            "request_id": getattr(result, "request_id", None),
            **({"usage": usage.as_dict()} if usage is not None and usage.known else {}),
        },
    )


# ------------------------------------------------------------------ gauges


def _observations(values: Iterable[tuple[int, Mapping[str, str] | None]]) -> list[Observation]:
    from opentelemetry.metrics import Observation

    return [Observation(value, attrs) for value, attrs in values]


def _observe_sessions(options: CallbackOptions) -> list[Observation]:
    total = sum(len(tracker.sandboxes) for tracker in list(_trackers))
    return _observations([(total, None)])


def _observe_contexts(options: CallbackOptions) -> list[Observation]:
    total = sum(lease.context_count for lease in list(_leases) if not lease.released)
    return _observations([(total, None)])


def _observe_pool_sessions(options: CallbackOptions) -> list[Observation]:
    idle = busy = 0
    for pool in list(_pools):
        idle += len(pool.free)
        busy += max(0, pool.size - len(pool.free))
    return _observations([(idle, {"state": "idle"}), (busy, {"state": "busy"})])


def _observe_pool_waiting(options: CallbackOptions) -> list[Observation]:
    waiting = sum(sum(1 for w in pool.waiters if not w.done()) for pool in list(_pools))
    return _observations([(waiting, None)])
