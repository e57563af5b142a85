"""The transports: stdio (thread-free pipes, signals) and streamable HTTP (uvicorn).

Each serves one `MCPServer` and makes sure `AppState.close()` runs however the
server is stopped: stdin EOF, SIGTERM or SIGINT on stdio; shutdown on HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from types import FrameType
from typing import Any

import anyio

__all__ = [
    "EOF_ANSWER_GRACE",
    "EOF_BATCH_WINDOW",
    "SHUTDOWN_GRACE",
    "bearer_guard",
    "http_app",
    "is_loopback",
    "run_stdio",
    "serve_http",
    "serve_stdio",
    "session_limit",
]

log = logging.getLogger("agentrun_ci_mcp")

LOOPBACK_NAMES = {"localhost"}
#: how long shutdown may spend deleting sandboxes before exiting anyway; stdio hosts
#: send SIGKILL 2 s after SIGTERM, so the cleanup must be quick
SHUTDOWN_GRACE = 10.0
#: after stdin ends (and what was read is answered), how long the graceful cleanup may
#: take before the local emulator's kernels and processes are killed at once instead:
#: hosts send SIGTERM 2 s after closing stdin, and the exit must come well before
EOF_CLEANUP_BUDGET = 0.25
#: a batch: stdin ended at most this long after the last request was read (a script
#: or a file writes its requests and closes at once); otherwise the client is a host
#: that stopped writing and then closed stdin to stop us (MCP's stdio shutdown), and
#: calls still in flight are cancelled at once rather than answered
EOF_BATCH_WINDOW = 2.0
#: after a batch's stdin ends, how long its requests may take to be answered before the
#: rest are cancelled and cleanup starts: a run is capped at 30 s, and nobody sends a
#: batch SIGTERM
EOF_ANSWER_GRACE = 40.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


# ---------------------------------------------------------------- HTTP pieces


def _bearer(header: bytes) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value; the scheme is
    case-insensitive (RFC 9110 section 11.1), the token is not."""
    scheme, _, token = header.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


NO_OAUTH = (
    "not found: this MCP server is not an OAuth server and has no OAuth metadata; it takes a "
    "static bearer token (Authorization: Bearer <token>)"
)


async def _answer(send: Send, status: int, error: str, *headers: tuple[bytes, bytes]) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bearer_guard(app: ASGIApp, token: str) -> ASGIApp:
    """Reject HTTP requests without `Authorization: Bearer <token>` (401)."""
    expected = token.encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if str(scope.get("path", "")).startswith("/.well-known/"):
            # OAuth-aware hosts probe for authorization-server metadata first; a 401 here
            # would start an OAuth flow this server cannot finish. It takes a static token.
            await _answer(send, 404, NO_OAUTH)
            return
        given = _bearer(dict(scope.get("headers") or []).get(b"authorization", b""))
        if given is not None and hmac.compare_digest(given, expected):
            await app(scope, receive, send)
            return
        await _answer(
            send,
            401,
            "unauthorized: send the server's token as `Authorization: Bearer <token>` (it is "
            "printed on the server's stderr, or set with --auth-token / AGENTRUN_MCP_AUTH_TOKEN)",
            (b"www-authenticate", b'Bearer realm="agentrun-ci-mcp"'),
        )

    return guarded


#: the SDK's refusal of a session beyond `max_sessions` (mcp 2.3), reworded by `session_limit`
SDK_SESSION_REFUSAL = "Too many open sessions"


