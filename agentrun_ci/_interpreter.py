"""AsyncCodeInterpreter: the facade over both planes, with four strategies.

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

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import attrs

from ._async.control_plane import AsyncControlPlane
from ._async.data_plane import AsyncDataPlane
from ._backend import Backend
from ._config import Config
from ._errors import AgentRunError, InvalidArgumentError
from ._lease import AsyncLease, Callback, Leases, Runtime
from ._models import CommandResult, Context, Execution, FileContent, FileEntry, Sandbox, Template
from ._options import BackendName, InterpreterOptions
from ._ownership import OwnerTag, install_hooks, reap
from ._strategies import STRATEGIES, Strategy, StrategyName
from ._templates import NetworkMode, Templates
from ._wire import DEFAULT_CWD

__all__ = ["AsyncCodeInterpreter", "AsyncLease", "Callback", "InterpreterOptions", "NetworkMode"]

log = logging.getLogger("agentrun_ci.interpreter")


class AsyncCodeInterpreter:
    """Run code on AgentRun (or the local emulator) with a chosen strategy.

    ```python
    async with AsyncCodeInterpreter(strategy="pool", pool_size=(2, 8)) as ci:
        async with ci.lease("client-1") as lease:
            execution = await lease.execute_code("x = 1")
    ```

    `close()` deletes everything this object created (sessions, contexts, its
    interpreter unless `keep_interpreter=True`); attached resources are left alone.

    Made of named parts, one job each: `Backend` (planes and emulator), `Templates`
    (the interpreter), a `Strategy` from the registry (sessions), `Leases` (callers).
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
        from_keywords = InterpreterOptions(
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
        if options is None:
            options = from_keywords
        elif from_keywords != InterpreterOptions():
            raise InvalidArgumentError(
                "pass either options=InterpreterOptions(...) or the option keywords, not both"
            )
        self._options = options
        config = _with_credentials(
            config,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            account_id=account_id,
            region=region,
        )
        install_hooks()  # here, in the caller's (usually the main) thread
        self._tag = OwnerTag.current(options.owner)
        self._backend = Backend(config, options, self._tag)
        self._templates = Templates(self._backend, options, self._tag)
        self._leases = Leases()
        self._runtime: Runtime | None = None
        self._strategy: Strategy | None = None
        self._started = False
        self._closed = False

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
    ) -> AsyncCodeInterpreter:
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
        return (
            f"{type(self).__name__}(backend={self.backend!r}, strategy={self.strategy!r}, "
            f"interpreter={self.code_interpreter_id!r})"
        )

    # ------------------------------------------------------------ attributes

    @property
    def options(self) -> InterpreterOptions:
        """The settings this object was made with."""
        return self._options

    @property
    def backend(self) -> str:
        """The backend asked for: "auto", "cloud" or "local"."""
        return self.options.backend

    @property
    def strategy(self) -> str:
        """The strategy's name: "singleton", "pool", "ephemeral" or "dedicated"."""
        return self.options.strategy

    @property
    def keep_interpreter(self) -> bool:
        """Does an interpreter this object creates outlive it?"""
        return self.options.keep_interpreter

    @property
    def config(self) -> Config | None:
        """The configuration in use (the emulator's, for the local backend); None until open."""
        return self._backend.config

    @property
    def template(self) -> Template | None:
        """The interpreter (template) in use, once created or attached."""
        return self._templates.template

    @property
    def code_interpreter_id(self) -> str | None:
        """The interpreter (template) name; the seed's `code_interpreter_id`."""
        template = self._templates.template
        return template.name if template is not None else None

    @property
    def session_id(self) -> str | None:
        """The session of this object's own calls (None before the first one)."""
        default = self._leases.default
        return default.session_id if default is not None else None

    @property
    def owner(self) -> str:
        """The owner tag in the names of everything this object creates."""
        return self._tag.owner

    @property
    def control_plane(self) -> AsyncControlPlane:
        """The control plane (templates, sandboxes); open once the interpreter is."""
        if self._backend.control is None:
            raise AgentRunError("the interpreter is not open yet: call create_interpreter() first")
        return self._backend.control

    @property
    def data_plane(self) -> AsyncDataPlane:
        """The data plane (contexts, code, files, commands); open once the interpreter is."""
        if self._backend.data is None:
            raise AgentRunError("the interpreter is not open yet: call create_interpreter() first")
        return self._backend.data

    # ------------------------------------------------------------ opening

    async def _open(self) -> None:
        """Choose the backend and open both planes (once)."""
        if self._closed:
            raise AgentRunError("this interpreter was closed; create a new one")
        await self._backend.open()

    # ------------------------------------------------------------ interpreter

    async def create_interpreter(
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
        half-made template. `session_timeout` (seed) is the idle timeout.
        """
        await self._open()
        return await self._templates.create(
            name,
            cpu=cpu,
            memory=memory,
            disk=disk if disk_size is None else disk_size,
            network_mode=network_mode,
            idle_timeout=idle_timeout if session_timeout is None else session_timeout,
            ttl=ttl,
            env=env if environment is None else environment,
            timeout=timeout,
        )

    async def attach_interpreter(self, name: str) -> Template:
        """Use an existing interpreter (waits until READY); it is never deleted by us."""
        await self._open()
        return await self._templates.attach(name)

    async def delete_interpreter(self) -> None:
        """Delete this object's interpreter now (after closing its sessions)."""
        await self._stop_strategy()
        await self._templates.delete()

    async def _ensure_interpreter(self) -> Template:
        await self._open()
        if self._templates.template is None:
            if self.options.interpreter_name:
                await self.attach_interpreter(self.options.interpreter_name)
            else:
                await self.create_interpreter()
        assert self._templates.template is not None
        return self._templates.template

    # ------------------------------------------------------------ strategy

    async def _ensure_strategy(self) -> tuple[Runtime, Strategy]:
        if self._runtime is not None and self._strategy is not None:
            return self._runtime, self._strategy
        template = await self._ensure_interpreter()
        if self._runtime is not None and self._strategy is not None:
            return self._runtime, self._strategy
        backend = self._backend
        assert backend.config is not None
        assert backend.data is not None
        assert backend.tracker is not None
        rt = Runtime(
            backend.config,
            backend.data,
            backend.tracker,
            self._tag,
            template=template.name,
            max_sessions=self.options.session_limit,
            max_requests=self.options.max_concurrent_requests,
            session_idle_timeout=self.options.session_idle_timeout,
            health_timeout=self.options.health_timeout,
            control=backend.control,
            session_mounts=self.options.session_mounts,
        )
        strategy = STRATEGIES[self.options.strategy].from_options(rt, self.options)
        self._runtime, self._strategy = rt, strategy
        return rt, strategy

    async def _started_strategy(self) -> tuple[Runtime, Strategy]:
        rt, strategy = await self._ensure_strategy()
        if not self._started:
            await strategy.start()
            self._started = True
        return rt, strategy

    async def start_session(self, session_id: str | None = None) -> Sandbox | None:
        """Start the strategy (singleton: its session; pool: the warm sessions).

        Returns the facade's own session (None for the ephemeral strategy, which
        keeps none, and for a pool, whose warm sessions wait for leases; the facade's
        own calls take one at their first use). With `session_id`, attach to an
        existing session instead (a singleton over a sandbox we do not own and never
        delete).
        """
        _, strategy = await self._ensure_strategy()
        if session_id is not None:
            await strategy.attach(session_id)
        _, strategy = await self._started_strategy()
        if not strategy.serves_default:
            return None
        lease = await self._default_lease()
        session = await lease._ensure_session()
        return await self.data_plane.get_sandbox(session.id)

    async def _default_lease(self) -> AsyncLease:
        default = self._leases.default
        if default is None or default.released:
            default = self._leases.default = await self.acquire(Leases.DEFAULT_KEY)
        return default

    async def acquire(self, key: str | None = None) -> AsyncLease:
        """A lease for one caller (e.g. one MCP client): its own state, released by you.

        A pool lease takes a session at its first call (waiting FIFO up to
        `lease_timeout`); a singleton lease shares the one session.
        """
        rt, strategy = await self._started_strategy()
        return self._leases.get_or_make(key, rt, strategy)

    @contextlib.asynccontextmanager
    async def lease(self, key: str | None = None) -> AsyncIterator[AsyncLease]:
        """`async with ci.lease("client") as lease:` -- released on exit."""
        lease = await self.acquire(key)
        try:
            yield lease
        finally:
            await lease.release()

    # ------------------------------------------------------------ the default caller

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
        """Run code as this object's own caller (`AsyncLease.execute_code`, same arguments).

        `context_id="default"` (or None) is this object's default context; an
        exception in the code is `execution.error`, not raised.
        """
        lease = await self._default_lease()
        return await lease.execute_code(
            code,
            language=language,
            context_id=context_id,
            timeout=timeout,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
            execution_timeout=execution_timeout,
        )

    run_code = execute_code

    async def create_context(self, language: str = "python", cwd: str = DEFAULT_CWD) -> Context:
        """An extra context (kernel) in this object's session, deleted at close."""
        return await (await self._default_lease()).create_context(language, cwd)

    async def delete_context(self, context_id: str) -> None:
        """Delete a context (its variables are gone); a missing one is fine."""
        await (await self._default_lease()).delete_context(context_id)

    async def read_file(self, path: str) -> FileContent:
        """Read a file in the session (`.content` bytes, `.text` when it is UTF-8)."""
        return await (await self._default_lease()).read_file(path)

    async def write_file(self, path: str, content: str | bytes) -> FileEntry:
        """Write a file in the session (parent directories are created)."""
        return await (await self._default_lease()).write_file(path, content)

    async def list_files(self, path: str = DEFAULT_CWD, *, depth: int = 1) -> list[FileEntry]:
        """List a directory in the session, `depth` levels deep."""
        return await (await self._default_lease()).list_files(path, depth=depth)

    async def run_command(
        self, command: str, *, cwd: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run a shell command to completion (at most 30 s); a non-zero exit code is data."""
        return await (await self._default_lease()).run_command(command, cwd=cwd, timeout=timeout)

    async def pause_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Pause this object's session (AgentRun's PauseSandbox) and wait until it is
        PAUSED: its processes stop where they are, memory and files kept. Calls on it raise
        `SessionPausedError` until `resume_session()`. With the singleton strategy this is
        the session every lease shares: they are all paused. Pausing twice is no error.

        Not for the ephemeral strategy (it keeps no session)."""
        lease = await self._default_lease()
        return await lease._pause(shared=self._strategy_shares(), timeout=timeout)

    async def resume_session(self, *, timeout: float = 60.0) -> Sandbox:
        """Resume the paused session (AgentRun's ResumeSandbox) and wait until it is READY:
        variables, files and running jobs go on where they stopped."""
        lease = await self._default_lease()
        return await lease.resume_session(timeout=timeout)

    def _strategy_shares(self) -> bool:
        return self._strategy is not None and self._strategy.shares_session

    async def stop_session(self) -> None:
        """End the facade's own session (a pool returns it; a singleton deletes it)."""
        if self._leases.default is not None:
            await self._leases.default.release()
            self._leases.default = None
        if self._strategy is not None:
            await self._strategy.stop_shared()

    # ------------------------------------------------------------ cleanup

    async def reap(self, older_than: float = 0.0) -> int:
        """Delete this owner's orphans (from crashed processes); returns how many."""
        await self._open()
        return await reap(self.control_plane, self._tag.owner, older_than=older_than)

    async def _stop_strategy(self) -> None:
        await self._leases.release_all()
        strategy, self._strategy, self._runtime = self._strategy, None, None
        self._started = False
        if strategy is not None:
            await strategy.close()

    def _kill_local_now(self) -> bool:
        """Kill the embedded local emulator's kernels and processes at once and remove its
        directories, waiting for nothing (no HTTP, no graceful deletion); False when this
        object runs no emulator of its own (the cloud, or an emulator it was given).

        For a process that exits right after and cannot wait for `close()`: the MCP
        server on stdin EOF, whose host sends SIGTERM 2 s later."""
        emulator = self._backend._emulator
        if emulator is None:
            return False
        emulator.kill_now()
        return True

    async def close(self) -> None:
        """Delete what this object created and close the planes. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._stop_strategy()
            await self._templates.delete(keep=self.options.keep_interpreter)
        except AgentRunError as exc:
            # e.g. a signal handler already swept and stopped our emulator; the tracker
            # sweep below retries whatever is still recorded.
            log.warning("close: %s", exc)
        finally:
            await self._backend.close()

    async def __aenter__(self) -> AsyncCodeInterpreter:
        """Open the planes (and the emulator, for the local backend); `close()` on exit."""
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _with_credentials(config: Config | None, **overrides: Any) -> Config:
    """`config` (from the environment when None) with the given credentials put in."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if config is None:
        return Config.from_env(None, **overrides)
    return attrs.evolve(config, **given) if given else config
