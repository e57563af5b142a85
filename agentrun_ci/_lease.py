"""AsyncLease: one caller's share of an interpreter; the registry of a facade's leases;
and the Runtime every lease and strategy shares (planes, limits, tracker).

A lease keeps its own contexts (one default per language, plus extra ones) in
the session its strategy gives it. When that context or session dies, the lease
recreates it and says so (`Execution.state_reset`); it never runs code twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from . import _pausing, _telemetry
from ._async.data_plane import AsyncDataPlane
from ._config import Config
from ._errors import (
    AgentRunError,
    APIError,
    InvalidArgumentError,
    NotFoundError,
    SessionLostError,
    SessionPausedError,
    TransportError,
)
from ._jobs import Job, JobInfo
from ._models import CommandResult, Context, Execution, ExecutionError, FileContent, FileEntry
from ._ownership import OwnerTag, Tracker
from ._strategies import HeldSession, Strategy
from ._wire import DEFAULT_CWD

if TYPE_CHECKING:
    from ._async.control_plane import AsyncControlPlane
    from ._models import Sandbox

__all__ = ["AsyncLease", "Callback", "Leases", "Runtime"]

log = logging.getLogger("agentrun_ci.interpreter")

T = TypeVar("T")
Callback = Callable[[str], Any]


class Runtime:
    """What every strategy and lease shares: the data plane, template, tracker, owner tag
    and the two limits (live sessions, requests in flight)."""

    def __init__(
        self,
        config: Config,
        data: AsyncDataPlane,
        tracker: Tracker,
        tag: OwnerTag,
        *,
        template: str,
        max_sessions: int,
        max_requests: int,
        session_idle_timeout: float | None,
        health_timeout: float,
        control: AsyncControlPlane | None = None,
        session_mounts: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.data = data
        #: for PauseSandbox / ResumeSandbox (None: this runtime cannot pause)
        self.control = control
        self.tracker = tracker
        self.tag = tag
        self.template = template
        self.session_slots = asyncio.Semaphore(max_sessions)
        self.requests = asyncio.Semaphore(max_requests)
        self.session_idle_timeout = session_idle_timeout
        self.health_timeout = health_timeout
        self.max_sessions = max_sessions
        #: nas_config / oss_mount_config / polar_fs_config for every sandbox started
        self.session_mounts = dict(session_mounts or {})

    @_telemetry.traced("start_session")
    async def start_sandbox(self) -> HeldSession:
        """Create a tagged sandbox and wait until healthy; never leaves a half-made one."""
        sandbox_id = self.tag.new_name(max_length=60)
        self.tracker.add_sandbox(sandbox_id)
        try:
            async with self.requests:
                sandbox = await self.data.create_sandbox(
                    self.template,
                    idle_timeout=self.session_idle_timeout,
                    sandbox_id=sandbox_id,
                    **self.session_mounts,
                )
            if sandbox.sandbox_id and sandbox.sandbox_id != sandbox_id:
                # the service chose its own id: track that one instead
                self.tracker.discard_sandbox(sandbox_id)
                sandbox_id = sandbox.sandbox_id
                self.tracker.add_sandbox(sandbox_id)
            await self.data.wait_until_healthy(sandbox_id, timeout=self.health_timeout)
        except BaseException:
            with contextlib.suppress(AgentRunError):
                await self.delete_sandbox(sandbox_id)
            raise
        log.debug("session %s started", sandbox_id)
        return HeldSession(id=sandbox_id, owned=True)

    @_telemetry.traced("delete_session")
    async def delete_sandbox(self, sandbox_id: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.data.delete_sandbox(sandbox_id)
        self.tracker.discard_sandbox(sandbox_id)

    async def healthy(self, sandbox_id: str) -> bool:
        try:
            return (await self.data.health(sandbox_id)).ok
        except (APIError, TransportError):
            return False

    async def gone(self, sandbox_id: str) -> bool:
        """Does the service say the sandbox no longer exists (404)? A probe that failed
        in transit or with a 5xx proves nothing, so it counts as "still there"."""
        try:
            await self.data.health(sandbox_id)
        except NotFoundError:
            return True
        except (APIError, TransportError):
            return False
        return False


class AsyncLease:
    """One caller's share of the interpreter: its own contexts (and session, in a pool).

    `execute_code` keeps state between calls in the lease's default context per
    language. When that context or its session died, the lease recreates it and
    the returned Execution has `state_reset=True`.
    """

    def __init__(self, rt: Runtime, strategy: Strategy, key: str, *, on_release: Any) -> None:
        self._key = key
        self._rt = rt
        self._strategy = strategy
        self._on_release: Callable[[AsyncLease], None] = on_release
        self._session: HeldSession | None = None
        self._contexts: dict[str, Context] = {}
        self._extra: dict[str, Context] = {}
        self._lock = asyncio.Lock()
        self._pending_reset = False
        self._released = False
        self._jobs: set[int] = set()  # background jobs this lease started: killed at release
        _telemetry.watch("lease", self)

    def __repr__(self) -> str:
        return f"AsyncLease(key={self.key!r}, session_id={self.session_id!r})"

    @property
    def key(self) -> str:
        """The name the lease was acquired under."""
        return self._key

    @property
    def session_id(self) -> str | None:
        """The session this lease holds (None before its first call, or per call)."""
        return self._session.id if self._session is not None else None

    @property
    def context_id(self) -> str | None:
        """The lease's default Python context (None before its first execute)."""
        ctx = self._contexts.get("python")
        return ctx.id if ctx is not None else None

    @property
    def context_count(self) -> int:
        """How many contexts (kernels) this lease holds now."""
        return len(self._contexts) + len(self._extra)

    @property
    def released(self) -> bool:
        """Was the lease given back?"""
        return self._released

    def _check(self) -> None:
        if self._released:
            raise AgentRunError(f"lease {self.key!r} was released; acquire a new one")

    async def _ensure_session(self) -> HeldSession:
        """The session this lease keeps (taken at first use)."""
        self._check()
        if not self._strategy.keeps_session:
            raise InvalidArgumentError(
                f"the {self._strategy.name} strategy keeps no session between calls: files and "
                "contexts do not outlive one execute; use strategy='singleton' or 'pool' for that"
            )
        if self._session is None:
            self._session = await self._strategy.take(self.key)
        if self._session.paused:
            raise SessionPausedError(
                f"session {self._session.id} is paused: call resume_session() first "
                "(its variables, files and processes are kept)"
            )
        return self._session

    async def start(self) -> str:
        """Start this lease's session now (otherwise its first call does) and return its id."""
        return (await self._ensure_session()).id

    @contextlib.asynccontextmanager
    async def _session_for_call(self) -> AsyncIterator[HeldSession]:
        """The session one call runs in: the lease's own, or (a strategy that keeps none)
        a fresh one, given back when the call ends."""
        if self._strategy.keeps_session:
            yield await self._ensure_session()
            return
        self._check()
        session = await self._strategy.take(self.key)
        try:
            yield session
        finally:
            await self._strategy.give(self.key, session)

    async def _context(self, session: HeldSession, language: str) -> Context:
        ctx = self._contexts.get(language)
        if ctx is None:
            async with self._rt.requests:
                ctx = await self._rt.data.create_context(
                    session.id, language=language, cwd=DEFAULT_CWD
                )
            self._contexts[language] = ctx
        return ctx

    async def _recover(self, session: HeldSession) -> HeldSession:
        """After a 404: is the session dead (replace it) or only the context (recreate)?"""
        if not await self._rt.healthy(session.id):
            return await self._replace(session)
        self._contexts.clear()
        self._extra.clear()
        return session

    async def _replace(self, session: HeldSession) -> HeldSession:
        """Swap a dead session for a fresh one; its contexts went with it."""
        self._contexts.clear()
        self._extra.clear()
        self._session = await self._strategy.replace(self.key, session)
        return self._session

    @_telemetry.traced("execute_code")
    async def execute_code(
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
        self._check()
        if execution_timeout is not None:
            timeout = execution_timeout
        language = language or "python"
        if not self._strategy.keeps_session:
            # a fresh session per call: its default context for the language will do
            async with self._session_for_call() as session:
                try:
                    execution = await self._execute_once(session.id, code, None, language, timeout)
                except APIError as exc:
                    if not context_lost(exc):
                        raise
                    execution = kernel_died(exc)
            return _deliver(execution, on_stdout, on_stderr)
        async with self._lock:
            try:
                execution = await self._execute_kept(code, language, timeout, context_id)
            except APIError as exc:
                if not context_lost(exc):
                    raise
                # The code ran and killed its own kernel; the service dropped the context.
                # The next execute finds it gone (404), runs in a fresh one and says so;
                # an explicit context is simply gone (the default one is untouched).
                if context_id is None or context_id == "default":
                    self._pending_reset = True
                execution = kernel_died(exc)
        return _deliver(execution, on_stdout, on_stderr)

    run_code = execute_code

    async def _execute_kept(
        self, code: str, language: str, timeout: float, context_id: str | None
    ) -> Execution:
        """Execute in the kept session, recovering once from a vanished context or session."""
        session = await self._ensure_session()
        reset = self._pending_reset
        explicit = context_id is not None and context_id != "default"
        try:
            if explicit:
                assert context_id is not None
                execution = await self._execute_once(session.id, code, context_id, None, timeout)
            else:
                ctx = await self._context(session, language)
                execution = await self._execute_once(session.id, code, ctx.id, None, timeout)
        except NotFoundError as exc:
            # The service refused it (404): the code did not run, so running it once in
            # the recreated context is safe -- and the caller is told state was reset.
            # Remembered first: if recreating fails too, the next execute must say so.
            self._pending_reset = True
            session = await self._recover(session)
            if explicit:
                raise SessionLostError(
                    f"context {context_id} is gone (its session died or it was deleted); "
                    "its variables are lost: create a new context"
                ) from exc
            ctx = await self._context(session, language)
            execution = await self._execute_once(session.id, code, ctx.id, None, timeout)
            reset = True
        session.last_used = time.monotonic()
        self._pending_reset = False
        execution.state_reset = reset
        return execution

    async def _execute_once(
        self,
        sandbox_id: str,
        code: str,
        context_id: str | None,
        language: str | None,
        timeout: float,
    ) -> Execution:
        async with self._rt.requests:
            return await self._rt.data.execute(
                sandbox_id, code, context_id=context_id, language=language, timeout=timeout
            )

    @_telemetry.traced("create_context")
    async def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        """An extra context in this lease's session, deleted when the lease is released."""
        session = await self._ensure_session()
        async with self._rt.requests:
            ctx = await self._rt.data.create_context(session.id, language=language, cwd=cwd)
        self._extra[ctx.id] = ctx
        return ctx

    @_telemetry.traced("delete_context")
    async def delete_context(self, context_id: str) -> None:
        """Delete a context of this lease (its variables are gone); a missing one is fine."""
        session = await self._ensure_session()
        self._extra.pop(context_id, None)
        for lang, ctx in list(self._contexts.items()):
            if ctx.id == context_id:
                del self._contexts[lang]
        with contextlib.suppress(NotFoundError):
            await self._rt.data.delete_context(session.id, context_id)

    async def _on_session(self, action: Callable[[str], Awaitable[T]]) -> T:
        async with self._session_for_call() as session:
            try:
                async with self._rt.requests:
                    return await action(session.id)
            except NotFoundError as exc:
                # Usually the file is missing; but if the whole session vanished, every later
                # file call would 404 too until an execute noticed. Replace it now, and say so.
                if not self._strategy.keeps_session or not await self._rt.gone(session.id):
                    raise
                async with self._lock:
                    if self._session is session:
                        await self._replace(session)
                        self._pending_reset = True  # the next execute reports state_reset
                raise SessionLostError(
                    f"session {session.id} is gone (deleted or expired): its files and "
                    "variables are lost. A fresh session replaced it; repeat the call"
                ) from exc

    @_telemetry.traced("read_file")
    async def read_file(self, path: str) -> FileContent:
        """Read a file in the session (`.content` bytes, `.text` when it is UTF-8)."""
        return await self._on_session(lambda sid: self._rt.data.read_file(sid, path))

    @_telemetry.traced("write_file")
    async def write_file(self, path: str, content: str | bytes) -> FileEntry:
        """Write a file in the session (parent directories are created)."""
        return await self._on_session(lambda sid: self._rt.data.write_file(sid, path, content))

    @_telemetry.traced("list_files")
    async def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        """List a directory in the session, `depth` levels deep."""
        return await self._on_session(lambda sid: self._rt.data.list_files(sid, path, depth=depth))

    @_telemetry.traced("run_command")
    async def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run a shell command to completion (at most 30 s); a non-zero exit code is data."""
        return await self._on_session(
            lambda sid: self._rt.data.run_command(sid, command, cwd=cwd, timeout=timeout)
        )

    @_telemetry.traced("start_job")
    async def start_job(
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
        await self._ensure_session()
        job = await self._on_session(
            lambda sid: self._rt.data.start_job(
                sid, command, cwd=cwd, envs=envs, stdin=stdin, tag=self.key, wait=wait
            )
        )
        self._jobs.add(job.pid)
        return job

    @_telemetry.traced("read_job")
    async def read_job(
        self, pid: int, *, stdout_offset: int = 0, stderr_offset: int = 0, wait: float = 0.0
    ) -> Job:
        """A job's state and output past the byte offsets (see `DataPlane.read_job`)."""
        await self._ensure_session()
        return await self._on_session(
            lambda sid: self._rt.data.read_job(
                sid, pid, stdout_offset=stdout_offset, stderr_offset=stderr_offset, wait=wait
            )
        )

    @_telemetry.traced("kill_job")
    async def kill_job(self, pid: int) -> bool:
        """SIGKILL a job (its process group); False if it was not running."""
        await self._ensure_session()
        killed = await self._on_session(lambda sid: self._rt.data.kill_job(sid, pid))
        self._jobs.discard(pid)
        return killed

    @_telemetry.traced("list_jobs")
    async def list_jobs(self) -> list[JobInfo]:
        """The background jobs running in the session (this lease's and others')."""
        await self._ensure_session()
        return await self._on_session(lambda sid: self._rt.data.list_jobs(sid))

    async def _kill_jobs(self) -> None:
        session, jobs = self._session, sorted(self._jobs)
        self._jobs.clear()
        if session is None or session.dead:
            return
        for pid in jobs:
            with contextlib.suppress(AgentRunError):
                await self._rt.data.kill_job(session.id, pid)

    async def _drop_contexts(self) -> None:
        session = self._session
        contexts = [*self._contexts.values(), *self._extra.values()]
        self._contexts.clear()
        self._extra.clear()
        if session is None or session.dead:
            return
        for ctx in contexts:
            with contextlib.suppress(AgentRunError):
                await self._rt.data.delete_context(session.id, ctx.id)

    @_telemetry.traced("pause_session")
    async def pause_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Pause this lease's session (AgentRun's PauseSandbox): its processes stop where
        they are and keep their memory; files stay. Calls on it raise SessionPausedError
        until `resume_session()`. Pausing a paused session is no error.

        Needs a session of the lease's own (strategy pool or dedicated); the singleton's
        shared session is paused by the interpreter's own `pause_session()`."""
        if self._strategy.shares_session:
            raise InvalidArgumentError(
                f"the {self._strategy.name} strategy shares one session among all leases: a "
                "lease may not pause it for the others. Pause it with the interpreter's own "
                "pause_session(), or use strategy='dedicated' or 'pool' for a session per lease"
            )
        return await self._pause(shared=False, timeout=timeout)

    async def _pause(self, *, shared: bool, timeout: float = 60.0) -> Sandbox:
        session = await self._held_session("pause")
        control = self._control()
        async with self._lock:
            sandbox, _ = await _pausing.pause(control, self._rt.data, session.id, timeout=timeout)
            session.paused = True
        log.info("session %s paused%s", session.id, " (shared)" if shared else "")
        return sandbox

    @_telemetry.traced("resume_session")
    async def resume_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Resume this lease's paused session (AgentRun's ResumeSandbox): everything goes
        on where it stopped, variables and running jobs included. Resuming a running
        session is no error."""
        session = await self._held_session("resume")
        control = self._control()
        async with self._lock:
            sandbox, _ = await _pausing.resume(control, self._rt.data, session.id, timeout=timeout)
            session.paused = False
        return sandbox

    async def _held_session(self, verb: str) -> HeldSession:
        """The session to pause or resume: the lease's own, started if need be."""
        self._check()
        if not self._strategy.keeps_session:
            raise InvalidArgumentError(
                f"the {self._strategy.name} strategy keeps no session between calls: there "
                f"is nothing to {verb}; use strategy='dedicated', 'pool' or 'singleton'"
            )
        if self._session is None:
            self._session = await self._strategy.take(self.key)
        return self._session

    def _control(self) -> AsyncControlPlane:
        if self._rt.control is None:
            raise AgentRunError("this interpreter has no control plane to pause sessions with")
        return self._rt.control

    @_telemetry.traced("reset")
    async def reset(self) -> None:
        """Forget this lease's state: its contexts are deleted; the next execute starts fresh."""
        self._check()
        if self._session is not None and self._session.paused:
            await self._ensure_session()  # SessionPausedError: its kernels cannot be stopped
        async with self._lock:
            await self._drop_contexts()

    @_telemetry.traced("release")
    async def release(self) -> None:
        """Give the lease back (its contexts are deleted). Safe to call more than once."""
        if self._released:
            return
        self._released = True
        session = self._session
        if session is not None and session.paused and self._rt.control is not None:
            # thawed so that its jobs and contexts can be dropped (and a pool can reuse it);
            # one that will not resume is not given back as it is
            try:
                await _pausing.resume(
                    self._rt.control, self._rt.data, session.id, timeout=self._rt.health_timeout
                )
                session.paused = False
            except AgentRunError:
                with contextlib.suppress(AgentRunError):
                    await self._rt.delete_sandbox(session.id)
                session.dead = True
        async with self._lock:
            await self._kill_jobs()
            await self._drop_contexts()
            session, self._session = self._session, None
            if session is not None:
                await self._strategy.give(self.key, session)
        self._on_release(self)

    async def __aenter__(self) -> AsyncLease:
        """`async with lease:` releases it on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()


#: the service's code for "the kernel died while running this code" (the context is gone)
CONTEXT_LOST = "ERR_CONTEXT_LOST"


def context_lost(exc: APIError) -> bool:
    """Did the execute fail because the code's kernel died under it?"""
    return exc.code == CONTEXT_LOST


