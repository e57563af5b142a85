"""Spare kernels: slots (sandboxes-to-be, each with a python kernel already started in
its jail) kept warm by a `SparePool`, and the python kernel start they share with `Core`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

__all__ = ["Slot", "SparePool", "discard", "start_python"]

log = logging.getLogger("agentrun_ci.local")


@attrs.define
class Slot:
    """A sandbox-to-be: its directory (`home` is /home/user, `tmp` its /tmp), its cgroup,
    how to launch in it, and a pre-started kernel already jailed there. A slot goes to one
    sandbox only: no sandbox can reach its kernel before, none but that one after."""

    base: Path
    launch: Launch
    kernel: PythonKernel | None = None

    @property
    def home(self) -> Path:
        return home_of(self.base)


class SparePool:
    """Slots with a warm python kernel, so that a new sandbox's first context skips the
    cold start. `make_slot(name)` makes the directories, cgroup and launch of one slot."""

    def __init__(self, settings: EmulatorSettings, make_slot: Any, gate: StartGate) -> None:
        self._settings = settings
        self._make_slot = make_slot
        self._gate = gate
        self._ready: list[Slot] = []
        self._starting: set[asyncio.Task[None]] = set()
        #: the kernel starts inside `_starting`: what close() cancels
        self._kernel_starts: set[asyncio.Future[PythonKernel]] = set()
        self._closed = False

    @property
    def ready(self) -> int:
        """How many slots have a started kernel waiting."""
        return len(self._ready)

    def fill(self) -> None:
        missing = self._settings.spare_kernels - len(self._ready) - len(self._starting)
        for _ in range(max(0, missing)):
            task = asyncio.get_running_loop().create_task(self._start_one())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_one(self) -> None:
        try:
            slot: Slot = await blocking(self._make_slot, f".spare-{uuid.uuid4().hex[:12]}")
        except Exception:
            log.exception("could not prepare a spare sandbox directory")
            return
        if self._closed:
            await discard(slot)
            return
        start = asyncio.ensure_future(self._start_in_turn(slot.launch))
        self._kernel_starts.add(start)
        try:
            slot.kernel = await start
        except asyncio.CancelledError:
            if not start.cancelled():
                raise  # this task was cancelled, not only the start
            await discard(slot)  # close() cancelled the start, which killed what it launched
            return
        except Exception:
            log.exception("could not pre-start a spare kernel")
            await discard(slot)
            return
        finally:
            self._kernel_starts.discard(start)
        if self._closed:
            await discard(slot)
        else:
            self._ready.append(slot)

    async def _start_in_turn(self, launch: Launch) -> PythonKernel:
        async with self._gate.turn(background=True):  # after the requests waiting
            return await start_python(launch)

    def take(self, accept: Callable[[Slot], bool] | None = None) -> Slot | None:
        """A slot whose kernel is ready (and that `accept`s), or None; the pool starts a
        replacement."""
        slot = None
        if self._ready and (accept is None or accept(self._ready[0])):
            slot = self._ready.pop(0)
        if not self._closed:
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
