"""Interactive shells in pseudo-terminals: what `/processes/tty` connections talk to.

A `TtySession` is one shell (bash -i -l, else sh -i) whose stdin, stdout and stderr are
the slave side of a real pseudo-terminal, launched in its sandbox's jail exactly as
`Core.run_command` launches a command (same argv wrapper, environment, limits and
working-directory mapping), and registered as a process of the sandbox (tag "tty"), so
`GET /processes`, `DELETE /processes/{pid}` and the sandbox's end see and kill it.

Connections attach to a session and detach from it; the shell outlives its
connection (an emulator extension lets a client re-attach with `?pid=`), and a shell
left without any connection for the idle time is ended, so none is forgotten.
Output that arrives while no connection is attached is kept (the last 64 KiB) for the
next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import struct
import termios
from collections.abc import Callable
from typing import Any

from ._limits import kill_group
from ._threads import blocking

__all__ = ["TtySession"]

READ_CHUNK = 65536
BACKLOG = 65536
"""Bytes of output kept for the next connection while none is attached."""

Listener = Callable[[bytes | None], None]
"""Called with each chunk of output, then once with None when the shell has ended."""


def shell_argv() -> list[str]:
    """An interactive login shell, as E2B's pty starts one (bash -i -l), else sh -i."""
    bash = shutil.which("bash")
    return [bash, "-i", "-l"] if bash else ["/bin/sh", "-i"]


def set_size(fd: int, rows: int, cols: int) -> None:
    """Set a terminal's window size (TIOCSWINSZ); the foreground job gets SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def controlling_tty(then: Callable[[], None] | None) -> Callable[[], None]:
    """A preexec_fn: make stdin (the pty's slave) the controlling terminal of the new
    session (subprocess has called setsid already), then run `then`."""

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        with contextlib.suppress(OSError):
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if then is not None:
            then()

    return preexec


class TtySession:
    """One shell on a pseudo-terminal: write, resize, listen, and its exit code."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int, status: Any) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.master = master
        self._status = status  # the init's status pipe (a file) or None
        self.exit_code: int | None = None
        self.ended = asyncio.Event()
        self._listeners: list[Listener] = []
        self._backlog = bytearray()
        self._eof = asyncio.Event()
        self.last_detached: float | None = None
        os.set_blocking(master, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._readable)
        self._reading = True
        self.waiter: asyncio.Task[None] = loop.create_task(self._wait())

    # ------------------------------------------------------------ output

    def _readable(self) -> None:
        try:
            data = os.read(self.master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave fd is closed (the shell and its jobs are gone)
            data = b""
        if not data:
            self._stop_reading()
            return
        if self._listeners:
            for listener in list(self._listeners):
                listener(data)
        else:
            self._backlog += data
            del self._backlog[:-BACKLOG]

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.master)
        self._eof.set()

    async def _wait(self) -> None:
        # imported here: _processes imports this module
        from ._processes import _exit_code

        try:
            code = await _exit_code(self.proc, self._status)
        finally:
            if self._status is not None:
                self._status.close()
        # Closing a terminal hangs up its jobs: nothing of this shell stays behind.
        await blocking(kill_group, self.pid)
        with contextlib.suppress(Exception):
            await self.proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._eof.wait(), 2)  # what it printed last
        self._stop_reading()
        os.close(self.master)
        self.exit_code = code
        self.ended.set()
        for listener in list(self._listeners):
            listener(None)

    # ------------------------------------------------------------ connections

    def attach(self, listener: Listener) -> bytes:
        """Start calling `listener`; returns the output kept while none was attached."""
        self._listeners.append(listener)
        self.last_detached = None
        kept, self._backlog = bytes(self._backlog), bytearray()
        return kept

    def detach(self, listener: Listener, now: float) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)
        if not self._listeners:
            self.last_detached = now

    @property
    def attached(self) -> int:
        return len(self._listeners)

    def write(self, data: bytes) -> None:
        """Type `data` into the terminal (what a full pty buffer cannot take is dropped)."""
        if self.ended.is_set() or not data:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            view = memoryview(data)
            while view:
                sent = os.write(self.master, view)
                view = view[sent:]

    def resize(self, rows: int, cols: int) -> None:
        if not self.ended.is_set():
            with contextlib.suppress(OSError):
                set_size(self.master, rows, cols)

    def size(self) -> tuple[int, int]:
        """(rows, cols) as the terminal has them now."""
        raw = fcntl.ioctl(self.master, termios.TIOCGWINSZ, b"\0" * 8)
        rows, cols, _, _ = struct.unpack("HHHH", raw)
        return rows, cols
