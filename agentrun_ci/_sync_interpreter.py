"""CodeInterpreter and Lease: the synchronous facade.

There is one implementation, `AsyncCodeInterpreter`; this class drives it through
anyio's blocking portal (an event loop in a daemon thread), so sync and async
callers get identical behaviour. Calls block the calling thread only; several
threads may share one CodeInterpreter. Every public method has the signature of
its async twin (tests/test_sync_facade.py checks it).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, TypeVar, cast

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._config import Config
from ._interpreter import AsyncCodeInterpreter, AsyncLease, Callback, NetworkMode
from ._jobs import Job, JobInfo
from ._models import CommandResult, Context, Execution, FileContent, FileEntry, Sandbox, Template
from ._options import BackendName, InterpreterOptions
from ._strategies import StrategyName
from ._wire import DEFAULT_CWD

__all__ = ["CodeInterpreter", "Lease"]

T = TypeVar("T")


async def _await(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


class _Portal:
    """anyio's blocking portal, given coroutines made in the calling thread.

    Stopped by `stop()`, or at interpreter exit for an object never closed: left to
    garbage collection, the portal's context manager would be finalized after the
    daemon loop thread froze, and wait for it forever.
    """

    def __init__(self) -> None:
        self._context: AbstractContextManager[BlockingPortal] = start_blocking_portal(
            "asyncio", name="agentrun-ci-portal"
        )
        self._portal = self._context.__enter__()
        self._loop_thread = self._portal.call(threading.get_ident)
        atexit.register(self._stop_at_exit)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the portal's loop and wait for its result."""
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("a CodeInterpreter callback must not call back into it")
        # (anyio's overloads lose T through the Unpack of *args: cast it back)
        return cast(T, self._portal.call(_await, coro))

    def stop(self) -> None:
        """Stop the loop and join its thread (not from inside it)."""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("a CodeInterpreter callback must not close it")
        atexit.unregister(self._stop_at_exit)
        self._context.__exit__(None, None, None)

    def _stop_at_exit(self) -> None:
        # An exception makes the portal cancel what still runs (a call the main thread
        # abandoned on a signal) instead of waiting for it.
        self._context.__exit__(SystemExit, SystemExit(), None)


