"""`Sandbox`: the sync twin of `AsyncSandbox`, on the sync facade's mechanism.

Like `agentrun_ci.CodeInterpreter`, it runs the async code on an event loop in
a daemon thread (the portal) and waits for it: every `Sandbox` is an
`AsyncSandbox` living on the portal loop. A `kill()` from another thread runs
on that loop too, so it ends a `run_code` in progress at once. Callbacks run in
the caller's thread, after the run.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .._config import Config
from .._models import Context, ExecutionError
from ._async_sandbox import (
    AsyncSandbox,
    AsyncSandboxPaginator,
    SandboxInfo,
    SandboxMetrics,
    SandboxQuery,
)
from ._common import _Dual
from ._models import Execution, OutputMessage, Result
from ._portal import call as _call
from ._portal import call_any as _any
from ._sync_commands import Commands
from ._sync_filesystem import Filesystem
from ._sync_git import Git
from ._sync_pty import Pty

__all__ = ["Sandbox", "SandboxPaginator"]


class SandboxPaginator:
    """`Sandbox.list()`'s answer: `while p.has_next: p.next_items()`."""

    def __init__(self, inner: AsyncSandboxPaginator) -> None:
        self._inner = inner

    @property
    def limit(self) -> int | None:
        return self._inner.limit

    @property
    def has_next(self) -> bool:
        """Is there another page? (True until a page came back short of `limit`.)"""
        return self._inner.has_next

    @property
    def next_token(self) -> str | None:
        """Where the next page starts (pass it to `list(next_token=...)` to go on later)."""
        return self._inner.next_token

    def next_items(self) -> list[SandboxInfo]:
        """The next page of sandboxes."""
        return _call(self._inner.next_items())


