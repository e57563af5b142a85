"""`sandbox.files` for `AsyncSandbox`: E2B's filesystem API on the data plane's file calls."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import NotFoundError
from .._models import FileEntry
from ._common import HOME
from ._errors import InvalidArgumentException

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = ["AsyncFilesystem"]


class AsyncFilesystem:
    """`sandbox.files`: read, write, list, exists, remove, rename, make_dir, get_info."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox

    async def read(self, path: str, format: str = "text", **opts: Any) -> Any:
        """The file's text (`format="bytes"` or `"stream"`: its bytes)."""
        if format not in ("text", "bytes", "stream"):
            raise InvalidArgumentException(f"format={format!r}: use 'text', 'bytes' or 'stream'")
        content = await self._sbx._call(lambda d, sid: d.read_file(sid, path), opts)
        return content.content if format != "text" else content.text

    async def write(self, path: str, data: str | bytes, **opts: Any) -> FileEntry:
        """Write a file (parents are created)."""
        return await self._sbx._call(lambda d, sid: d.write_file(sid, path, data), opts)  # type: ignore[no-any-return]

    async def write_files(self, files: list[Mapping[str, Any]], **opts: Any) -> list[FileEntry]:
        """Write several files (`[{"path": ..., "data": ...}]`)."""
        return [await self.write(f["path"], f["data"], **opts) for f in files]

    async def list(self, path: str = HOME, depth: int = 1, **opts: Any) -> builtins.list[FileEntry]:
        return await self._sbx._call(lambda d, sid: d.list_files(sid, path, depth=depth), opts)  # type: ignore[no-any-return]

    async def get_info(self, path: str, **opts: Any) -> FileEntry:
        return await self._sbx._call(lambda d, sid: d.stat(sid, path), opts)  # type: ignore[no-any-return]

    async def exists(self, path: str, **opts: Any) -> bool:
        try:
            await self.get_info(path, **opts)
        except NotFoundError:
            return False
        return True

    async def remove(self, path: str, **opts: Any) -> None:
        await self._sbx._call(lambda d, sid: d.remove(sid, path), opts)

    async def rename(self, old_path: str, new_path: str, **opts: Any) -> FileEntry:
        return await self._sbx._call(lambda d, sid: d.move(sid, old_path, new_path), opts)  # type: ignore[no-any-return]

    async def make_dir(self, path: str, **opts: Any) -> bool:
        """Create a directory (and its parents); False if it already existed."""
        existed = await self.exists(path, **opts)
        await self._sbx._call(lambda d, sid: d.mkdir(sid, path), opts)
        return not existed
