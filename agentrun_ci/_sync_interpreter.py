"""CodeInterpreter: the synchronous facade.

There is one implementation, `AsyncCodeInterpreter`; this class drives it on a
private event loop in a background thread (a "portal"), so sync and async
callers get identical behaviour. Calls block the calling thread only; several
threads may share one CodeInterpreter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

from ._config import Config
from ._interpreter import AsyncCodeInterpreter, AsyncLease, Callback, NetworkMode
from ._models import CommandResult, Context, Execution, FileContent, FileEntry, Sandbox, Template
from ._wire import DEFAULT_CWD

__all__ = ["CodeInterpreter", "Lease"]

T = TypeVar("T")


class _Portal:
    """An event loop running in a daemon thread; `call` runs a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="agentrun-ci-portal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a CodeInterpreter callback must not call back into it")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)


class Lease:
    """One caller's share of a CodeInterpreter (sync twin of `AsyncLease`)."""

    def __init__(self, portal: _Portal, lease: AsyncLease) -> None:
        self._portal = portal
        self._lease = lease

    def __repr__(self) -> str:
        return f"Lease(key={self.key!r}, session_id={self.session_id!r})"

    @property
    def key(self) -> str:
        return self._lease.key

    @property
    def session_id(self) -> str | None:
        return self._lease.session_id

    @property
    def context_id(self) -> str | None:
        return self._lease.context_id

    def execute_code(
        self,
        code: str,
        language: str | None = None,
        timeout: float = 30.0,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        *,
        context_id: str | None = None,
    ) -> Execution:
        return self._portal.call(
            self._lease.execute_code(
                code, language, timeout, on_stdout, on_stderr, context_id=context_id
            )
        )

    def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        return self._portal.call(self._lease.create_context(language, cwd))

    def delete_context(self, context_id: str) -> None:
        self._portal.call(self._lease.delete_context(context_id))

    def read_file(self, path: str) -> FileContent:
        return self._portal.call(self._lease.read_file(path))

    def write_file(self, path: str, content: str | bytes) -> FileEntry:
        return self._portal.call(self._lease.write_file(path, content))

    def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        return self._portal.call(self._lease.list_files(path, depth=depth))

    def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        return self._portal.call(self._lease.run_command(command, cwd=cwd, timeout=timeout))

    def reset(self) -> None:
        self._portal.call(self._lease.reset())

    def release(self) -> None:
        self._portal.call(self._lease.release())

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class CodeInterpreter:
    """Run code on AgentRun (or the local emulator) from synchronous code.

    ```python
    interpreter = CodeInterpreter(access_key_id=..., access_key_secret=..., region="cn-hangzhou")
    interpreter.create_interpreter(name="my-interpreter", cpu=2.0, memory=2048)
    interpreter.start_session()
    result = interpreter.execute_code(code="print('Hello')", context_id="default")
    print(result.stdout)
    interpreter.close()
    ```

    Takes the same arguments as `AsyncCodeInterpreter`.
    """

    def __init__(self, config: Config | None = None, **kwargs: Any) -> None:
        self._async = AsyncCodeInterpreter(config, **kwargs)
        self._portal: _Portal | None = _Portal()
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> CodeInterpreter:
        return cls(Config.from_env(), **kwargs)

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncCodeInterpreter", "CodeInterpreter", 1)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._portal is None:
            coro.close()
            raise RuntimeError("this CodeInterpreter was closed; create a new one")
        return self._portal.call(coro)

    # ------------------------------------------------------------ attributes

    @property
    def code_interpreter_id(self) -> str | None:
        return self._async.code_interpreter_id

    @property
    def session_id(self) -> str | None:
        return self._async.session_id

    @property
    def template(self) -> Template | None:
        return self._async.template

    @property
    def config(self) -> Config | None:
        return self._async.config

    @property
    def owner(self) -> str:
        return self._async.owner

    @property
    def strategy(self) -> str:
        return self._async.strategy

    @property
    def control_client(self) -> _SeedControlClient:
        """The seed's `interpreter.control_client.delete_code_interpreter(id)`."""
        return _SeedControlClient(self)

    # ------------------------------------------------------------ interpreter

    def create_interpreter(
        self,
        name: str | None = None,
        cpu: float = 2.0,
        memory: int = 4096,
        disk: int = 512,
        network_mode: str | NetworkMode = "PUBLIC",
        idle_timeout: float = 1800,
        ttl: float = 21600,
        env: Mapping[str, str] | None = None,
        **aliases: Any,
    ) -> Template:
        return self._call(
            self._async.create_interpreter(
                name, cpu, memory, disk, network_mode, idle_timeout, ttl, env, **aliases
            )
        )

    def attach_interpreter(self, name: str) -> Template:
        return self._call(self._async.attach_interpreter(name))

    def delete_interpreter(self) -> None:
        self._call(self._async.delete_interpreter())

    def start_session(self, session_id: str | None = None) -> Sandbox | None:
        return self._call(self._async.start_session(session_id))

    def stop_session(self) -> None:
        self._call(self._async.stop_session())

    def acquire(self, key: str | None = None) -> Lease:
        assert self._portal is not None
        return Lease(self._portal, self._call(self._async.acquire(key)))

    @contextmanager
    def lease(self, key: str | None = None) -> Iterator[Lease]:
        lease = self.acquire(key)
        try:
            yield lease
        finally:
            lease.release()

    # ------------------------------------------------------------ the default caller

    def execute_code(
        self,
        code: str,
        language: str | None = None,
        context_id: str | None = None,
        timeout: float = 30.0,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        *,
        execution_timeout: float | None = None,
    ) -> Execution:
        return self._call(
            self._async.execute_code(
                code,
                language,
                context_id,
                timeout,
                on_stdout,
                on_stderr,
                execution_timeout=execution_timeout,
            )
        )

    run_code = execute_code

    def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        return self._call(self._async.create_context(language, cwd))

    def delete_context(self, context_id: str) -> None:
        self._call(self._async.delete_context(context_id))

    def read_file(self, path: str) -> FileContent:
        return self._call(self._async.read_file(path))

    def write_file(self, path: str, content: str | bytes) -> FileEntry:
        return self._call(self._async.write_file(path, content))

    def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        return self._call(self._async.list_files(path, depth=depth))

    def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        return self._call(self._async.run_command(command, cwd=cwd, timeout=timeout))

    def reap(self, older_than: float = 0.0) -> int:
        return self._call(self._async.reap(older_than))

    # ------------------------------------------------------------ cleanup

    def close(self) -> None:
        """Delete what this object created, stop its emulator and portal. Idempotent."""
        portal, self._portal = self._portal, None
        if portal is None:
            return
        try:
            portal.call(self._async.close())
        finally:
            portal.stop()

    def __enter__(self) -> CodeInterpreter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _SeedControlClient:
    """Just enough of the seed's control client for its shutdown snippet."""

    def __init__(self, owner: CodeInterpreter) -> None:
        self._owner = owner

    def delete_code_interpreter(self, code_interpreter_id: str | None = None) -> None:
        """Delete the interpreter (and its sessions); already gone counts as done."""
        if self._owner._portal is None:
            return
        if code_interpreter_id in (None, self._owner.code_interpreter_id):
            self._owner.delete_interpreter()
            return
        self._owner._call(self._owner._async.control_plane.delete_template(code_interpreter_id))
