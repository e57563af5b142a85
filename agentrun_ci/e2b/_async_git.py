"""`sandbox.git` for `AsyncSandbox`: E2B's git API, run as git commands in the sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = ["AsyncGit"]


class AsyncGit:
    """`sandbox.git`: clone, init, add, commit, push, pull, branches, status, config."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox
