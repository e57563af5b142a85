"""What every sandboxed child process gets: a scrubbed environment, limits, its own session.

Containment model (see also README of the emulator in `__init__`). Where bubblewrap is
available, every child also runs in its sandbox's jail (`_jail.py`, docs/local-backend.md):
what follows is what every platform keeps, and the whole story where there is no jail.

* every kernel and every command starts in a new session, so in its own process
  group; the group is SIGKILLed, repeatedly until empty, on context delete,
  sandbox stop, idle timeout, TTL and emulator shutdown;
* setrlimit in the child: address space, CPU seconds, file size, process count;
* a fork bomb: RLIMIT_NPROC counts per uid and is ignored for root. So, when the
  emulator runs as root, (1) each sandbox gets a pids cgroup (v1 or v2, where
  /sys/fs/cgroup is writable) whose `pids.max` caps its task count, and which also
  finds every process of the sandbox at cleanup, even one that called setsid (with a
  memory cgroup beside it capping the sandbox's total memory at its template's); and
  (2) if the unprivileged `sandbox_uid` can run the kernel interpreter, children
  drop to it, which makes RLIMIT_NPROC bite as well. Not root: RLIMIT_NPROC applies
  to our own uid (shared with the server: set `max_processes` well above its needs);
* a PID namespace with its own /proc for every kernel and command, where `unshare`
  can make one (root; probed once, a logged warning otherwise): code then cannot see
  the server, nor read its /proc/<pid>/environ or cmdline (which may hold the access
  key secret). The chain is `unshare --pid --fork --mount-proc --kill-child` → a small
  init (`_INIT`, PID 1: it reaps orphans, drops CAP_SYS_ADMIN from the bounding set so
  root code cannot unmount the private /proc, and outlives a command's shell while its
  background jobs run) → the real program. All three share one process group, so
  jupyter_client's SIGINT and our SIGKILL/SIGSTOP reach the program directly;
* every direct child gets PR_SET_PDEATHSIG=SIGKILL, and `--kill-child` carries it on,
  so a SIGKILLed emulator takes its kernels and commands with it; what survives
  anyway (no namespace) is swept by the next emulator start (`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

from .._procfs import is_running, read_proc, start_time, stat_fields
from ._seccomp import userns_filter
from ._settings import EmulatorSettings
from ._tree import remove_tree

__all__ = [
    "PidsCgroup",
    "child_preexec",
    "chown_tree",
    "group_members",
    "instance_name",
    "kill_group",
    "pid_namespace_works",
    "sandbox_argv",
    "scrubbed_env",
    "sweep_stale",
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
    """A pids cgroup capping one sandbox's task count (None where not writable), and, where
    the memory controller is writable too, a memory cgroup capping its total memory, and
    where the freezer is, a freezer cgroup that pauses every process of the sandbox."""

    def __init__(self, path: str, memory: str | None = None, freezer: str | None = None) -> None:
        self.path = path
        self.procs_file = os.path.join(path, "cgroup.procs")
        #: the memory cgroup's directory (cgroup v1: its own hierarchy; v2: `path`)
        self.memory = memory
        #: the freezer cgroup's directory (cgroup v1: its own hierarchy; v2: `path`, whose
        #: `cgroup.freeze` does it)
        self.freezer = freezer

    @property
    def procs_files(self) -> list[str]:
        """Every `cgroup.procs` a member must join (pids, and memory and freezer on v1)."""
        files = [self.procs_file]
        for extra in (self.memory, self.freezer):
            if extra is not None and extra != self.path:
                files.append(os.path.join(extra, "cgroup.procs"))
        return files

    @staticmethod
    def create_root(name: str) -> PidsCgroup | None:
        if os.geteuid() != 0:
            return None
        for base in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
            if os.path.isdir(base) and os.access(base, os.W_OK):
                group = PidsCgroup.create(base, name, None)
                if group is not None:
                    group.memory = _memory_root(group.path, name)
                    group.freezer = _freezer_root(group.path, name)
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
        group = PidsCgroup.create(self.path, name, max_pids)
        if group is not None and self.memory is not None:
            if self.memory == self.path:  # cgroup v2: one directory, both controllers
                group.memory = group.path if _memory_file(group.path) else None
            else:
                memory = os.path.join(self.memory, name)
                with contextlib.suppress(OSError):
                    os.mkdir(memory)
                    group.memory = memory
        if group is not None and self.freezer is not None:
            if self.freezer == self.path:  # cgroup v2: `cgroup.freeze` in every non-root group
                freezable = os.path.exists(os.path.join(group.path, "cgroup.freeze"))
                group.freezer = group.path if freezable else None
            else:
                freezer = os.path.join(self.freezer, name)
                with contextlib.suppress(OSError):
                    os.mkdir(freezer)
                    group.freezer = freezer
        return group

    def freeze(self, frozen: bool, deadline: float = 10.0) -> bool:
        """Freeze (or thaw) every member at once; False where there is no freezer here.

        Unlike SIGSTOP, the freezer reaches every member, one that left its process group
        too, and the members cannot tell (no SIGCHLD to a parent, no signal to catch)."""
        if self.freezer is None:
            return False
        v2 = not os.path.exists(os.path.join(self.freezer, "freezer.state"))
        target = os.path.join(self.freezer, "cgroup.freeze" if v2 else "freezer.state")
        word = ("1" if frozen else "0") if v2 else ("FROZEN" if frozen else "THAWED")
        try:
            with open(target, "w") as fh:
                fh.write(word)
        except OSError:
            return False
        # v1 reads FREEZING until every task is stopped; v2 says `frozen 1` in cgroup.events
        check = os.path.join(self.freezer, "cgroup.events" if v2 else "freezer.state")
        want = (f"frozen {int(frozen)}") if v2 else word
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                with open(check) as fh:
                    if want in fh.read():
                        return True
            except OSError:
                return False
            time.sleep(0.005)
        return True  # asked; a task stuck in the kernel freezes when it leaves it

    def limit_memory(self, megabytes: int) -> bool:
        """Cap the memory of every member together (the sandbox's total); False if not here."""
        target = _memory_file(self.memory) if self.memory is not None else None
        if target is None:
            return False
        try:
            with open(target, "w") as fh:
                fh.write(str(megabytes * 1024 * 1024))
        except OSError:
            return False
        return True

    def pids(self) -> list[int]:
        raw = read_proc(self.procs_file)  # read per execute (local/_usage.py): kept cheap
        return [int(pid) for pid in raw.split()] if raw else []

    def add(self, pid: int) -> None:
        for procs in self.procs_files:
            with contextlib.suppress(OSError), open(procs, "w") as fh:
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
        # thawed first: on cgroup v1 a frozen task does not die of SIGKILL until it thaws
        self.freeze(False)
        self.kill_all()
        for extra in (self.memory, self.freezer):
            if extra is not None and extra != self.path:
                _rmdir_when_empty(extra)
        _rmdir_when_empty(self.path)


def _rmdir_when_empty(path: str) -> None:
    end = time.monotonic() + 2.0
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:  # members not reaped yet
            if time.monotonic() > end:
                return
            time.sleep(0.02)


def _memory_file(path: str) -> str | None:
    for name in ("memory.max", "memory.limit_in_bytes"):  # cgroup v2, v1
        if os.path.exists(os.path.join(path, name)):
            return os.path.join(path, name)
    return None


def _memory_root(pids_root: str, name: str) -> str | None:
    """Where the sandboxes' memory cgroups go: the pids root itself on cgroup v2 when it
    has the memory controller, else a sibling in the v1 memory hierarchy."""
    if _memory_file(pids_root) is not None or os.path.exists(
        os.path.join(pids_root, "memory.current")
    ):
        return pids_root
    base = "/sys/fs/cgroup/memory"
    if not (os.path.isdir(base) and os.access(base, os.W_OK)):
        return None
    path = os.path.join(base, name)
    try:
        os.mkdir(path)
    except OSError:
        return None
    if _memory_file(path) is None:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return None
    return path


def _freezer_root(pids_root: str, name: str) -> str | None:
    """Where the sandboxes' freezer cgroups go: the pids root itself on cgroup v2 (its
    children have `cgroup.freeze`), else a sibling in the v1 freezer hierarchy."""
    if os.path.exists(os.path.join(pids_root, "cgroup.freeze")) or os.path.exists(
        os.path.join(pids_root, "cgroup.events")
    ):
        return pids_root
    base = "/sys/fs/cgroup/freezer"
    if not (os.path.isdir(base) and os.access(base, os.W_OK)):
        return None
    path = os.path.join(base, name)
    try:
        os.mkdir(path)
    except OSError:
        return None
    if not os.path.exists(os.path.join(path, "freezer.state")):
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return None
    return path


_PR_SET_PDEATHSIG = 1


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    # Loaded before fork: the preexec_fn only calls into it.
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no libc to load (not Linux)
        return None


def child_preexec(
    settings: EmulatorSettings,
    *,
    cpu_seconds: int | None,
    cgroup: PidsCgroup | None = None,
    uid: int | None = None,
    memory: bool = True,
    jailed: bool = False,
) -> Callable[[], None]:
    """A preexec_fn: join the pids cgroup, set the rlimits, drop to `uid`, die with us.

    With a pids cgroup, RLIMIT_NPROC is left alone: it counts per uid, which every
    sandbox shares, so one sandbox could use up the others' budget; the cgroup caps each
    sandbox on its own. `jailed`: the child is bubblewrap, which SIGINT would kill (and its
    sandbox with it, --die-with-parent): it ignores SIGINT, which our init resets.

    It runs in the forked child before exec. The order matters: joining a cgroup
    needs root, and the limits are set while we still may; the parent-death signal
    comes last because changing uid clears it. It fires when the *thread* that
    forked exits: ours is the emulator's event-loop thread, which lives as long as it.
    """
    memory_mb = settings.memory_mb if memory else None
    fsize = settings.file_size_mb
    nproc = settings.max_processes if cgroup is None else None
    procs = cgroup.procs_files if cgroup is not None else []
    libc = _libc() if hasattr(os, "getppid") else None
    parent = os.getpid()

    def apply() -> None:  # pragma: no cover - runs in the forked child
        for path in procs:
            with contextlib.suppress(OSError), open(path, "w") as fh:
                fh.write("0")
        if memory_mb:
            _set(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
        if cpu_seconds:  # soft only: a background job lifts it (`ulimit -t unlimited`)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, resource.RLIM_INFINITY))
        if fsize:
            _set(resource.RLIMIT_FSIZE, fsize * 1024 * 1024)
        if nproc:
            _set(resource.RLIMIT_NPROC, nproc)
        _set(resource.RLIMIT_CORE, 0)
        if jailed:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        if libc is not None and sys.platform.startswith("linux"):
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the emulator died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

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
        log.warning("uid %s cannot run %s (it must read the interpreter)", uid, executable)
    return uid if ok else None


# PID 1 of a sandboxed child's own PID namespace: `python -I -S -c _INIT STATUS_FD LINGER
# UID CWD FILTER ARGV...`. It starts ARGV, reaps every orphan (a PID 1 must), and writes ARGV's
# exit code to STATUS_FD (-1: none). Without LINGER it exits with ARGV, which kills the
# namespace; with it (commands) it stays while background jobs (`nohup job &`) run, as in
# a sandbox. In a jail that joined its sandbox's namespaces (`_holder.py`) it is not PID 1:
# a command's orphans go to the holder, PID 1 there, and outlive the command, so the init
# ends with the shell. Sandboxed code sees this text in its command line, hence no comments
# inside. With UID >= 0 (the bubblewrap jail, `_jail.py`) it empties the capability
# bounding set (PR_CAPBSET_DROP, 24, for every capability), becomes UID unless it is that
# uid already (a user namespace), clears the ambient set (PR_CAP_AMBIENT, 47, CLEAR_ALL,
# 4) and the permitted, effective and inheritable sets (capset), and checks the bounding
# set is empty (PR_CAPBSET_READ, 23): the jail kept only the capabilities this needs.
# Otherwise it drops CAP_SYS_ADMIN (21) from the bounding set so root code can neither
# unmount this /proc (the host's is under it) nor mount another. Then it sets
# PR_SET_PDEATHSIG (1) again (`unshare --setuid` and setuid clear it), enters CWD ("-":
# stay) as UID, since a jail's workspace is not root's to enter (no CAP_DAC_OVERRIDE), and
# ignores SIGINT itself (not PID 1 in a sandbox's shared PID namespace, it would die of
# it) while ARGV gets SIG_DFL, so jupyter_client's interrupt reaches only the kernel.
# Last, with NO_NEW_PRIVS (PR_SET_NO_NEW_PRIVS, 38), it loads FILTER ("-": none), the
# seccomp program refusing nested user namespaces (`_seccomp.py`; PR_SET_SECCOMP, 22,
# SECCOMP_MODE_FILTER, 2), which ARGV and all it starts inherit.
_INIT = """\
import ctypes, os, signal, sys
libc = ctypes.CDLL(None)
fd, linger, uid, cwd = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4]
argv = sys.argv[6:]
if uid >= 0:
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)
    if os.getuid() != uid:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    libc.prctl(47, 4, 0, 0, 0)
    if libc.capset(header, data) != 0 or any(libc.prctl(23, c, 0, 0, 0) == 1 for c in range(64)):
        sys.exit("init: could not drop every capability")
else:
    libc.prctl(24, 21, 0, 0, 0)
libc.prctl(1, signal.SIGKILL, 0, 0, 0)
if cwd != "-":
    os.chdir(cwd)
signal.signal(signal.SIGINT, signal.SIG_IGN)
if fd >= 0:
    os.set_inheritable(fd, False)
if sys.argv[5] != "-":
    prog = bytes.fromhex(sys.argv[5])
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    libc.prctl(38, 1, 0, 0, 0)
    if libc.prctl(22, 2, ctypes.byref(Prog(len(prog) // 8, prog)), 0, 0) != 0:
        sys.exit("init: could not load the seccomp filter")
reset = (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ)
main = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=reset)
code = 1
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == main:
        code = os.waitstatus_to_exitcode(status)
        if fd >= 0:
            os.write(fd, b"%d\\n" % code)
            os.close(fd)
            fd = -1
        if not linger:
            break
os._exit(code if code >= 0 else 128 - code)
"""


def init_argv(
    python: str, *, status_fd: int = -1, linger: bool = False, uid: int = -1, cwd: str = "-"
) -> list[str]:
    """The command line of our init (`_INIT`), to which the program's argv is appended."""
    flag = "1" if linger else "0"
    seccomp = userns_filter() or "-"
    return [python, "-I", "-S", "-c", _INIT, str(status_fd), flag, str(uid), cwd, seccomp]


def _unshare(no_network: bool, uid: int | None) -> list[str]:
    tool = shutil.which("unshare") or "unshare"
    argv = [tool, "--pid", "--fork", "--mount-proc", "--kill-child"]
    if no_network:
        argv.append("--net")
    if uid is not None:  # unshare needs root; it drops to the sandbox uid in the namespace
        argv += [f"--setgid={uid}", f"--setuid={uid}"]
    return argv


def sandbox_argv(
    settings: EmulatorSettings,
    argv: list[str],
    *,
    python: str,
    pid_namespace: bool,
    uid: int | None = None,
    status_fd: int = -1,
    linger: bool = False,
    own_net: bool | None = None,
) -> list[str]:
    """`argv` wrapped for its sandbox: own PID namespace (+ init), or `unshare -n`, or as is.

    With `pid_namespace`, `uid` is dropped to by unshare (so the preexec must not drop
    it) and `status_fd`, if given, receives the exit code of `argv` as a line. `own_net`:
    a network namespace of its own, loopback only (None: `settings.no_network`).
    """
    if own_net is None:
        own_net = settings.no_network
    if pid_namespace:
        init = init_argv(python, status_fd=status_fd, linger=linger)
        return [*_unshare(own_net, uid), "--", *init, *argv]
    if own_net:
        tool = shutil.which("unshare")
        if tool is None:
            raise RuntimeError("no_network needs the `unshare` tool (util-linux) on PATH")
        return [tool, "-n", "--", *argv]
    return argv


@functools.lru_cache(maxsize=8)
def pid_namespace_works(python: str) -> bool:
    """Probe once: can children run as PID 2 of their own PID namespace, under our init?"""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        reason = "no `unshare` tool (util-linux) on PATH"
    else:
        check = "import os, sys; sys.exit(os.getpid() != 2 or os.getppid() != 1)"
        init = init_argv(python)
        probe = [*_unshare(False, None), "--", *init, python, "-I", "-S", "-c", check]
        try:
            done = subprocess.run(probe, capture_output=True, timeout=30, check=False, cwd="/")
        except (OSError, subprocess.SubprocessError) as exc:
            reason = str(exc)
        else:
            if done.returncode == 0:
                return True
            reason = done.stderr.decode("utf-8", "replace").strip()[-300:] or "it failed"
    log.warning(
        "no PID namespace for sandboxed code (%s): it shares the server's /proc, so it "
        "can read /proc/<pid>/environ and cmdline of processes of its uid (run as root "
        "with util-linux `unshare`, or keep secrets out of the server's environment)",
        reason,
    )
    return False


def _is_zombie(pid: int) -> bool:
    return not is_running(pid)


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
        fields = stat_fields(name)  # state, ppid, pgrp, ...
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
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


# ---------------------------------------------------------------- what a dead emulator left

_STALE = re.compile(r"^agentrun-local-(\d+)(?:\.(\d+))?-")


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with the pid, it names one process."""
    return start_time(pid)


def instance_name() -> str:
    """`agentrun-local-<pid>.<start time>`: the prefix of our temp dir and cgroup names.

    A pid alone can be reused after the emulator dies; pid and start time cannot, so
    `sweep_stale` never mistakes a live emulator for a dead one.
    """
    pid = os.getpid()
    return f"agentrun-local-{pid}.{_start_time(pid) or 0}"


def _is_stale(name: str) -> bool:
    match = _STALE.match(name)
    if match is None:
        return False
    pid = int(match.group(1))
    if match.group(2) is None:  # an older emulator's name: the pid alone must do
        return not os.path.exists(f"/proc/{pid}")
    return _start_time(pid) != int(match.group(2))


def _processes_under(bases: list[str]) -> list[int]:
    """Live pids whose HOME or working directory lies in one of the dead emulators' dirs."""
    homes = [b"HOME=" + base.encode() + b"/" for base in bases]
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid() or _is_zombie(int(name)):
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if any(cwd.startswith(base + "/") or cwd == base for base in bases) or any(
            home in env for home in homes
        ):
            found.append(int(name))
    return found


def sweep_stale(tmp: str) -> list[str]:
    """Remove what emulators that died without cleaning up left: processes, cgroups, dirs.

    Their processes are found by the pids cgroup and, without one, by a HOME or
    working directory inside their temporary directory (every child gets one there).
    Returns the paths removed. Never raises: whatever another emulator left behind,
    hostile or not, must not stop this one from starting.
    """
    removed: list[str] = []
    try:
        _sweep(tmp, removed)
    except Exception:  # someone else's leftovers never stop a start
        log.warning("could not sweep what dead emulators left in %s", tmp, exc_info=True)
    if removed:
        log.info("removed what a dead emulator left: %s", ", ".join(removed))
    return removed


def _sweep(tmp: str, removed: list[str]) -> None:
    try:
        bases = [os.path.join(tmp, n) for n in os.listdir(tmp) if _is_stale(n)]
    except OSError:
        bases = []
    if bases:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            pids = _processes_under(bases)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
    for place in (
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/freezer",
    ):
        frozen = place.endswith("/freezer")  # thawed before the kill (see remove)
        try:
            names = [n for n in os.listdir(place) if _is_stale(n)]
        except OSError:
            continue
        for name in names:
            path = os.path.join(place, name)
            with contextlib.suppress(OSError):
                for sub in [e.path for e in os.scandir(path) if e.is_dir()]:
                    PidsCgroup(sub, freezer=sub if frozen else None).remove()
            PidsCgroup(path, freezer=path if frozen else None).remove()
            if not os.path.exists(path):
                removed.append(path)
    for base in bases:
        if remove_tree(base):
            removed.append(base)
        else:
            log.warning("could not remove %s, left by a dead emulator", base)
