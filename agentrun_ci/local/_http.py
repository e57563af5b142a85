"""HTTP plumbing shared by the emulator's routes: request ids, JSON answers, bodies, errors.

Handlers are module-level functions `async def handler(request) -> Response`; they reach
the emulator's state through `core_of(request)` (the `Core` stored on the app) and parse
their input into records (`_records.py`) before calling it.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ._core import Core
from ._errors import ApiError, bad_request

__all__ = [
    "CONTROL_BODY_LIMIT",
    "DATA_BODY_FLOOR",
    "VERSION",
    "BodyLimitMiddleware",
    "RequestIdMiddleware",
    "core_of",
    "deny",
    "envelope",
    "error_response",
    "exception_handlers",
    "json_body",
    "json_object",
    "json_response",
    "request_id",
    "scope_request_id",
]

log = logging.getLogger("agentrun_ci.local")

VERSION = "/2025-09-10"
"""The control plane's path prefix (its routes are signed with ACS3)."""


CONTROL_BODY_LIMIT = 1024 * 1024
"""Control-plane bodies are small JSON (templates, sandboxes): at most 1 MiB."""


DATA_BODY_FLOOR = 64 * 1024 * 1024
"""Data-plane bodies may always be this big (code to execute is not an upload)."""


def body_limit(path: str, max_upload_bytes: int) -> int:
    """The largest body a route takes: control-plane JSON is small; the data plane takes a
    file of `max_upload_bytes` as base64 inside JSON (4/3 of it) plus room for the rest,
    and at least `DATA_BODY_FLOOR`."""
    if path == VERSION or path.startswith(VERSION + "/"):
        return CONTROL_BODY_LIMIT
    return max(max_upload_bytes * 4 // 3 + 1024 * 1024, DATA_BODY_FLOOR)


class BodyLimitMiddleware:
    """Refuse a body over its limit with 413 as it streams in: before anything buffers it
    (routes, the ACS3 check that hashes it) and before any signature is checked."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"], self.max_upload_bytes)
        # (only a refusal needs it: no new id per request when RequestIdMiddleware set one)
        rid = scope.get("agentrun_request_id") or str(uuid.uuid4())
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            done = await _drain(receive, 0)
            await _too_large(rid, int(length), limit, close=not done)(scope, receive, send)
            return
        counted = _CountedReceive(receive, limit)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted.receive, tracked)
        except _BodyTooLarge as exc:
            if started:
                raise
            done = counted.ended or await _drain(receive, exc.seen)
            more = not counted.ended
            response = _too_large(rid, exc.seen, limit, more=more, close=not done)
            await response(scope, receive, send)


class _CountedReceive:
    """`receive`, counting body bytes and raising `_BodyTooLarge` past the limit.

    A bound method of an object that carries the server's `transport` as uvicorn's own
    receive does, so fault injection can still abort the connection through it."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self.transport = getattr(getattr(receive, "__self__", None), "transport", None)
        self.seen = 0
        self.ended = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.ended = not message.get("more_body", False)
            if self.seen > self._limit:
                raise _BodyTooLarge(self.seen, self._limit)
        return message


_DRAIN_MAX = 1024 * 1024 * 1024
"""After refusing a body, read and discard up to this much of the rest before answering:
HTTP/1.1 clients read no answer while they are still sending. Past it, close."""


async def _drain(receive: Receive, seen: int) -> bool:
    """Discard the rest of a refused body (no memory kept). True when it all arrived."""
    while seen <= _DRAIN_MAX:
        message = await receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


class _BodyTooLarge(Exception):
    """Raised from `receive` past the limit. Not an ApiError on purpose: it must reach
    `BodyLimitMiddleware`, which drains the rest before answering, not a route's handler."""

    def __init__(self, seen: int, limit: int) -> None:
        super().__init__(_too_large_text(seen, limit, more=True))
        self.seen = seen


def _too_large_text(size: int, limit: int, *, more: bool = False) -> str:
    return (
        f"request body of {'more than ' if more else ''}{size} bytes is over the limit of "
        f"{limit} bytes for this route: send big files with /filesystem/upload, at most "
        "the emulator's max_upload_bytes each"
    )


def _too_large(
    rid: str, size: int, limit: int, *, more: bool = False, close: bool = False
) -> JSONResponse:
    response = error_response(
        rid, 413, "ERR_PAYLOAD_TOO_LARGE", _too_large_text(size, limit, more=more)
    )
    if close:
        response.headers["connection"] = "close"
    return response


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def request_id(request: HTTPConnection) -> str:
    return scope_request_id(request.scope)


def scope_request_id(scope: Scope) -> str:
    """The id `RequestIdMiddleware` gave this request (a new one where it gave none)."""
    rid = scope.get("agentrun_request_id")
    return rid if isinstance(rid, str) else str(uuid.uuid4())


def json_response(request: Request, data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"x-acs-request-id": request_id(request)})


