"""The ASGI app: control plane under /2025-09-10/, data plane under /sandboxes/, one port.

Starlette because it is a thin, typed ASGI toolkit (routing, streaming file
responses, multipart via python-multipart) without a validation framework we would
not use; uvicorn because it is the reference ASGI server and runs in a thread.
The middleware stack is request id → signature check → routes, so a later
fault-injection middleware (issue #7) slots in the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._auth import verify_signature
from ._core import Core, Sandbox
from ._errors import ApiError, bad_request
from ._faults import FaultMiddleware, read_body
from ._fs import HOME, MAX_DEPTH
from ._limits import chown_tree
from ._settings import EmulatorSettings
from ._threads import blocking
from ._tree import remove_tree

__all__ = ["build_app"]

log = logging.getLogger("agentrun_ci.local")

VERSION = "/2025-09-10"
Handler = Callable[[Request], Awaitable[Response]]


def _rid(request: Request) -> str:
    rid = request.scope.get("agentrun_request_id")
    return rid if isinstance(rid, str) else str(uuid.uuid4())


def _json(request: Request, data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"x-acs-request-id": _rid(request)})


def _envelope(request: Request, data: Any) -> JSONResponse:
    return _json(request, {"code": "SUCCESS", "requestId": _rid(request), "data": data})


def error_response(request_id: str, status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "requestId": request_id},
        status_code=status,
        headers={"x-acs-request-id": request_id},
    )


async def _body(request: Request) -> dict[str, Any]:
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


# ------------------------------------------------------------------ middleware


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


class SignatureMiddleware:
    """With keys configured, every request must be signed (data or control scheme)."""

    def __init__(self, app: ASGIApp, settings: EmulatorSettings) -> None:
        self.app = app
        self.key_id = settings.access_key_id or ""
        self.secret = settings.access_key_secret or ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.key_id and self.secret):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        raw_query = scope.get("query_string", b"").decode("latin-1")
        ok = False
        if "agentrun-authorization" in headers:
            ok = verify_signature(
                scope["method"],
                raw_path,
                raw_query,
                headers,
                access_key_id=self.key_id,
                access_key_secret=self.secret,
            )
        elif headers.get("authorization", "").startswith("ACS3-HMAC-SHA256 "):
            body, receive = await read_body(receive)
            ok = _verify_acs3(
                scope["method"], raw_path, raw_query, headers, body, self.key_id, self.secret
            )
        if not ok:
            rid = scope.get("agentrun_request_id", str(uuid.uuid4()))
            response = error_response(rid, 403, "ERR_FORBIDDEN", "Signature verification failed")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _verify_acs3(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    key_id: str,
    secret: str,
) -> bool:
    """ACS3-HMAC-SHA256 as the Alibaba Tea client signs (agentrun-api.md §4.3)."""
    fields: dict[str, str] = {}
    for item in headers["authorization"][len("ACS3-HMAC-SHA256 ") :].split(","):
        key, _, value = item.strip().partition("=")
        fields[key] = value
    if fields.get("Credential") is None or not hmac.compare_digest(fields["Credential"], key_id):
        return False
    payload = headers.get("x-acs-content-sha256", "")
    if payload != hashlib.sha256(body).hexdigest():
        return False
    signed = fields.get("SignedHeaders", "").split(";")
    if "x-acs-date" not in signed:
        return False
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    canonical_query = "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in signed)
    canonical = "\n".join(
        [method, raw_path or "/", canonical_query, canonical_headers, ";".join(signed), payload]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("Signature", ""))


# ------------------------------------------------------------------ app


def build_app(core: Core) -> Starlette:
    settings = core.settings

    def q(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    # ---------------- templates (control plane)

    async def create_template(request: Request) -> Response:
        return _envelope(request, core.create_template(await _body(request)).wire())

    async def list_templates(request: Request) -> Response:
        return _envelope(request, core.list_templates(q(request)))

    async def get_template(request: Request) -> Response:
        return _envelope(request, core.template(request.path_params["name"]).wire())

    async def update_template(request: Request) -> Response:
        body = await _body(request)
        return _envelope(request, core.update_template(request.path_params["name"], body).wire())

    async def delete_template(request: Request) -> Response:
        return _envelope(request, core.delete_template(request.path_params["name"]).wire())

    # ---------------- sandbox lifecycle (both planes)

    async def create_sandbox(request: Request) -> Response:
        return _envelope(request, core.create_sandbox(await _body(request)).wire())

    async def list_sandboxes(request: Request) -> Response:
        return _envelope(request, core.list_sandboxes(q(request)))

    async def get_sandbox(request: Request) -> Response:
        return _envelope(request, core.sandbox(request.path_params["sid"]).wire())

    async def stop_sandbox(request: Request) -> Response:
        return _envelope(request, (await core.stop_sandbox(request.path_params["sid"])).wire())

    async def delete_sandbox(request: Request) -> Response:
        return _envelope(request, await core.delete_sandbox(request.path_params["sid"]))

    async def pause_sandbox(request: Request) -> Response:
        return _envelope(request, (await core.pause_sandbox(request.path_params["sid"])).wire())

    async def resume_sandbox(request: Request) -> Response:
        return _envelope(request, (await core.resume_sandbox(request.path_params["sid"])).wire())

    # ---------------- inside a sandbox (data plane)

    def live(request: Request) -> Sandbox:
        return core.live(request.path_params["sid"])

    async def health(request: Request) -> Response:
        sandbox = core.sandbox(request.path_params["sid"])
        if sandbox.status == "TERMINATED":
            raise ApiError(404, "ERR_NOT_FOUND", f"sandbox {sandbox.id!r} is TERMINATED")
        return _json(
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

    async def list_contexts(request: Request) -> Response:
        return _json(request, [c.wire() for c in live(request).contexts.values()])

    async def create_context(request: Request) -> Response:
        sandbox = live(request)
        body = await _body(request)
        language = body.get("language") or "python"
        ctx = await core.create_context(sandbox, str(language), str(body.get("cwd") or HOME))
        return _json(request, ctx.wire())

    async def get_context(request: Request) -> Response:
        return _json(request, core.context(live(request), request.path_params["cid"]).wire())

    async def delete_context(request: Request) -> Response:
        await core.delete_context(live(request), request.path_params["cid"])
        return Response(status_code=204, headers={"x-acs-request-id": _rid(request)})

    async def execute(request: Request) -> Response:
        sandbox = live(request)
        return _json(request, await core.execute(sandbox, await _body(request)))

    async def read_file(request: Request) -> Response:
        sandbox = live(request)
        path = request.query_params.get("path") or ""
        real = sandbox.fs.resolve(path, must_exist=True)
        if not real.is_file():
            raise bad_request(f"{path!r} is not a regular file (use /filesystem to list)")
        data = real.read_bytes()
        entry = sandbox.fs.entry(real)
        try:
            entry.update(content=data.decode("utf-8"), encoding="utf-8")
        except UnicodeDecodeError:
            entry.update(content=base64.b64encode(data).decode("ascii"), encoding="base64")
        return _json(request, entry)

    async def write_file(request: Request) -> Response:
        sandbox = live(request)
        body = await _body(request)
        path = body.get("path")
        content = body.get("content", "")
        if not isinstance(path, str) or not path or not isinstance(content, str):
            raise bad_request("path and content (strings) are required")
        encoding = body.get("encoding") or "utf-8"
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise bad_request("content is not valid base64") from None
        elif encoding in ("utf-8", "utf8", "text"):
            data = content.encode("utf-8")
        else:
            raise bad_request(f"unknown encoding {encoding!r}: use utf-8 or base64")
        if len(data) > settings.max_upload_bytes:
            raise ApiError(
                413,
                "ERR_PAYLOAD_TOO_LARGE",
                f"file too large: {len(data)} bytes, over the limit of "
                f"{settings.max_upload_bytes} bytes",
            )
        real = sandbox.fs.resolve(path)
        if real.is_dir():
            raise bad_request(f"{path!r} is a directory")
        _ensure_parent(core.uid, real, create=body.get("createDir", True) is not False)
        real.write_bytes(data)
        try:
            real.chmod(int(str(body.get("mode") or "644"), 8))
        except ValueError:
            raise bad_request("mode must be an octal string such as '644'") from None
        chown_tree(str(real), core.uid)
        entry = sandbox.fs.entry(real)
        return _json(request, entry)

    async def list_dir(request: Request) -> Response:
        sandbox = live(request)
        path = request.query_params.get("path") or HOME
        try:
            depth = max(1, int(request.query_params.get("depth") or 1))
        except ValueError:
            raise bad_request("depth must be an integer >= 1") from None
        if depth > MAX_DEPTH:
            raise bad_request(f"depth={depth} is too deep: at most {MAX_DEPTH}")
        real = sandbox.fs.resolve(path, must_exist=True)
        if not real.is_dir():
            raise bad_request(f"{path!r} is not a directory")
        entries = sandbox.fs.walk(real, depth)
        return _json(request, {"path": sandbox.fs.api_path(real), "entries": entries})

    async def stat(request: Request) -> Response:
        sandbox = live(request)
        real = sandbox.fs.resolve(request.query_params.get("path") or HOME, must_exist=True)
        return _json(request, {"entry": sandbox.fs.entry(real)})

    async def mkdir(request: Request) -> Response:
        sandbox = live(request)
        body = await _body(request)
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise bad_request("path is required")
        real = sandbox.fs.resolve(path)
        if real.exists() and not real.is_dir():
            raise ApiError(409, "ERR_CONFLICT", f"{path!r} exists and is not a directory")
        if not real.exists():
            parents = body.get("parents", True) is not False
            if not parents and not real.parent.is_dir():
                raise ApiError(404, "ERR_NOT_FOUND", f"the parent of {path!r} does not exist")
            try:
                mode = int(str(body.get("mode") or "0755"), 8)
            except ValueError:
                raise bad_request("mode must be an octal string such as '0755'") from None
            _mkdirs(core.uid, real, mode)
        return _json(request, {"entry": sandbox.fs.entry(real)})

    async def move(request: Request) -> Response:
        sandbox = live(request)
        body = await _body(request)
        src_path, dst_path = body.get("source"), body.get("destination")
        if not isinstance(src_path, str) or not isinstance(dst_path, str):
            raise bad_request("source and destination are required")
        src = sandbox.fs.resolve(src_path)
        dst = sandbox.fs.resolve(dst_path)
        if not _lexists(src):
            if _lexists(dst):  # already moved: idempotent
                return _json(request, {"entry": sandbox.fs.entry(dst)})
            raise ApiError(404, "ERR_NOT_FOUND", f"no such file or directory: {src_path}")
        if src == sandbox.fs.root:
            raise bad_request(f"cannot move {HOME} itself")
        _ensure_parent(core.uid, dst, create=True)
        shutil.move(str(src), str(dst))
        return _json(request, {"entry": sandbox.fs.entry(dst)})

    async def remove(request: Request) -> Response:
        sandbox = live(request)
        body = await _body(request)
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise bad_request("path is required")
        real = sandbox.fs.resolve(path)
        if real == sandbox.fs.root:
            raise bad_request(f"cannot remove {HOME} itself")
        if not _lexists(real):
            return _json(request, {"entry": None, "path": path, "removed": False})
        entry = sandbox.fs.entry(real)
        if not await blocking(remove_tree, real):
            raise ApiError(
                500,
                "ERR_INTERNAL_SERVER_ERROR",
                f"could not remove all of {path}: part of it is left",
            )
        return _json(request, {"entry": entry, "path": entry["path"], "removed": True})

    async def upload(request: Request) -> Response:
        sandbox = live(request)
        limit = settings.max_upload_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + 64 * 1024:
            raise ApiError(413, "ERR_PAYLOAD_TOO_LARGE", f"upload larger than {limit} bytes")
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            target = form.get("path") or form.get("current_path")
            if not isinstance(upload, UploadFile):
                raise bad_request("multipart field 'file' is required")
            if not isinstance(target, str) or not target:
                target = f"{HOME}/{upload.filename or 'upload'}"
            real = sandbox.fs.resolve(target)
            if real.is_dir():
                real = sandbox.fs.resolve(
                    f"{sandbox.fs.api_path(real)}/{Path(upload.filename or 'upload').name}"
                )
            _ensure_parent(core.uid, real, create=True)
            size = await _copy_upload(upload, real, limit)
        chown_tree(str(real), core.uid)
        entry = sandbox.fs.entry(real)
        entry["size"] = size
        return _json(request, entry)

    async def download(request: Request) -> Response:
        sandbox = live(request)
        path = request.query_params.get("path") or ""
        real = sandbox.fs.resolve(path, must_exist=True)
        if not real.is_file():
            raise bad_request(f"{path!r} is not a regular file")
        media = mimetypes.guess_type(real.name)[0] or "application/octet-stream"
        return FileResponse(
            real,
            media_type=media,
            filename=real.name,
            headers={"x-acs-request-id": _rid(request)},
        )

    async def run_cmd(request: Request) -> Response:
        sandbox = live(request)
        return _json(request, await core.run_command(sandbox, await _body(request)))

    async def list_processes(request: Request) -> Response:
        items = core.processes(live(request))
        return _json(request, {"items": items, "total": len(items)})

    def pid(request: Request) -> int:
        try:
            return int(request.path_params["pid"])
        except ValueError:
            raise bad_request("pid must be an integer") from None

    async def get_process(request: Request) -> Response:
        return _json(request, core.process(live(request), pid(request)))

    async def kill_process(request: Request) -> Response:
        return _json(request, await core.kill_process(live(request), pid(request)))

    routes: list[Route] = [
        Route(f"{VERSION}/templates", create_template, methods=["POST"]),
        Route(f"{VERSION}/templates", list_templates, methods=["GET"]),
        Route(f"{VERSION}/templates/{{name}}", get_template, methods=["GET"]),
        Route(f"{VERSION}/templates/{{name}}", update_template, methods=["PUT"]),
        Route(f"{VERSION}/templates/{{name}}", delete_template, methods=["DELETE"]),
        Route(f"{VERSION}/sandboxes", list_sandboxes, methods=["GET"]),
        Route(f"{VERSION}/sandboxes/{{sid}}/pause", pause_sandbox, methods=["PUT"]),
        Route(f"{VERSION}/sandboxes/{{sid}}/resume", resume_sandbox, methods=["PUT"]),
    ]
    inside: list[tuple[str, Handler, str]] = [
        ("/health", health, "GET"),
        ("/contexts", list_contexts, "GET"),
        ("/contexts", create_context, "POST"),
        ("/contexts/execute", execute, "POST"),
        ("/contexts/{cid}", get_context, "GET"),
        ("/contexts/{cid}", delete_context, "DELETE"),
        ("/files", read_file, "GET"),
        ("/files", write_file, "POST"),
        ("/filesystem", list_dir, "GET"),
        ("/filesystem/stat", stat, "GET"),
        ("/filesystem/mkdir", mkdir, "POST"),
        ("/filesystem/move", move, "POST"),
        ("/filesystem/remove", remove, "POST"),
        ("/filesystem/upload", upload, "POST"),
        ("/filesystem/download", download, "GET"),
        ("/processes/cmd", run_cmd, "POST"),
        ("/processes", list_processes, "GET"),
        ("/processes/{pid}", get_process, "GET"),
        ("/processes/{pid}", kill_process, "DELETE"),
    ]
    for prefix in ("", VERSION):
        base = f"{prefix}/sandboxes"
        routes += [
            Route(base, create_sandbox, methods=["POST"]),
            Route(f"{base}/{{sid}}", get_sandbox, methods=["GET"]),
            Route(f"{base}/{{sid}}", delete_sandbox, methods=["DELETE"]),
            Route(f"{base}/{{sid}}/stop", stop_sandbox, methods=["POST"]),
        ]
        routes += [Route(f"{base}/{{sid}}{p}", h, methods=[m]) for p, h, m in inside]

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(_rid(request), exc.status, exc.code, exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "ERR_NOT_FOUND", 405: "ERR_METHOD_NOT_ALLOWED"}.get(
            exc.status_code, "ERR_BAD_REQUEST"
        )
        message = exc.detail if exc.status_code != 404 else f"no route for {request.url.path}"
        return error_response(_rid(request), exc.status_code, code, str(message))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("emulator error on %s %s", request.method, request.url.path)
        return error_response(
            _rid(request), 500, "ERR_INTERNAL_SERVER_ERROR", f"{type(exc).__name__}: {exc}"
        )

    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_error,
            Exception: on_crash,
        },
        lifespan=None,
    )
    # Faults sit inside the signature check: only authentic requests get (or set) them;
    # they, and /_admin/faults, exist only when asked for (`EmulatorSettings(faults=...)`).
    if settings.faults is not None:
        app.add_middleware(FaultMiddleware, core=core, plan=settings.faults)
    app.add_middleware(SignatureMiddleware, settings=settings)
    app.add_middleware(RequestIdMiddleware)
    return app


def _lexists(path: Path) -> bool:
    # Local-disk metadata calls are fast; the emulator accepts them on the event loop.
    return os.path.lexists(path)


def _mkdirs(uid: int | None, real: Path, mode: int) -> None:
    missing: list[Path] = []
    cur = real
    while not cur.exists():
        missing.append(cur)
        cur = cur.parent
    for path in reversed(missing):
        path.mkdir(mode=mode)
        chown_tree(str(path), uid)


def _ensure_parent(uid: int | None, real: Path, *, create: bool) -> None:
    parent = real.parent
    if parent.is_dir():
        return
    if parent.exists():
        raise ApiError(409, "ERR_CONFLICT", "a parent of the path is a file")
    if not create:
        raise ApiError(404, "ERR_NOT_FOUND", "the parent directory does not exist")
    _mkdirs(uid, parent, 0o755)


async def _copy_upload(upload: UploadFile, real: Path, limit: int) -> int:
    size = 0
    tmp = real.with_name(f".{real.name}.upload-{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("wb") as out:
            while chunk := await upload.read(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413, "ERR_PAYLOAD_TOO_LARGE", f"upload larger than {limit} bytes"
                    )
                out.write(chunk)
        tmp.replace(real)
    finally:
        if tmp.exists():
            tmp.unlink()
    return size
