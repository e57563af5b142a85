"""The transports: stdio (thread-free pipes, signals) and streamable HTTP (uvicorn).

Each serves one `MCPServer` and makes sure `AppState.close()` runs however the
server is stopped: stdin EOF, SIGTERM or SIGINT on stdio; shutdown on HTTP.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

__all__ = [
    "EOF_ANSWER_GRACE",
    "SHUTDOWN_GRACE",
    "bearer_guard",
    "http_app",
    "is_loopback",
    "run_stdio",
    "serve_http",
    "serve_stdio",
]

log = logging.getLogger("agentrun_ci_mcp")

LOOPBACK_NAMES = {"localhost"}
#: how long shutdown may spend deleting sandboxes before exiting anyway; stdio hosts
#: send SIGKILL 2 s after SIGTERM, so the cleanup must be quick
SHUTDOWN_GRACE = 10.0
#: after stdin ends, how long requests already read may take to be answered before
#: the rest are cancelled and cleanup starts (a client that writes requests and then
#: closes stdin still gets its answers; a host that closes stdin to stop us sends
#: SIGTERM 2 s later anyway)
EOF_ANSWER_GRACE = 5.0

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


def bearer_guard(app: ASGIApp, token: str) -> ASGIApp:
    """Reject HTTP requests without `Authorization: Bearer <token>` (401)."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, expected):
            await app(scope, receive, send)
            return
        body = json.dumps({"error": "unauthorized: send Authorization: Bearer <token>"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="agentrun-ci-mcp"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return guarded


def http_app(mcp: Any, args: argparse.Namespace) -> ASGIApp:
    """The streamable-HTTP ASGI app with DNS-rebinding protection and the bearer guard."""
    from mcp.server.transport_security import TransportSecuritySettings

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
    app: ASGIApp = mcp.streamable_http_app(transport_security=security, host=args.host)
    if args.auth_token:
        app = bearer_guard(app, args.auth_token)
    return app


# ---------------------------------------------------------------- serving


async def run_stdio(mcp: Any) -> None:
    """`mcp.run_stdio_async()`, on thread-free pipes where stdin/stdout allow it."""
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
            read, write = answer_before_eof(read, write, EOF_ANSWER_GRACE)
            await lowlevel.run(read, write, lowlevel.create_initialization_options())


async def serve_stdio(mcp: Any, state: Any) -> None:
    """Serve on stdio; on EOF, SIGTERM or SIGINT delete everything, then exit.

    The SDK's default SIGTERM kills the process before teardown, and after SIGINT
    it hangs on the thread reading stdin; so signals are handled here: shielded
    cleanup, then `os._exit` (normal finalization would wait for that thread).
    """
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal %d: cleaning up", signum)
                    with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
                        await state.close()
                    logging.shutdown()
                    os._exit(128 + signum)

        tg.start_soon(on_signal)
        await run_stdio(mcp)
        log.info("stdin closed: checking that everything is cleaned up")
        with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
            await state.close()
        tg.cancel_scope.cancel()


async def serve_http(mcp: Any, state: Any, args: argparse.Namespace) -> None:
    import uvicorn

    app = http_app(mcp, args)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level.lower(), lifespan="on"
    )
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        with anyio.move_on_after(SHUTDOWN_GRACE, shield=True):
            await state.close()
