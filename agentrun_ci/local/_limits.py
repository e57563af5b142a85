"""What every sandboxed child process gets: a scrubbed environment, limits, its own session.

Containment model (see also README of the emulator in `__init__`):

* every kernel and every command starts in a new session, so in its own process
  group; the group is SIGKILLed, repeatedly until empty, on context delete,
  sandbox stop, idle timeout, TTL and emulator shutdown;
* setrlimit in the child: address space, CPU seconds, file size, process count;
* a fork bomb: RLIMIT_NPROC counts per uid and is ignored for root. So, when the
  emulator runs as root, (1) each sandbox gets a pids cgroup (v1 or v2, where
  /sys/fs/cgroup is writable) whose `pids.max` caps its task count, and which also
  finds every process of the sandbox at cleanup, even one that called setsid; and
  (2) if the unprivileged `sandbox_uid` can run the kernel interpreter, children
  drop to it, which makes RLIMIT_NPROC bite as well. Not root: RLIMIT_NPROC applies
  to our own uid (shared with the server: set `max_processes` well above its needs).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping

from ._settings import EmulatorSettings

__all__ = [
    "PidsCgroup",
    "child_preexec",
    "chown_tree",
    "command_prefix",
    "group_members",
    "kill_group",
    "scrubbed_env",
    "usable_uid",
]

log = logging.getLogger("agentrun_ci.local")

# Only these server variables reach sandboxed code; everything else (AGENTRUN_*,
# ALIBABA_CLOUD_*, FC_*, *_KEY, *_SECRET, *_TOKEN, *PASSWORD*, ...) is dropped.
_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")


def scrubbed_env(home: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment from an allow-list; `extra` is the template's own variables."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.update(HOME=home, PWD=home, USER="user", PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    env.update(extra or {})
    return env


def _set(limit: int, value: int) -> None:
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(limit, (value, value))


class PidsCgroup:
    """A pids cgroup capping one sandbox's task count (None where not writable)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs_file = os.path.join(path, "cgroup.procs")

    @staticmethod
    def create_root(name: str) -> PidsCgroup | None:
        if os.geteuid() != 0:
            return None
        for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
            if os.path.isdir(base) and os.access(base, os.W_OK):
                group = PidsCgroup.create(base, name, None)
                if group is not None:
                    return group
        return None

    @classmethod
    def create(cls, parent: str, name: str, max_pids: int | None) -> PidsCgroup | None:
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
            if not os.path.exists(os.path.join(path, "pids.max")):
                raise OSError("no pids controller here")
            if max_pids:
                with open(os.path.join(path, "pids.max"), "w") as fh:
                    fh.write(str(max_pids))
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return None
        return cls(path)

    def child(self, name: str, max_pids: int | None) -> PidsCgroup | None:
        return PidsCgroup.create(self.path, name, max_pids)

    def pids(self) -> list[int]:
        try:
            with open(self.procs_file) as fh:
                return [int(line) for line in fh if line.strip()]
        except OSError:
            return []

    def add(self, pid: int) -> None:
        with contextlib.suppress(OSError), open(self.procs_file, "w") as fh:
            fh.write(str(pid))

    def kill_all(self, deadline: float = 2.0) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            pids = [p for p in self.pids() if not _is_zombie(p)]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        end = time.monotonic() + 2.0
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:  # members not reaped yet
                if time.monotonic() > end:
                    return
                time.sleep(0.02)


def child_preexec(
    settings: EmulatorSettings,
    *,
    cpu_seconds: int | None,
    cgroup: PidsCgroup | None = None,
    uid: int | None = None,
    memory: bool = True,
) -> Callable[[], None]:
    """A preexec_fn: join the pids cgroup, set the rlimits, then drop to `uid`.

    It runs in the forked child before exec. The order matters: joining a cgroup
    needs root, and the limits are set while we still may.
    """
    memory_mb = settings.memory_mb if memory else None
    fsize = settings.file_size_mb
    nproc = settings.max_processes
    procs = cgroup.procs_file if cgroup is not None else None

    def apply() -> None:  # pragma: no cover - runs in the forked child
        if procs is not None:
            with contextlib.suppress(OSError), open(procs, "w") as fh:
                fh.write("0")
        if memory_mb:
            _set(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
        if cpu_seconds:
            _set(resource.RLIMIT_CPU, cpu_seconds)
        if fsize:
            _set(resource.RLIMIT_FSIZE, fsize * 1024 * 1024)
        if nproc:
            _set(resource.RLIMIT_NPROC, nproc)
        _set(resource.RLIMIT_CORE, 0)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return apply


def usable_uid(settings: EmulatorSettings, executable: str) -> int | None:
    """The uid to drop to: only as root, and only if that uid can run the kernel."""
    uid = settings.sandbox_uid
    if uid is None or os.geteuid() != 0:
        return None
    return _probe_uid(uid, executable)


@functools.lru_cache(maxsize=8)
def _probe_uid(uid: int, executable: str) -> int | None:
    try:
        probe = subprocess.run(
            [executable, "-c", "import ipykernel"],
            user=uid,
            group=uid,
            extra_groups=[],
            capture_output=True,
            timeout=30,
            check=False,
            cwd="/",
        )
        ok = probe.returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        log.warning(
            "uid %s cannot run %s, so sandboxed code runs as root: contained by a pids "
            "cgroup where /sys/fs/cgroup is writable, by process groups and rlimits otherwise",
            uid,
            executable,
        )
    return uid if ok else None


def command_prefix(settings: EmulatorSettings) -> list[str]:
    """`unshare -n` when the no-network option is on."""
    if settings.no_network:
        tool = shutil.which("unshare")
        if tool is None:
            raise RuntimeError("no_network needs the `unshare` tool (util-linux) on PATH")
        return [tool, "-n", "--"]
    return []


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 :][:1] in (b"Z", b"X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids of a process group, read from /proc."""
    members: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ')'
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


def kill_group(pgid: int, *, deadline: float = 2.0) -> None:
    """SIGKILL a process group until it is empty (a forking group can outrun one signal)."""
    end = time.monotonic() + deadline
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if not group_members(pgid) or time.monotonic() > end:
            return
        time.sleep(0.01)


def chown_tree(path: str, uid: int | None) -> None:
    """Give a path to the sandbox uid so sandboxed code may change what the API wrote."""
    if uid is None:
        return
    with contextlib.suppress(OSError):
        os.chown(path, uid, uid, follow_symlinks=False)
