"""A sandbox's network: a network namespace of its own, and for PUBLIC ones an uplink.

Every sandbox with a namespace holder (`_holder.py`) gets a network namespace of its own
(bwrap `--unshare-net`), with nothing in it but `lo`: loopback services a sandbox starts are
its own, and no other sandbox, nor the host, reaches them (nor its abstract Unix sockets,
which the kernel keeps per network namespace). That is all a PRIVATE template's sandbox (and
every sandbox under `--no-network`) gets. A PUBLIC (or PUBLIC_AND_PRIVATE) template's
sandbox also gets an uplink: user-mode networking, `slirp4netns` (or, where only passt is
installed, `pasta`), a process of the emulator's that owns a tap device in the sandbox's
namespace and turns the sandbox's packets into ordinary sockets on the host. Outbound
traffic works (to the internet, and to the host's non-loopback addresses, as from any
other machine); the host's loopback does not: slirp4netns runs with
`--disable-host-loopback` (its host alias 10.0.2.2 refuses), pasta with `--no-map-gw` and no
port forwarding in either direction. So the emulator's API (on 127.0.0.1 unless served
elsewhere on purpose), other sandboxes' loopback services and every local daemon bound to
loopback are out of reach.

DNS: the uplink answers at 10.0.2.3 (slirp4netns's built-in forwarder; pasta is told
`--dns-forward 10.0.2.3`) and relays to the host's resolver, even one on the host's
loopback (systemd-resolved's 127.0.0.53); jails with an uplink see a resolv.conf naming
only that address (`resolv_conf`).

The uplink is the emulator's child: started when the sandbox's first kernel or command
needs it (`Uplink.start`), killed and reaped when the sandbox stops (`Uplink.stop`),
killed by the kernel if the emulator dies (parent-death signal), and it runs in the
sandbox's directory, where the next emulator's start-up sweep looks for what a dead one left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "DNS_ADDRESS",
    "UplinkError",
    "UplinkTool",
    "find_uplink",
    "is_public",
    "probe_uplink",
    "resolv_conf",
]

log = logging.getLogger("agentrun_ci.local")

#: where a sandbox with an uplink sends DNS queries (slirp4netns's forwarder)
DNS_ADDRESS = "10.0.2.3"
#: the tools, best first
_TOOLS = ("slirp4netns", "pasta")
#: the fix named when none is installed
INSTALL_FIX = (
    "`apt-get install slirp4netns` (or `dnf install slirp4netns`, `apk add slirp4netns`; "
    "passt's `pasta` works too)"
)
#: seconds an uplink may take to say it is ready unless told
_START_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1
_NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1), linux/nsfs.h


class UplinkError(RuntimeError):
    """The sandbox's uplink could not be started."""


def is_public(template_body: dict[str, Any]) -> bool:
    """Does a template's network mode let its sandboxes out (PUBLIC, PUBLIC_AND_PRIVATE,
    or none given: the service's default)? PRIVATE means a VPC only on AgentRun; there is
    no VPC here, so loopback only."""
    config = template_body.get("networkConfiguration")
    mode = config.get("networkMode") if isinstance(config, dict) else None
    return str(mode or "PUBLIC").upper() != "PRIVATE"


@attrs.frozen
class UplinkTool:
    """The user-mode networking tool this machine has: its path and which one it is."""

    path: str
    kind: str  # "slirp4netns" or "pasta"

    def argv(self, pid: int, *, userns_fd: int, ready_fd: int) -> list[str]:
        """The command giving the network namespace of host pid `pid` an uplink;
        `userns_fd` (>= 0, passed to it): the user namespace owning that network namespace,
        which it joins first (an unprivileged jail's: `owner_userns`)."""
        userns = f"/proc/self/fd/{userns_fd}" if userns_fd >= 0 else ""
        if self.kind == "slirp4netns":
            out = [self.path, "--configure", "--mtu=65520", "--disable-host-loopback"]
            out += [f"--ready-fd={ready_fd}", "--enable-sandbox", "--enable-seccomp"]
            if userns:
                out.append(f"--userns-path={userns}")
            return [*out, str(pid), "tap0"]
        out = [self.path, "--foreground", "--quiet", "--config-net", "--no-map-gw"]
        out += ["--dns-forward", DNS_ADDRESS, "-t", "none", "-u", "none", "-T", "none"]
        out += ["-U", "none", "--netns", f"/proc/{pid}/ns/net"]
        if userns:
            out += ["--userns", userns]
        if os.geteuid() == 0:  # else it drops to nobody, who may not open the namespace
            out += ["--runas", "0:0"]
        return out


def find_uplink() -> tuple[UplinkTool | None, str]:
    """The uplink tool of this machine: (tool, "") or (None, why not and the fix)."""
    if not sys.platform.startswith("linux"):
        return None, f"no network namespaces on {sys.platform}"
    for kind in _TOOLS:
        path = shutil.which(kind)
        if path is not None:
            return UplinkTool(path, kind), ""
    return None, f"neither slirp4netns nor pasta is installed; fix: {INSTALL_FIX}"


def owner_userns(pid: int) -> int:
    """An fd of the user namespace that owns the network namespace of host pid `pid`
    (ioctl NS_GET_USERNS): bwrap, making a user namespace, nests a second one for the
    sandbox's uid, so the holder's own (/proc/<pid>/ns/user) is not the owner."""
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(net, _NS_GET_USERNS)
    finally:
        os.close(net)