def session_limit(app: ASGIApp, limit: int) -> ASGIApp:
    """Reword the SDK's 503 "Too many open sessions" to say the limit, the option that
    sets it and what to do; everything else passes through untouched."""
    reason = (
        f"too many open sessions: this server keeps at most {limit} "
        "(--max-clients, AGENTRUN_MCP_MAX_CLIENTS). End a session you no longer use "
        "(HTTP DELETE with its mcp-session-id) or wait until an idle one expires, then retry"
    )

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await app(scope, receive, send)
            return
        held: Message | None = None
        body = b""

        async def reworded(message: Message) -> None:
            nonlocal held, body
            if message["type"] == "http.response.start" and message["status"] == 503:
                held = message  # sent with the body, whose length may change
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                error = json.loads(body)
                if error["error"]["message"] == SDK_SESSION_REFUSAL:
                    error["error"]["message"] = reason
                    body = json.dumps(error).encode()
            headers = [(k, v) for k, v in held.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**held, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await app(scope, receive, reworded)

    return limited


def http_app(mcp: Any, args: argparse.Namespace, max_sessions: int = 64) -> ASGIApp:
    """The streamable-HTTP ASGI app with DNS-rebinding protection and the bearer guard
    (`args.auth_token` is required).

    At most `max_sessions` MCP sessions are open at once; a client that would open
    one more gets 503 with a reason that names the limit until one ends.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    if not args.auth_token:  # main() makes one: code on this machine must not drive us
        raise ValueError("the HTTP transport needs an auth token (--auth-token)")
    hosts = _split(args.allowed_hosts)
    origins = _split(args.allowed_origins)
    if not hosts:
        hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
        if not is_loopback(args.host):
            hosts.append(f"{args.host}:*")
    if not origins:
        origins = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    from .events import SSE_RETRY_MS, MemoryEventStore, SessionEvents, per_session

    # --stateless: no MCP session either; every request stands alone (any replica), and
    # there is no stream to resume on another replica: no event store
    stateless = bool(getattr(args, "stateless", False))
    # SSE resumability: event ids, priming events with `retry:`, replay on Last-Event-ID
    events = MemoryEventStore()
    app: ASGIApp = mcp.streamable_http_app(
        transport_security=security,
        host=args.host,
        max_sessions=max_sessions,
        stateless_http=stateless,
        # replaced by a view per session
        event_store=None if stateless else SessionEvents(events, ""),
        retry_interval=SSE_RETRY_MS,
    )
    if not stateless and not per_session(mcp.session_manager, events):
        mcp.session_manager.event_store = None  # never one store shared by every session
        log.warning("this mcp version has no per-session event stores: SSE streams cannot resume")
    app = session_limit(app, max_sessions)
    return bearer_guard(app, args.auth_token)


# ---------------------------------------------------------------- serving


async def run_stdio(
    mcp: Any,
    on_answer: Callable[[], None] | None = None,
    on_eof: Callable[[], None] | None = None,
) -> None:
    """`mcp.run_stdio_async()`, on thread-free pipes where stdin/stdout allow it.

    `on_answer` is called after each message written to the client; `on_eof` when
    stdin has ended (and what was read before is answered, or the grace is over).
    """
    from mcp.server.stdio import stdio_server

    from ._stdio import answer_before_eof, pipe_streams

    lowlevel = getattr(mcp, "_lowlevel_server", None)  # no public accessor in mcp 2.3
    if lowlevel is None:
        await mcp.run_stdio_async()
        return
    async with pipe_streams() as streams:
        # a regular file redirected in is not a pipe: the SDK's threaded reader serves it
        server = stdio_server() if streams is None else stdio_server(*streams)  # type: ignore[arg-type]
        async with server as (read, write):
            read, write = answer_before_eof(
                read, write, EOF_ANSWER_GRACE, EOF_BATCH_WINDOW, on_answer, on_eof
            )
            await lowlevel.run(read, write, lowlevel.create_initialization_options())


class Signals:
    """SIGTERM and SIGINT, recorded from the moment serving starts until the process ends.

    Plain `signal.signal` handlers rather than the event loop's: those are removed
    when the loop stops, and a signal landing between the end of the cleanup and
    the exit would then kill the process with the default action. Each signal is
    recorded (the exit status becomes 128 + the first one) and wakes `arrived`
    while the loop runs.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.arrived = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def install(cls) -> Signals:
        signals = cls()
        signals._loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signals._on_signal)
        return signals

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is stopping
                loop.call_soon_threadsafe(self.arrived.set)

    def status(self, default: int) -> int:
        """The exit status: 128 + the first signal, else `default`."""
        return 128 + self.received[0] if self.received else default


