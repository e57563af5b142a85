"""What the kernels share: the `Kernel` protocol, `KernelError`, wire events, the
per-stream output cap, and whether a kernel's IPC socket paths fit a Unix path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "MAX_STREAM_CHARS",
    "Event",
    "Kernel",
    "KernelError",
    "socket_path_fits",
    "sockets_fit_in",
]

_INTERRUPT_GRACE = 5.0
_SUN_PATH_MAX = 107  # bytes in a Unix socket path (sockaddr_un.sun_path, NUL excluded)


def _kernel_name() -> str:
    return f"k-{uuid.uuid4().hex[:16]}"


def socket_path_fits(ip: str) -> bool:
    """Do a kernel's IPC sockets ("<ip>-<port>", ports up to 5 digits) fit a Unix path?"""
    return len(os.fsencode(ip)) + len("-65535") <= _SUN_PATH_MAX


def sockets_fit_in(directory: Path) -> bool:
    """Can kernels keep their IPC sockets in `directory`?"""
    return socket_path_fits(str(directory / _kernel_name()))


Event = dict[str, Any]


class KernelError(RuntimeError):
    """A kernel could not be started or died; its state is gone."""


class Kernel(Protocol):
    language: str
    restarts: int
    """How many times an interrupt did not stop the code and the kernel was restarted."""

    @property
    def pgid(self) -> int | None: ...
    async def execute(
        self, code: str, timeout: float, sent: Callable[[], None] | None = None
    ) -> tuple[list[Event], str, int | None]:
        """Run `code`; `sent()` is called once it has gone to the kernel (the caller's
        own work then overlaps the kernel's)."""
        ...

    async def shutdown(self) -> None: ...
    async def pause(self, stop: bool) -> None: ...


def _timeout_event(timeout: float) -> Event:
    value = f"execution exceeded {timeout:g} s and was interrupted"
    return {
        "type": "error",
        "name": "TimeoutError",
        "value": value,
        "traceback": f"TimeoutError: {value}",
        "text": f"TimeoutError: {value}",
    }


MAX_STREAM_CHARS = 128 * 1024 * 1024
"""Characters of stdout (and of stderr) one execution keeps; past it, a marker. Commands
keep 16 MB; a cell's output is meant to arrive whole (100 MB does), so its cap is
higher, but it bounds the server's memory all the same (read at each call: tests lower it)."""


class _StreamCap:
    """Keep at most `MAX_STREAM_CHARS` of each stream; count what is dropped past that."""

    def __init__(self) -> None:
        self.kept: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def add(self, events: list[Event], name: str, text: str) -> None:
        room = MAX_STREAM_CHARS - self.kept.get(name, 0)
        if len(text) > room:
            self.dropped[name] = self.dropped.get(name, 0) + len(text) - max(room, 0)
            text = text[: max(room, 0)]
        if text:
            self.kept[name] = self.kept.get(name, 0) + len(text)
            events.append({"type": name, "text": text})

    def notes(self) -> list[Event]:
        return [
            {
                "type": name,
                "text": f"\n[output truncated: {n} characters of {name} dropped; the emulator "
                f"keeps {MAX_STREAM_CHARS // 2**20} Mi characters per stream: write big "
                "output to a file]\n",
            }
            for name, n in self.dropped.items()
        ]


def _signal_group(pgid: int | None, stop: bool) -> None:
    if pgid:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGSTOP if stop else signal.SIGCONT)
