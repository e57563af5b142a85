"""MCP logging: `logging/setLevel`, and log records as `notifications/message`.

A client that sends `logging/setLevel` receives this server's log records (the
`agentrun_ci` and `agentrun_ci_mcp` loggers) at or above the level it chose, as
`notifications/message`; a client that never sends it receives none. The level
is per client: over HTTP each MCP session has its own, and a record logged
while serving one client's call goes to that client only (records of the
server as a whole, e.g. the cleanup at shutdown, go to every subscribed client).

Logs still go to stderr through `logging` as before; these notifications are a
copy, with every secret the server knows masked as `***` (the AgentRun key
secret and STS token, the HTTP bearer token, `session` handles, HTTP session
ids), plus anything shaped like a credential.

Records can be logged from any thread; they are queued (bounded, oldest dropped)
and sent by one task on the event loop, so logging never waits for a client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import attrs
from mcp import MCPError
from mcp.types import (
    INVALID_PARAMS,
    EmptyResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    RequestParams,
)
from pydantic import ConfigDict

__all__ = [
    "MCP_LEVELS",
    "ClientLogs",
    "Redactor",
    "connection_key",
    "current_client",
    "current_request",
    "install_set_level",
]

log = logging.getLogger("agentrun_ci_mcp")

#: the MCP (syslog) levels, lowest first, with the `logging` level each starts at
MCP_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO + 5,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL + 5,
    "emergency": logging.CRITICAL + 10,
}
#: the loggers whose records are forwarded (the SDK's own are not: they may quote requests)
FORWARDED = ("agentrun_ci", "agentrun_ci_mcp")
#: records waiting to be sent; beyond this the oldest are dropped
QUEUE_LIMIT = 1000
#: longest message text sent (the rest is cut, marked)
MAX_MESSAGE_CHARS = 8000
MASK = "***"

#: the client a record belongs to: set while a tool serves that client's call
current_client: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentrun_ci_mcp_log_client", default=None
)
#: the call being served, as (its ServerSession, its request id): a record logged while
#: serving it goes on that request's own stream (over HTTP, the POST's SSE response)
current_request: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar(
    "agentrun_ci_mcp_log_request", default=None
)
#: set in the forwarding task: what it logs itself is not forwarded (no feedback loop)
_forwarding: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "agentrun_ci_mcp_log_forwarding", default=False
)


def mcp_level(levelno: int) -> LoggingLevel:
    """The MCP level of a `logging` level number (the highest that is not above it)."""
    chosen: LoggingLevel = "debug"
    for name, number in MCP_LEVELS.items():
        if levelno >= number:
            chosen = name  # type: ignore[assignment]
    return chosen


def connection_key(headers: Any) -> str | None:
    """The client a connection is, as the tools name it: "stdio", "http:<session id>",
    or None (HTTP without a session: no lasting identity)."""
    if headers is None:
        return "stdio"
    sid = {str(k).lower(): v for k, v in dict(headers).items()}.get("mcp-session-id")
    return f"http:{sid}" if sid else None


# ---------------------------------------------------------------- secrets

# credential-shaped text, whatever its source: `Bearer <token>`, `...secret=<value>`,
# `...token: <value>`, an `Authorization` header, a signed URL's signature
_SHAPES = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|(\bhttp:)[0-9a-f]{8,}"  # a client key: an HTTP session id, even once released
    r"|((?:secret|token|password|passwd|signature|credential|api[_-]?key|authorization)"
    r"[\"']?\s*[=:]\s*[\"']?)(?:(?:bearer|basic)\s+)?[^\s\"',;&]{4,}"
)


class Redactor:
    """Masks secrets in text: fixed ones, ones known later (`secrets()`), and credential shapes."""

    #: shorter values are not masked (they would mask ordinary words)
    MIN_SECRET = 6

    def __init__(
        self, fixed: Iterable[str | None] = (), dynamic: Callable[[], Iterable[str]] | None = None
    ) -> None:
        self._fixed = {s for s in fixed if s and len(s) >= self.MIN_SECRET}
        self._dynamic = dynamic
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= self.MIN_SECRET:
            with self._lock:
                self._fixed.add(secret)

    def __repr__(self) -> str:  # never the values
        return f"Redactor({len(self._fixed)} fixed secrets)"

    def secrets(self) -> list[str]:
        with self._lock:
            found = set(self._fixed)
        if self._dynamic is not None:
            with contextlib.suppress(RuntimeError):  # changed while read: next time
                found.update(s for s in self._dynamic() if s and len(s) >= self.MIN_SECRET)
        # longest first: a secret containing another is masked whole
        return sorted(found, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            if secret in text:
                text = text.replace(secret, MASK)
        return _SHAPES.sub(lambda m: (m.group(1) or m.group(2) or m.group(3) or "") + MASK, text)


# ---------------------------------------------------------------- subscribers


@attrs.define(eq=False)
class _Subscriber:
    key: str
    levelno: int
    session: Any  # the ServerSession of its setLevel request: its connection's channel


@attrs.frozen
class _Entry:
    levelno: int
    logger: str
    text: str
    client: str | None
    request: tuple[Any, Any] | None = None


class ClientLogs:
    """Who asked for logs at which level, and the queue of records for them."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.redactor = redactor or Redactor()
        self.subscribers: dict[str, _Subscriber] = {}
        self._queue: collections.deque[_Entry] = collections.deque(maxlen=QUEUE_LIMIT)
        self._wake: anyio.Event | None = None  # made on the loop, by install()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: _Handler | None = None
        #: the forwarded loggers' own levels, restored when nobody subscribes
        self._levels: dict[str, int] = {}
        #: the lowest level any subscriber wants (records below it cost one comparison)
        self.floor = logging.CRITICAL + 100

    def subscribe(self, key: str, level: str, session: Any) -> None:
        self.subscribers[key] = _Subscriber(key, MCP_LEVELS[level], session)
        self._refloor()

    def unsubscribe(self, key: str) -> None:
        if self.subscribers.pop(key, None) is not None:
            self._refloor()

    def _refloor(self) -> None:
        levels = [s.levelno for s in self.subscribers.values()]
        self.floor = min(levels) if levels else logging.CRITICAL + 100
        if self._handler is None:
            return
        # A logger drops a record below its level before any handler sees it: let through
        # what a subscriber wants. stderr keeps its own level (its handler's, see __main__).
        for name, own in self._levels.items():
            logger = logging.getLogger(name)
            if not levels:
                logger.setLevel(own)
                continue
            parent = logger.parent
            inherited = own or (parent.getEffectiveLevel() if parent else logging.WARNING)
            logger.setLevel(min(self.floor, inherited))

    # ------------------------------------------------------------ records in

    def install(self) -> None:
        """Start capturing records (call on the event loop that runs `forward`)."""
        if self._handler is not None:
            return
        self._wake = anyio.Event()
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._handler = _Handler(self)
        for name in FORWARDED:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.addHandler(self._handler)
        self._refloor()

    def uninstall(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            for name in FORWARDED:
                logging.getLogger(name).removeHandler(handler)
        levels, self._levels = self._levels, {}
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

    def offer(self, record: logging.LogRecord) -> None:
        """Queue `record` if a subscriber wants it (any thread)."""
        if record.levelno < self.floor or _forwarding.get():
            return
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {exc})"
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + " [cut]"
        # masked here, in the thread that logged: the secrets known now are the ones that apply
        entry = _Entry(
            record.levelno,
            record.name,
            self.redactor.redact(text),
            current_client.get(),
            current_request.get(),
        )
        self._queue.append(entry)
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is stopping
                loop.call_soon_threadsafe(wake.set)

    # ------------------------------------------------------------ notifications out

    async def forward(self) -> None:
        """Send queued records to their subscribers, until cancelled."""
        _forwarding.set(True)
        while True:
            if self._wake is None:
                self._wake = anyio.Event()
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._queue:
                await self._send(self._queue.popleft())

    async def flush(self, timeout: float = 1.0) -> None:
        """Send what is queued now (a tool calls it before answering, so that its call's
        records arrive before its result, on the call's own stream)."""
        if not self._queue:
            return
        with anyio.move_on_after(timeout):
            while self._queue:
                await self._send(self._queue.popleft())

    async def _send(self, entry: _Entry) -> None:
        for subscriber in list(self.subscribers.values()):
            if entry.levelno < subscriber.levelno:
                continue
            if entry.client is not None and entry.client != subscriber.key:
                continue  # another client's call: not this one's business
            notification = LoggingMessageNotification(
                params=LoggingMessageNotificationParams(
                    level=mcp_level(entry.levelno), logger=entry.logger, data=entry.text
                )
            )
            try:
                with anyio.move_on_after(5):
                    if entry.request is not None and entry.client == subscriber.key:
                        session, request_id = entry.request
                        await session.send_notification(notification, related_request_id=request_id)
                    else:
                        await subscriber.session.send_notification(notification)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.unsubscribe(subscriber.key)  # its connection is gone
            except Exception:
                log.debug("could not send a log notification", exc_info=True)


