"""`sandbox.pty` for `Sandbox`: the sync twin of `AsyncPty`.

E2B's sync `create` and `connect` take no `on_data`: output is read from the handle
(`wait(on_pty=...)` or iteration), in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._async_commands import DEFAULT_COMMAND_TIMEOUT, PtySize
from ._async_sandbox import AsyncSandbox
from ._portal import call as _call
from ._sync_commands import CommandHandle

__all__ = ["Pty"]


class Pty:
    """`sandbox.pty` (sync): create, send_stdin, resize, kill, connect."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._pty = sandbox.pty

    def create(
        self,
        size: PtySize,
        user: str | None = None,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
    ) -> CommandHandle:
        """Start a login shell on a new terminal of `size`; see `AsyncPty.create`."""
        return CommandHandle(
            _call(self._pty.create(size, None, user, cwd, envs, timeout, request_timeout))
        )

    def connect(
        self,
        pid: int,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
    ) -> CommandHandle:
        """A handle on a running terminal, its output from now on."""
        return CommandHandle(_call(self._pty.connect(pid, None, timeout, request_timeout)))

    def send_stdin(self, pid: int, data: bytes, request_timeout: float | None = None) -> None:
        """Type `data` into terminal `pid`."""
        _call(self._pty.send_stdin(pid, data, request_timeout))

    def resize(self, pid: int, size: PtySize, request_timeout: float | None = None) -> None:
        """Change terminal `pid`'s size."""
        _call(self._pty.resize(pid, size, request_timeout))

    def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        """SIGKILL terminal `pid`; False if none ran."""
        return _call(self._pty.kill(pid, request_timeout))
