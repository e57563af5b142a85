"""Control-plane routes: templates, and the sandbox lifecycle (served on both planes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ._http import core_of, envelope, json_body

__all__ = [
    "create_sandbox",
    "create_template",
    "delete_sandbox",
    "delete_template",
    "get_sandbox",
    "get_template",
    "list_sandboxes",
    "list_templates",
    "pause_sandbox",
    "resume_sandbox",
    "stop_sandbox",
    "update_template",
]


# ---------------------------------------------------------------- templates


async def create_template(request: Request) -> Response:
    return envelope(request, core_of(request).create_template(await json_body(request)).wire())


async def list_templates(request: Request) -> Response:
    return envelope(request, core_of(request).list_templates(dict(request.query_params)))


async def get_template(request: Request) -> Response:
    return envelope(request, core_of(request).template(request.path_params["name"]).wire())


async def update_template(request: Request) -> Response:
    body = await json_body(request)
    template = core_of(request).update_template(request.path_params["name"], body)
    return envelope(request, template.wire())


async def delete_template(request: Request) -> Response:
    return envelope(request, core_of(request).delete_template(request.path_params["name"]).wire())


# ---------------------------------------------------------------- sandbox lifecycle


async def create_sandbox(request: Request) -> Response:
    body = await json_body(request)
    core = core_of(request)
    await core.pool.prepared()  # a spare about to start its kernel can be this sandbox's
    return envelope(request, core.create_sandbox(body).wire())


async def list_sandboxes(request: Request) -> Response:
    return envelope(request, core_of(request).list_sandboxes(dict(request.query_params)))


async def get_sandbox(request: Request) -> Response:
    return envelope(request, core_of(request).sandbox(request.path_params["sid"]).wire())


async def stop_sandbox(request: Request) -> Response:
    sandbox = await core_of(request).stop_sandbox(request.path_params["sid"])
    return envelope(request, sandbox.wire())


async def delete_sandbox(request: Request) -> Response:
    return envelope(request, await core_of(request).delete_sandbox(request.path_params["sid"]))


async def pause_sandbox(request: Request) -> Response:
    sandbox = await core_of(request).pause_sandbox(request.path_params["sid"])
    return envelope(request, sandbox.wire())


async def resume_sandbox(request: Request) -> Response:
    sandbox = await core_of(request).resume_sandbox(request.path_params["sid"])
    return envelope(request, sandbox.wire())