class _Handler(logging.Handler):
    def __init__(self, logs: ClientLogs) -> None:
        super().__init__(logging.NOTSET)
        self._logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._logs.offer(record)
        except Exception:
            self.handleError(record)


# ---------------------------------------------------------------- logging/setLevel


class _LevelParams(RequestParams):
    """`logging/setLevel` params, checked here so a bad level gets an error naming the fix."""

    model_config = ConfigDict(extra="allow")
    level: Any = None


def install_set_level(mcp: Any, logs: ClientLogs) -> None:
    """Serve `logging/setLevel` (which makes the SDK advertise the `logging` capability)."""

    async def set_level(ctx: Any, params: _LevelParams) -> EmptyResult:
        level = params.level
        _check_level(level)
        request = getattr(ctx, "request", None)
        key = connection_key(getattr(request, "headers", None) if request is not None else None)
        if key is None:
            raise MCPError(
                INVALID_PARAMS,
                "logging/setLevel needs a session: over HTTP, initialize first and send its "
                "mcp-session-id header (a stateless request has no connection to log to)",
            )
        logs.subscribe(key, level, ctx.session)
        _unsubscribe_with_connection(ctx, logs, key)
        return EmptyResult()

    async def check_level(ctx: Any, call_next: Any) -> Any:
        # The SDK checks a spec method's params before its handler runs, and answers a bad
        # level with a bare "Invalid request parameters": say what to send instead.
        if ctx.method == "logging/setLevel":
            params = ctx.params if isinstance(ctx.params, dict) else {}
            _check_level(params.get("level"))
        return await call_next(ctx)

    lowlevel = mcp._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", _LevelParams, set_level)
    lowlevel.middleware.append(check_level)  # provisional API in mcp 2.3


def _check_level(level: Any) -> None:
    if not isinstance(level, str) or level not in MCP_LEVELS:
        raise MCPError(
            INVALID_PARAMS,
            f"unknown log level {level!r}: use one of {', '.join(MCP_LEVELS)}",
        )


def _unsubscribe_with_connection(ctx: Any, logs: ClientLogs, key: str) -> None:
    # no public end-of-connection hook in mcp 2.3 (see tools._end_with_connection);
    # a send to a closed connection unsubscribes too
    connection = getattr(ctx.session, "_connection", None)
    stack = getattr(connection, "exit_stack", None)
    if stack is None:
        return

    async def on_end() -> None:
        logs.unsubscribe(key)

    with contextlib.suppress(Exception):
        stack.push_async_callback(on_end)
