"""Data-plane routes inside a sandbox: health, contexts and execute, processes."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import Response

from ._core import Sandbox
from ._errors import ApiError, bad_request
from ._fs import HOME
from ._http import core_of, json_body, json_response, request_id
from ._records import CommandRequest, ExecuteRequest

__all__ = [
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
