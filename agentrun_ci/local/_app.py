"""The ASGI app: control plane under /2025-09-10/, data plane under /sandboxes/, one port.

Starlette because it is a thin, typed ASGI toolkit (routing, streaming file
responses, multipart via python-multipart) without a validation framework we would
not use; uvicorn because it is the reference ASGI server and runs in a thread.

The handlers are module-level functions, one module per area (`_routes_control`,
`_routes_sandbox`, `_routes_files`); they reach the `Core` through `request.app.state`.
The middleware stack is request id → body limit → signature check → faults → routes
(execute, the call made most, is answered by `ExecuteRoute` just before the router).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from . import _routes_control as control
from . import _routes_files as files
from . import _routes_sandbox as inside
from ._core import Core
from ._faults import FaultMiddleware
from ._http import VERSION, BodyLimitMiddleware, RequestIdMiddleware, exception_handlers
from ._routes_tty import tty
from ._signing import SignatureMiddleware

__all__ = ["build_app"]

Handler = Callable[[Request], Awaitable[Response]]

_CONTROL: list[tuple[str, Handler, str]] = [
    ("/templates", control.create_template, "POST"),
    ("/templates", control.list_templates, "GET"),
    ("/templates/{name}", control.get_template, "GET"),
    ("/templates/{name}", control.update_template, "PUT"),
    ("/templates/{name}", control.delete_template, "DELETE"),
    ("/sandboxes", control.list_sandboxes, "GET"),
    ("/sandboxes/{sid}/pause", control.pause_sandbox, "PUT"),
    ("/sandboxes/{sid}/resume", control.resume_sandbox, "PUT"),
]
"""Routes only under the control plane's /2025-09-10 prefix."""

_LIFECYCLE: list[tuple[str, Handler, str]] = [
    ("", control.create_sandbox, "POST"),
    ("/{sid}", control.get_sandbox, "GET"),
    ("/{sid}", control.delete_sandbox, "DELETE"),
    ("/{sid}/stop", control.stop_sandbox, "POST"),
]
"""Sandbox lifecycle, under /sandboxes on both planes."""

_INSIDE: list[tuple[str, Handler, str]] = [
    ("/health", inside.health, "GET"),
    ("/contexts", inside.list_contexts, "GET"),
    ("/contexts", inside.create_context, "POST"),
    ("/contexts/execute", inside.execute, "POST"),
    ("/contexts/{cid}", inside.get_context, "GET"),
    ("/contexts/{cid}", inside.delete_context, "DELETE"),
    ("/files", files.read_file, "GET"),
    ("/files", files.write_file, "POST"),
    ("/filesystem", files.list_dir, "GET"),
    ("/filesystem/stat", files.stat, "GET"),
    ("/filesystem/mkdir", files.mkdir, "POST"),
    ("/filesystem/move", files.move, "POST"),
    ("/filesystem/remove", files.remove, "POST"),
    ("/filesystem/upload", files.upload, "POST"),
    ("/filesystem/download", files.download, "GET"),
    ("/processes/cmd", inside.run_command, "POST"),
    ("/processes", inside.list_processes, "GET"),
    ("/processes/{pid}", inside.get_process, "GET"),
    ("/processes/{pid}", inside.kill_process, "DELETE"),
]
"""Inside one sandbox, under /sandboxes/{sid} on both planes."""


def routes() -> list[BaseRoute]:
    table: list[BaseRoute] = [Route(f"{VERSION}{p}", h, methods=[m]) for p, h, m in _CONTROL]
    for prefix in ("", VERSION):
        base = f"{prefix}/sandboxes"
        table += [Route(f"{base}{p}", h, methods=[m]) for p, h, m in _LIFECYCLE]
        table += [Route(f"{base}/{{sid}}{p}", h, methods=[m]) for p, h, m in _INSIDE]
        # the terminal: a WebSocket (GET upgrade), signed like any data-plane request
        table.append(WebSocketRoute(f"{base}/{{sid}}/processes/tty", tty))
    return table


def build_app(core: Core) -> Starlette:
    app = Starlette(routes=routes(), exception_handlers=exception_handlers(), lifespan=None)
    app.state.core = core
    # Innermost: execute, answered before the router (after every check below).
    app.add_middleware(inside.ExecuteRoute, core=core)
    # Faults sit inside the signature check: only authentic requests get (or set) them;
    # they, and /_admin/faults, exist only when asked for (`EmulatorSettings(faults=...)`).
    if core.settings.faults is not None:
        app.add_middleware(FaultMiddleware, core=core, plan=core.settings.faults)
    app.add_middleware(SignatureMiddleware, settings=core.settings)
    # Outside the signature check: an unauthenticated body is capped before it is read.
    app.add_middleware(BodyLimitMiddleware, max_upload_bytes=core.settings.max_upload_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