class Sandbox:
    """One AgentRun sandbox with E2B's API: `sbx = Sandbox.create()` (or `Sandbox()`)."""

    default_template = AsyncSandbox.default_template

    def __init__(
        self,
        template: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        envs: Mapping[str, str] | None = None,
        *,
        sandbox_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        """`Sandbox(...)` takes `create()`'s arguments; `Sandbox(sandbox_id=...)` connects."""
        if sandbox_id is not None:
            if template is not None or metadata is not None or envs is not None:
                raise _invalid(
                    "Sandbox(sandbox_id=...) connects to an existing sandbox: template, "
                    "metadata and envs belong to create()"
                )
            inner = _call(AsyncSandbox.connect(sandbox_id, timeout, **kwargs))
        else:
            inner = _call(AsyncSandbox.create(template, timeout, metadata, envs, **kwargs))
        self._bind(inner)

    def _bind(self, inner: AsyncSandbox) -> None:
        self._async = inner
        self.files = Filesystem(inner)
        self.commands = Commands(inner)
        self.pty = Pty(inner)
        self.git = Git(inner)

    @classmethod
    def _wrap(cls, inner: AsyncSandbox) -> Sandbox:
        self = cls.__new__(cls)
        self._bind(inner)
        return self

    @classmethod
    def create(
        cls,
        template: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        envs: Mapping[str, str] | None = None,
        secure: bool = True,
        allow_internet_access: bool = True,
        mcp: Any = None,
        network: Any = None,
        iam: Any = None,
        lifecycle: Any = None,
        volume_mounts: Any = None,
        logger: logging.Logger | None = None,
        *,
        config: Config | None = None,
        backend: str = "auto",
        rich_results: bool = True,
        **opts: Any,
    ) -> Sandbox:
        """Start a sandbox; the arguments are `AsyncSandbox.create()`'s."""
        return cls._wrap(
            _call(
                AsyncSandbox.create(
                    template,
                    timeout,
                    metadata,
                    envs,
                    secure,
                    allow_internet_access,
                    mcp,
                    network,
                    iam,
                    lifecycle,
                    volume_mounts,
                    logger,
                    config=config,
                    backend=backend,
                    rich_results=rich_results,
                    **opts,
                )
            )
        )

    @classmethod
    def _connect(
        cls,
        /,
        sandbox_id: str,
        timeout: float | None = None,
        logger: logging.Logger | None = None,
        *,
        config: Config | None = None,
        backend: str = "auto",
        rich_results: bool = True,
        **opts: Any,
    ) -> Sandbox:
        return cls._wrap(
            _call(
                AsyncSandbox.connect(
                    sandbox_id,
                    timeout,
                    logger,
                    config=config,
                    backend=backend,
                    rich_results=rich_results,
                    **opts,
                )
            )
        )

    def _reconnect(self, /, timeout: float | None = None, **opts: Any) -> Sandbox:
        _call(self._async.connect(timeout, **opts))
        return self

    connect = _Dual(_connect, _reconnect)
    """`Sandbox.connect(sandbox_id)` reaches an existing sandbox; `sbx.connect()` checks
    this one still runs. A paused sandbox is resumed and gets a new lifetime of `timeout`
    (default 300 s); for a running one `timeout` only lengthens the lifetime."""

    @property
    def sandbox_id(self) -> str:
        return self._async.sandbox_id

    def __repr__(self) -> str:
        return f"Sandbox(sandbox_id={self.sandbox_id!r})"

    def is_running(self, request_timeout: float | None = None) -> bool:
        """Does the sandbox run now? (False once killed or gone, and while paused.)"""
        return _call(self._async.is_running(request_timeout))

    @property
    def _envd_version(self) -> str | None:
        """The version the sandbox's in-sandbox service gave in its last health check."""
        return self._async._envd_version

    @classmethod
    def _kill_by_id(cls, /, sandbox_id: str, **opts: Any) -> bool:
        return bool(_any(AsyncSandbox.kill(sandbox_id, **opts)))

    def _kill(self, /, **opts: Any) -> bool:
        return bool(_any(self._async.kill(**opts)))

    kill = _Dual(_kill_by_id, _kill)
    """Kill the sandbox now; a `run_code` in progress in another thread raises
    TimeoutException at once. `Sandbox.kill(sandbox_id)` kills one by id."""

    close = _kill

    @classmethod
    def _set_timeout_by_id(cls, /, sandbox_id: str, timeout: float, **opts: Any) -> None:
        _call(AsyncSandbox.set_timeout(sandbox_id, timeout, **opts))

    def _set_timeout(self, /, timeout: float, **opts: Any) -> None:
        _call(self._async.set_timeout(timeout, **opts))

    set_timeout = _Dual(_set_timeout_by_id, _set_timeout)
    """End the sandbox's lifetime `timeout` seconds from now (≤6 h; 0: now): killed then,
    or paused with `lifecycle={"on_timeout": "pause"}`; kept by this process."""

    @classmethod
    def _get_info_by_id(cls, /, sandbox_id: str, **opts: Any) -> SandboxInfo:
        info: SandboxInfo = _any(AsyncSandbox.get_info(sandbox_id, **opts))
        return info

    def _get_info(self, /, **opts: Any) -> SandboxInfo:
        info: SandboxInfo = _any(self._async.get_info(**opts))
        return info

    get_info = _Dual(_get_info_by_id, _get_info)
    """The sandbox's id, template, metadata, start and end times, state and lifecycle."""

    @classmethod
    def _pause_by_id(cls, /, sandbox_id: str, keep_memory: bool = True, **opts: Any) -> bool:
        return bool(_any(AsyncSandbox.pause(sandbox_id, keep_memory, **opts)))

    def _pause(self, /, keep_memory: bool = True, **opts: Any) -> bool:
        return bool(_call(self._async.pause(keep_memory, **opts)))

    pause = _Dual(_pause_by_id, _pause)
    """Pause the sandbox (its processes are held with their memory); `connect()` resumes
    it. True if it got paused, False if it already was. `Sandbox.pause(sandbox_id)` too."""

    beta_pause = pause
    """E2B's former name of `pause()` (deprecated there): the same method."""

    @classmethod
    def _get_metrics_by_id(
        cls,
        /,
        sandbox_id: str,
        start: datetime | None = None,
        end: datetime | None = None,
        **opts: Any,
    ) -> builtins.list[SandboxMetrics]:
        metrics: builtins.list[SandboxMetrics] = _any(
            AsyncSandbox.get_metrics(sandbox_id, start, end, **opts)
        )
        return metrics

    def _get_metrics(
        self, /, start: datetime | None = None, end: datetime | None = None, **opts: Any
    ) -> builtins.list[SandboxMetrics]:
        metrics: builtins.list[SandboxMetrics] = _call(self._async.get_metrics(start, end, **opts))
        return metrics

    get_metrics = _Dual(_get_metrics_by_id, _get_metrics)
    """The sandbox's resource use: one sample, taken now, if now is within `start`..`end`."""

    @classmethod
    def list(
        cls,
        query: SandboxQuery | Mapping[str, Any] | None = None,
        limit: int | None = None,
        next_token: str | None = None,
        order: str | None = None,
        **opts: Any,
    ) -> SandboxPaginator:
        """Sandboxes of the interpreters this process uses, running and paused unless
        `query.state` says otherwise, newest first (`order="asc"`: oldest first)."""
        return SandboxPaginator(AsyncSandbox.list(query, limit, next_token, order, **opts))

    # ------------------------------------------------------------ what AgentRun has not

    create_snapshot = AsyncSandbox.__dict__["create_snapshot"]
    """Refused: AgentRun has no sandbox snapshots (see docs/e2b.md)."""
    list_snapshots = AsyncSandbox.__dict__["list_snapshots"]
    """Refused: AgentRun has no sandbox snapshots (see docs/e2b.md)."""
    delete_snapshot = AsyncSandbox.__dict__["delete_snapshot"]
    """Refused: AgentRun has no sandbox snapshots (see docs/e2b.md)."""
    fork = AsyncSandbox.__dict__["fork"]
    """Refused: AgentRun cannot copy a running sandbox (see docs/e2b.md)."""
    update_network = AsyncSandbox.__dict__["update_network"]
    """Refused: AgentRun sets network access per interpreter (see docs/e2b.md)."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._kill()

    # ------------------------------------------------------------ contexts

    def create_code_context(
        self,
        cwd: str | None = None,
        language: str | None = None,
        request_timeout: float | None = None,
    ) -> Context:
        """A new context (python, javascript, or bash) with its own state, in `cwd`."""
        return _call(self._async.create_code_context(cwd, language, request_timeout))

    def list_code_contexts(self, request_timeout: float | None = None) -> builtins.list[Context]:
        """Every context of the sandbox, oldest first."""
        return _call(self._async.list_code_contexts(request_timeout))

    def remove_code_context(
        self, context: Context | str, request_timeout: float | None = None
    ) -> None:
        """Delete a context (its variables are gone)."""
        _call(self._async.remove_code_context(context, request_timeout))

    def restart_code_context(
        self, context: Context | str, request_timeout: float | None = None
    ) -> None:
        """Start the context afresh (AgentRun has no restart: the shim recreates it with the
        same language and cwd; this handle keeps the old id for it)."""
        _call(self._async.restart_code_context(context, request_timeout))

    # ------------------------------------------------------------ running code

    def run_code(
        self,
        code: str,
        language: str | None = None,
        context: Context | str | None = None,
        on_stdout: Callable[[OutputMessage], Any] | None = None,
        on_stderr: Callable[[OutputMessage], Any] | None = None,
        on_result: Callable[[Result], Any] | None = None,
        on_error: Callable[[ExecutionError], Any] | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> Execution:
        """Run code; see `AsyncSandbox.run_code` (callbacks run in this thread, after the run)."""
        execution = _call(
            self._async._execute(code, language, context, envs, timeout, request_timeout)
        )
        if on_stdout is not None:
            for chunk in execution.logs.stdout:
                on_stdout(OutputMessage(chunk, error=False))
        if on_stderr is not None:
            for chunk in execution.logs.stderr:
                on_stderr(OutputMessage(chunk, error=True))
        if on_result is not None:
            for result in execution.results:
                on_result(result)
        if on_error is not None and execution.error is not None:
            on_error(execution.error)
        return execution


def _invalid(message: str) -> Exception:
    from ._errors import InvalidArgumentException

    return InvalidArgumentException(message)
