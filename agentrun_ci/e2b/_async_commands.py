"""`sandbox.commands` for `AsyncSandbox`: E2B's commands on AgentRun's background jobs.

Every command is a job of `agentrun_ci._jobs` (started and polled through the
data plane's `/processes/cmd`), so a command may run past AgentRun's 30 s cap
per request: `run(cmd)` waits for it (E2B's default `timeout` is 60 s; 0 waits
for ever), `run(cmd, background=True)` returns an `AsyncCommandHandle` at once.
Output is read by long polls that return as soon as the command prints, so
`on_stdout`/`on_stderr` run while the command runs.
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

import attrs

from .._errors import AgentRunError, NotFoundError
from .._jobs import MAX_WAIT, Job
from .._models import CommandResult
from . import _setup
from ._common import HOME, maybe_await
from ._errors import (
    CommandExitException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    SandboxKilledError,
    TimeoutException,
)

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = [
    "AsyncCommandHandle",
    "AsyncCommands",
    "CommandEvent",
    "Exited",
    "Output",
    "ProcessInfo",
    "PtySize",
]

#: E2B's default for how long `run()` waits for a command (seconds; 0 = no limit)
DEFAULT_COMMAND_TIMEOUT = 60.0
SANDBOX_GONE = (
    "the sandbox was killed or reached its end of life while the command ran; create a new "
    "sandbox (and pass a longer 'timeout' to create() to keep one longer)"
)


@attrs.frozen
class PtySize:
    """A pseudo-terminal's size."""

    rows: int
    cols: int


@attrs.frozen
class ProcessInfo:
    """A running command, as `commands.list()` reports it (E2B's fields)."""

    pid: int
    tag: str | None
    cmd: str
    args: builtins.list[str]
    envs: dict[str, str]
    cwd: str | None


@attrs.frozen
class Output:
    """Bytes a command wrote: `stream` is "stdout", "stderr" or "pty"."""

    stream: Literal["stdout", "stderr", "pty"]
    data: bytes


@attrs.frozen
class Exited:
    """The end of a command: its exit code (None if unknown) and why, in words."""

    exit_code: int | None
    error: str | None = None


CommandEvent = Output | Exited
#: what iterating a handle yields: (stdout, None, None), (None, stderr, None) or (None, None, pty)
Chunk = tuple[str | None, str | None, bytes | None]


class AsyncCommandHandle:
    """A running command: `pid`, `wait()`, `kill()`, `disconnect()`, stdin, output so far.

    Its events are read in the background from the moment it is made; the
    callbacks (plain or coroutine functions) run as output arrives.
    """

    def __init__(
        self,
        pid: int,
        events: AsyncIterator[CommandEvent],
        *,
        kill: Callable[[], Awaitable[bool]],
        send_stdin: Callable[[str | bytes, float | None], Awaitable[None]] | None = None,
        close_stdin: Callable[[float | None], Awaitable[None]] | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        on_pty: Callable[[bytes], Any] | None = None,
    ) -> None:
        self._pid = pid
        self._events = events
        self._kill = kill
        self._send_stdin = send_stdin
        self._close_stdin = close_stdin
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._on_pty = on_pty
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        }
        self._end: Exited | None = None
        self._failure: BaseException | None = None
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._pump = asyncio.ensure_future(self._read())

    def __repr__(self) -> str:
        state = "running" if self._end is None else f"exit_code={self._end.exit_code}"
        return f"{type(self).__name__}(pid={self._pid}, {state})"

    @property
    def pid(self) -> int:
        """The command's process id in the sandbox."""
        return self._pid

    @property
    def stdout(self) -> str:
        """Everything the command wrote to stdout so far."""
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        """Everything the command wrote to stderr so far."""
        return "".join(self._stderr)

    @property
    def exit_code(self) -> int | None:
        """The exit code, once the command has ended (None while it runs)."""
        return None if self._end is None else self._end.exit_code

    @property
    def error(self) -> str | None:
        """Why the command ended abnormally (e.g. "signal: killed"), once it has."""
        return None if self._end is None else self._end.error

    async def _deliver(self, chunk: Chunk) -> None:
        out, err, pty = chunk
        if out is not None:
            self._stdout.append(out)
            if self._on_stdout is not None:
                await maybe_await(self._on_stdout(out))
        elif err is not None:
            self._stderr.append(err)
            if self._on_stderr is not None:
                await maybe_await(self._on_stderr(err))
        elif pty is not None and self._on_pty is not None:
            await maybe_await(self._on_pty(pty))
        self._queue.put_nowait(chunk)

    def _flush(self) -> list[Chunk]:
        chunks: list[Chunk] = []
        for stream, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                chunks.append((text, None, None) if stream == "stdout" else (None, text, None))
        return chunks

    async def _read(self) -> None:
        try:
            async for event in self._events:
                if isinstance(event, Exited):
                    self._end = event
                    break
                if event.stream == "pty":
                    await self._deliver((None, None, event.data))
                    continue
                text = self._decoders[event.stream].decode(event.data)
                if text:
                    await self._deliver(
                        (text, None, None) if event.stream == "stdout" else (None, text, None)
                    )
            for chunk in self._flush():
                await self._deliver(chunk)
            if self._end is None:
                self._failure = SandboxException(f"command {self._pid} ended without an exit code")
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed poll: wait() raises it
            self._failure = exc
        finally:
            self._queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]

    async def _next(self) -> Chunk | None:
        """The next output chunk, or None once the command is over (for iteration)."""
        if (
            self._queue.empty()
            and self._pump.done()
            and self._end is None
            and self._failure is None
        ):
            return None  # disconnected
        chunk = await self._queue.get()
        if chunk is None:
            self._queue.put_nowait(None)  # every later call sees the end too
        return chunk

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Chunk]:
        while (chunk := await self._next()) is not None:
            yield chunk
        if self._failure is not None:
            raise self._failure

    async def wait(self) -> CommandResult:
        """Wait for the end; CommandExitException if the exit code is not 0."""
        if not self._pump.done():
            await asyncio.wait({self._pump})  # (a cancelled wait() still raises here)
        if self._failure is not None:
            raise self._failure
        if self._end is None:
            raise SandboxException(
                f"command {self._pid}: this handle was disconnected; reconnect with "
                "commands.connect(pid)"
            )
        result = CommandResult(
            exit_code=self._end.exit_code,
            stdout=self.stdout,
            stderr=self.stderr,
            error=self._end.error,
        )
        if self._end.exit_code != 0:
            raise CommandExitException.from_result(result)
        return result

    async def kill(self) -> bool:
        """SIGKILL the command; False if it was not running."""
        return await self._kill()

    async def disconnect(self) -> None:
        """Stop reading the command's events; the command keeps running."""
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump

    async def send_stdin(self, data: str | bytes, request_timeout: float | None = None) -> None:
        """Write to the command's stdin (it must have been started with `stdin=True`)."""
        if self._send_stdin is None:
            raise SandboxException("this command handle cannot send stdin")
        await self._send_stdin(data, request_timeout)

    async def close_stdin(self, request_timeout: float | None = None) -> None:
        """Close the command's stdin: it reads EOF."""
        if self._close_stdin is None:
            raise SandboxException("this command handle cannot close stdin")
        await self._close_stdin(request_timeout)


