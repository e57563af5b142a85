"""`sandbox.pty` for `AsyncSandbox`: E2B's pseudo-terminals over AgentRun's `/processes/tty`.

A terminal is a WebSocket (`AsyncDataPlane.open_tty`) to a shell on a pseudo-terminal
in the sandbox. E2B addresses a terminal by pid (`send_stdin(pid, ...)`,
`resize(pid, ...)`), so this object keeps each terminal's connection open, read in the
background, for as long as the shell runs: a handle's `disconnect()` only stops
delivering its output, and `connect(pid)` subscribes again to the same connection.
A terminal of another process (or one whose connection closed) is re-attached with the
local emulator's `?pid=` extension; AgentRun documents no way to do that, and says so in
a clear error. `kill(pid)` is AgentRun's `DELETE /processes/{pid}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .._async.tty import AsyncTty
from .._errors import AgentRunError, NotFoundError
from .._tty import TtyClosing, TtyEvent, TtyExit, TtyOutput
from . import _setup
from ._async_commands import (
    DEFAULT_COMMAND_TIMEOUT,
    AsyncCommandHandle,
    CommandEvent,
    Exited,
    Output,
    PtySize,
    _check_timeout,
)
from ._common import HOME
from ._errors import (
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = ["AsyncPty"]

#: what E2B's pty sets unless `envs` says otherwise
TERMINAL_ENVS = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

#: how long create() waits for the new shell's first output (its prompt), at most
SHELL_START = 5.0

_Item = TtyEvent | None  # None: the connection closed before the shell ended


class _Terminal:
    """One open terminal connection, read in the background; its output goes to the
    current subscriber (the newest handle), or nowhere while there is none."""

    def __init__(self, tty: AsyncTty, pid: int) -> None:
        self.tty = tty
        self.pid = pid
        self.subscriber: asyncio.Queue[_Item] | None = None
        self.end: _Item = None
        self.done = False
        self.closing_reason: str | None = None
        #: set once the shell has printed something (its prompt): it is reading input
        self.spoke = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        end: _Item = None
        try:
            async for event in self.tty.events():
                if isinstance(event, TtyClosing):
                    self.closing_reason = event.reason
                if isinstance(event, TtyOutput | TtyExit):
                    self.spoke.set()
                    self._deliver(event)
                if isinstance(event, TtyExit):
                    end = event
                    break
        except Exception as exc:  # a broken connection ends like a closed one, said why
            self.closing_reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.spoke.set()
            self.done = True
            self.end = end
            if end is None:
                self._deliver(None)
            with contextlib.suppress(Exception):
                await self.tty.close()

    def _deliver(self, item: _Item) -> None:
        if self.subscriber is not None:
            self.subscriber.put_nowait(item)

    def subscribe(self) -> asyncio.Queue[_Item]:
        """A queue of this terminal's events from now on (the previous subscriber's ends)."""
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.subscriber = queue
        if self.done:
            queue.put_nowait(self.end)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[_Item]) -> None:
        if self.subscriber is queue:
            self.subscriber = None


def _exited(code: int | None) -> Exited:
    if code is None:
        return Exited(None, "the terminal ended without an exit code")
    if code < 0:  # killed by a signal, as Python reports it
        with contextlib.suppress(ValueError):
            name = signal.Signals(-code).name.removeprefix("SIG").lower()
            return Exited(128 - code, f"signal: {'killed' if name == 'kill' else name}")
        return Exited(128 - code, f"signal {-code}")
    return Exited(code, None if code == 0 else f"exit status {code}")


class AsyncPty:
    """`sandbox.pty`: create, send_stdin, resize, kill, connect."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox
        self._terminals: dict[int, _Terminal] = {}

    async def _data(self, action: Callable[[Any, str], Any], request_timeout: float | None) -> Any:
        return await self._sbx._call(action, {"request_timeout": request_timeout})

    async def _open(
        self,
        request_timeout: float | None,
        *,
        rows: int = 24,
        cols: int = 80,
        cwd: str | None = None,
        envs: dict[str, str] | None = None,
        pid: int | None = None,
    ) -> _Terminal:
        tty: AsyncTty = await self._data(
            lambda d, sid: d.open_tty(sid, rows=rows, cols=cols, cwd=cwd, envs=envs, pid=pid),
            request_timeout,
        )
        if tty.pid is None:
            await tty.close()
            raise SandboxException(
                "the service opened a terminal without saying its pid (the "
                "connectionEstablished frame had none); sandbox.pty needs it"
            )
        terminal = _Terminal(tty, tty.pid)
        self._terminals[terminal.pid] = terminal
        terminal.reader.add_done_callback(lambda _: self._forget(terminal))
        return terminal

    def _forget(self, terminal: _Terminal) -> None:
        if self._terminals.get(terminal.pid) is terminal:
            del self._terminals[terminal.pid]

    async def _terminal(self, pid: int, request_timeout: float | None) -> _Terminal:
        """The open connection to terminal `pid`, re-attaching when there is none."""
        terminal = self._terminals.get(pid)
        if terminal is not None and not terminal.done:
            return terminal
        try:
            return await self._open(request_timeout, pid=pid)
        except NotFoundError:
            raise NotFoundException(
                f"no terminal with pid {pid} is running", status_code=404
            ) from None

    def _handle(
        self,
        terminal: _Terminal,
        deadline: float | None,
        kill_on_timeout: bool,
        on_data: Callable[[bytes], Any] | None,
    ) -> AsyncCommandHandle:
        pid = terminal.pid

        async def send_stdin(data: str | bytes, request_timeout: float | None) -> None:
            payload = data.encode() if isinstance(data, str) else data
            await self.send_stdin(pid, payload, request_timeout)

        # subscribed now, before the reader runs again: no output falls between
        queue = terminal.subscribe()
        return AsyncCommandHandle(
            pid,
            self._events(terminal, queue, deadline, kill_on_timeout),
            kill=lambda: self.kill(pid),
            send_stdin=send_stdin,
            on_pty=on_data,
        )

    async def _events(
        self,
        terminal: _Terminal,
        queue: asyncio.Queue[_Item],
        deadline: float | None,
        kill_on_timeout: bool,
    ) -> AsyncIterator[CommandEvent]:
        try:
            while True:
                # a cancel scope, not wait_for: a cancelled handle (disconnect) must not
                # look like a timeout, which kills the shell
                with anyio.move_on_after(
                    None if deadline is None else deadline - time.monotonic()
                ) as scope:
                    item = await queue.get()
                if scope.cancelled_caught:
                    if kill_on_timeout:
                        with contextlib.suppress(AgentRunError):
                            await self.kill(terminal.pid)
                    raise TimeoutException(
                        f"terminal {terminal.pid} was still running at its timeout"
                        f"{' and was killed' if kill_on_timeout else ''}: pass a longer "
                        "'timeout' (0 = no limit)"
                    ) from None
                if isinstance(item, TtyOutput):
                    yield Output("pty", item.data)
                elif isinstance(item, TtyExit):
                    yield _exited(item.exit_code)
                    return
                elif item is None:
                    if self._sbx._killed or not await self._sbx.is_running():
                        raise TimeoutException(
                            "the sandbox was killed or reached its end of life while the "
                            "terminal ran"
                        )
                    why = terminal.closing_reason
                    raise SandboxException(
                        f"the connection to terminal {terminal.pid} closed before the shell "
                        "ended"
                        + (
                            f" ({why}; AgentRun closes a terminal after 2 minutes without "
                            "input or output)"
                            if why
                            else ""
                        )
                    )
        finally:
            terminal.unsubscribe(queue)

    async def create(
        self,
        size: PtySize,
        on_data: Callable[[bytes], Any] | None,
        user: str | None = None,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
    ) -> AsyncCommandHandle:
        """Start a login shell (bash -i -l) on a new terminal of `size`, in `cwd` (default
        /home/user) with `envs`; `on_data` gets what it prints, as bytes.

        It returns once the shell has printed its prompt (at most 5 s). The handle's
        `wait()` returns when the shell exits; after `timeout` seconds
        (default 60; 0 = no limit) the shell is killed and TimeoutException raised.
        """
        if not isinstance(size, PtySize):
            raise InvalidArgumentException("pty.create(size): pass a PtySize(rows=, cols=)")
        if user not in (None, "user", "root"):
            raise InvalidArgumentException(
                f"pty.create(user={user!r}): use 'user' or 'root' (E2B's users); AgentRun runs "
                "every terminal as the sandbox's one user"
            )
        limit = _check_timeout(timeout, "pty.create()")
        variables = {**TERMINAL_ENVS, **self._sbx._envs, **(envs or {})}
        _setup.bash_prefix(variables)  # validates names and values
        started = time.monotonic()
        terminal = await self._open(
            request_timeout,
            rows=size.rows,
            cols=size.cols,
            cwd=cwd or HOME,
            envs=variables,
        )
        deadline = started + limit if limit else None
        handle = self._handle(terminal, deadline, True, on_data)
        # Return once the shell reads input, as E2B's does (its prompt is its first output);
        # a shell that says nothing is not waited for longer than SHELL_START.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(terminal.spoke.wait(), SHELL_START)
        return handle

    async def connect(
        self,
        pid: int,
        on_data: Callable[[bytes], Any] | None,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
    ) -> AsyncCommandHandle:
        """A handle on a running terminal: its output from now on goes to `on_data` (and
        no longer to an earlier handle). TimeoutException after `timeout` seconds (0 = no
        limit); the shell keeps running. NotFoundException if there is no such terminal."""
        limit = _check_timeout(timeout, "pty.connect()")
        terminal = await self._terminal(pid, request_timeout)
        deadline = time.monotonic() + limit if limit else None
        return self._handle(terminal, deadline, False, on_data)

    async def send_stdin(self, pid: int, data: bytes, request_timeout: float | None = None) -> None:
        """Type `data` into terminal `pid`."""
        terminal = await self._terminal(pid, request_timeout)
        await self._data(lambda d, sid: terminal.tty.send(data), request_timeout)

    async def resize(self, pid: int, size: PtySize, request_timeout: float | None = None) -> None:
        """Change terminal `pid`'s size (its foreground program gets SIGWINCH)."""
        if not isinstance(size, PtySize) or size.rows <= 0 or size.cols <= 0:
            raise InvalidArgumentException("pty.resize(size): pass a PtySize with rows, cols > 0")
        terminal = await self._terminal(pid, request_timeout)
        await self._data(lambda d, sid: terminal.tty.resize(size.rows, size.cols), request_timeout)

    async def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        """SIGKILL terminal `pid` (AgentRun's `DELETE /processes/{pid}`); False if none ran."""
        try:
            await self._data(lambda d, sid: d.kill_process(sid, str(pid)), request_timeout)
        except NotFoundError:
            return False
        return True
