"""`sandbox.pty` for `Sandbox`: the sync twin of `AsyncPty`."""

from __future__ import annotations

from ._async_sandbox import AsyncSandbox

__all__ = ["Pty"]


class Pty:
    """`sandbox.pty` (sync): create, send_stdin, resize, kill, connect."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._pty = sandbox.pty