class Lease:
    """One caller's share of a CodeInterpreter (the sync twin of `AsyncLease`).

    `execute_code` keeps state between calls in the lease's default context per
    language; `Execution.state_reset` says when it had to be recreated.
    """

    def __init__(self, portal: _Portal, lease: AsyncLease) -> None:
        self._portal = portal
        self._lease = lease

    def __repr__(self) -> str:
        return f"Lease(key={self.key!r}, session_id={self.session_id!r})"

    @property
    def key(self) -> str:
        """The name the lease was acquired under."""
        return self._lease.key

    @property
    def session_id(self) -> str | None:
        """The session this lease holds (None before its first call, or per call)."""
        return self._lease.session_id

    @property
    def context_id(self) -> str | None:
        """The lease's default Python context (None before its first execute)."""
        return self._lease.context_id

    @property
    def context_count(self) -> int:
        """How many contexts (kernels) this lease holds now."""
        return self._lease.context_count

    @property
    def released(self) -> bool:
        """Was the lease given back?"""
        return self._lease.released

    def start(self) -> str:
        """Start this lease's session now (otherwise its first call does) and return its id."""
        return self._portal.call(self._lease.start())

    def execute_code(
        self,
        code: str,
        *,
        language: str | None = None,
        context_id: str | None = None,
        timeout: float = 30.0,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        execution_timeout: float | None = None,
    ) -> Execution:
        """Run code in this lease's context; state persists between calls.

        Args:
            code: the code to run.
            language: "python" (default) or "javascript"; each has its own default context.
            context_id: a context from `create_context` ("default" or None: the
                language's default context of this lease).
            timeout: seconds the code may run, at most 30 (the service's cap).
            on_stdout: called with each stdout chunk (after the call: the service
                answers with the whole output at once).
            on_stderr: called with each stderr chunk.
            execution_timeout: the seed's name for `timeout` (wins when given).

        Returns:
            The Execution; an exception in the code is `execution.error`, not raised.
            `state_reset` is true when the context or session had to be recreated.
        """
        return self._portal.call(
            self._lease.execute_code(
                code,
                language=language,
                context_id=context_id,
                timeout=timeout,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                execution_timeout=execution_timeout,
            )
        )

    run_code = execute_code

    def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        """An extra context in this lease's session, deleted when the lease is released."""
        return self._portal.call(self._lease.create_context(language, cwd))

    def delete_context(self, context_id: str) -> None:
        """Delete a context of this lease (its variables are gone); a missing one is fine."""
        self._portal.call(self._lease.delete_context(context_id))

    def read_file(self, path: str) -> FileContent:
        """Read a file in the session (`.content` bytes, `.text` when it is UTF-8)."""
        return self._portal.call(self._lease.read_file(path))

    def write_file(self, path: str, content: str | bytes) -> FileEntry:
        """Write a file in the session (parent directories are created)."""
        return self._portal.call(self._lease.write_file(path, content))

    def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        """List a directory in the session, `depth` levels deep."""
        return self._portal.call(self._lease.list_files(path, depth=depth))

    def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run a shell command to completion (at most 30 s); a non-zero exit code is data."""
        return self._portal.call(self._lease.run_command(command, cwd=cwd, timeout=timeout))

    def start_job(
        self,
        command: str,
        *,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        stdin: bool = False,
        wait: float = 0.0,
    ) -> Job:
        """Start a background job in the session: no 30 s cap (see `DataPlane.start_job`).

        Jobs a lease started are killed when it is released. Needs a strategy that
        keeps a session (singleton, pool, dedicated)."""
        return self._portal.call(
            self._lease.start_job(command, cwd=cwd, envs=envs, stdin=stdin, wait=wait)
        )

    def read_job(
        self, pid: int, *, stdout_offset: int = 0, stderr_offset: int = 0, wait: float = 0.0
    ) -> Job:
        """A job's state and output past the byte offsets (see `DataPlane.read_job`)."""
        return self._portal.call(
            self._lease.read_job(
                pid, stdout_offset=stdout_offset, stderr_offset=stderr_offset, wait=wait
            )
        )

    def kill_job(self, pid: int) -> bool:
        """SIGKILL a job (its process group); False if it was not running."""
        return self._portal.call(self._lease.kill_job(pid))

    def list_jobs(self) -> list[JobInfo]:
        """The background jobs running in the session (this lease's and others')."""
        return self._portal.call(self._lease.list_jobs())

    def pause_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Pause this lease's own session (pool, dedicated): see `AsyncLease.pause_session`."""
        return self._portal.call(self._lease.pause_session(timeout=timeout))

    def resume_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Resume this lease's paused session; everything goes on where it stopped."""
        return self._portal.call(self._lease.resume_session(timeout=timeout))

    def reset(self) -> None:
        """Forget this lease's state: its contexts are deleted; the next execute starts fresh."""
        self._portal.call(self._lease.reset())

    def release(self) -> None:
        """Give the lease back (its contexts are deleted). Safe to call more than once."""
        self._portal.call(self._lease.release())

    def __enter__(self) -> Lease:
        """`with lease:` releases it on exit."""
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

    Takes the same arguments as `AsyncCodeInterpreter` (credentials fill `config`;
    the other keywords build `options`, an `InterpreterOptions`).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        options: InterpreterOptions | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        security_token: str | None = None,
        account_id: str | None = None,
        region: str | None = None,
        backend: BackendName = "auto",
        strategy: StrategyName = "singleton",
        pool_size: int | tuple[int, int] = (1, 4),
        interpreter_name: str | None = None,
        keep_interpreter: bool = False,
        owner: str | None = None,
        max_sessions: int = 8,
        max_concurrent_requests: int = 32,
        lease_timeout: float = 60.0,
        pool_idle_timeout: float = 300.0,
        session_idle_timeout: float | None = 600.0,
        ready_timeout: float = 300.0,
        health_timeout: float = 60.0,
        reap_on_start: bool = True,
        emulator_settings: Any = None,
        template_fields: Mapping[str, Any] | None = None,
        session_mounts: Mapping[str, Any] | None = None,
    ) -> None:
        """Credentials fill `config` (from AGENTRUN_* variables when None); the other
        keywords build `options` (pass one or the other)."""
        self._async = AsyncCodeInterpreter(
            config,
            options=options,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            account_id=account_id,
            region=region,
            backend=backend,
            strategy=strategy,
            pool_size=pool_size,
            interpreter_name=interpreter_name,
            keep_interpreter=keep_interpreter,
            owner=owner,
            max_sessions=max_sessions,
            max_concurrent_requests=max_concurrent_requests,
            lease_timeout=lease_timeout,
            pool_idle_timeout=pool_idle_timeout,
            session_idle_timeout=session_idle_timeout,
            ready_timeout=ready_timeout,
            health_timeout=health_timeout,
            reap_on_start=reap_on_start,
            emulator_settings=emulator_settings,
            template_fields=template_fields,
            session_mounts=session_mounts,
        )
        self._portal: _Portal | None = _Portal()

    @classmethod
    def from_env(
        cls,
        *,
        options: InterpreterOptions | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        security_token: str | None = None,
        account_id: str | None = None,
        region: str | None = None,
        backend: BackendName = "auto",
        strategy: StrategyName = "singleton",
        pool_size: int | tuple[int, int] = (1, 4),
        interpreter_name: str | None = None,
        keep_interpreter: bool = False,
        owner: str | None = None,
        max_sessions: int = 8,
        max_concurrent_requests: int = 32,
        lease_timeout: float = 60.0,
        pool_idle_timeout: float = 300.0,
        session_idle_timeout: float | None = 600.0,
        ready_timeout: float = 300.0,
        health_timeout: float = 60.0,
        reap_on_start: bool = True,
        emulator_settings: Any = None,
        template_fields: Mapping[str, Any] | None = None,
        session_mounts: Mapping[str, Any] | None = None,
    ) -> CodeInterpreter:
        """Configuration from AGENTRUN_* variables; keyword arguments win (as in `__init__`)."""
        return cls(
            Config.from_env(),
            options=options,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            account_id=account_id,
            region=region,
            backend=backend,
            strategy=strategy,
            pool_size=pool_size,
            interpreter_name=interpreter_name,
            keep_interpreter=keep_interpreter,
            owner=owner,
            max_sessions=max_sessions,
            max_concurrent_requests=max_concurrent_requests,
            lease_timeout=lease_timeout,
            pool_idle_timeout=pool_idle_timeout,
            session_idle_timeout=session_idle_timeout,
            ready_timeout=ready_timeout,
            health_timeout=health_timeout,
            reap_on_start=reap_on_start,
            emulator_settings=emulator_settings,
            template_fields=template_fields,
            session_mounts=session_mounts,
        )

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncCodeInterpreter", "CodeInterpreter", 1)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._portal is None:
            coro.close()
            raise RuntimeError("this CodeInterpreter was closed; create a new one")
        return self._portal.call(coro)

    # ------------------------------------------------------------ attributes

    @property
    def options(self) -> InterpreterOptions:
        """The settings this object was made with."""
        return self._async.options

    @property
    def backend(self) -> str:
        """The backend asked for: "auto", "cloud" or "local"."""
        return self._async.backend

    @property
    def strategy(self) -> str:
        """The strategy's name: "singleton", "pool", "ephemeral" or "dedicated"."""
        return self._async.strategy

    @property
    def keep_interpreter(self) -> bool:
        """Does an interpreter this object creates outlive it?"""
        return self._async.keep_interpreter

    @property
    def config(self) -> Config | None:
        """The configuration in use (the emulator's, for the local backend); None until open."""
        return self._async.config

    @property
    def template(self) -> Template | None:
        """The interpreter (template) in use, once created or attached."""
        return self._async.template

    @property
    def code_interpreter_id(self) -> str | None:
        """The interpreter (template) name; the seed's `code_interpreter_id`."""
        return self._async.code_interpreter_id

    @property
    def session_id(self) -> str | None:
        """The session of this object's own calls (None before the first one)."""
        return self._async.session_id

    @property
    def owner(self) -> str:
        """The owner tag in the names of everything this object creates."""
        return self._async.owner

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
        network_mode: str | NetworkMode | None = None,
        idle_timeout: float = 1800,
        ttl: float = 21600,
        env: Mapping[str, str] | None = None,
        *,
        session_timeout: float | None = None,
        disk_size: int | None = None,
        environment: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Template:
        """Create an interpreter (a CodeInterpreter template) and wait until READY.

        The template's name is owner-tagged (`arci-<owner>-…-<name>`) so a crash
        never leaks it; with `keep_interpreter=True` the name is used as given
        and the interpreter outlives this object. A failed create deletes the
        half-made template. `session_timeout` (seed) is the idle timeout;
        `disk_size` and `environment` are the seed's names for `disk` and `env`.
        """
        return self._call(
            self._async.create_interpreter(
                name,
                cpu,
                memory,
                disk,
                network_mode,
                idle_timeout,
                ttl,
                env,
                session_timeout=session_timeout,
                disk_size=disk_size,
                environment=environment,
                timeout=timeout,
            )
        )

    def attach_interpreter(self, name: str) -> Template:
        """Use an existing interpreter (waits until READY); it is never deleted by us."""
        return self._call(self._async.attach_interpreter(name))

    def delete_interpreter(self) -> None:
        """Delete this object's interpreter now (after closing its sessions)."""
        self._call(self._async.delete_interpreter())

    def start_session(self, session_id: str | None = None) -> Sandbox | None:
        """Start the strategy (singleton: its session; pool: the warm sessions).

        Returns the facade's own session (None for the ephemeral strategy and for a
        pool). With `session_id`, attach to an existing session instead (singleton
        only; a session we do not own is never deleted).
        """
        return self._call(self._async.start_session(session_id))

    def pause_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Pause this object's session and wait until it is PAUSED; calls on it raise
        `SessionPausedError` until `resume_session()` (see `AsyncCodeInterpreter`)."""
        return self._call(self._async.pause_session(timeout=timeout))

    def resume_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Resume the paused session: variables, files and jobs go on where they stopped."""
        return self._call(self._async.resume_session(timeout=timeout))

    def stop_session(self) -> None:
        """End the facade's own session (a pool returns it; a singleton deletes it)."""
        self._call(self._async.stop_session())

    def acquire(self, key: str | None = None) -> Lease:
        """A lease for one caller: its own state, released by you (see `AsyncCodeInterpreter`)."""
        lease = self._call(self._async.acquire(key))
        assert self._portal is not None
        return Lease(self._portal, lease)

    @contextmanager
    def lease(self, key: str | None = None) -> Iterator[Lease]:
        """`with ci.lease("client") as lease:` -- released on exit."""
        lease = self.acquire(key)
        try:
            yield lease
        finally:
            lease.release()

    # ------------------------------------------------------------ the default caller

    def execute_code(
        self,
        code: str,
        *,
        language: str | None = None,
        context_id: str | None = None,
        timeout: float = 30.0,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        execution_timeout: float | None = None,
    ) -> Execution:
        """Run code as this object's own caller (`Lease.execute_code`, same arguments).

        `context_id="default"` (or None) is this object's default context; an
        exception in the code is `execution.error`, not raised.
        """
        return self._call(
            self._async.execute_code(
                code,
                language=language,
                context_id=context_id,
                timeout=timeout,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                execution_timeout=execution_timeout,
            )
        )

    run_code = execute_code

    def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        """An extra context (kernel) in this object's session, deleted at close."""
        return self._call(self._async.create_context(language, cwd))

    def delete_context(self, context_id: str) -> None:
        """Delete a context (its variables are gone); a missing one is fine."""
        self._call(self._async.delete_context(context_id))

    def read_file(self, path: str) -> FileContent:
        """Read a file in the session (`.content` bytes, `.text` when it is UTF-8)."""
        return self._call(self._async.read_file(path))

    def write_file(self, path: str, content: str | bytes) -> FileEntry:
        """Write a file in the session (parent directories are created)."""
        return self._call(self._async.write_file(path, content))

    def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        """List a directory in the session, `depth` levels deep."""
        return self._call(self._async.list_files(path, depth=depth))

    def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run a shell command to completion (at most 30 s); a non-zero exit code is data."""
        return self._call(self._async.run_command(command, cwd=cwd, timeout=timeout))

    def reap(self, older_than: float = 0.0) -> int:
        """Delete this owner's orphans (from crashed processes); returns how many."""
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
        """`with CodeInterpreter() as ci:` closes it on exit."""
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