def kernel_died(exc: APIError) -> Execution:
    """The user's code killed its own kernel (os._exit, a crash, out of memory): an error
    in the code, so data (`Execution.error`), not an exception; its state is gone."""
    name = "DeadKernelError"
    value = (
        "the code's process died (os._exit, a crash, or killed for memory): its context is "
        "gone with all variables and imports, and the next run starts in a fresh one "
        "(state_reset: true)"
    )
    # the service's own words, without its "retry later" advice: running this code
    # again would kill the fresh context too
    said = f"[{exc.status_code} {exc.code}] {exc.message}" + (
        f" (request id {exc.request_id})" if exc.request_id else ""
    )
    return Execution(
        error=ExecutionError(name=name, value=value, traceback=f"{said}\n{name}: {value}"),
        status="error",
        state_reset=True,
    )


def _deliver(
    execution: Execution, on_stdout: Callback | None, on_stderr: Callback | None
) -> Execution:
    # The service answers with the whole event list at once: callbacks run per chunk after it.
    if on_stdout is not None:
        for chunk in execution.logs.stdout:
            on_stdout(chunk)
    if on_stderr is not None:
        for chunk in execution.logs.stderr:
            on_stderr(chunk)
    return execution


class Leases:
    """The leases one facade handed out, by key; the facade's own (`default`) among them."""

    DEFAULT_KEY = "__default__"

    def __init__(self) -> None:
        self._leases: dict[str, AsyncLease] = {}
        self._counter = 0
        self.default: AsyncLease | None = None

    def get_or_make(self, key: str | None, rt: Runtime, strategy: Strategy) -> AsyncLease:
        """The live lease under `key` (a new key when None), made if missing."""
        if key is None:
            self._counter += 1
            key = f"lease-{self._counter}"
        existing = self._leases.get(key)
        if existing is not None and not existing.released:
            return existing
        lease = AsyncLease(rt, strategy, key, on_release=self.forget)
        self._leases[key] = lease
        return lease

    def forget(self, lease: AsyncLease) -> None:
        if self._leases.get(lease.key) is lease:
            del self._leases[lease.key]

    async def release_all(self) -> None:
        """Release every lease (errors are left to the sweep that follows)."""
        for lease in list(self._leases.values()):
            with contextlib.suppress(AgentRunError):
                await lease.release()
        self.default = None
