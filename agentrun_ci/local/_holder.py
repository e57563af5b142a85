"""One sandbox's namespaces: a long-lived process that every kernel and command joins.

On AgentRun a sandbox is one container: all its processes share one PID space, so a
background job one command starts (`nohup job &`) is there, by its pid, for the next
command and for the kernels. The emulator gives each jailed sandbox the same: a holder
(`Jail.holder_argv`: bubblewrap running `sleep infinity` as PID 1, SIGCHLD ignored so
that orphans are reaped) owns the
sandbox's PID, IPC, UTS and network namespaces (`_network.py`: only `lo`, plus, for a PUBLIC
sandbox, the uplink `connect` starts), and
every jail of the sandbox enters them (`Jail.argv(holder=...)`). A command's orphans are
reparented to that PID 1 and outlive the command; killing the holder ends the PID
namespace, which the kernel empties at once (SIGKILL to every member).

Started lazily, on the event loop's thread (its parent-death signal fires when the thread
that forked it exits), before the sandbox's first kernel or command (a spare kernel's
holder is its slot's, which the sandbox taking the slot keeps); stopped last when the
sandbox stops. It joins the sandbox's pids cgroup and dies with the emulator (parent-death
signal, bwrap's --die-with-parent), and it starts in the sandbox's directory, where the
next emulator's start-up sweep looks for what a dead one left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._jail import Jail
from ._limits import kill_group
from ._network import Uplink, UplinkError, UplinkTool, ready_byte
from ._threads import blocking

__all__ = ["Holder", "HolderError"]

#: seconds a holder may take to say its PID 1 unless told (bwrap starts in milliseconds;
#: the emulator gives it its kernel_start_timeout, room for a loaded machine)
_START_TIMEOUT = 120.0


class HolderError(RuntimeError):
    """The sandbox's namespaces could not be made."""


class Holder:
    """The namespace holder of one sandbox (or spare slot); `pid` is its PID 1 on the host."""

    def __init__(
        self,
        jail: Jail,
        home: Path,
        *,
        python: str,
        own_net: bool,
        uplink: UplinkTool | None = None,
        start_timeout: float = _START_TIMEOUT,
    ) -> None:
        self._jail = jail
        self._start_timeout = start_timeout
        self._python = python
        self._home = home
        #: the sandbox has a network namespace of its own (else it shares the host's)
        self.own_net = own_net
        self._tool = uplink if own_net else None
        self._uplink: Uplink | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        #: the host pid of PID 1 of the sandbox's PID namespace (None until started)
        self.pid: int | None = None

    @property
    def can_connect(self) -> bool:
        """Can `connect` give this sandbox's own network namespace an uplink?"""
        return self._tool is not None

    @property
    def uplink_pid(self) -> int | None:
        """The host pid of the sandbox's uplink (slirp4netns or pasta), if it has one."""
        return self._uplink.pid if self._uplink is not None else None

    @property
    def launcher_pid(self) -> int | None:
        """The host pid of the holder's bwrap (its process group's leader)."""
        return self._proc.pid if self._proc is not None else None

    def relocate(self, home: Path) -> None:
        """The slot's directory was renamed (a spare taken by a sandbox); a holder already
        running is unaffected (its working directory moved with it)."""
        self._home = home

    async def start(self, env: dict[str, str], preexec: Callable[[], None]) -> int:
        """Start the holder unless it runs; its PID 1's host pid."""
        async with self._lock:
            if self._stopped:
                raise HolderError("the sandbox is stopping: its namespaces are gone")
            if self._proc is not None and self.pid is not None:
                if self._proc.returncode is None:
                    return self.pid
                raise HolderError(
                    f"the sandbox's namespace holder died (exit {self._proc.returncode}); "
                    "its background processes are gone: create a new sandbox"
                )
            return await self._spawn(env, preexec)

    async def connect(self) -> None:
        """Give the (running) holder's network namespace its uplink unless it has one: a
        PUBLIC sandbox's outbound traffic (`_network.py`)."""
        async with self._lock:
            if self._tool is None or self._uplink is not None:
                return
            if self._stopped or self.pid is None:
                raise HolderError("the sandbox's namespace holder is not running")
            uplink = Uplink(self._tool, start_timeout=self._start_timeout)
            try:
                await uplink.start(self.pid, userns=not self._jail.privileged, cwd=self._home)
            except UplinkError as exc:
                raise HolderError(f"the sandbox's network could not be connected: {exc}") from exc
            self._uplink = uplink

    async def _spawn(self, env: dict[str, str], preexec: Callable[[], None]) -> int:
        info_r, info_w = os.pipe()
        ready_r, ready_w = os.pipe()
        with tempfile.TemporaryFile() as err:
            try:
                argv = self._jail.holder_argv(
                    self._home,
                    python=self._python,
                    info_fd=info_w,
                    ready_fd=ready_w,
                    own_net=self.own_net,
                )
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=err,
                    cwd=str(self._home),
                    env=env,
                    start_new_session=True,
                    pass_fds=(info_w, ready_w),
                    preexec_fn=preexec,
                )
            except BaseException:
                os.close(info_r)
                os.close(ready_r)
                raise
            finally:
                os.close(info_w)
                os.close(ready_w)
            self._proc = proc
            both = asyncio.gather(_read_all(info_r), ready_byte(ready_r, proc))
            # Cut short (a timeout, the emulator stopping), it may end with a child's
            # CancelledError that no one awaits: taken here, not printed at exit.
            both.add_done_callback(_retrieved)
            try:
                data, ready = await asyncio.wait_for(both, self._start_timeout)
                if not ready:
                    raise HolderError("it exited before it was ready")
                pid = int(json.loads(data)["child-pid"])
            except BaseException as exc:
                await self._kill()
                if not isinstance(exc, Exception):
                    raise
                err.seek(0)
                said = err.read().decode("utf-8", "replace").strip()[-300:]
                if not said and isinstance(exc, asyncio.TimeoutError):
                    said = (
                        f"no answer in {self._start_timeout:g} s "
                        "(EmulatorSettings.kernel_start_timeout)"
                    )
                raise HolderError(
                    f"the sandbox's namespaces could not be made: {said or exc!r}"
                ) from exc
        self.pid = pid
        return pid

    async def stop(self) -> None:
        """Kill the holder, and so every process left in the sandbox; no restart after."""
        async with self._lock:
            self._stopped = True
            await self._kill()

    async def _kill(self) -> None:
        uplink, self._uplink = self._uplink, None
        if uplink is not None:
            await uplink.stop()
        proc, self._proc = self._proc, None
        self.pid = None
        if proc is None:
            return
        await blocking(kill_group, proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _read_all(fd: int) -> bytes:
    """Everything written to a pipe until its writers close it (bwrap's --info-fd)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe: Any = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        return await reader.read()
    finally:
        transport.close()
