"""Admission of kernel starts: a few at a time, the rest in order, a bounded queue.

A python kernel's start is a CPU-second of imports. Started all at once on a loaded
2-core machine, every start ran slowly together and each missed its readiness deadline
(`500 could not start a python kernel`); one start per CPU at a time finishes each in
turn. A start's readiness deadline runs from when it is admitted, never while it waits.

Starts asked for by a request (a new context) go before background ones (spare kernels):
no one waits for a spare. Only the requests' queue is bounded: past it the emulator
answers 503 at once (`StartQueueFull`), saying which setting bounds it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

__all__ = ["StartGate", "StartQueueFull"]


class StartQueueFull(RuntimeError):
    """Too many context creations are already waiting for a kernel start."""

    def __init__(self, waiting: int) -> None:
        super().__init__(
            f"the emulator is busy: {waiting} context creations already wait for a kernel "
            f"start (EmulatorSettings.kernel_start_queue={waiting}, `local serve "
            "--kernel-start-queue`); retry after the Retry-After seconds, or raise "
            "kernel_start_queue (or kernel_starts, on a machine with CPU to spare)"
        )
        self.waiting = waiting


class StartGate:
    """At most `slots` starts run at once; others wait in first-come order (requests
    before background starts); at most `queue` requests wait."""

    def __init__(self, slots: int, queue: int) -> None:
        self._slots = slots
        self._free = slots
        self._queue = queue
        self._requests: collections.deque[asyncio.Future[None]] = collections.deque()
        self._background: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def running(self) -> int:
        """Starts admitted and not yet done."""
        return self._slots - self._free

    @property
    def waiting(self) -> int:
        """Requests waiting for a turn (background starts not counted)."""
        return sum(1 for f in self._requests if not f.done())

    @contextlib.asynccontextmanager
    async def turn(self, *, background: bool = False) -> AsyncIterator[None]:
        """Hold one of the slots for the body; StartQueueFull (requests only) when the
        queue is full."""
        await self._acquire(background)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, background: bool) -> None:
        if self._free > 0 and not self._requests and not self._background:
            self._free -= 1
            return
        line = self._background if background else self._requests
        if not background and self.waiting >= self._queue:
            raise StartQueueFull(self._queue)
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                line.remove(turn)
            if turn.done() and not turn.cancelled():  # handed a slot as it was cancelled
                self._release()
            raise

    def _release(self) -> None:
        """Hand the slot to the next in line (requests first), else free it."""
        for line in (self._requests, self._background):
            while line:
                turn = line.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._free += 1