def _no_command(pid: int) -> NotFoundException:
    return NotFoundException(f"no command with pid {pid} is running", status_code=404)


def _check_timeout(timeout: float | None, what: str) -> float:
    if timeout is None:
        return DEFAULT_COMMAND_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise InvalidArgumentException(f"{what}: timeout must be seconds >= 0 (0 = no limit)")
    return float(timeout)


class AsyncCommands:
    """`sandbox.commands`: run (in the foreground or background), list, kill, connect, stdin."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox

    async def _data(
        self,
        action: Callable[[Any, str], Awaitable[Any]],
        request_timeout: float | None,
        work: float = 0.0,
    ) -> Any:
        return await self._sbx._call(action, {"request_timeout": request_timeout}, work=work)

    async def list(self, request_timeout: float | None = None) -> builtins.list[ProcessInfo]:
        """The commands running in the sandbox (started by `run`, from any handle or process)."""
        jobs = await self._data(lambda d, sid: d.list_jobs(sid), request_timeout)
        return [
            ProcessInfo(
                pid=job.pid,
                tag=job.tag,
                cmd="/bin/bash",
                args=["-c", job.command],
                envs=dict(job.envs),
                cwd=job.cwd,
            )
            for job in jobs
        ]

    async def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        """SIGKILL a command (or any process) by pid; False if there was none."""
        killed: bool = await self._data(lambda d, sid: d.kill_job(sid, pid), request_timeout)
        return killed

    async def send_stdin(
        self, pid: int, data: str | bytes, request_timeout: float | None = None
    ) -> None:
        """Write to the stdin of a command started with `stdin=True`."""
        try:
            await self._data(lambda d, sid: d.send_job_stdin(sid, pid, data), request_timeout)
        except NotFoundError:
            raise NotFoundException(
                f"no command with pid {pid} is running", status_code=404
            ) from None

    async def close_stdin(self, pid: int, request_timeout: float | None = None) -> None:
        """Close a command's stdin: it reads EOF."""
        try:
            await self._data(lambda d, sid: d.close_job_stdin(sid, pid), request_timeout)
        except NotFoundError:
            raise NotFoundException(
                f"no command with pid {pid} is running", status_code=404
            ) from None

    @overload
    async def run(
        self,
        cmd: str,
        background: Literal[False] | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        stdin: bool | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str,
        background: Literal[True],
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        stdin: bool | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str,
        background: bool | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        stdin: bool | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
    ) -> CommandResult | AsyncCommandHandle:
        """Run `cmd` in bash, in `cwd` (default /home/user), with `envs`.

        In the foreground (default) it waits for the end and returns the
        `CommandResult`, raising CommandExitException for a non-zero exit code
        and TimeoutException after `timeout` seconds (default 60; 0 = no limit;
        the command is killed then). `background=True` returns a handle at once;
        the command then runs until it ends, is killed, or `timeout` passes.
        """
        if not isinstance(cmd, str) or not cmd.strip():
            raise InvalidArgumentException("commands.run(cmd): cmd must be a non-empty string")
        if user not in (None, "user", "root"):
            raise InvalidArgumentException(
                f"commands.run(user={user!r}): use 'user' or 'root' (E2B's users); AgentRun runs "
                "every command as the sandbox's one user"
            )
        limit = _check_timeout(timeout, "commands.run()")
        variables = {**self._sbx._envs, **(envs or {})}
        _setup.bash_prefix(variables)  # validates names and values
        handle = await self._start(
            cmd, variables, cwd or HOME, bool(stdin), limit, request_timeout, on_stdout, on_stderr
        )
        if background:
            return handle
        try:
            return await handle.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(AgentRunError):
                await handle.kill()
            raise

    async def _start(
        self,
        cmd: str,
        envs: dict[str, str],
        cwd: str,
        stdin: bool,
        limit: float,
        request_timeout: float | None,
        on_stdout: Callable[[str], Any] | None,
        on_stderr: Callable[[str], Any] | None,
    ) -> AsyncCommandHandle:
        started = time.monotonic()
        first_wait = min(limit or MAX_WAIT, MAX_WAIT, 2.0)
        job: Job = await self._data(
            lambda d, sid: d.start_job(sid, cmd, cwd=cwd, envs=envs, stdin=stdin, wait=first_wait),
            request_timeout,
            work=first_wait,
        )
        deadline = started + limit if limit else None
        return self._handle(job, deadline, request_timeout, on_stdout, on_stderr)

    def _handle(
        self,
        first: Job,
        deadline: float | None,
        request_timeout: float | None,
        on_stdout: Callable[[str], Any] | None,
        on_stderr: Callable[[str], Any] | None,
    ) -> AsyncCommandHandle:
        pid = first.pid
        return AsyncCommandHandle(
            pid,
            self._poll(first, deadline, request_timeout),
            kill=lambda: self.kill(pid),
            send_stdin=functools.partial(self.send_stdin, pid),
            close_stdin=functools.partial(self.close_stdin, pid),
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )

    async def _poll(
        self, job: Job, deadline: float | None, request_timeout: float | None
    ) -> AsyncIterator[CommandEvent]:
        """The job's output as events, polling until it ends or `deadline` passes."""
        pid = job.pid
        while True:
            if job.stdout:
                yield Output("stdout", job.stdout)
            if job.stderr:
                yield Output("stderr", job.stderr)
            if not job.running and not job.more:
                yield Exited(job.exit_code, job.error)
                return
            wait = 0.0 if job.more else MAX_WAIT
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    with contextlib.suppress(AgentRunError):
                        await self.kill(pid)
                    raise TimeoutException(
                        f"command {pid} did not finish within its timeout and was killed: pass a "
                        "longer 'timeout' to commands.run() (0 = no limit), or background=True"
                    )
                wait = min(wait, left)
            try:
                job = await self._read_job(job, wait, request_timeout)
            except (NotFoundError, TimeoutException, SandboxKilledError) as exc:
                if self._sbx._killed or not await self._sbx.is_running():
                    raise TimeoutException(SANDBOX_GONE) from None
                if isinstance(exc, NotFoundError):
                    raise NotFoundException(
                        f"command {pid} is gone from the sandbox", status_code=404
                    ) from None
                raise

    async def _read_job(self, job: Job, wait: float, request_timeout: float | None) -> Job:
        def read(data: Any, sandbox_id: str) -> Awaitable[Job]:
            return data.read_job(  # type: ignore[no-any-return]
                sandbox_id,
                job.pid,
                stdout_offset=job.stdout_offset,
                stderr_offset=job.stderr_offset,
                wait=wait,
            )

        polled: Job = await self._data(read, request_timeout, work=wait)
        return polled

    async def connect(
        self,
        pid: int,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
    ) -> AsyncCommandHandle:
        """A handle on a running command (from any process), its output from the start.

        NotFoundException if no command has that pid.
        """
        limit = _check_timeout(timeout, "commands.connect()")
        try:
            job: Job = await self._data(lambda d, sid: d.read_job(sid, pid), request_timeout)
        except NotFoundError:
            raise NotFoundException(
                f"no command with pid {pid} in the sandbox", status_code=404
            ) from None
        deadline = time.monotonic() + limit if limit else None
        return self._handle(job, deadline, request_timeout, on_stdout, on_stderr)