def envelope(request: Request, data: Any) -> JSONResponse:
    """The control plane's `{code, requestId, data}` answer."""
    rid = request_id(request)
    return json_response(request, {"code": "SUCCESS", "requestId": rid, "data": data})


def error_response(
    request_id: str, status: int, code: str, message: str, *, retry_after: int | None = None
) -> JSONResponse:
    headers = {"x-acs-request-id": request_id}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return JSONResponse(
        {"code": code, "message": message, "requestId": request_id},
        status_code=status,
        headers=headers,
    )


async def deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse a WebSocket upgrade with the usual JSON error answer (where the server has
    the denial-response extension; else a bare 403)."""
    response = error_response(request_id(websocket), status, code, message)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:
        await websocket.close(code=1008, reason=message[:120])


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty); 400 for anything else."""
    return json_object(await request.body())


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object ({} when empty); 400 for anything else."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except RecursionError:
        raise bad_request(
            f"the request body is JSON nested deeper than this server reads (about "
            f"{_MAX_DEPTH} levels); send a flatter body"
        ) from None
    except ValueError:
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    where = _lone_surrogate(data)
    if where is not None:
        raise bad_request(
            f"the request body has a lone surrogate ({where}): JSON strings must be valid "
            "Unicode; encode binary data as base64"
        )
    return data


_MAX_DEPTH = 1000  # CPython's json decoder raises RecursionError near the recursion limit


def _lone_surrogate(data: Any) -> str | None:
    """Where the first string (or key) holding a lone surrogate is, e.g. "field 'code'"."""
    stack: list[tuple[str, Any]] = [("the body", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{where}, character {exc.start}"
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((f"a key of {where}", key))
                stack.append((f"field {key!r}" if where == "the body" else where, item))
        elif isinstance(value, list):
            stack.extend((where, item) for item in value)
    return None


class RequestIdMiddleware:
    """Give every request an id, echoed as x-acs-request-id on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = str(uuid.uuid4())
        scope["agentrun_request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-acs-request-id" for k, _ in headers):
                    headers.append((b"x-acs-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        request_id(request), exc.status, exc.code, exc.message, retry_after=exc.retry_after
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "ERR_NOT_FOUND", 405: "ERR_METHOD_NOT_ALLOWED"}.get(
        exc.status_code, "ERR_BAD_REQUEST"
    )
    message = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    return error_response(request_id(request), exc.status_code, code, str(message))


async def _on_crash(request: Request, exc: Exception) -> Response:
    # The exception's text may hold the server's own paths: it goes to the log only.
    rid = request_id(request)
    log.exception("emulator error on %s %s (request id %s)", request.method, request.url.path, rid)
    message = (
        f"the emulator failed on this request ({type(exc).__name__}); its log has the "
        f"details under request id {rid}"
    )
    return error_response(rid, 500, "ERR_INTERNAL_SERVER_ERROR", message)


def exception_handlers() -> dict[Any, Any]:
    return {ApiError: _on_api_error, HTTPException: _on_http_error, Exception: _on_crash}