async def _close(state: Any, why: str) -> None:
    """`state.close()`, bounded: the one cleanup, started or joined."""
    if state.closed:
        doing = "already cleaned up"
    elif state.closing:
        doing = "waiting for the cleanup in progress"
    else:
        doing = "cleaning up"
    log.info("%s: %s", why, doing)
    with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
        await state.close()


async def serve_stdio(mcp: Any, state: Any) -> int:
    """Serve on stdio until EOF, SIGTERM or SIGINT; everything is deleted before exit.

    Hosts close stdin, then send SIGTERM 2 s later: after EOF the cleanup runs at
    once and returns well before that. A signal (before EOF, or while the cleanup
    after EOF runs) joins the one cleanup and exits 128 + signal when it is done;
    it never cuts it off. The SDK's default SIGTERM would kill the process before
    teardown, so signals are handled here; `os._exit` then skips finalization (the
    SDK's threaded stdin reader, if used, would block it). Returns the exit status.
    """
    signals = Signals.install()
    first_answer = state.first_answer = anyio.Event()
    eof = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            await signals.arrived.wait()
            await _close(state, f"signal {signals.received[0]}")
            logging.shutdown()
            os._exit(signals.status(0))

        async def on_eof() -> None:
            await eof.wait()
            state.begin_shutdown()
            await _exit_in_time(state, signals)

        tg.start_soon(on_signal)
        tg.start_soon(on_eof)
        await run_stdio(mcp, first_answer.set, eof.set)
        await _close(state, "stdin closed")
        tg.cancel_scope.cancel()
    if signals.received:  # it came as the cleanup ended: on_signal was cancelled unheard
        log.info("signal %d: after the cleanup, nothing left to do", signals.received[0])
    return signals.status(0)


async def _exit_in_time(state: Any, signals: Signals) -> None:
    """After EOF: if the graceful cleanup is not over within EOF_CLEANUP_BUDGET, kill the
    local emulator's kernels and processes at once, remove its directories and exit.

    Deleting sandbox after sandbox waits for each one's processes to be gone; on a
    loaded machine a killed kernel can take a second or more to die, and the host's
    SIGTERM comes 2 s after EOF. Killing everything at once waits for nothing. With the
    cloud backend there is nothing to kill here: the graceful cleanup is waited for.
    """
    with anyio.move_on_after(EOF_CLEANUP_BUDGET):
        await state.wait_closed()
    if state.closed or not state.kill_now():
        return
    log.info(
        "stdin closed: cleanup still running after %g s; killed the local sandboxes' "
        "processes at once and removed their directories",
        EOF_CLEANUP_BUDGET,
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(signals.status(0))


async def serve_http(mcp: Any, state: Any, args: argparse.Namespace) -> int:
    """Serve streamable HTTP until SIGTERM or SIGINT; everything is deleted before exit.

    Signals are handled here rather than by uvicorn, which re-raises them after
    its shutdown (a SIGTERM would then kill the process before a late cleanup),
    and turns a second SIGINT into a forced exit that skips the lifespan's. The
    first signal starts the shutdown; later ones wait for it. Returns 128 + the
    first signal.
    """
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # signals are serve_http's
            yield

    state.logs.redactor.add(args.auth_token)  # never in a log notification
    app = http_app(mcp, args, max_sessions=state.options.max_clients)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level.lower(), lifespan="on"
    )
    server = Server(config)
    signals = Signals.install()
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            await signals.arrived.wait()
            log.info("signal %d: stopping the HTTP server", signals.received[0])
            server.should_exit = True

        tg.start_soon(on_signal)
        try:
            await server.serve()
        finally:
            await _close(state, "HTTP server stopped")
            tg.cancel_scope.cancel()
    return signals.status(0)
