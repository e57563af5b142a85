"""An E2B-shaped shim: change one import line, keep the code.

```python
from agentrun_ci.e2b import Sandbox      # was: from e2b_code_interpreter import Sandbox

sbx = Sandbox()
execution = sbx.run_code(code)
result = {"stdout": execution.logs.stdout, "stderr": execution.logs.stderr}
```

Each `Sandbox` is one AgentRun sandbox (a session), created from one
interpreter shared by the whole process and deleted by `kill()`, by leaving a
`with` block, or at exit. The `Execution` returned is agentrun-ci's, which has
E2B's shape (`logs.stdout`, `logs.stderr`, `results`, `error`, `text`).

Differences from E2B, on purpose: one `run_code` may take at most 30 s (the
service's cap); `commands.run` returns a result with a non-zero `exit_code`
instead of raising.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ._config import Config
from ._interpreter import AsyncLease, Callback
from ._models import CommandResult, Context, Execution, FileEntry
from ._sync_interpreter import CodeInterpreter
from ._wire import DEFAULT_CWD

__all__ = ["AsyncSandbox", "Sandbox"]

_hubs: dict[tuple[Config | None, tuple[tuple[str, Any], ...]], CodeInterpreter] = {}
_hub_lock = threading.Lock()


def _shared(config: Config | None, kwargs: dict[str, Any]) -> CodeInterpreter:
    """The process-wide interpreter Sandboxes with these settings start from (made once)."""
    key = (config, tuple(sorted(kwargs.items())))
    with _hub_lock:
        hub = _hubs.get(key)
        if hub is None or hub._portal is None:
            hub = _hubs[key] = CodeInterpreter(config, strategy="dedicated", **kwargs)
        return hub


def close_shared() -> None:
    """Delete the shared interpreters and every Sandbox still open (also runs at exit)."""
    with _hub_lock:
        hubs = list(_hubs.values())
        _hubs.clear()
    for hub in hubs:
        hub.close()


def _context_id(context: Context | str | None) -> str | None:
    if context is None:
        return None
    return context if isinstance(context, str) else context.id


class _Files:
    def __init__(self, run: Any) -> None:
        self._run = run

    def read(self, path: str, format: str = "text") -> Any:
        """The file's text (`format="bytes"` for bytes)."""
        content = self._run(lambda lease: lease.read_file(path))
        return content.content if format in ("bytes", "stream") else content.text

    def write(self, path: str, data: str | bytes) -> FileEntry:
        return self._run(lambda lease: lease.write_file(path, data))  # type: ignore[no-any-return]

    def list(self, path: str = DEFAULT_CWD, depth: int = 1) -> list[FileEntry]:
        return self._run(lambda lease: lease.list_files(path, depth=depth))  # type: ignore[no-any-return]


class _Commands:
    def __init__(self, run: Any) -> None:
        self._run = run

    def run(
        self, cmd: str, *, cwd: str | None = None, timeout: float = 30.0, **_: Any
    ) -> CommandResult:
        """Run a shell command to completion; a non-zero exit code is data, not an exception."""
        return self._run(  # type: ignore[no-any-return]
            lambda lease: lease.run_command(cmd, cwd=cwd, timeout=timeout)
        )


class Sandbox:
    """One sandbox, E2B style. Extra E2B arguments (template, api_key, ...) are ignored."""

    def __init__(self, *args: Any, config: Config | None = None, **kwargs: Any) -> None:
        interpreter_kwargs: dict[str, Any] = {
            k: kwargs.pop(k)
            for k in ("backend", "access_key_id", "access_key_secret", "account_id", "region")
            if k in kwargs
        }
        self._hub = _shared(config, interpreter_kwargs)
        portal = self._hub._portal
        assert portal is not None
        self._portal = portal
        self._lease: AsyncLease | None = portal.call(self._open())
        self.files = _Files(self._run)
        self.commands = _Commands(self._run)

    async def _open(self) -> AsyncLease:
        lease = await self._hub._async.acquire()
        await lease._ensure_session()  # start the sandbox now, as E2B does
        return lease

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> Sandbox:
        return cls(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Sandbox(sandbox_id={self.sandbox_id!r})"

    @property
    def sandbox_id(self) -> str | None:
        return self._lease.session_id if self._lease is not None else None

    def _run(self, action: Any) -> Any:
        if self._lease is None:
            raise RuntimeError("this Sandbox was killed; create a new one")
        lease = self._lease
        return self._portal.call(action(lease))

    def run_code(
        self,
        code: str,
        language: str | None = None,
        context: Context | str | None = None,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        timeout: float | None = None,
        **_: Any,
    ) -> Execution:
        """Run code; state persists between calls (per language, or in `context`)."""
        return self._run(  # type: ignore[no-any-return]
            lambda lease: lease.execute_code(
                code,
                language=language,
                timeout=30.0 if timeout is None else timeout,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                context_id=_context_id(context),
            )
        )

    def create_code_context(
        self, cwd: str | None = None, language: str | None = None, **_: Any
    ) -> Context:
        return self._run(  # type: ignore[no-any-return]
            lambda lease: lease.create_context(language or "python", cwd or DEFAULT_CWD)
        )

    def is_running(self) -> bool:
        return self._lease is not None

    def kill(self) -> None:
        """Delete the sandbox. Safe to call more than once."""
        lease, self._lease = self._lease, None
        if lease is not None:
            self._portal.call(lease.release())

    close = kill

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


class AsyncSandbox:
    """The async twin: `sbx = await AsyncSandbox.create()`; every method is awaited."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sync = sandbox
        self.files = _AsyncProxy(sandbox.files)
        self.commands = _AsyncProxy(sandbox.commands)

    @classmethod
    async def create(cls, *args: Any, **kwargs: Any) -> AsyncSandbox:
        return cls(await asyncio.to_thread(Sandbox, *args, **kwargs))

    @property
    def sandbox_id(self) -> str | None:
        return self._sync.sandbox_id

    async def run_code(self, code: str, *args: Any, **kwargs: Any) -> Execution:
        return await asyncio.to_thread(self._sync.run_code, code, *args, **kwargs)

    async def create_code_context(self, *args: Any, **kwargs: Any) -> Context:
        return await asyncio.to_thread(self._sync.create_code_context, *args, **kwargs)

    async def kill(self) -> None:
        await asyncio.to_thread(self._sync.kill)

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.kill()


class _AsyncProxy:
    """Awaitable wrappers over a sync helper (files, commands)."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call
