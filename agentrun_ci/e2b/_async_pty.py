"""`sandbox.pty` for `AsyncSandbox`: E2B's pseudo-terminals over AgentRun's `/processes/tty`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = ["AsyncPty"]


class AsyncPty:
    """`sandbox.pty`: create, send_stdin, resize, kill, connect."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox
