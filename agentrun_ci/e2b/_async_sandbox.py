"""`AsyncSandbox`: E2B's sandbox API on the async facade (`AsyncCodeInterpreter`).

One `AsyncSandbox` is one AgentRun sandbox. A sandbox made by `create()` is an
`AsyncLease` of the facade's `dedicated` strategy (started at once, tracked,
deleted by `kill()` or at exit); one reached by `connect()` is used by id.
Code runs through the facade's data plane, in contexts the sandbox keeps:

* a default context per language (python and javascript are made with the
  sandbox, as E2B's are), shared with every handle on the same sandbox;
* `bash` contexts live in the shim: their code runs as a shell command in the
  context's directory (AgentRun has no bash kernel).

Python contexts get the rich-result formatters (`_setup.FORMATTERS`) when they
are created, unless `rich_results=False`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import enum
import inspect
import logging
import math
import shlex
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from .. import _pausing as pausing
from .._config import Config
from .._errors import (
    AgentRunError,
    APIError,
    ConflictError,
    NotFoundError,
    RequestTimeout,
    WaitTimeout,
)
from .._interpreter import AsyncCodeInterpreter, AsyncLease
from .._lease import context_lost, kernel_died
from .._models import Context, ExecutionError, Logs
from .._models import Execution as _Execution
from .._wire import EXECUTE_TIMEOUT_CAP
from . import _hub, _options, _setup
from ._async_commands import AsyncCommands
from ._async_filesystem import AsyncFilesystem
from ._async_git import AsyncGit
from ._async_pty import AsyncPty
from ._common import HOME, _Dual, maybe_await
from ._errors import (
    EXECUTION_TIMED_OUT,
    REQUEST_TIMED_OUT,
    SANDBOX_KILLED,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    SandboxKilledError,
    TimeoutException,
)
from ._models import Execution, OutputMessage, Result

__all__ = [
    "AsyncSandbox",
    "AsyncSandboxPaginator",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxQuery",
    "SandboxState",
    "deliver",
]

log = logging.getLogger("agentrun_ci.e2b")

#: E2B's defaults: a sandbox lives 300 s, one run_code may take 300 s
DEFAULT_LIFETIME = 300.0
DEFAULT_RUN_TIMEOUT = 300.0
#: how long a request may take beyond the work it asks for (E2B's request_timeout default)
DEFAULT_REQUEST_TIMEOUT = 60.0


class SandboxState(str, enum.Enum):
    """E2B's sandbox states: AgentRun's READY (and CREATING) is RUNNING, PAUSED is PAUSED."""

    RUNNING = "running"
    PAUSED = "paused"

    def __str__(self) -> str:
        return str(self.value)


@attrs.frozen
class SandboxInfo:
    """What `get_info()` and `list()` say about a sandbox (E2B's fields)."""

    sandbox_id: str
    template_id: str | None
    name: str | None
    metadata: dict[str, str]
    started_at: datetime | None
    end_at: datetime | None
    #: a SandboxState, or AgentRun's status in lower case for others ("terminated")
    state: SandboxState | str
    #: AgentRun's status word (READY, PAUSED, TERMINATED, ...)
    status: str | None = None
    #: E2B's `{"on_timeout": ..., "auto_resume": ...}` when this process knows it
    lifecycle: dict[str, Any] | None = None


@attrs.frozen
class SandboxQuery:
    """A filter for `list()` (E2B's fields): metadata to match, states (default: running
    and paused), started at or after a time, and a template (interpreter) name."""

    metadata: dict[str, str] | None = None
    state: builtins.list[SandboxState | str] | None = None
    started_after: datetime | None = None
    template: str | None = None


@attrs.frozen
class SandboxMetrics:
    """One sample of a sandbox's resource use (E2B's fields; see docs/e2b.md for sources).

    `cpu_used_pct` and `mem_used` add up the sandbox's processes as the service reports
    them (`resourceUsage` of each process); `disk_used` is what `du` counts under
    /home/user; the totals are the interpreter's (template's) cpu, memory and disk.
    """

    cpu_count: int
    cpu_used_pct: float
    disk_total: int
    disk_used: int
    mem_total: int
    mem_used: int
    #: page cache: AgentRun reports none (None)
    mem_cache: int | None
    timestamp: datetime


@attrs.define
class _Record:
    """What this process knows about a sandbox beyond the service: E2B's extras."""

    template: str | None
    metadata: dict[str, str]
    envs: dict[str, str]
    started_at: datetime
    end_at: datetime | None
    defaults: dict[str, str] = attrs.field(factory=dict)
    lifecycle: _options.Lifecycle | None = None
    #: paused by this process (pause() or the on_timeout="pause" lifetime)
    paused: bool = False


_records: dict[str, _Record] = {}
_live: dict[str, list[AsyncSandbox]] = {}
_records_lock = threading.Lock()


def _now() -> datetime:
    return datetime.now(timezone.utc)


#: AgentRun states on the way to PAUSED / READY (not documented: tolerated, agentrun-api.md §2.3)
_PAUSING = pausing.PAUSING


def _state(status: str | None) -> SandboxState | str:
    word = (status or "").upper()
    if word in ("READY", "CREATING", "RESUMING"):
        return SandboxState.RUNNING
    if word in _PAUSING:
        return SandboxState.PAUSED
    return (status or "unknown").lower()


async def deliver(
    execution: Execution,
    on_stdout: Callable[[OutputMessage], Any] | None,
    on_stderr: Callable[[OutputMessage], Any] | None,
    on_result: Callable[[Result], Any] | None,
    on_error: Callable[[ExecutionError], Any] | None,
) -> None:
    """Call E2B's callbacks for one finished execution (coroutine callbacks are awaited).

    AgentRun answers an execute with the whole event list at once, so the
    callbacks run when the run is over, in output order per kind.
    """
    if on_stdout is not None:
        for chunk in execution.logs.stdout:
            await maybe_await(on_stdout(OutputMessage(chunk, error=False)))
    if on_stderr is not None:
        for chunk in execution.logs.stderr:
            await maybe_await(on_stderr(OutputMessage(chunk, error=True)))
    if on_result is not None:
        for result in execution.results:
            await maybe_await(on_result(result))
    if on_error is not None and execution.error is not None:
        await maybe_await(on_error(execution.error))


#: E2B features AgentRun has no counterpart for: what to do instead
_NOT_ON_AGENTRUN = {
    "create_snapshot": (
        "AgentRun has no sandbox snapshots; keep state in files and copy them out with "
        "files.read() (or pause() the sandbox and connect() to it later)"
    ),
    "list_snapshots": "AgentRun has no sandbox snapshots",
    "delete_snapshot": "AgentRun has no sandbox snapshots",
    "fork": (
        "AgentRun cannot copy a running sandbox; create() a new one and replay the setup "
        "(files.write(), run_code())"
    ),
    "update_network": (
        "AgentRun sets network access per interpreter: create an interpreter with the "
        "network_mode you need (agentrun_ci.CodeInterpreter.create_interpreter) and pass "
        "its name as template"
    ),
}


def _refuse(name: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise InvalidArgumentException(f"{name}() is not available: {_NOT_ON_AGENTRUN[name]}")

    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = f"Refused: {_NOT_ON_AGENTRUN[name]}."
    return refuse


class AsyncSandbox:
    """One AgentRun sandbox with E2B's API: `sbx = await AsyncSandbox.create()`."""

    default_template = "code-interpreter-v1"

    files: AsyncFilesystem
    commands: AsyncCommands
    pty: AsyncPty
    git: AsyncGit
    _ci: AsyncCodeInterpreter
    _lease: AsyncLease | None
    _sandbox_id: str
    _record: _Record
    _rich: bool
    _request_timeout: float | None
    _killed: bool
    _inflight: set[asyncio.Future[Any]]
    _bash: dict[str, Context]
    _counts: dict[str, int]
    _aliases: dict[str, str]
    _languages: dict[str, str]
    _default_lock: asyncio.Lock
    _timer: asyncio.TimerHandle | None
    _hub_key: Any
    _service_version: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise InvalidArgumentException(
            "use `await AsyncSandbox.create(...)` to make a sandbox, or "
            "`await AsyncSandbox.connect(sandbox_id)` to reach one"
        )

    # ------------------------------------------------------------ making one

    @classmethod
    def _make(
        cls,
        ci: AsyncCodeInterpreter,
        sandbox_id: str,
        lease: AsyncLease | None,
        record: _Record,
        *,
        rich_results: bool,
        request_timeout: float | None,
    ) -> AsyncSandbox:
        self = cls.__new__(cls)
        self._ci = ci
        self._lease = lease
        self._sandbox_id = sandbox_id
        self._record = record
        self._rich = rich_results
        self._request_timeout = request_timeout
        self._killed = False
        self._inflight = set()
        self._bash = {}
        self._counts = {}
        self._aliases = {}
        self._languages = {}
        self._default_lock = asyncio.Lock()
        self._timer = None
        self._hub_key = None
        self._service_version = None
        self.files = AsyncFilesystem(self)
        self.commands = AsyncCommands(self)
        self.pty = AsyncPty(self)
        self.git = AsyncGit(self)
        with _records_lock:
            _live.setdefault(sandbox_id, []).append(self)
        return self

    @classmethod
    async def create(
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
    ) -> AsyncSandbox:
        """Start a sandbox (E2B's arguments; `config`, `backend`, `rich_results` are ours).

        `template`: E2B's code-interpreter names (or None) mean the default
        interpreter; any other name is an existing AgentRun interpreter.
        `timeout`: the sandbox's lifetime in seconds (default 300, at most 6 h),
        after which the shim kills it, or pauses it with
        `lifecycle={"on_timeout": "pause"}` (`auto_resume=True`: the next call through
        this handle resumes it; else `connect()` does). `metadata` is kept and returned by
        `get_info()` and `list()`. `envs` are set in every context and command.
        `secure` is accepted (AgentRun always signs requests). `rich_results=False`
        skips the formatter snippet (no `Result.data` / `Result.chart`).
        """
        _options.refuse_connection_options("AsyncSandbox.create()", opts)
        _options.check_create(
            allow_internet_access=allow_internet_access,
            network=network,
            mcp=mcp,
            iam=iam,
            volume_mounts=volume_mounts,
        )
        lifetime = _options.check_lifetime(DEFAULT_LIFETIME if timeout is None else timeout)
        ending = _options.check_lifecycle(lifecycle)
        meta = _options.check_metadata(metadata)
        sandbox_envs = dict(envs or {})
        _setup.bash_prefix(sandbox_envs)  # validates names and values
        if not isinstance(secure, bool):
            raise InvalidArgumentException(f"secure must be True or False, got {secure!r}")
        _check_backend(config, backend)
        named = None if template is None or template in _hub.DEFAULT_TEMPLATES else template
        ci, hub_key = await _hub.acquire(config, backend, named)
        try:
            lease = await ci.acquire()
        except BaseException:
            await _hub.release(hub_key)
            raise
        try:
            sandbox_id = await lease.start()
            started = _now()
            record = _Record(
                template=ci.template.name if ci.template is not None else named,
                metadata=meta,
                envs=sandbox_envs,
                started_at=started,
                end_at=started + timedelta(seconds=lifetime),
                lifecycle=ending,
            )
            with _records_lock:
                _records[sandbox_id] = record
            self = cls._make(
                ci,
                sandbox_id,
                lease,
                record,
                rich_results=rich_results,
                request_timeout=opts.get("request_timeout"),
            )
            self._hub_key, hub_key = hub_key, None
        except BaseException:
            await lease.release()
            await _hub.release(hub_key)
            raise
        try:
            self._schedule(lifetime)
            (logger or log).debug("sandbox %s created", sandbox_id)
            # E2B sandboxes come with a python and a javascript context
            await self._make_defaults()
        except BaseException:
            await self._kill()
            raise
        return self

    async def _make_defaults(self) -> None:
        async def js() -> None:
            try:
                await self._default("javascript")
            except AgentRunError as exc:  # e.g. no node on a local machine: python still works
                log.debug("no default javascript context: %s", exc)

        await asyncio.gather(self._default("python"), js())

    @classmethod
    async def _connect(
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
    ) -> AsyncSandbox:
        _options.refuse_connection_options("AsyncSandbox.connect()", opts)
        _check_backend(config, backend)
        if config is None and backend == "auto":  # the backend that has it
            ci, hub_key = await _hub.acquire_holding(sandbox_id)
        else:
            ci, hub_key = await _hub.acquire(config, backend, None)
        try:
            sandbox = await _get_sandbox(ci, sandbox_id)
            resumed = await _resume_if_paused(ci, sandbox)
        except BaseException:
            await _hub.release(hub_key)
            raise
        with _records_lock:
            record = _records.get(sandbox_id)
            if record is None:
                record = _records[sandbox_id] = _Record(
                    template=sandbox.template_name,
                    metadata={},
                    envs={},
                    started_at=sandbox.created_at or _now(),
                    end_at=None,
                )
        self = cls._make(
            ci,
            sandbox_id,
            None,
            record,
            rich_results=rich_results,
            request_timeout=opts.get("request_timeout"),
        )
        self._hub_key = hub_key
        if not record.defaults:
            # another process made it: its first context of each language is the default
            for ctx in await ci.data_plane.list_contexts(sandbox_id):
                if ctx.language in ("python", "javascript"):
                    record.defaults.setdefault(ctx.language, ctx.id)
        await self._after_connect(resumed, timeout)
        (logger or log).debug("connected to sandbox %s", sandbox_id)
        return self

    async def _reconnect(self, /, timeout: float | None = None, **opts: Any) -> AsyncSandbox:
        _options.refuse_connection_options("AsyncSandbox.connect()", opts)
        self._check_alive()
        sandbox = await _get_sandbox(self._ci, self._sandbox_id)
        resumed = await _resume_if_paused(self._ci, sandbox)
        await self._after_connect(resumed, timeout)
        return self

    async def _after_connect(self, resumed: bool, timeout: float | None) -> None:
        """A resumed sandbox starts a new lifetime (`timeout`, default 300 s), as E2B's
        does; a running one's is only lengthened."""
        if resumed or self._record.paused:
            self._record.paused = False
            lifetime = _options.check_lifetime(DEFAULT_LIFETIME if timeout is None else timeout)
            self._record.end_at = _now() + timedelta(seconds=lifetime)
            self._schedule(lifetime)
        elif timeout is not None:
            await self._end_in(timeout, only_longer=True)

    connect = _Dual(_connect, _reconnect)
    """`AsyncSandbox.connect(sandbox_id)` reaches an existing sandbox (also from another
    process, while the one that made it runs: sandboxes are deleted when their maker exits);
    `sbx.connect()` checks this one still runs. A paused sandbox is resumed (AgentRun's
    ResumeSandbox) and gets a new lifetime of `timeout` (default 300 s); for a running one
    `timeout` only lengthens the lifetime."""

    # ------------------------------------------------------------ lifecycle

    @property
    def sandbox_id(self) -> str:
        return self._sandbox_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sandbox_id={self._sandbox_id!r})"

    @property
    def _envs(self) -> dict[str, str]:
        return self._record.envs

    def _schedule(self, lifetime: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(lifetime, lambda: loop.create_task(self._expire()))

    async def _expire(self) -> None:
        end = self._record.end_at
        if self._killed or self._record.paused:
            return
        if end is not None and end > _now():  # another handle lengthened the lifetime
            self._schedule((end - _now()).total_seconds())
            return
        self._timer = None
        lifecycle = self._record.lifecycle
        if lifecycle is not None and lifecycle.on_timeout == "pause":
            log.info("sandbox %s reached its timeout: pausing it", self._sandbox_id)
            with contextlib.suppress(AgentRunError):
                await _pause(self._ci, self._sandbox_id, DEFAULT_REQUEST_TIMEOUT)
            return
        log.info("sandbox %s reached its timeout: killing it", self._sandbox_id)
        with contextlib.suppress(AgentRunError):
            await self._kill()

    async def _overdue(self) -> None:
        """End the lifetime now if its time has come but its timer has not run yet (the
        event loop was blocked, e.g. by `time.sleep` in async code)."""
        end = self._record.end_at
        if self._timer is not None and end is not None and end <= _now():
            self._timer.cancel()
            await self._expire()

    async def is_running(self, request_timeout: float | None = None) -> bool:
        """Does the sandbox run now? (False once killed or gone, and while paused.)"""
        await self._overdue()
        if self._killed:
            return False
        try:
            health = await self._bounded(
                self._ci.data_plane.health(self._sandbox_id), request_timeout
            )
        except NotFoundError:
            return False
        except ConflictError:  # a sandbox that is not READY (paused) may answer so
            return False
        version = health.raw.get("version")
        if isinstance(version, str):
            self._service_version = version
        return bool(health.ok)

    @property
    def _envd_version(self) -> str | None:
        """The version the sandbox's in-sandbox service gave in its last health check
        (`is_running()`); None before one. E2B's is its envd daemon's version."""
        return self._service_version

    @classmethod
    async def _kill_by_id(cls, /, sandbox_id: str, **opts: Any) -> bool:
        _options.refuse_connection_options("AsyncSandbox.kill()", opts)
        with _records_lock:
            live = list(_live.get(sandbox_id, []))
        for handle in live:
            if handle._lease is not None:  # ours: the lease deletes it and stops tracking it
                return await handle._kill()
        try:
            async with _hub.holding(sandbox_id) as ci:
                await ci.data_plane.delete_sandbox(sandbox_id)
        except NotFoundError:
            return False
        for handle in live:
            await handle._kill()
        return True

    async def _kill(self, /, **opts: Any) -> bool:
        _options.refuse_connection_options("AsyncSandbox.kill()", opts)
        if self._killed:
            key, self._hub_key = self._hub_key, None
            await _hub.release(key)
            return False
        self._killed = True
        self.files._stop_watches()
        if self._timer is not None:
            self._timer.cancel()
        for future in list(self._inflight):
            future.cancel()  # a run in progress ends now, with SANDBOX_KILLED
        with _records_lock:
            handles = _live.pop(self._sandbox_id, [])
            _records.pop(self._sandbox_id, None)
        for other in handles:
            if other is not self and not other._killed:
                other._killed = True
                other.files._stop_watches()
                if other._timer is not None:
                    other._timer.cancel()
                for future in list(other._inflight):
                    future.cancel()
                if other._hub_key and other._hub_key[0] == id(asyncio.get_running_loop()):
                    key, other._hub_key = other._hub_key, None
                    await _hub.release(key)  # (a handle on another loop releases its own)
        try:
            if self._lease is not None:
                lease, self._lease = self._lease, None
                await lease.release()
                return True
            try:
                await self._ci.data_plane.delete_sandbox(self._sandbox_id)
            except NotFoundError:
                return False
            return True
        finally:
            key, self._hub_key = self._hub_key, None
            await _hub.release(key)

    kill = _Dual(_kill_by_id, _kill)
    """Kill the sandbox now (a run in progress raises TimeoutException at once).
    `AsyncSandbox.kill(sandbox_id)` kills one by id. True if it was running."""

    @classmethod
    async def _set_timeout_by_id(cls, /, sandbox_id: str, timeout: float, **opts: Any) -> None:
        with _records_lock:
            live = list(_live.get(sandbox_id, []))
        if not live:
            raise NotFoundException(
                f"sandbox {sandbox_id} has no handle in this process: its timeout is kept by "
                "the process that made or connected to it; connect() first",
                status_code=404,
            )
        await live[0]._set_timeout(timeout, **opts)

    async def _set_timeout(self, /, timeout: float, **opts: Any) -> None:
        _options.refuse_connection_options("AsyncSandbox.set_timeout()", opts)
        await self._end_in(timeout)

    async def _end_in(self, timeout: float, *, only_longer: bool = False) -> None:
        lifetime = _options.check_lifetime(timeout, allow_zero=True)
        self._check_alive()
        end = _now() + timedelta(seconds=lifetime)
        record = self._record
        if only_longer and record.end_at is not None and record.end_at >= end:
            return
        age = (_now() - record.started_at).total_seconds()
        if age + lifetime > _options.MAX_LIFETIME:
            raise InvalidArgumentException(
                f"set_timeout({timeout:g}): the sandbox is {age:.0f} s old and AgentRun "
                f"sandboxes live at most {_options.MAX_LIFETIME:g} s"
            )
        record.end_at = end
        self._schedule(lifetime)

    set_timeout = _Dual(_set_timeout_by_id, _set_timeout)
    """End the sandbox's lifetime `timeout` seconds from now (longer or shorter than before;
    ≤6 h; 0: now): it is killed then, or paused with `lifecycle={"on_timeout": "pause"}`.
    The shim keeps the deadline: it holds while this process runs."""

    @classmethod
    async def _get_info_by_id(cls, /, sandbox_id: str, **opts: Any) -> SandboxInfo:
        _options.refuse_connection_options("AsyncSandbox.get_info()", opts)
        with _records_lock:
            live = list(_live.get(sandbox_id, []))
        if live:
            return await _info(live[0]._ci, sandbox_id)
        async with _hub.holding(sandbox_id) as ci:
            return await _info(ci, sandbox_id)

    async def _get_info(self, /, **opts: Any) -> SandboxInfo:
        _options.refuse_connection_options("AsyncSandbox.get_info()", opts)
        return await _info(self._ci, self._sandbox_id)

    get_info = _Dual(_get_info_by_id, _get_info)
    """The sandbox's id, template, metadata, start and end times, state and lifecycle."""

    @classmethod
    async def _pause_by_id(cls, /, sandbox_id: str, keep_memory: bool = True, **opts: Any) -> bool:
        _options.refuse_connection_options("AsyncSandbox.pause()", opts)
        _check_keep_memory(keep_memory)
        with _records_lock:
            live = list(_live.get(sandbox_id, []))
        if live:
            return await live[0]._pause(keep_memory, **opts)
        async with _hub.holding(sandbox_id) as ci:
            return await _pause(ci, sandbox_id, opts.get("request_timeout"))

    async def _pause(self, /, keep_memory: bool = True, **opts: Any) -> bool:
        _options.refuse_connection_options("AsyncSandbox.pause()", opts)
        _check_keep_memory(keep_memory)
        self._check_alive()
        return await _pause(self._ci, self._sandbox_id, opts.get("request_timeout"))

    pause = _Dual(_pause_by_id, _pause)
    """Pause the sandbox (AgentRun's PauseSandbox): its processes are held with their
    memory; `connect()` resumes it. True if it got paused, False if it already was.
    While paused its lifetime does not run, and a call through a handle raises
    SandboxException (or resumes it, with `lifecycle={"auto_resume": True, ...}`).
    `AsyncSandbox.pause(sandbox_id)` pauses one by id."""

    beta_pause = pause
    """E2B's former name of `pause()` (deprecated there): the same method."""

    @classmethod
    async def _get_metrics_by_id(
        cls,
        /,
        sandbox_id: str,
        start: datetime | None = None,
        end: datetime | None = None,
        **opts: Any,
    ) -> builtins.list[SandboxMetrics]:
        _options.refuse_connection_options("AsyncSandbox.get_metrics()", opts)
        with _records_lock:
            live = list(_live.get(sandbox_id, []))
        if live:
            return await live[0]._get_metrics(start, end, **opts)
        async with _hub.holding(sandbox_id) as ci:
            return await _metrics(ci, sandbox_id, start, end)

    async def _get_metrics(
        self, /, start: datetime | None = None, end: datetime | None = None, **opts: Any
    ) -> builtins.list[SandboxMetrics]:
        _options.refuse_connection_options("AsyncSandbox.get_metrics()", opts)
        await self._ready()
        result: builtins.list[SandboxMetrics] = await self._guarded(
            self._bounded(
                _metrics(self._ci, self._sandbox_id, start, end), opts.get("request_timeout")
            )
        )
        return result

    get_metrics = _Dual(_get_metrics_by_id, _get_metrics)
    """The sandbox's resource use: one sample, taken now, if now is within `start`..`end`
    (AgentRun keeps no history: an empty list for a range in the past). CPU and memory
    add up the sandbox's processes as the service reports them; docs/e2b.md says what
    is approximate."""

    @classmethod
    def list(
        cls,
        query: SandboxQuery | Mapping[str, Any] | None = None,
        limit: int | None = None,
        next_token: str | None = None,
        order: str | None = None,
        *,
        config: Config | None = None,
        backend: str = "auto",
        **opts: Any,
    ) -> AsyncSandboxPaginator:
        """Sandboxes of the interpreters this process uses, running and paused unless
        `query.state` says otherwise, newest first (`order="asc"`: oldest first), `limit`
        a page (`while p.has_next: await p.next_items()`). Metadata is known for
        sandboxes made or reached by this process."""
        _options.refuse_connection_options("AsyncSandbox.list()", opts)
        if order not in (None, "asc", "desc"):
            raise InvalidArgumentException(f"Invalid order {order!r}, expected 'asc' or 'desc'")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidArgumentException(f"limit must be a positive int, got {limit!r}")
        if isinstance(query, Mapping):
            query = SandboxQuery(**query)
        return AsyncSandboxPaginator(
            query, limit, config, backend, next_token=next_token, order=order or "desc"
        )

    # ------------------------------------------------------------ what AgentRun has not

    create_snapshot = _Dual(_refuse("create_snapshot"), _refuse("create_snapshot"))
    """Refused: AgentRun has no sandbox snapshots (see docs/e2b.md)."""
    list_snapshots = _Dual(_refuse("list_snapshots"), _refuse("list_snapshots"))
    """Refused: AgentRun has no sandbox snapshots (see docs/e2b.md)."""
    delete_snapshot = classmethod(_refuse("delete_snapshot"))
    """Refused: AgentRun has no sandbox snapshots (see docs/e2b.md)."""
    fork = _Dual(_refuse("fork"), _refuse("fork"))
    """Refused: AgentRun cannot copy a running sandbox (see docs/e2b.md)."""
    update_network = _Dual(_refuse("update_network"), _refuse("update_network"))
    """Refused: AgentRun sets network access per interpreter (see docs/e2b.md)."""

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._kill()

    # ------------------------------------------------------------ plumbing

    def _check_alive(self) -> None:
        if self._killed:
            raise SandboxKilledError(f"sandbox {self._sandbox_id} was killed; create a new one")

    async def _ready(self) -> None:
        """Before a call into the sandbox: the lifetime ended if its time came, the handle
        not killed, the sandbox not paused by this process (or resumed, with auto_resume)."""
        await self._overdue()
        self._check_alive()
        record = self._record
        if not record.paused:
            return
        lifecycle = record.lifecycle
        if lifecycle is None or not lifecycle.auto_resume:
            raise SandboxException(
                f"sandbox {self._sandbox_id} is paused: connect() resumes it (or create it "
                "with lifecycle={'on_timeout': 'pause', 'auto_resume': True})"
            )
        await _resume(self._ci, self._sandbox_id, None)
        await self._after_connect(True, None)

    async def _bounded(self, awaitable: Awaitable[Any], request_timeout: float | None) -> Any:
        limit = request_timeout or self._request_timeout or DEFAULT_REQUEST_TIMEOUT
        try:
            return await asyncio.wait_for(awaitable, limit)
        except asyncio.TimeoutError:
            raise TimeoutException(REQUEST_TIMED_OUT.format(timeout=limit)) from None
        except (RequestTimeout, WaitTimeout) as exc:
            if isinstance(exc, TimeoutException):
                raise
            raise TimeoutException(str(exc)) from exc

    async def _guarded(self, awaitable: Awaitable[Any]) -> Any:
        """Run `awaitable` so that kill() ends it at once with SANDBOX_KILLED.

        Callers `await self._ready()` before they make `awaitable`."""
        try:
            self._check_alive()
        except BaseException:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started: nothing to await
            raise
        task = asyncio.ensure_future(awaitable)
        self._inflight.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if self._killed and task.cancelled():
                raise TimeoutException(SANDBOX_KILLED) from None
            raise
        except NotFoundError as exc:
            if self._killed:
                raise TimeoutException(SANDBOX_KILLED) from exc
            raise
        finally:
            self._inflight.discard(task)

    async def _call(
        self,
        action: Callable[[Any, str], Awaitable[Any]],
        opts: Mapping[str, Any],
        work: float = 0.0,
    ) -> Any:
        opts = dict(opts)
        request_timeout = opts.pop("request_timeout", None)
        _options.refuse_connection_options("sandbox call", {k: v for k, v in opts.items()})
        limit = (request_timeout or self._request_timeout or DEFAULT_REQUEST_TIMEOUT) + work
        await self._ready()
        return await self._guarded(
            self._bounded(action(self._ci.data_plane, self._sandbox_id), limit)
        )

    # ------------------------------------------------------------ contexts

    async def _setup_context(self, ctx: Context, envs: Mapping[str, str]) -> None:
        """Send the formatter snippet and the sandbox's envs into a new context."""
        parts: builtins.list[str] = []
        if ctx.language == "python":
            if self._rich:
                parts.append(_setup.FORMATTERS_CELL)
            if envs:
                parts.append(_setup.env_set("python", envs, save=False))
        elif envs:
            parts.append(_setup.env_set("javascript", envs, save=False))
        if parts:
            await self._hidden(ctx.id, ctx.language or "python", "".join(parts))

    async def _hidden(self, context_id: str, language: str, code: str) -> None:
        if language == "python":
            code += _setup.UNCOUNT
        execution = await self._ci.data_plane.execute(
            self._sandbox_id, code, context_id=context_id, timeout=EXECUTE_TIMEOUT_CAP
        )
        if execution.error is not None or execution.status != "ok":
            detail = execution.error.value if execution.error else execution.status
            raise SandboxException(f"could not prepare context {context_id}: {detail}")

    async def _new_context(self, language: str, cwd: str) -> Context:
        data = self._ci.data_plane
        ctx = await data.create_context(self._sandbox_id, language=language, cwd=cwd)
        try:
            await self._setup_context(ctx, self._envs)
        except BaseException:
            with contextlib.suppress(AgentRunError):
                await data.delete_context(self._sandbox_id, ctx.id)
            raise
        self._languages[ctx.id] = language
        return ctx

    async def _default(self, language: str) -> str:
        """The id of the sandbox's default context for `language` (made on first use)."""
        async with self._default_lock:
            found = self._record.defaults.get(language)
            if found is None:
                ctx = await self._new_context(language, HOME)
                found = self._record.defaults[language] = ctx.id
            self._languages.setdefault(found, language)
            return found

    async def create_code_context(
        self,
        cwd: str | None = None,
        language: str | None = None,
        request_timeout: float | None = None,
    ) -> Context:
        """A new context (python, javascript, or bash) with its own state, in `cwd`."""
        lang = _options.language(language)
        directory = cwd or HOME
        if lang == "bash":
            ctx = Context(id=f"bash-{uuid.uuid4()}", language="bash", cwd=directory)
            self._check_alive()
            self._bash[ctx.id] = ctx
            self._languages[ctx.id] = "bash"
            return ctx
        await self._ready()
        ctx = await self._guarded(
            self._bounded(self._new_context(lang, directory), request_timeout)
        )
        assert isinstance(ctx, Context)
        return ctx

    async def list_code_contexts(
        self, request_timeout: float | None = None
    ) -> builtins.list[Context]:
        """Every context of the sandbox, oldest first (bash ones last)."""
        await self._ready()
        listed: builtins.list[Context] = await self._guarded(
            self._bounded(self._ci.data_plane.list_contexts(self._sandbox_id), request_timeout)
        )
        back = {new: old for old, new in self._aliases.items()}
        out = [attrs.evolve(c, id=back[c.id]) if c.id in back else c for c in listed]
        return out + list(self._bash.values())

    def _resolve(self, context: Context | str) -> str:
        context_id = context.id if isinstance(context, Context) else context
        if not isinstance(context_id, str):
            raise InvalidArgumentException(f"context must be a Context or its id, got {context!r}")
        return self._aliases.get(context_id, context_id)

    async def remove_code_context(
        self, context: Context | str, request_timeout: float | None = None
    ) -> None:
        """Delete a context (its variables are gone)."""
        context_id = self._resolve(context)
        if context_id in self._bash:
            del self._bash[context_id]
            return
        await self._ready()
        await self._guarded(
            self._bounded(
                self._ci.data_plane.delete_context(self._sandbox_id, context_id), request_timeout
            )
        )
        for lang, cid in list(self._record.defaults.items()):
            if cid == context_id:
                del self._record.defaults[lang]

    async def restart_code_context(
        self, context: Context | str, request_timeout: float | None = None
    ) -> None:
        """Start the context afresh: its variables and imports are gone.

        AgentRun has no restart call: the shim deletes the context and creates a
        new one with the same language and cwd. This handle keeps using the old
        id for it (in `run_code` and `list_code_contexts`); other handles and
        processes see the new id.
        """
        old = context.id if isinstance(context, Context) else context
        context_id = self._resolve(context)
        if context_id in self._bash:
            self._counts.pop(context_id, None)
            return
        data = self._ci.data_plane

        async def restart() -> str:
            info = await data.get_context(self._sandbox_id, context_id)
            language = info.language or self._languages.get(context_id, "python")
            fresh = await self._new_context(language, info.cwd or HOME)
            with contextlib.suppress(NotFoundError):
                await data.delete_context(self._sandbox_id, context_id)
            return fresh.id

        await self._ready()
        new_id = await self._guarded(self._bounded(restart(), request_timeout))
        self._aliases[old] = new_id
        for lang, cid in list(self._record.defaults.items()):
            if cid == context_id:
                self._record.defaults[lang] = new_id

    # ------------------------------------------------------------ running code

    async def run_code(
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
        """Run code in a context (the language's default one unless `context` is given).

        State persists between runs in a context. `envs` apply to this run only.
        `timeout` (default 300 s, 0 = no limit) is capped at AgentRun's 30 s per
        execution; past it, TimeoutException is raised and the context stays
        usable. `request_timeout` bounds the request beyond that. Callbacks (which
        may be coroutines) are called when the run is over. Errors in the code are
        `execution.error`, not exceptions.
        """
        execution = await self._execute(code, language, context, envs, timeout, request_timeout)
        await deliver(execution, on_stdout, on_stderr, on_result, on_error)
        return execution

    async def _execute(
        self,
        code: str,
        language: str | None,
        context: Context | str | None,
        envs: Mapping[str, str] | None,
        timeout: float | None,
        request_timeout: float | None,
    ) -> Execution:
        if context is not None and language is not None:
            raise InvalidArgumentException(
                "run_code(): pass context or language, not both (a context has its language)"
            )
        if not isinstance(code, str):
            raise InvalidArgumentException(f"code must be a string, got {type(code).__name__}")
        run_envs = dict(envs or {})
        _setup.bash_prefix(run_envs)  # validates
        if timeout is None:
            timeout = DEFAULT_RUN_TIMEOUT
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidArgumentException(f"timeout must be seconds >= 0, got {timeout!r}")
        limit = EXECUTE_TIMEOUT_CAP if timeout == 0 else min(float(timeout), EXECUTE_TIMEOUT_CAP)
        await self._ready()
        try:
            return await self._execute_steps(
                code, language, context, run_envs, limit, request_timeout
            )
        except SandboxKilledError:
            # killed between two of this run's requests: as if during one of them
            raise TimeoutException(SANDBOX_KILLED) from None

    async def _execute_steps(
        self,
        code: str,
        language: str | None,
        context: Context | str | None,
        run_envs: dict[str, str],
        limit: float,
        request_timeout: float | None,
    ) -> Execution:
        if context is not None:
            context_id = self._resolve(context)
            lang = self._languages.get(context_id) or (
                context.language if isinstance(context, Context) else None
            )
            if lang is None:
                lang = await self._guarded(self._context_language(context_id))
        else:
            lang = _options.language(language)
            context_id = "" if lang == "bash" else await self._guarded(self._default(lang))
        bound = (request_timeout or self._request_timeout or DEFAULT_REQUEST_TIMEOUT) + limit * (
            3 if run_envs else 1
        )

        async def work() -> Any:
            # made here, not before _guarded: a run refused there is never created
            return await self._bounded(self._run(code, lang, context_id, run_envs, limit), bound)

        raw: _Execution = await self._guarded(work())
        if raw.status == "timeout":
            raise TimeoutException(EXECUTION_TIMED_OUT.format(timeout=limit))
        return Execution(raw)

    async def _context_language(self, context_id: str) -> str:
        if context_id in self._bash:
            return "bash"
        try:
            info = await self._ci.data_plane.get_context(self._sandbox_id, context_id)
        except NotFoundError:
            raise NotFoundException(
                f"context {context_id} does not exist in sandbox {self._sandbox_id}",
                status_code=404,
            ) from None
        lang = info.language or "python"
        self._languages[context_id] = lang
        return lang

    async def _run(
        self, code: str, lang: str, context_id: str, envs: dict[str, str], limit: float
    ) -> _Execution:
        if lang == "bash":
            return await self._run_bash(code, context_id, envs, limit)
        data = self._ci.data_plane
        if envs:
            await self._hidden(context_id, lang, _setup.env_set(lang, envs, save=True))
        died = False
        try:
            return await data.execute(self._sandbox_id, code, context_id=context_id, timeout=limit)
        except APIError as exc:
            if not context_lost(exc):
                raise
            # the code killed its kernel: its error, as from the facade; the service dropped
            # the context, so a default one is made afresh on the next run
            died = True
            for language, cid in list(self._record.defaults.items()):
                if cid == context_id:
                    del self._record.defaults[language]
            return kernel_died(exc)
        finally:
            if envs and not self._killed and not died:
                await self._hidden(context_id, lang, _setup.env_restore(lang))

    async def _run_bash(
        self, code: str, context_id: str, envs: dict[str, str], limit: float
    ) -> _Execution:
        ctx = self._bash.get(context_id)
        cwd = ctx.cwd if ctx is not None and ctx.cwd else HOME
        command = _setup.bash_prefix({**self._envs, **envs}) + code
        result = await self._ci.data_plane.run_command(
            self._sandbox_id, command, cwd=cwd, timeout=limit
        )
        count = self._counts[context_id] = self._counts.get(context_id, 0) + 1
        error = None
        if result.exit_code not in (0, None):
            error = ExecutionError(
                name="NonZeroExitCode",
                value=f"exit code {result.exit_code}",
                traceback=result.stderr,
            )
        return _Execution(
            logs=Logs(
                stdout=result.stdout.splitlines(keepends=True),
                stderr=result.stderr.splitlines(keepends=True),
            ),
            error=error,
            execution_count=count,
            status="timeout" if result.status == "timeout" else ("error" if error else "ok"),
            duration=result.duration,
        )


def _check_backend(config: Config | None, backend: str) -> None:
    if backend not in ("auto", "cloud", "local"):
        raise InvalidArgumentException(f"backend={backend!r}: use 'auto', 'cloud' or 'local'")
    if backend == "auto":
        setup = config or Config.from_env()
        _options.check_e2b_key_env(
            setup.has_credentials or bool(setup.control_endpoint and setup.data_endpoint)
        )


async def _get_sandbox(ci: AsyncCodeInterpreter, sandbox_id: str) -> Any:
    try:
        sandbox = await ci.data_plane.get_sandbox(sandbox_id)
    except NotFoundError:
        raise NotFoundException(
            f"sandbox {sandbox_id} not found (killed, timed out, or never made here)",
            status_code=404,
        ) from None
    if (sandbox.status or "").upper() == "TERMINATED":
        raise NotFoundException(f"sandbox {sandbox_id} was killed", status_code=404)
    return sandbox


async def _info(ci: AsyncCodeInterpreter, sandbox_id: str) -> SandboxInfo:
    sandbox = await _get_sandbox(ci, sandbox_id)
    with _records_lock:
        record = _records.get(sandbox_id)
    return SandboxInfo(
        sandbox_id=sandbox_id,
        template_id=sandbox.template_name or (record.template if record else None),
        name=sandbox.template_name or (record.template if record else None),
        metadata=dict(record.metadata) if record else {},
        started_at=record.started_at if record else sandbox.created_at,
        end_at=record.end_at if record else None,
        state=_state(sandbox.status),
        status=sandbox.status,
        lifecycle=record.lifecycle.info() if record and record.lifecycle else None,
    )


def _check_keep_memory(keep_memory: Any) -> None:
    if keep_memory is not True:
        raise InvalidArgumentException(
            f"pause(keep_memory={keep_memory!r}): AgentRun's pause keeps the sandbox's memory "
            "and processes; a filesystem-only pause is not available (drop keep_memory)"
        )


def _held(sandbox_id: str, paused: bool) -> None:
    """Every handle of this process on the sandbox: its lifetime stops while paused."""
    with _records_lock:
        record = _records.get(sandbox_id)
        handles = list(_live.get(sandbox_id, []))
    if record is not None:
        record.paused = paused
    if paused:
        for handle in handles:
            if handle._timer is not None:
                handle._timer.cancel()
                handle._timer = None


async def _pause(ci: AsyncCodeInterpreter, sandbox_id: str, request_timeout: float | None) -> bool:
    """PauseSandbox, waited on; True if it got paused, False if it already was."""
    with _pausing_errors(sandbox_id, request_timeout):
        _, paused = await pausing.pause(
            ci.control_plane,
            ci.data_plane,
            sandbox_id,
            timeout=request_timeout or DEFAULT_REQUEST_TIMEOUT,
        )
    _held(sandbox_id, True)
    return paused


async def _resume(ci: AsyncCodeInterpreter, sandbox_id: str, request_timeout: float | None) -> None:
    with _pausing_errors(sandbox_id, request_timeout):
        await pausing.resume(
            ci.control_plane,
            ci.data_plane,
            sandbox_id,
            timeout=request_timeout or DEFAULT_REQUEST_TIMEOUT,
        )
    _held(sandbox_id, False)


@contextlib.contextmanager
def _pausing_errors(sandbox_id: str, request_timeout: float | None) -> Iterator[None]:
    """The SDK's pause/resume errors as E2B's."""
    try:
        yield
    except NotFoundError:
        raise NotFoundException(
            f"sandbox {sandbox_id} not found (killed, timed out, or never made here)",
            status_code=404,
        ) from None
    except pausing.SandboxStateError as exc:
        raise SandboxException(str(exc)) from None
    except WaitTimeout as exc:
        raise TimeoutException(f"{exc}: raise request_timeout") from None


async def _resume_if_paused(ci: AsyncCodeInterpreter, sandbox: Any) -> bool:
    """Resume a paused (or pausing) sandbox, as E2B's connect() does; True if it was."""
    if (sandbox.status or "").upper() not in _PAUSING:
        return False
    await _resume(ci, sandbox.sandbox_id, None)
    return True


async def _metrics(
    ci: AsyncCodeInterpreter,
    sandbox_id: str,
    start: datetime | None,
    end: datetime | None,
) -> builtins.list[SandboxMetrics]:
    """One sample, now: the processes' reported use, `du` of the home, the template's sizes."""
    # Whole seconds, as E2B's metrics API takes and gives them: a sample taken at 12:00:00.7
    # is the 12:00:00 one, within a range that ends at 12:00:00.2.
    now = datetime.fromtimestamp(int(_now().timestamp()), timezone.utc)
    second = now.timestamp()
    if (start is not None and int(_aware(start).timestamp()) > second) or (
        end is not None and int(_aware(end).timestamp()) < second
    ):
        return []
    sandbox = await _get_sandbox(ci, sandbox_id)
    data = ci.data_plane
    template = None
    if sandbox.template_name:
        with contextlib.suppress(NotFoundError):
            template = await ci.control_plane.get_template(sandbox.template_name)
    processes = await data.list_processes(sandbox_id)
    described = await asyncio.gather(
        *(data.get_process(sandbox_id, p.pid) for p in processes if p.pid),
        return_exceptions=True,
    )
    cpu = 0.0
    memory_mb = 0.0
    for one in described:
        if isinstance(one, BaseException):
            if isinstance(one, NotFoundError):  # ended between the listing and the look
                continue
            raise one
        cpu += one.usage.cpu_percent or 0.0
        memory_mb += one.usage.memory_mb or 0.0
    du = await data.run_command(
        sandbox_id, f"du -sk {shlex.quote(HOME)} 2>/dev/null | cut -f1", timeout=10
    )
    try:
        disk_kb = int(du.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        disk_kb = 0
    mib = 1024 * 1024
    cores = template.cpu if template is not None and template.cpu else 1.0
    return [
        SandboxMetrics(
            cpu_count=max(1, math.ceil(cores)),
            # resourceUsage.cpuPercent is per process, of one core: the share of all cores
            cpu_used_pct=round(min(100.0, cpu / max(1, math.ceil(cores))), 2),
            disk_total=int((template.disk_size or 0) * mib) if template is not None else 0,
            disk_used=disk_kb * 1024,
            mem_total=int((template.memory or 0) * mib) if template is not None else 0,
            mem_used=int(memory_mb * mib),
            mem_cache=None,
            timestamp=now,
        )
    ]


def _aware(moment: datetime) -> datetime:
    """E2B reads a naive datetime as local time."""
    return moment if moment.tzinfo is not None else moment.astimezone()


class AsyncSandboxPaginator:
    """`AsyncSandbox.list()`'s answer: `while p.has_next: await p.next_items()`.

    Each page lists the service's sandboxes afresh, filters and sorts them (by start
    time, then id) and returns those after the last one the previous page returned, so
    sandboxes made or removed between pages neither repeat nor shift the pages.
    """

    def __init__(
        self,
        query: SandboxQuery | None,
        limit: int | None,
        config: Config | None,
        backend: str,
        *,
        next_token: str | None = None,
        order: str = "desc",
    ) -> None:
        self._query = query or SandboxQuery()
        self._limit = limit
        self._config = config
        self._backend = backend
        self._order = order
        self._has_next = True
        self._next_token = next_token

    @property
    def limit(self) -> int | None:
        """The most items a page holds (None: all in one page)."""
        return self._limit

    @property
    def has_next(self) -> bool:
        """Is there another page? (True until a page came back short of `limit`.)"""
        return self._has_next

    @property
    def next_token(self) -> str | None:
        """Where the next page starts (pass it to `list(next_token=...)` to go on later)."""
        return self._next_token

    async def next_items(self) -> builtins.list[SandboxInfo]:
        """The next page of sandboxes."""
        if not self._has_next:
            raise SandboxException("no more items: check has_next before next_items()")
        async with _hub.using(self._config, self._backend) as ci:
            found = await ci.control_plane.list_sandboxes()
        matches = sorted(
            (info for sandbox in found if (info := self._match(sandbox)) is not None),
            key=_sort_key,
            reverse=self._order == "desc",
        )
        if self._next_token is not None:
            after = _decode_token(self._next_token)
            if self._order == "desc":
                matches = [m for m in matches if _sort_key(m) < after]
            else:
                matches = [m for m in matches if _sort_key(m) > after]
        page = matches[: self._limit] if self._limit else matches
        more = self._limit is not None and len(matches) > self._limit
        self._has_next = more
        self._next_token = _encode_token(_sort_key(page[-1])) if more and page else None
        return page

    def _match(self, sandbox: Any) -> SandboxInfo | None:
        query = self._query
        states = {str(s) for s in (query.state or (SandboxState.RUNNING, SandboxState.PAUSED))}
        state = _state(sandbox.status)
        if str(state) not in states:
            return None
        with _records_lock:
            record = _records.get(sandbox.sandbox_id)
        metadata = dict(record.metadata) if record else {}
        if any(metadata.get(k) != v for k, v in (query.metadata or {}).items()):
            return None
        template = sandbox.template_name or (record.template if record else None)
        if query.template is not None and query.template != template:
            return None
        started = record.started_at if record else sandbox.created_at
        if query.started_after is not None and (
            started is None or started < _aware(query.started_after)
        ):
            return None
        return SandboxInfo(
            sandbox_id=sandbox.sandbox_id,
            template_id=template,
            name=template,
            metadata=metadata,
            started_at=started,
            end_at=record.end_at if record else None,
            state=state,
            status=sandbox.status,
            lifecycle=record.lifecycle.info() if record and record.lifecycle else None,
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _sort_key(info: SandboxInfo) -> tuple[float, str]:
    started = info.started_at or _EPOCH
    return (_aware(started).timestamp(), info.sandbox_id)


def _encode_token(key: tuple[float, str]) -> str:
    return f"{key[0]!r}/{key[1]}"


def _decode_token(token: str) -> tuple[float, str]:
    stamp, _, sandbox_id = token.partition("/")
    try:
        return (float(stamp), sandbox_id)
    except ValueError:
        raise InvalidArgumentException(
            f"next_token {token!r} is not one a list() page gave: pass paginator.next_token"
        ) from None
