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
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._core import Core
from ._errors import ApiError, bad_request

__all__ = [
    "VERSION",
    "RequestIdMiddleware",
    "core_of",
    "envelope",
    "error_response",
    "exception_handlers",
    "json_body",
    "json_response",
    "request_id",
]

log = logging.getLogger("agentrun_ci.local")

VERSION = "/2025-09-10"
"""The control plane's path prefix (its routes are signed with ACS3)."""


def core_of(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


def request_id(request: Request) -> str:
    rid = request.scope.get("agentrun_request_id")
    return rid if isinstance(rid, str) else str(uuid.uuid4())


def json_response(request: Request, data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"x-acs-request-id": request_id(request)})


def envelope(request: Request, data: Any) -> JSONResponse:
    """The control plane's `{code, requestId, data}` answer."""
    rid = request_id(request)
    return json_response(request, {"code": "SUCCESS", "requestId": rid, "data": data})


def error_response(request_id: str, status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "requestId": request_id},
        status_code=status,
        headers={"x-acs-request-id": request_id},
    )


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty); 400 for anything else."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    return data


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
    return error_response(request_id(request), exc.status, exc.code, exc.message)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "ERR_NOT_FOUND", 405: "ERR_METHOD_NOT_ALLOWED"}.get(
        exc.status_code, "ERR_BAD_REQUEST"
    )
    message = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
    return error_response(request_id(request), exc.status_code, code, str(message))


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.exception("emulator error on %s %s", request.method, request.url.path)
    return error_response(
        request_id(request), 500, "ERR_INTERNAL_SERVER_ERROR", f"{type(exc).__name__}: {exc}"
    )


def exception_handlers() -> dict[Any, Any]:
    return {ApiError: _on_api_error, HTTPException: _on_http_error, Exception: _on_crash}
