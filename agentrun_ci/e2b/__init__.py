"""E2B's code-interpreter API on AgentRun: change one import, keep the code.

```python
from agentrun_ci.e2b import Sandbox      # was: from e2b_code_interpreter import Sandbox

with Sandbox.create() as sbx:
    execution = sbx.run_code("x = 41\\nx + 1")
    print(execution.text)                # 42
```

`Sandbox` and `AsyncSandbox` take E2B's arguments: each is either honoured
with its AgentRun meaning or refused with an error that names it and says what
to do instead; nothing is silently ignored. `Execution`, `Result`, the charts
and E2B's exception names are here too. What works, what works differently and
what AgentRun does not have: docs/e2b.md.
"""

from __future__ import annotations

from .._models import CommandResult, Context, ExecutionError, Logs
from . import charts
from ._async_commands import AsyncCommandHandle, ProcessInfo, PtySize
from ._async_filesystem import AsyncFileStreamReader, AsyncFilesystem, AsyncWatchHandle
from ._async_git import AsyncGit
from ._async_sandbox import (
    AsyncSandbox,
    AsyncSandboxPaginator,
    SandboxInfo,
    SandboxMetrics,
    SandboxQuery,
    SandboxState,
)
from ._errors import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    GitAuthException,
    GitUpstreamException,
    InvalidArgumentException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    SandboxKilledError,
    TimeoutException,
)
from ._filesystem import (
    EntryInfo,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    WriteEntry,
    WriteInfo,
)
from ._git import GitBranches, GitFileStatus, GitResetMode, GitStatus
from ._hub import aclose_shared, close_shared
from ._models import Execution, OutputMessage, Result
from ._setup import CHART_MIME, DATA_MIME
from ._sync_commands import CommandHandle
from ._sync_filesystem import FileStreamReader, Filesystem, WatchHandle
from ._sync_git import Git
from ._sync_sandbox import Sandbox, SandboxPaginator

__all__ = [
    "CHART_MIME",
    "DATA_MIME",
    "AsyncCommandHandle",
    "AsyncFileStreamReader",
    "AsyncFilesystem",
    "AsyncGit",
    "AsyncSandbox",
    "AsyncSandboxPaginator",
    "AsyncWatchHandle",
    "AuthenticationException",
    "CommandExitException",
    "CommandHandle",
    "CommandResult",
    "Context",
    "EntryInfo",
    "Execution",
    "ExecutionError",
    "FileNotFoundException",
    "FileStreamReader",
    "FileType",
    "Filesystem",
    "FilesystemEvent",
    "FilesystemEventType",
    "Git",
    "GitAuthException",
    "GitBranches",
    "GitFileStatus",
    "GitResetMode",
    "GitStatus",
    "GitUpstreamException",
    "InvalidArgumentException",
    "Logs",
    "NotFoundException",
    "OutputMessage",
    "ProcessInfo",
    "PtySize",
    "RateLimitException",
    "Result",
    "Sandbox",
    "SandboxException",
    "SandboxInfo",
    "SandboxKilledError",
    "SandboxMetrics",
    "SandboxPaginator",
    "SandboxQuery",
    "SandboxState",
    "TimeoutException",
    "WatchHandle",
    "WriteEntry",
    "WriteInfo",
    "aclose_shared",
    "charts",
    "close_shared",
]
