"""`sandbox.git` for `Sandbox`: the sync twin of `AsyncGit`."""

from __future__ import annotations

from ._async_sandbox import AsyncSandbox

__all__ = ["Git"]


class Git:
    """`sandbox.git` (sync): clone, init, add, commit, push, pull, branches, status, config."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._git = sandbox.git
