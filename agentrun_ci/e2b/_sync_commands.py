"""`sandbox.commands` for `Sandbox`: the sync twin of `AsyncCommands` and its handle.

A `CommandHandle` wraps an `AsyncCommandHandle` living on the portal loop,
which reads the command's output in the background. Callbacks run in the
caller's thread: the foreground `run()` calls them as output arrives; for a
background command, `wait(on_stdout=...)` and iteration deliver what arrived.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, overload

from .._models import CommandResult
from ._async_commands import (
    DEFAULT_COMMAND_TIMEOUT,
    AsyncCommandHandle,
    Chunk,
    ProcessInfo,
)
from ._async_sandbox import AsyncSandbox
from ._portal import call as _call

__all__ = ["CommandHandle", "Commands"]


class CommandHandle:
    """A running command (sync): `pid`, `wait()`, `kill()`, iteration, stdin, output so far."""

    def __init__(self, inner: AsyncCommandHandle) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return repr(self._inner).replace("AsyncCommandHandle", "CommandHandle")

    @property
    def pid(self) -> int:
        """The command's process id in the sandbox."""
        return self._inner.pid

    @property
    def stdout(self) -> str:
        """Everything the command wrote to stdout so far."""
        return self._inner.stdout

    @property
    def stderr(self) -> str:
        """Everything the command wrote to stderr so far."""
        return self._inner.stderr

    @property
    def exit_code(self) -> int | None:
        """The exit code, once the command has ended (None while it runs)."""
        return self._inner.exit_code

    @property
    def error(self) -> str | None:
        """Why the command ended abnormally, once it has."""
        return self._inner.error

    def __iter__(self) -> Iterator[Chunk]:
        """`(stdout, stderr, pty)` chunks as they arrive (one of the three is set)."""
        while (chunk := _call(self._inner._next())) is not None:
            yield chunk
        if self._inner._failure is not None:
            raise self._inner._failure

    def wait(
        self,
        on_pty: Callable[[bytes], Any] | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
    ) -> CommandResult:
        """Wait for the end, calling the callbacks in this thread for each chunk not yet
        iterated; CommandExitException if the exit code is not 0."""
        for out, err, pty in self:
            if out is not None and on_stdout is not None:
                on_stdout(out)
            elif err is not None and on_stderr is not None:
                on_stderr(err)
            elif pty is not None and on_pty is not None:
                on_pty(pty)
        return _call(self._inner.wait())

    def kill(self) -> bool:
        """SIGKILL the command; False if it was not running."""
        return _call(self._inner.kill())

    def disconnect(self) -> None:
        """Stop reading the command's events; the command keeps running."""
        _call(self._inner.disconnect())

    def send_stdin(self, data: str | bytes, request_timeout: float | None = None) -> None:
        """Write to the command's stdin (it must have been started with `stdin=True`)."""
        _call(self._inner.send_stdin(data, request_timeout))

    def close_stdin(self, request_timeout: float | None = None) -> None:
        """Close the command's stdin: it reads EOF."""
        _call(self._inner.close_stdin(request_timeout))


class Commands:
    """`sandbox.commands` (sync): run (foreground or background), list, kill, connect, stdin."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._commands = sandbox.commands

    def list(self, request_timeout: float | None = None) -> builtins.list[ProcessInfo]:
        """The commands running in the sandbox."""
        return _call(self._commands.list(request_timeout))

    def kill(self, pid: int, request_timeout: float | None = None) -> bool:
        """SIGKILL a command (or any process) by pid; False if there was none."""
        return _call(self._commands.kill(pid, request_timeout))

    def send_stdin(self, pid: int, data: str | bytes, request_timeout: float | None = None) -> None:
        """Write to the stdin of a command started with `stdin=True`."""
        _call(self._commands.send_stdin(pid, data, request_timeout))

    def close_stdin(self, pid: int, request_timeout: float | None = None) -> None:
        """Close a command's stdin: it reads EOF."""
        _call(self._commands.close_stdin(pid, request_timeout))

    @overload
    def run(
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
    def run(
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
    ) -> CommandHandle: ...

    def run(
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
    ) -> CommandResult | CommandHandle:
        """Run `cmd` in bash; see `AsyncCommands.run`. Callbacks run in this thread."""
        inner: AsyncCommandHandle = _call(
            self._commands.run(
                cmd, True, envs, user, cwd, None, None, stdin, timeout, request_timeout
            )
        )
        handle = CommandHandle(inner)
        if background:
            return handle
        try:
            return handle.wait(on_stdout=on_stdout, on_stderr=on_stderr)
        except BaseException:
            if handle.exit_code is None:  # interrupted (e.g. Ctrl-C): nothing keeps running
                with contextlib.suppress(Exception):
                    handle.kill()
            raise

    def connect(
        self,
        pid: int,
        timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        request_timeout: float | None = None,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
    ) -> CommandHandle:
        """A handle on a running command, its output from the start."""
        return CommandHandle(
            _call(self._commands.connect(pid, timeout, request_timeout, None, None))
        )
