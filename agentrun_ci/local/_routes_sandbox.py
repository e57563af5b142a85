"""Data-plane routes inside a sandbox: health, contexts and execute, processes."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ._core import Core, Sandbox
from ._errors import ApiError, bad_request
from ._faults import read_body
from ._fs import HOME
from ._http import (
    core_of,
    error_response,
    json_body,
    json_object,
    json_response,
    request_id,
    scope_request_id,
)
from ._records import CommandRequest, ExecuteRequest

__all__ = [
    "ExecuteRoute",
    "create_context",
    "delete_context",
    "execute",
    "get_context",
    "get_process",
    "health",
    "kill_process",
    "list_contexts",
    "list_processes",
    "live",
    "run_command",
]


def live(request: Request) -> Sandbox:
    """The sandbox named in the path, READY to run things (touches its idle clock)."""
    return core_of(request).live(request.path_params["sid"])


async def health(request: Request) -> Response:
    sandbox = core_of(request).sandbox(request.path_params["sid"])
    if sandbox.status == "TERMINATED":
        raise ApiError(404, "ERR_NOT_FOUND", f"sandbox {sandbox.id!r} is TERMINATED")
    return json_response(
        request,
        {
            "status": "ok" if sandbox.status == "READY" else sandbox.status.lower(),
            "service": "sandbox-code-interpreter",
            "version": "v1",
            "emulator": "agentrun-ci-local",
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "uptime": int((time.monotonic() - sandbox.born) * 1000),
        },
    )


# ---------------------------------------------------------------- contexts


async def list_contexts(request: Request) -> Response:
    return json_response(request, [c.wire() for c in live(request).contexts.values()])


async def create_context(request: Request) -> Response:
    sandbox = live(request)
    body = await json_body(request)
    language = body.get("language") or "python"
    cwd = str(body.get("cwd") or HOME)
    ctx = await core_of(request).create_context(sandbox, str(language), cwd)
    return json_response(request, ctx.wire())


async def get_context(request: Request) -> Response:
    core = core_of(request)
    return json_response(request, core.context(live(request), request.path_params["cid"]).wire())


async def delete_context(request: Request) -> Response:
    await core_of(request).delete_context(live(request), request.path_params["cid"])
    return Response(status_code=204, headers={"x-acs-request-id": request_id(request)})


async def execute(request: Request) -> Response:
    sandbox = live(request)
    order = ExecuteRequest.parse(await json_body(request))
    return json_response(request, await core_of(request).execute(sandbox, order))


class ExecuteRoute:
    """POST .../sandboxes/{sid}/contexts/execute, answered here, inside the middleware,
    without the router: `execute` above, the same answers, less the router's work.

    Execute is the call a session makes over and over, and its answer waits on all that
    happens on the way. Starlette's router tries the routes in turn, wraps the handler
    for exceptions twice, and builds a Request and a JSONResponse: about a tenth of a
    millisecond of this thread per call. Errors are answered as the app's handlers do
    (`ApiError` here; anything else goes up to the server-error handler). Other methods
    on the path go on to the router, which answers them (405)."""

    def __init__(self, app: ASGIApp, core: Core) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _EXECUTE_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        rid = scope_request_id(scope)
        try:
            sandbox = self.core.live(match["sid"])
            # a client gone mid-body leaves a cut JSON object: a 400 no one reads, no run
            raw, _ = await read_body(receive)
            answer = await self.core.execute(sandbox, ExecuteRequest.parse(json_object(raw)))
        except ApiError as exc:
            await error_response(
                rid, exc.status, exc.code, exc.message, retry_after=exc.retry_after
            )(scope, receive, send)
            return
        body = json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        content = body.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    (b"content-type", b"application/json"),
                    (b"x-acs-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


#: the execute route's path, on both planes (Starlette's `{sid}` is `[^/]+`)
_EXECUTE_PATH = re.compile(r"(?:/2025-09-10)?/sandboxes/(?P<sid>[^/]+)/contexts/execute")


# ---------------------------------------------------------------- processes


async def run_command(request: Request) -> Response:
    sandbox = live(request)
    order = CommandRequest.parse(await json_body(request))
    return json_response(request, await core_of(request).run_command(sandbox, order))


async def list_processes(request: Request) -> Response:
    items = core_of(request).processes(live(request))
    return json_response(request, {"items": items, "total": len(items)})


def _pid(request: Request) -> int:
    try:
        return int(request.path_params["pid"])
    except ValueError:
        raise bad_request("pid must be an integer") from None


async def get_process(request: Request) -> Response:
    return json_response(request, core_of(request).process(live(request), _pid(request)))


async def kill_process(request: Request) -> Response:
    return json_response(request, await core_of(request).kill_process(live(request), _pid(request)))
