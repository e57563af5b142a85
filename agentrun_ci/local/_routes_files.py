"""Data-plane file routes: read/write, list, stat, mkdir, move, remove, upload, download."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import shutil
import uuid
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ._errors import ApiError, bad_request
from ._fs import HOME, MAX_DEPTH
from ._http import core_of, json_body, json_response, request_id
from ._limits import chown_tree
from ._records import MkdirRequest, MoveRequest, WriteFileRequest
from ._routes_sandbox import live
from ._threads import blocking
from ._tree import remove_tree

__all__ = [
    "download",
    "list_dir",
    "mkdir",
    "move",
    "read_file",
    "remove",
    "stat",
    "upload",
    "write_file",
]


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
    return json_response(request, entry)


async def write_file(request: Request) -> Response:
    sandbox = live(request)
    core = core_of(request)
    order = WriteFileRequest.parse(await json_body(request))
    if order.encoding == "base64":
        try:
            data = base64.b64decode(order.content, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("content is not valid base64") from None
    else:
        data = order.content.encode("utf-8")
    limit = core.settings.max_upload_bytes
    if len(data) > limit:
        raise ApiError(
            413,
            "ERR_PAYLOAD_TOO_LARGE",
            f"file too large: {len(data)} bytes, over the limit of {limit} bytes",
        )
    real = sandbox.fs.resolve(order.path)
    if real.is_dir():
        raise bad_request(f"{order.path!r} is a directory")
    _ensure_parent(core.uid, real, create=order.create_dir)
    real.write_bytes(data)
    real.chmod(order.mode)
    chown_tree(str(real), core.uid)
    return json_response(request, sandbox.fs.entry(real))


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
    return json_response(request, {"path": sandbox.fs.api_path(real), "entries": entries})


async def stat(request: Request) -> Response:
    sandbox = live(request)
    real = sandbox.fs.resolve(request.query_params.get("path") or HOME, must_exist=True)
    return json_response(request, {"entry": sandbox.fs.entry(real)})


async def mkdir(request: Request) -> Response:
    sandbox = live(request)
    body = await json_body(request)
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise bad_request("path is required")
    real = sandbox.fs.resolve(path)
    if real.exists() and not real.is_dir():
        raise ApiError(409, "ERR_CONFLICT", f"{path!r} exists and is not a directory")
    if not real.exists():
        order = MkdirRequest.parse(body)
        if not order.parents and not real.parent.is_dir():
            raise ApiError(404, "ERR_NOT_FOUND", f"the parent of {path!r} does not exist")
        _mkdirs(core_of(request).uid, real, order.mode)
    return json_response(request, {"entry": sandbox.fs.entry(real)})


async def move(request: Request) -> Response:
    sandbox = live(request)
    order = MoveRequest.parse(await json_body(request))
    src = sandbox.fs.resolve(order.source)
    dst = sandbox.fs.resolve(order.destination)
    if not _lexists(src):
        if _lexists(dst):  # already moved: idempotent
            return json_response(request, {"entry": sandbox.fs.entry(dst)})
        raise ApiError(404, "ERR_NOT_FOUND", f"no such file or directory: {order.source}")
    if src == sandbox.fs.root:
        raise bad_request(f"cannot move {HOME} itself")
    _ensure_parent(core_of(request).uid, dst, create=True)
    shutil.move(str(src), str(dst))
    return json_response(request, {"entry": sandbox.fs.entry(dst)})


async def remove(request: Request) -> Response:
    sandbox = live(request)
    body = await json_body(request)
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise bad_request("path is required")
    real = sandbox.fs.resolve(path)
    if real == sandbox.fs.root:
        raise bad_request(f"cannot remove {HOME} itself")
    if not _lexists(real):
        return json_response(request, {"entry": None, "path": path, "removed": False})
    entry = sandbox.fs.entry(real)
    if not await blocking(remove_tree, real):
        raise ApiError(
            500, "ERR_INTERNAL_SERVER_ERROR", f"could not remove all of {path}: part of it is left"
        )
    return json_response(request, {"entry": entry, "path": entry["path"], "removed": True})


async def upload(request: Request) -> Response:
    sandbox = live(request)
    core = core_of(request)
    limit = core.settings.max_upload_bytes
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
            name = Path(upload.filename or "upload").name
            real = sandbox.fs.resolve(f"{sandbox.fs.api_path(real)}/{name}")
        _ensure_parent(core.uid, real, create=True)
        size = await _copy_upload(upload, real, limit)
    chown_tree(str(real), core.uid)
    entry = sandbox.fs.entry(real)
    entry["size"] = size
    return json_response(request, entry)


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
        headers={"x-acs-request-id": request_id(request)},
    )


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