def probe_uplink(tool: UplinkTool, pid: int, *, userns: bool, timeout: float = 30.0) -> str:
    """Connect the network namespace of host pid `pid` (a scratch holder's) with `tool`
    and take it down again: "" if that works, else why not and the fix."""
    ready_r, ready_w = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    userns_fd = -1
    try:
        userns_fd = owner_userns(pid) if userns else -1
        proc = subprocess.Popen(
            tool.argv(pid, userns_fd=userns_fd, ready_fd=ready_w),
            pass_fds=(ready_w,) if userns_fd < 0 else (ready_w, userns_fd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd="/",
        )
        os.close(ready_w)
        ready_w = -1
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            if _has_default_route(pid):  # both tools add it once configured
                return ""
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.01)
        proc.kill()
        _, err = proc.communicate(timeout=10)
        said = (err or b"").decode("utf-8", "replace").strip()[-300:]
        said = said or (f"exit {proc.returncode}" if proc.returncode else "no answer")
        return (
            f"{tool.kind} is installed but cannot connect a sandbox here ({said}); fix: "
            "give the emulator /dev/net/tun (containers: --device /dev/net/tun)"
        )
    finally:
        for fd in (ready_r, ready_w, userns_fd):
            if fd >= 0:
                os.close(fd)
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.SubprocessError):
                proc.communicate(timeout=10)


def resolv_conf(directory: Path) -> str:
    """Write the resolv.conf of jails with an uplink (only its DNS forwarder); its path."""
    path = directory / "resolv.conf"
    path.write_text(
        f"# agentrun-ci local sandbox: DNS through its uplink\nnameserver {DNS_ADDRESS}\n",
        encoding="utf-8",
    )
    path.chmod(0o644)
    return str(path)


class Uplink:
    """One sandbox's running uplink (one `UplinkTool` process)."""

    def __init__(self, tool: UplinkTool, *, start_timeout: float = _START_TIMEOUT) -> None:
        self.tool = tool
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, pid: int, *, userns: bool, cwd: Path) -> None:
        """Give the network namespace of host pid `pid` its uplink; returns once the
        namespace has its interface, address and default route."""
        ready_r, ready_w = os.pipe()
        started = time.monotonic()
        userns_fd = -1
        with tempfile.TemporaryFile() as err:
            try:
                userns_fd = owner_userns(pid) if userns else -1
                proc = await asyncio.create_subprocess_exec(
                    *self.tool.argv(pid, userns_fd=userns_fd, ready_fd=ready_w),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=err,
                    cwd=str(cwd),
                    # the start-up sweep finds it by HOME too (slirp4netns's
                    # --enable-sandbox leaves the sandbox's directory)
                    env={"HOME": str(cwd), "PATH": os.environ.get("PATH", os.defpath)},
                    start_new_session=True,
                    pass_fds=(ready_w,) if userns_fd < 0 else (ready_w, userns_fd),
                    preexec_fn=_die_with_parent(),
                )
            except OSError as exc:
                os.close(ready_r)
                raise UplinkError(f"could not run {self.tool.path}: {exc}") from exc
            finally:
                os.close(ready_w)
                if userns_fd >= 0:
                    os.close(userns_fd)
            self._proc = proc
            try:
                if self.tool.kind == "slirp4netns":
                    byte = await asyncio.wait_for(ready_byte(ready_r, proc), self._start_timeout)
                    ready = bool(byte)
                else:
                    os.close(ready_r)
                    ready = await asyncio.wait_for(_routed(pid, proc), self._start_timeout)
                if not ready:
                    raise UplinkError("it exited before it was ready")
            except BaseException as exc:
                await self.stop()
                if not isinstance(exc, Exception):
                    raise
                err.seek(0)
                said = err.read().decode("utf-8", "replace").strip()[-300:]
                if isinstance(exc, asyncio.TimeoutError):
                    said = said or f"no answer in {self._start_timeout:g} s"
                raise UplinkError(
                    f"{self.tool.kind} could not connect the sandbox: {said or exc!r}"
                ) from exc
        log.debug(
            "uplink %s (pid %s) for namespace of pid %s in %.3f s",
            self.tool.kind,
            proc.pid,
            pid,
            time.monotonic() - started,
        )

    async def stop(self) -> None:
        """Kill the uplink and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)


def _die_with_parent() -> Any:
    """A preexec_fn: SIGKILL when the thread that forked it (the event loop's) exits."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    parent = os.getpid()

    def apply() -> None:  # pragma: no cover - runs in the forked child
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    return apply


async def ready_byte(fd: int, proc: asyncio.subprocess.Process) -> bytes:
    """The one byte a starting helper writes to `fd` when it is ready (slirp4netns's
    `--ready-fd`, the namespace holder's), or b"" if it exits first: the writer may keep
    the pipe open, so an end of file would come only with its exit."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe: Any = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    byte = asyncio.ensure_future(reader.read(1))
    exited = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait({byte, exited}, return_when=asyncio.FIRST_COMPLETED)
        return byte.result() if byte.done() else b""
    finally:
        byte.cancel()
        exited.cancel()
        transport.close()


async def _routed(pid: int, proc: asyncio.subprocess.Process) -> bool:
    """Wait until the namespace of `pid` has a default route (pasta has no ready signal:
    it configures the namespace, then serves); False if pasta exits first."""
    delay = 0.005
    exited = asyncio.ensure_future(proc.wait())
    try:
        while not exited.done():
            if _has_default_route(pid):
                return True
            await asyncio.wait({exited}, timeout=delay)
            delay = min(delay * 2, 0.1)
        return False
    finally:
        exited.cancel()


def _has_default_route(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/net/route", encoding="ascii") as fh:
            return any(line.split()[1:2] == ["00000000"] for line in fh.readlines()[1:])
    except OSError:
        return False
