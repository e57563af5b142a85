"""Spare kernels: slots (sandboxes-to-be, each with a python kernel already started in
its jail) kept warm by a `SparePool`, how many to keep (`SpareDemand`, `spare_cap`), and
the python kernel start they share with `Core`.

How many: `spare_kernels` while sandboxes are being created, more when they come in bursts
(as many as were created in the last minute), never more than the machine can hold
(`spare_cap`), and none once `spare_idle_timeout` has passed without a creation. One spare
served back-to-back creations badly: each took it and found its replacement still starting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ._admission import StartGate
from ._disk import home_of
from ._kernel_base import KernelError
from ._launch import Launch
from ._python_kernel import PythonKernel
from ._settings import EmulatorSettings
from ._threads import blocking
from ._tree import remove_tree

__all__ = ["Slot", "SpareDemand", "SparePool", "discard", "spare_cap", "start_python"]

log = logging.getLogger("agentrun_ci.local")

#: what an idle spare kernel holds, rounded up (about 55 MB resident, measured)
SPARE_KERNEL_MB = 64
#: spares per kernel start slot at most: more would take minutes of CPU to start
SPARES_PER_START_SLOT = 4
#: the share of the machine's available memory spares may hold
SPARE_MEMORY_SHARE = 0.25


class SpareDemand:
    """How many spare slots to keep now: a pure policy over the times of sandbox creations.

    `target(most)` is 0 with `base` 0, or once `idle_timeout` seconds have passed without a
    creation (the policy's start counts as one, so spares are ready for the first
    sandboxes); else the creations of the last `window` seconds, at least `base`, at most
    `most`. `clock` is injectable: tests move time instead of waiting for it.
    """

    def __init__(
        self,
        base: int,
        idle_timeout: float,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.idle_timeout = idle_timeout
        self.window = window
        self.clock = clock
        self._times: collections.deque[float] = collections.deque()
        self._last = clock()

    def record(self) -> None:
        """A sandbox was created (whether or not it found a spare)."""
        now = self.clock()
        self._last = now
        self._times.append(now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()

    def target(self, most: int) -> int:
        """Spares to keep now, given that the machine holds at most `most`."""
        now = self.clock()
        if self.base <= 0 or now - self._last >= self.idle_timeout:
            return 0
        self._forget(now)
        return max(0, min(most, max(self.base, len(self._times))))


def spare_cap(settings: EmulatorSettings, meminfo: str = "/proc/meminfo") -> int:
    """The most spares this machine holds now: `max_spare_kernels` if set, at most
    `SPARES_PER_START_SLOT` per kernel start slot, and their idle kernels within
    `SPARE_MEMORY_SHARE` of the available memory (where /proc/meminfo says it).

    A spare is counted at its idle kernel's size, not its future template's memory cap: no
    code has run in it, and the sandbox that takes it is limited by its own cgroup."""
    most = SPARES_PER_START_SLOT * settings.start_slots
    if settings.max_spare_kernels is not None:
        most = min(most, settings.max_spare_kernels)
    available = _available_mb(meminfo)
    if available is not None:
        most = min(most, math.floor(available * SPARE_MEMORY_SHARE / SPARE_KERNEL_MB))
    return max(0, most)


def _available_mb(meminfo: str) -> float | None:
    try:
        with open(meminfo, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


@attrs.define(eq=False)
class Slot:
    """A sandbox-to-be: its directory (`home` is /home/user, `tmp` its /tmp), its cgroup,
    how to launch in it, and a pre-started kernel already jailed there. A slot goes to one
    sandbox only: no sandbox can reach its kernel before, none but that one after."""

    base: Path
    launch: Launch
    kernel: PythonKernel | None = None
    #: the start of its kernel while it is in flight (a sandbox that takes the slot then
    #: awaits it, or cancels it: `take`)
    starting: asyncio.Future[PythonKernel] | None = None

    @property
    def home(self) -> Path:
        return home_of(self.base)


class SparePool:
    """Slots with a warm python kernel, so that a new sandbox's first context skips the
    cold start; as many as `demand` asks for (see `SpareDemand`), within what the machine
    holds beside the `others` (sandboxes' own spares). `make_slot(name)` makes the
    directories, cgroup and launch of one slot."""

    def __init__(
        self,
        settings: EmulatorSettings,
        make_slot: Any,
        gate: StartGate,
        demand: SpareDemand | None = None,
        others: Callable[[], int] | None = None,
    ) -> None:
        self._settings = settings
        self._make_slot = make_slot
        self._gate = gate
        self.demand = demand or SpareDemand(settings.spare_kernels, settings.spare_idle_timeout)
        #: spares held elsewhere (sandboxes' own), counted against what the machine holds
        self._others = others or (lambda: 0)
        self._ready: list[Slot] = []
        self._starting: set[asyncio.Task[None]] = set()
        #: slots whose kernel is starting (`Slot.starting`): a sandbox created meanwhile
        #: takes one rather than cold-start a kernel beside it
        self._pending: list[Slot] = []
        #: slots being made, before their kernel starts (`prepared`)
        self._preparing: set[asyncio.Future[Slot]] = set()
        #: the kernel starts inside `_starting`: what close() cancels
        self._kernel_starts: set[asyncio.Future[PythonKernel]] = set()
        #: spares shut down because demand fell (awaited by close())
        self._discards: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def ready(self) -> int:
        """How many slots have a started kernel waiting."""
        return len(self._ready)

    @property
    def starting(self) -> int:
        """How many spares are being prepared or started."""
        return len(self._starting)

    @property
    def target(self) -> int:
        """How many spares the pool keeps now."""
        return self.demand.target(max(0, spare_cap(self._settings) - self._others()))

    def fill(self) -> None:
        """Start the spares missing from the target."""
        if self._closed:
            return
        missing = self.target - len(self._ready) - len(self._starting)
        for _ in range(max(0, missing)):
            task = asyncio.get_running_loop().create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    def adjust(self) -> None:
        """Start what the target lacks; shut down ready spares beyond it (demand fell)."""
        if self._closed:
            return
        target = self.target
        while len(self._ready) > target:
            self._discard_later(self._ready.pop())
        self.fill()

    def _discard_later(self, slot: Slot) -> None:
        task = asyncio.get_running_loop().create_task(discard(slot))
        self._discards.add(task)
        task.add_done_callback(self._discards.discard)

    async def prepared(self) -> None:
        """Once no spare slot is being made (its directory, cgroup: moments): a sandbox
        created now finds each spare ready or starting, and can take it (`take`)."""
        if self._preparing:
            await asyncio.wait(list(self._preparing))

    async def _start_one(self) -> None:
        name = f".spare-{uuid.uuid4().hex[:12]}"
        preparing = asyncio.ensure_future(blocking(self._make_slot, name))
        self._preparing.add(preparing)
        try:
            slot: Slot = await preparing
        except Exception:
            log.exception("could not prepare a spare sandbox directory")
            return
        finally:
            self._preparing.discard(preparing)
        if self._closed:
            await discard(slot)
            return
        start = slot.starting = asyncio.ensure_future(self._start_in_turn(slot.launch))
        self._kernel_starts.add(start)
        self._pending.append(slot)
        try:
            await asyncio.wait([start])  # this task cancelled: not the start, if taken
        except asyncio.CancelledError:
            if slot in self._pending:
                start.cancel()
            raise
        finally:
            self._kernel_starts.discard(start)
            taken = slot not in self._pending
            if not taken:
                self._pending.remove(slot)
        if taken:  # a sandbox took the slot: its kernel, and its failure, are the sandbox's
            return
        slot.starting = None
        if start.cancelled():  # close() cancelled the start, which killed what it launched
            await discard(slot)
            return
        error = start.exception()
        if error is not None:
            log.error("could not pre-start a spare kernel", exc_info=error)
            await discard(slot)
            return
        slot.kernel = start.result()
        if self._closed or len(self._ready) >= self.target:  # demand fell while it started
            await discard(slot)
        else:
            self._ready.append(slot)

    async def _start_in_turn(self, launch: Launch) -> PythonKernel:
        async with self._gate.turn(background=True):  # after the requests waiting
            return await start_python(launch)

    def take(self, accept: Callable[[Slot], bool] | None = None) -> Slot | None:
        """A slot (that `accept`s) whose kernel is ready, else one whose kernel is starting
        (its `starting` set: the taker awaits it, or cancels it), else None; the pool starts
        a replacement (for a slot still starting, once its kernel is up).

        A slot still starting beats a cold start: both would start a kernel, and the cold
        one would wait for a start slot behind it (a new emulator's first sandbox)."""
        self.demand.record()
        slot = None
        if self._ready and (accept is None or accept(self._ready[0])):
            slot = self._ready.pop(0)
        elif self._pending and (accept is None or accept(self._pending[0])):
            slot = self._pending.pop(0)
            # Not close()'s to cancel now; its task counts as starting until the kernel
            # is up, so that the replacement does not start beside it (a new emulator's
            # first sandbox waits for that kernel: a second start would slow it down).
            assert slot.starting is not None
            self._kernel_starts.discard(slot.starting)
        self.fill()
        return slot

    def slots(self) -> list[Slot]:
        """The spare slots ready now (a copy: for `Core.kill_now`, from any thread)."""
        return list(self._ready)

    async def close(self) -> None:
        self._closed = True
        # A kernel still starting serves no one: cancel the start rather than wait
        # seconds (longer on a busy machine) for a kernel shut down at once. Only the
        # start: its slot's directory and cgroup are made in a thread, then discarded.
        for start in list(self._kernel_starts):
            start.cancel()
        for task in list(self._starting):
            with contextlib.suppress(BaseException):
                await task
        slots, self._ready = self._ready, []
        await asyncio.gather(*(discard(s) for s in slots), return_exceptions=True)
        await asyncio.gather(*list(self._discards), return_exceptions=True)


async def start_python(launch: Launch, cwd: str | None = None) -> PythonKernel:
    """A python kernel started for one sandbox, in `cwd` (its /home/user by default)."""
    return await PythonKernel.start(launch, _runtime(launch), cwd or launch.inside_home)


def _runtime(launch: Launch) -> Path:
    if launch.runtime is None:
        raise KernelError("no runtime directory for kernels")
    return launch.runtime


async def discard(slot: Slot) -> None:
    """Shut a slot's kernel down and remove its directory and cgroup."""
    if slot.kernel is not None:
        await slot.kernel.shutdown()
        slot.kernel = None
    if slot.launch.holder is not None:
        await slot.launch.holder.stop()
    if slot.launch.cgroup is not None:
        await blocking(slot.launch.cgroup.remove)
    await blocking(remove_tree, slot.base)
