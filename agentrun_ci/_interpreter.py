"""AsyncCodeInterpreter: the facade over both planes, with three strategies.

Vocabulary (DESIGN.md): an *interpreter* is a CodeInterpreter template, a
*session* is a sandbox started from it, a *context* is a kernel inside a
sandbox. Every caller works through a lease (`acquire(key)`):

* ``singleton`` -- one shared session; each lease gets its own contexts in it,
  deleted when the lease is released;
* ``pool`` -- min..max warm sessions; a lease holds one session exclusively,
  health-checked when taken; FIFO waiting with a deadline; idle sessions
  above the minimum are trimmed;
* ``ephemeral`` -- a fresh session per execute, deleted right after;
* ``dedicated`` -- a fresh session per lease, deleted at release (the E2B shim's
  model: one `Sandbox` object, one sandbox).

Three promises: nothing leaks (owner-tagged names, a tracker for atexit and
signals, `reap()` of a crashed process's orphans at start); state is never lost
silently (`Execution.state_reset` says when a context or session had to be
recreated); concurrency is bounded (a semaphore on sessions and on requests),
so the account's limits are not hit blindly.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import enum
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Literal

import attrs

from ._async.control_plane import AsyncControlPlane
from ._async.data_plane import AsyncDataPlane
from ._config import Config
from ._errors import (
    AgentRunError,
    APIError,
    InvalidArgumentError,
    NotFoundError,
    SessionLostError,
    TransportError,
    WaitTimeout,
)
from ._models import CommandResult, Context, Execution, FileContent, FileEntry, Sandbox, Template
from ._ownership import OwnerTag, Tracker, install_hooks, reap

__all__ = ["AsyncCodeInterpreter", "AsyncLease", "NetworkMode"]

log = logging.getLogger("agentrun_ci.interpreter")

Strategy = Literal["singleton", "pool", "ephemeral", "dedicated"]
Backend = Literal["auto", "cloud", "local"]
Callback = Callable[[str], Any]

DEFAULT_CWD = "/home/user"
LOCAL_NOTICE = (
    "agentrun-ci: no AgentRun credentials found; running code on THIS machine with the local "
    "emulator (backend='local'). Set AGENTRUN_ACCESS_KEY_ID/AGENTRUN_ACCESS_KEY_SECRET/"
    "AGENTRUN_ACCOUNT_ID to use the cloud."
)
_noticed = False


class NetworkMode(str, enum.Enum):
    """A template's network mode (the seed's `NetworkMode.PUBLIC`)."""

    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    PUBLIC_AND_PRIVATE = "PUBLIC_AND_PRIVATE"

    def __str__(self) -> str:
        return self.value


def _pool_bounds(pool_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(pool_size, int):
        low, high = pool_size, pool_size
    else:
        low, high = pool_size
    if low < 0 or high < 1 or low > high:
        raise InvalidArgumentError(
            f"pool_size must be N >= 1 or (min, max) with 0 <= min <= max >= 1, got {pool_size!r}"
        )
    return low, high


# ---------------------------------------------------------------- sessions


@attrs.define(eq=False)
class _Session:
    """A sandbox in use by the facade."""

    id: str
    owned: bool
    generation: int = 0
    last_used: float = attrs.field(factory=time.monotonic)
    dead: bool = False


class _Runtime:
    """What every strategy shares: planes, template, tracker, owner tag, limits."""

    def __init__(
        self,
        config: Config,
        control: AsyncControlPlane,
        data: AsyncDataPlane,
        tracker: Tracker,
        tag: OwnerTag,
        *,
        template: str,
        max_sessions: int,
        max_requests: int,
        session_idle_timeout: float | None,
        health_timeout: float,
    ) -> None:
        self.config = config
        self.control = control
        self.data = data
        self.tracker = tracker
        self.tag = tag
        self.template = template
        self.session_slots = asyncio.Semaphore(max_sessions)
        self.requests = asyncio.Semaphore(max_requests)
        self.session_idle_timeout = session_idle_timeout
        self.health_timeout = health_timeout
        self.max_sessions = max_sessions

    async def start_sandbox(self) -> _Session:
        """Create a tagged sandbox and wait until healthy; never leaves a half-made one."""
        sandbox_id = self.tag.new_name(max_length=60)
        self.tracker.add_sandbox(sandbox_id)
        try:
            async with self.requests:
                sandbox = await self.data.create_sandbox(
                    self.template, idle_timeout=self.session_idle_timeout, sandbox_id=sandbox_id
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
        return _Session(id=sandbox_id, owned=True)

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


class _Strategy:
    """How leases get sessions."""

    name: str = ""

    def __init__(self, rt: _Runtime) -> None:
        self.rt = rt

    async def start(self) -> None:
        """Warm up (create the sessions the strategy keeps)."""

    async def take(self, lease: AsyncLease) -> _Session:
        raise NotImplementedError

    async def give(self, lease: AsyncLease, session: _Session) -> None:
        """The lease is done with `session` (its contexts are already deleted)."""

    async def replace(self, lease: AsyncLease, session: _Session) -> _Session:
        """`session` died under `lease`: return a working one."""
        raise NotImplementedError

    async def close(self) -> None:
        """Delete every session the strategy owns."""


class _Singleton(_Strategy):
    name = "singleton"

    def __init__(self, rt: _Runtime) -> None:
        super().__init__(rt)
        self.session: _Session | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._ensure()

    async def attach(self, sandbox_id: str) -> _Session:
        async with self._lock:
            self.session = _Session(id=sandbox_id, owned=False)
            return self.session

    async def _ensure(self) -> _Session:
        async with self._lock:
            if self.session is None or self.session.dead:
                async with self.rt.session_slots:
                    self.session = await self.rt.start_sandbox()
            return self.session

    async def take(self, lease: AsyncLease) -> _Session:
        return await self._ensure()

    async def replace(self, lease: AsyncLease, session: _Session) -> _Session:
        async with self._lock:
            current = self.session
            if current is not None and current is not session and not current.dead:
                return current  # someone already replaced it
            if not session.owned:
                raise SessionLostError(
                    f"session {session.id} (attached, not ours) is gone; start a new session"
                )
            session.dead = True
            await self.rt.delete_sandbox(session.id)
            self.session = await self.rt.start_sandbox()
            self.session.generation = session.generation + 1
            log.warning(
                "session %s died; replaced by %s (state reset)", session.id, self.session.id
            )
            return self.session

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None and session.owned:
            await self.rt.delete_sandbox(session.id)


class _Pool(_Strategy):
    name = "pool"

    def __init__(
        self, rt: _Runtime, low: int, high: int, *, lease_timeout: float, idle_trim: float
    ) -> None:
        super().__init__(rt)
        self.low, self.high = low, high
        self.lease_timeout = lease_timeout
        self.idle_trim = idle_trim
        self.free: collections.deque[_Session] = collections.deque()
        self.size = 0  # sessions in existence or being created
        self.waiters: collections.deque[asyncio.Future[_Session]] = collections.deque()
        self._trimmer: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        need = max(0, self.low - self.size)
        self.size += need
        results = await asyncio.gather(
            *(self.rt.start_sandbox() for _ in range(need)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                self.size -= 1
                log.warning("could not pre-warm a pool session: %s", result)
            else:
                self._put(result)
        if self._trimmer is None and self.idle_trim > 0:
            self._trimmer = asyncio.get_running_loop().create_task(self._trim_forever())

    def _put(self, session: _Session) -> None:
        """Hand a free session to the first waiter (FIFO), else park it."""
        session.last_used = time.monotonic()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(session)
                return
        self.free.append(session)

    async def _grow(self) -> _Session:
        try:
            return await self.rt.start_sandbox()
        except BaseException:
            self.size -= 1
            raise

    async def _acquire_raw(self) -> tuple[_Session, bool]:
        """A session and whether it was parked before (and so needs a health check)."""
        if self.free:
            return self.free.popleft(), True
        if self.size < self.high:
            self.size += 1
            return await self._grow(), False
        waiter: asyncio.Future[_Session] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self.lease_timeout), False
        except asyncio.TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._put(waiter.result())  # won the race at the deadline: pass it on
            waiter.cancel()
            raise WaitTimeout(
                f"no pool session became free within lease_timeout={self.lease_timeout:g} s "
                f"(pool max {self.high}); raise pool_size or lease_timeout, or release leases "
                "sooner"
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._put(waiter.result())
            waiter.cancel()
            raise

    async def take(self, lease: AsyncLease) -> _Session:
        if self._closed:
            raise AgentRunError("the interpreter is closed")
        session, parked = await self._acquire_raw()
        # Health check on lease: a session that died while parked is replaced now. (One
        # handed over by a releasing lease was in use a moment ago.)
        if parked and not await self.rt.healthy(session.id):
            log.warning("pool session %s is not healthy; replacing it", session.id)
            await self._discard(session)
            self.size += 1
            session = await self._grow()
        return session

    async def _discard(self, session: _Session) -> None:
        session.dead = True
        self.size -= 1
        with contextlib.suppress(AgentRunError):
            await self.rt.delete_sandbox(session.id)

    async def give(self, lease: AsyncLease, session: _Session) -> None:
        if self._closed or session.dead:
            if not session.dead:
                await self._discard(session)
            return
        self._put(session)

    async def replace(self, lease: AsyncLease, session: _Session) -> _Session:
        log.warning(
            "pool session %s died under lease %r; replacing it (state reset)", session.id, lease.key
        )
        await self._discard(session)
        self.size += 1
        fresh = await self._grow()
        fresh.generation = session.generation + 1
        return fresh

    async def _trim_forever(self) -> None:
        interval = max(0.05, min(self.idle_trim / 2, 5.0))
        while not self._closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            while (
                self.size > self.low
                and self.free
                and now - self.free[0].last_used >= self.idle_trim
            ):
                session = self.free.popleft()
                log.debug("trimming idle pool session %s", session.id)
                await self._discard(session)

    async def close(self) -> None:
        self._closed = True
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer
        for waiter in self.waiters:
            waiter.cancel()
        sessions = list(self.free)
        self.free.clear()
        await asyncio.gather(*(self._discard(s) for s in sessions), return_exceptions=True)


class _Dedicated(_Strategy):
    """A fresh session per lease, deleted when the lease is released (E2B's model)."""

    name = "dedicated"

    async def take(self, lease: AsyncLease) -> _Session:
        await self.rt.session_slots.acquire()
        try:
            return await self.rt.start_sandbox()
        except BaseException:
            self.rt.session_slots.release()
            raise

    async def give(self, lease: AsyncLease, session: _Session) -> None:
        try:
            with contextlib.suppress(AgentRunError):
                await self.rt.delete_sandbox(session.id)
        finally:
            self.rt.session_slots.release()

    async def replace(self, lease: AsyncLease, session: _Session) -> _Session:
        session.dead = True
        await self.give(lease, session)
        fresh = await self.take(lease)
        fresh.generation = session.generation + 1
        return fresh


class _Ephemeral(_Strategy):
    name = "ephemeral"

    async def take(self, lease: AsyncLease) -> _Session:
        raise InvalidArgumentError(
            "the ephemeral strategy keeps no session between calls: files and contexts do not "
            "outlive one execute; use strategy='singleton' or 'pool' for that"
        )

    async def run(self, action: Callable[[str], Any]) -> Any:
        async with self.rt.session_slots:
            session = await self.rt.start_sandbox()
            try:
                return await action(session.id)
            finally:
                with contextlib.suppress(AgentRunError):
                    await self.rt.delete_sandbox(session.id)


# ---------------------------------------------------------------- leases


class AsyncLease:
    """One caller's share of the interpreter: its own contexts (and session, in a pool).

    `execute_code` keeps state between calls in the lease's default context per
    language. When that context or its session died, the lease recreates it and
    the returned Execution has `state_reset=True`.
    """

    def __init__(self, owner: AsyncCodeInterpreter, strategy: _Strategy, key: str) -> None:
        self.key = key
        self._ci = owner
        self._strategy = strategy
        self._session: _Session | None = None
        self._contexts: dict[str, Context] = {}
        self._extra: dict[str, Context] = {}
        self._lock = asyncio.Lock()
        self._pending_reset = False
        self._released = False

    def __repr__(self) -> str:
        return f"AsyncLease(key={self.key!r}, session_id={self.session_id!r})"

    @property
    def session_id(self) -> str | None:
        return self._session.id if self._session is not None else None

    @property
    def context_id(self) -> str | None:
        ctx = self._contexts.get("python")
        return ctx.id if ctx is not None else None

    @property
    def _rt(self) -> _Runtime:
        return self._strategy.rt

    def _check(self) -> None:
        if self._released:
            raise AgentRunError(f"lease {self.key!r} was released; acquire a new one")

    async def _ensure_session(self) -> _Session:
        self._check()
        if self._session is None:
            self._session = await self._strategy.take(self)
        return self._session

    async def _context(self, session: _Session, language: str) -> Context:
        ctx = self._contexts.get(language)
        if ctx is None:
            async with self._rt.requests:
                ctx = await self._rt.data.create_context(
                    session.id, language=language, cwd=DEFAULT_CWD
                )
            self._contexts[language] = ctx
        return ctx

    async def _recover(self, session: _Session) -> _Session:
        """After a 404: is the session dead (replace it) or only the context (recreate)?"""
        if not await self._rt.healthy(session.id):
            return await self._replace(session)
        self._contexts.clear()
        self._extra.clear()
        return session

    async def _replace(self, session: _Session) -> _Session:
        """Swap a dead session for a fresh one; its contexts went with it."""
        self._contexts.clear()
        self._extra.clear()
        self._session = await self._strategy.replace(self, session)
        return self._session

    async def execute_code(
        self,
        code: str,
        language: str | None = None,
        timeout: float = 30.0,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        *,
        context_id: str | None = None,
    ) -> Execution:
        """Run code in this lease's context; state persists between calls."""
        self._check()
        language = language or "python"
        if isinstance(self._strategy, _Ephemeral):
            execution = await self._strategy.run(
                lambda sid: self._execute_once(sid, code, None, language, timeout)
            )
            return _deliver(execution, on_stdout, on_stderr)
        async with self._lock:
            session = await self._ensure_session()
            reset = self._pending_reset
            explicit = context_id is not None and context_id != "default"
            try:
                if explicit:
                    assert context_id is not None
                    execution = await self._execute_once(
                        session.id, code, context_id, None, timeout
                    )
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
            return _deliver(execution, on_stdout, on_stderr)

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

    async def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        """An extra context in this lease's session, deleted when the lease is released."""
        session = await self._ensure_session()
        async with self._rt.requests:
            ctx = await self._rt.data.create_context(session.id, language=language, cwd=cwd)
        self._extra[ctx.id] = ctx
        return ctx

    async def delete_context(self, context_id: str) -> None:
        session = await self._ensure_session()
        self._extra.pop(context_id, None)
        for lang, ctx in list(self._contexts.items()):
            if ctx.id == context_id:
                del self._contexts[lang]
        with contextlib.suppress(NotFoundError):
            await self._rt.data.delete_context(session.id, context_id)

    async def _on_session(self, action: Callable[[str], Any]) -> Any:
        if isinstance(self._strategy, _Ephemeral):
            return await self._strategy.run(action)
        session = await self._ensure_session()
        try:
            async with self._rt.requests:
                return await action(session.id)
        except NotFoundError as exc:
            # Usually the file is missing; but if the whole session vanished, every later
            # file call would 404 too until an execute noticed. Replace it now, and say so.
            if not await self._rt.gone(session.id):
                raise
            async with self._lock:
                if self._session is session:
                    await self._replace(session)
                    self._pending_reset = True  # the next execute reports state_reset
            raise SessionLostError(
                f"session {session.id} is gone (deleted or expired): its files and variables "
                "are lost. A fresh session replaced it; repeat the call"
            ) from exc

    async def read_file(self, path: str) -> FileContent:
        return await self._on_session(lambda sid: self._rt.data.read_file(sid, path))  # type: ignore[no-any-return]

    async def write_file(self, path: str, content: str | bytes) -> FileEntry:
        return await self._on_session(lambda sid: self._rt.data.write_file(sid, path, content))  # type: ignore[no-any-return]

    async def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        return await self._on_session(lambda sid: self._rt.data.list_files(sid, path, depth=depth))  # type: ignore[no-any-return]

    async def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        return await self._on_session(  # type: ignore[no-any-return]
            lambda sid: self._rt.data.run_command(sid, command, cwd=cwd, timeout=timeout)
        )

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

    async def reset(self) -> None:
        """Forget this lease's state: its contexts are deleted; the next execute starts fresh."""
        self._check()
        async with self._lock:
            await self._drop_contexts()

    async def release(self) -> None:
        """Give the lease back (its contexts are deleted). Safe to call more than once."""
        if self._released:
            return
        self._released = True
        async with self._lock:
            await self._drop_contexts()
            session, self._session = self._session, None
            if session is not None:
                await self._strategy.give(self, session)
        self._ci._forget(self)

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()


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


# ---------------------------------------------------------------- the facade


class AsyncCodeInterpreter:
    """Run code on AgentRun (or the local emulator) with a chosen strategy.

    ```python
    async with AsyncCodeInterpreter(strategy="pool", pool_size=(2, 8)) as ci:
        async with ci.lease("client-1") as lease:
            execution = await lease.execute_code("x = 1")
    ```

    `close()` deletes everything this object created (sessions, contexts, its
    interpreter unless `keep_interpreter=True`); attached resources are left alone.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        security_token: str | None = None,
        account_id: str | None = None,
        region: str | None = None,
        backend: Backend = "auto",
        strategy: Strategy = "singleton",
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
    ) -> None:
        if strategy not in ("singleton", "pool", "ephemeral", "dedicated"):
            raise InvalidArgumentError(
                f"unknown strategy {strategy!r}: use 'singleton', 'pool', 'ephemeral' or "
                "'dedicated'"
            )
        if backend not in ("auto", "cloud", "local"):
            raise InvalidArgumentError(
                f"unknown backend {backend!r}: use 'auto', 'cloud' or 'local'"
            )
        overrides: dict[str, Any] = {
            "access_key_id": access_key_id,
            "access_key_secret": access_key_secret,
            "security_token": security_token,
            "account_id": account_id,
            "region": region,
        }
        if config is None:
            config = Config.from_env(**overrides)
        elif any(v is not None for v in overrides.values()):
            config = attrs.evolve(config, **{k: v for k, v in overrides.items() if v is not None})
        self._given_config = config
        install_hooks()  # here, in the caller's (usually the main) thread
        self.backend = backend
        self.strategy = strategy
        self._low, self._high = _pool_bounds(pool_size)
        self._interpreter_name = interpreter_name
        self.keep_interpreter = keep_interpreter
        self._tag = OwnerTag.current(owner)
        self._max_sessions = max(max_sessions, self._high if strategy == "pool" else 1)
        self._max_requests = max_concurrent_requests
        self._lease_timeout = lease_timeout
        self._pool_idle = pool_idle_timeout
        self._session_idle = session_idle_timeout
        self._ready_timeout = ready_timeout
        self._health_timeout = health_timeout
        self._reap_on_start = reap_on_start
        self._emulator_settings = emulator_settings

        self.config: Config | None = None
        self.template: Template | None = None
        self._owns_template = False
        self._emulator: Any = None
        self._emulator_started = threading.Event()
        self._control: AsyncControlPlane | None = None
        self._data: AsyncDataPlane | None = None
        self._tracker: Tracker | None = None
        self._runtime: _Runtime | None = None
        self._strategy: _Strategy | None = None
        self._leases: dict[str, AsyncLease] = {}
        self._counter = 0
        self._default: AsyncLease | None = None
        self._open_lock: asyncio.Lock | None = None
        self._started = False
        self._closed = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> AsyncCodeInterpreter:
        """Configuration from AGENTRUN_* variables; keyword arguments win."""
        return cls(Config.from_env(), **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backend={self.backend!r}, strategy={self.strategy!r}, "
            f"interpreter={self.code_interpreter_id!r})"
        )

    # ------------------------------------------------------------ seed-compatible names

    @property
    def code_interpreter_id(self) -> str | None:
        """The interpreter (template) name; the seed's `code_interpreter_id`."""
        return self.template.name if self.template is not None else None

    @property
    def session_id(self) -> str | None:
        return self._default.session_id if self._default is not None else None

    @property
    def owner(self) -> str:
        return self._tag.owner

    @property
    def control_plane(self) -> AsyncControlPlane:
        if self._control is None:
            raise AgentRunError("the interpreter is not open yet: call create_interpreter() first")
        return self._control

    @property
    def data_plane(self) -> AsyncDataPlane:
        if self._data is None:
            raise AgentRunError("the interpreter is not open yet: call create_interpreter() first")
        return self._data

    # ------------------------------------------------------------ opening

    async def _open(self) -> None:
        """Choose the backend and open both planes (once)."""
        if self._closed:
            raise AgentRunError("this interpreter was closed; create a new one")
        if self._control is not None:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._control is not None:
                return
            config = self._given_config
            remote = config.has_credentials or bool(
                config.control_endpoint and config.data_endpoint
            )
            use_local = self.backend == "local" or (self.backend == "auto" and not remote)
            if use_local:
                config = await self._start_emulator()
            self.config = config
            self._tracker = Tracker(config)
            if self._emulator is not None:
                self._tracker.finalizers.append(self._emulator.stop)
            self._control = AsyncControlPlane(config)
            self._data = AsyncDataPlane(config, max_connections=max(100, self._max_requests * 2))
            if self._reap_on_start:
                try:
                    await reap(self._control, self._tag.owner)
                except AgentRunError as exc:
                    log.warning("could not reap orphans at start: %s", exc)

    async def _start_emulator(self) -> Config:
        global _noticed
        try:
            from .local import LocalEmulator
        except ImportError as exc:
            raise AgentRunError(
                "no AgentRun credentials and the local emulator is not installed: "
                "pip install 'agentrun-ci[local]', or set AGENTRUN_ACCESS_KEY_ID, "
                "AGENTRUN_ACCESS_KEY_SECRET and AGENTRUN_ACCOUNT_ID"
            ) from exc
        if self.backend == "auto" and not _noticed:
            _noticed = True
            # With no logging configured, Python's last-resort handler prints it to stderr.
            log.warning(LOCAL_NOTICE)
        emulator = LocalEmulator(self._emulator_settings)
        # Recorded before it starts: cancelling this `await` does not stop the thread that
        # starts it, and close() must still stop what that thread started.
        self._emulator = emulator
        return await asyncio.to_thread(self._run_emulator, emulator)

    def _run_emulator(self, emulator: Any) -> Config:
        try:
            config: Config = emulator.start()
            # The emulator registers its own atexit stop, which would run *before* the
            # tracker's sweep (atexit is LIFO) and leave the sweep talking to a dead port.
            # The tracker stops the emulator itself, after deleting what we created.
            atexit.unregister(emulator.stop)
            return config
        finally:
            self._emulator_started.set()

    def _stop_emulator(self) -> None:
        """Stop our emulator once its start is over (a cancelled caller may have left it)."""
        self._emulator_started.wait()
        self._emulator.stop()

    # ------------------------------------------------------------ interpreter

    async def create_interpreter(
        self,
        name: str | None = None,
        cpu: float = 2.0,
        memory: int = 4096,
        disk: int = 512,
        network_mode: str | NetworkMode = "PUBLIC",
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
        half-made template. `session_timeout` (seed) is the idle timeout.
        """
        await self._open()
        if self.template is not None:
            raise AgentRunError(
                f"this object already has interpreter {self.template.name!r}; use another "
                "CodeInterpreter for a second one"
            )
        if session_timeout is not None:
            idle_timeout = session_timeout
        if disk_size is not None:
            disk = disk_size
        if environment is not None:
            env = environment
        mode = str(network_mode.value if isinstance(network_mode, NetworkMode) else network_mode)
        if mode not in {m.value for m in NetworkMode}:
            raise InvalidArgumentError(
                f"unknown network_mode {network_mode!r}: use one of "
                f"{[m.value for m in NetworkMode]}"
            )
        if self.keep_interpreter and name:
            template_name = name
        else:
            template_name = self._tag.new_name(name or "interpreter")
        control, tracker = self.control_plane, self._tracker
        assert tracker is not None
        tracker.add_template(template_name)
        try:
            await control.create_template(
                template_name,
                cpu=cpu,
                memory=memory,
                disk_size=disk,
                network_mode=mode,
                idle_timeout=idle_timeout,
                ttl=ttl,
                environment=dict(env) if env else None,
                description=self._tag.description({"name": name, "keep": self.keep_interpreter}),
            )
            template = await control.wait_template_ready(
                template_name, timeout=timeout or self._ready_timeout
            )
        except BaseException:
            with contextlib.suppress(AgentRunError):
                await control.delete_template(template_name)
            tracker.discard_template(template_name)
            raise
        if self.keep_interpreter:
            tracker.discard_template(template_name)  # outlives us, also on a crash
        self.template = template
        self._owns_template = True
        return template

    async def attach_interpreter(self, name: str) -> Template:
        """Use an existing interpreter (waits until READY); it is never deleted by us."""
        await self._open()
        self.template = await self.control_plane.wait_template_ready(
            name, timeout=self._ready_timeout
        )
        self._owns_template = False
        return self.template

    async def delete_interpreter(self) -> None:
        """Delete this object's interpreter now (after closing its sessions)."""
        await self._stop_strategy()
        template, self.template = self.template, None
        if template is not None and self._owns_template and self._control is not None:
            await self._control.delete_template(template.name)
            if self._tracker is not None:
                self._tracker.discard_template(template.name)

    async def _ensure_interpreter(self) -> Template:
        await self._open()
        if self.template is None:
            if self._interpreter_name:
                await self.attach_interpreter(self._interpreter_name)
            else:
                await self.create_interpreter()
        assert self.template is not None
        return self.template

    # ------------------------------------------------------------ strategy

    async def _ensure_strategy(self) -> _Strategy:
        if self._strategy is not None:
            return self._strategy
        template = await self._ensure_interpreter()
        if self._strategy is not None:
            return self._strategy
        assert self.config is not None
        assert self._control is not None
        assert self._data is not None
        assert self._tracker is not None
        rt = _Runtime(
            self.config,
            self._control,
            self._data,
            self._tracker,
            self._tag,
            template=template.name,
            max_sessions=self._max_sessions,
            max_requests=self._max_requests,
            session_idle_timeout=self._session_idle,
            health_timeout=self._health_timeout,
        )
        strategy: _Strategy
        if self.strategy == "pool":
            strategy = _Pool(
                rt,
                self._low,
                self._high,
                lease_timeout=self._lease_timeout,
                idle_trim=self._pool_idle,
            )
        elif self.strategy == "ephemeral":
            strategy = _Ephemeral(rt)
        elif self.strategy == "dedicated":
            strategy = _Dedicated(rt)
        else:
            strategy = _Singleton(rt)
        self._runtime, self._strategy = rt, strategy
        return strategy

    async def start_session(self, session_id: str | None = None) -> Sandbox | None:
        """Start the strategy (singleton: its session; pool: the warm sessions).

        Returns the facade's own session (None for the ephemeral strategy, which
        keeps none, and for a pool, whose warm sessions wait for leases; the facade's
        own calls take one at their first use). With `session_id`, attach to an
        existing session instead (a singleton over a sandbox we do not own and never
        delete).
        """
        strategy = await self._ensure_strategy()
        if session_id is not None:
            if not isinstance(strategy, _Singleton):
                raise InvalidArgumentError("attaching to a session needs strategy='singleton'")
            await strategy.attach(session_id)
        if not self._started:
            await strategy.start()
            self._started = True
        if isinstance(strategy, (_Ephemeral, _Pool)):
            # ephemeral keeps no session; a pool's sessions are for leases, and pinning one
            # to this object's default caller would shrink the pool until close()
            return None
        lease = await self._default_lease()
        session = await lease._ensure_session()
        return await self.data_plane.get_sandbox(session.id)

    async def _default_lease(self) -> AsyncLease:
        if self._default is None or self._default._released:
            self._default = await self.acquire("__default__")
        return self._default

    async def acquire(self, key: str | None = None) -> AsyncLease:
        """A lease for one caller (e.g. one MCP client): its own state, released by you.

        A pool lease takes a session at its first call (waiting FIFO up to
        `lease_timeout`); a singleton lease shares the one session.
        """
        strategy = await self._ensure_strategy()
        if not self._started:
            await strategy.start()
            self._started = True
        if key is None:
            self._counter += 1
            key = f"lease-{self._counter}"
        existing = self._leases.get(key)
        if existing is not None and not existing._released:
            return existing
        lease = AsyncLease(self, strategy, key)
        self._leases[key] = lease
        return lease

    @contextlib.asynccontextmanager
    async def lease(self, key: str | None = None) -> AsyncIterator[AsyncLease]:
        """`async with ci.lease("client") as lease:` -- released on exit."""
        lease = await self.acquire(key)
        try:
            yield lease
        finally:
            await lease.release()

    def _forget(self, lease: AsyncLease) -> None:
        if self._leases.get(lease.key) is lease:
            del self._leases[lease.key]

    # ------------------------------------------------------------ the default caller

    async def execute_code(
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
        """Run code; `context_id="default"` (or None) is this object's default context."""
        if execution_timeout is not None:
            timeout = execution_timeout
        lease = await self._default_lease()
        return await lease.execute_code(
            code, language, timeout, on_stdout, on_stderr, context_id=context_id
        )

    run_code = execute_code

    async def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        return await (await self._default_lease()).create_context(language, cwd)

    async def delete_context(self, context_id: str) -> None:
        await (await self._default_lease()).delete_context(context_id)

    async def read_file(self, path: str) -> FileContent:
        return await (await self._default_lease()).read_file(path)

    async def write_file(self, path: str, content: str | bytes) -> FileEntry:
        return await (await self._default_lease()).write_file(path, content)

    async def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        return await (await self._default_lease()).list_files(path, depth=depth)

    async def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        return await (await self._default_lease()).run_command(command, cwd=cwd, timeout=timeout)

    async def stop_session(self) -> None:
        """End the facade's own session (a pool returns it; a singleton deletes it)."""
        if self._default is not None:
            await self._default.release()
            self._default = None
        if isinstance(self._strategy, _Singleton):
            await self._strategy.close()

    # ------------------------------------------------------------ cleanup

    async def reap(self, older_than: float = 0.0) -> int:
        """Delete this owner's orphans (from crashed processes); returns how many."""
        await self._open()
        return await reap(self.control_plane, self._tag.owner, older_than=older_than)

    async def _stop_strategy(self) -> None:
        for lease in list(self._leases.values()):
            with contextlib.suppress(AgentRunError):
                await lease.release()
        self._default = None
        strategy, self._strategy = self._strategy, None
        self._started = False
        if strategy is not None:
            await strategy.close()

    async def close(self) -> None:
        """Delete what this object created and close the planes. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._stop_strategy()
            template, self.template = self.template, None
            if (
                template is not None
                and self._owns_template
                and not self.keep_interpreter
                and self._control is not None
            ):
                await self._control.delete_template(template.name)
                if self._tracker is not None:
                    self._tracker.discard_template(template.name)
        except AgentRunError as exc:
            # e.g. a signal handler already swept and stopped our emulator; the tracker
            # sweep below retries whatever is still recorded.
            log.warning("close: %s", exc)
        finally:
            if self._data is not None:
                await self._data.close()
            if self._control is not None:
                await self._control.close()
            if self._tracker is not None:
                # Whatever a failed step left behind, plus stopping our emulator.
                await asyncio.to_thread(self._tracker.cleanup_sync)
            elif self._emulator is not None:
                await asyncio.to_thread(self._stop_emulator)

    async def __aenter__(self) -> AsyncCodeInterpreter:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
