"""The jail: every kernel and command of a sandbox runs inside bubblewrap (`bwrap`).

What a sandboxed process sees (the same for every kernel and command of one sandbox):

    /home/user      the sandbox's workspace, read-write: the file API's /home/user
    /tmp            the sandbox's own temporary directory, read-write; `pip install`
                    goes to /tmp/.local (PIP_PREFIX), which is on PYTHONPATH and PATH
    /usr /etc ...   the host's system directories, read-only; /etc/shadow, /etc/gshadow,
                    /etc/ssh and /etc/ssl/private are hidden
    <interpreters>  the kernel's python (venv and base install) and node, read-only, at
                    their host paths, so `python` and `pip` are the kernel's interpreter
    /opt/agentrun   read-only: the `pip` command and the javascript REPL
    /run/agentrun   kernels only: that kernel's own connection file and sockets
    /proc /dev      the sandbox's /proc (its PID namespace; /proc/sys read-only), a
                    minimal /dev
    /root /home     empty: no host home directory, no other sandbox, no server state

A sandbox has one PID, IPC, UTS and network namespace (`_network.py`), owned by its
namespace holder (`holder_argv`, `_holder.py`), as a cloud sandbox is one container: every
kernel and command of the sandbox enters them (`nsenter`, then bwrap, which binds the
holder's /proc), so they see each other's processes and a command's background jobs
outlive it. Each process still gets a mount namespace of its own (and a cgroup namespace
where the kernel has them). Without a holder (no `nsenter`) each process gets its own PID,
IPC and UTS namespaces instead, with our init (`_limits._INIT`) as PID 1.
Identity: as root, bwrap runs privileged but keeps only CAP_SETUID, CAP_SETGID and
CAP_SETPCAP, which our init (the jail's first process) uses, before it starts anything, to
empty the capability bounding set and become `sandbox_uid`. Not root (or root with
`sandbox_uid=None`), bwrap makes a user namespace and the program runs as uid 1000 inside
it; our init empties the bounding set there too (CAP_SETPCAP). Either way the program runs
with no capability at all and NO_NEW_PRIVS set, and /proc/sys is read-only (bwrap covers it
only when privileged: in root's user namespace the sandbox is root outside). Nor can it
make a user namespace of its own (`unshare -Ur`, root there): our init loads a seccomp
filter that refuses them (`_seccomp.py`), in both jails. The server
keeps every kernel's connection file in its own runtime directory, which no jail mounts.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .._wire import DEFAULT_CWD
from ._memo import machine_memo
from ._mounts import BindMount

__all__ = [
    "JAIL_HOME",
    "JAIL_INSIDE_UID",
    "JAIL_PRIVATE",
    "JAIL_TOOLS",
    "Interpreter",
    "Jail",
    "find_jail",
    "interpreter_info",
    "write_tools",
]

log = logging.getLogger("agentrun_ci.local")

#: the sandbox's home is mounted where the API says it is, so paths agree inside and out
JAIL_HOME = DEFAULT_CWD
JAIL_TMP = "/tmp"  # noqa: S108 - the path inside the jail, a private per-sandbox directory
JAIL_PRIVATE = "/run/agentrun"
JAIL_TOOLS = "/opt/agentrun"
_VAR_TMP = "/var/tmp"  # noqa: S108 - inside the jail: a tmpfs of its own
#: where `pip install` puts packages inside the jail (PIP_PREFIX)
PIP_PREFIX = "/tmp/.local"  # noqa: S108 - inside the jail
JAIL_INSIDE_UID = 1000  # unprivileged runs: the uid inside the user namespace
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_HIDDEN_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")
_HIDDEN_DIRS = ("/etc/ssh", "/etc/ssl/private")
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_CPU_INFO = "/sys/devices/system/cpu"  # os.cpu_count, numpy and BLAS read it

# `pip`: the kernel's interpreter's pip (`python` is the kernel's: first on PATH). Where
# that interpreter has no pip of its own (uv venvs, uvx), PYTHONPATH ends with the pip
# wheel its ensurepip bundles (`Interpreter.pip_wheel`), so `python -m pip` and `%pip` work.
_PIP = """#!/bin/sh
exec python -m pip "$@"
"""

# `sudo`: a sandbox has one user and no way to gain privileges (no capabilities, NO_NEW_PRIVS),
# so E2B-style `sudo cmd` runs cmd as that user and says so; what needs root then fails on
# its own ("permission denied") instead of on a missing sudo.
_SUDO = """#!/bin/sh
while [ $# -gt 0 ]; do
    case "$1" in
        -u|-g|-p|-C|-h|-U) shift 2 ;;
        --) shift; break ;;
        -*) shift ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: sudo command [args]" >&2; exit 1; }
if [ "$(id -u)" != 0 ] && [ -z "${AGENTRUN_SUDO_QUIET:-}" ]; then
    echo "sudo: this sandbox cannot gain root; running as $(id -un 2>/dev/null || id -u)" >&2
fi
exec "$@"
"""

# The namespace holder's PID 1 (`Jail.holder_argv`): `sleep` with SIGCHLD ignored.
# It writes a byte to READY first: bwrap says PID 1's pid (--info-fd) before PID 1 has
# built its mount namespace, which a jail entering it then would find half made.
_HOLD = (
    "import os, signal; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
    "os.write({ready}, b'1'); os.close({ready}); os.execv({sleep!r}, ['sleep', 'infinity'])"
)

# Asked of the kernel's interpreter once per process (`interpreter_info`).
_PROBE = """
import glob, json, os, sys
try:
    import pip
    has_pip = True
except ImportError:
    has_pip = False
wheels = []
try:
    import ensurepip
    bundled = os.path.join(os.path.dirname(ensurepip.__file__), "_bundled")
    wheels = sorted(glob.glob(os.path.join(bundled, "pip-*.whl")))
except ImportError:
    pass
print(json.dumps({
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "version": "python%d.%d" % sys.version_info[:2],
    "pip": has_pip,
    "wheel": wheels[-1] if wheels else None,
}))
"""


@attrs.frozen
class Interpreter:
    """What the sandboxes' PATH and PYTHONPATH need to know of the kernel's interpreter."""

    executable: str
    #: "python3.12": the site-packages directory name under PIP_PREFIX
    version: str
    #: does it have pip of its own?
    has_pip: bool
    #: ensurepip's bundled pip wheel, put on PYTHONPATH where it has no pip (else None)
    pip_wheel: str | None
    #: sys.prefix and sys.base_prefix (a venv and its base install); empty if unknown
    prefixes: tuple[str, ...] = ()

    @property
    def bin_dir(self) -> str:
        """Its bin directory (a venv's, not resolved through the symlink)."""
        return os.path.dirname(os.path.abspath(self.executable))

    def pythonpath(self, prefix: str) -> str:
        """PYTHONPATH for packages `pip install` put under `prefix`, and pip if missing."""
        paths = [f"{prefix}/lib/{self.version}/site-packages"]
        if not self.has_pip and self.pip_wheel is not None:
            paths.append(self.pip_wheel)
        return os.pathsep.join(paths)


@functools.lru_cache(maxsize=8)
def interpreter_info(python: str) -> Interpreter:
    """Ask the kernel's interpreter its version and where its pip is (once per process)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found: dict[str, Any] = {"version": version, "pip": True, "wheel": None}
    # what it answered before, while it and its environment's packages are unchanged
    root = Path(python).parent.parent
    files = (python, str(root / "pyvenv.cfg"), *map(str, root.glob("lib/python*/site-packages")))
    memo = machine_memo()
    answered = memo.recall("interpreter", python, files)
    if isinstance(answered, dict):
        found.update(answered)
    else:
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            probe = subprocess.run(
                [python, "-I", "-c", _PROBE],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            answer = json.loads(probe.stdout)
            found.update(answer)
            memo.keep("interpreter", python, files, answer)
    if not found["pip"] and not found["wheel"]:
        log.warning(
            "%s has no pip and no ensurepip: `pip` in local sandboxes will fail; install pip "
            "into that environment (`uv pip install --python %s pip`)",
            python,
            python,
        )
    wheel = found["wheel"]
    prefixes = tuple(str(found[k]) for k in ("prefix", "base_prefix") if found.get(k))
    return Interpreter(
        python, str(found["version"]), bool(found["pip"]), str(wheel) if wheel else None, prefixes
    )


def _prefix_of(executable: str) -> list[str]:
    """The install prefixes an interpreter needs outside the system dirs."""
    real = Path(os.path.realpath(executable))
    return [str(real.parent.parent)]


@attrs.frozen
class Jail:
    """How to wrap a program in bubblewrap; one per emulator, used for every sandbox."""

    tool: str
    #: the uid the program runs as: `sandbox_uid` (root) or 1000 in a user namespace
    uid: int
    #: True: bwrap runs as root and our init drops to `uid`; False: a user namespace
    privileged: bool
    #: host paths bound read-only at the same path (interpreters outside /usr)
    extra: tuple[str, ...] = ()
    tools: str = ""
    #: util-linux `nsenter` and coreutils `sleep`: the per-sandbox namespace holder and
    #: the jails joining it ("": none, each jail has namespaces of its own)
    nsenter: str = ""
    sleep: str = ""
    #: a resolv.conf naming the uplink's DNS forwarder (`_network.resolv_conf`), bound over
    #: the host's in every jail; "": the host's
    resolv: str = ""

    @property
    def shares_namespaces(self) -> bool:
        """Do a sandbox's kernels and commands share its PID namespace (a holder)?"""
        return bool(self.nsenter and self.sleep)

    @property
    def description(self) -> str:
        who = f"uid {self.uid}" if self.privileged else f"uid {self.uid} in a user namespace"
        return f"bubblewrap jail ({who})"

    def argv(
        self,
        argv: Sequence[str],
        *,
        init: Sequence[str],
        home: Path,
        tmp: Path,
        own_net: bool,
        private: Path | None = None,
        holder: int | None = None,
        mounts: Sequence[BindMount] = (),
    ) -> list[str]:
        """`init + argv` in a jail whose /home/user is `home` and /tmp is `tmp` (the init
        enters the working directory: see `_limits.init_argv`). `holder`: the host pid of
        the PID 1 of the sandbox's namespaces (`holder_argv`), which the jail joins; None:
        a PID (IPC, UTS, and with `own_net` network) namespace of its own. `own_net`: the
        sandbox has a network namespace of its own (the holder's), else the host's."""
        if holder is None:
            out = [self.tool, "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
            out += ["--unshare-cgroup-try", "--hostname", "sandbox", "--as-pid-1"]
            if own_net:
                out.append("--unshare-net")
        else:
            # Into the sandbox's namespaces (`holder_argv`): nsenter forks bwrap into its
            # PID namespace; its mount namespace has the host's files and the sandbox's
            # /proc, which this jail binds instead of mounting one of its own.
            out = [self.nsenter, f"--target={holder}", "--pid", "--mount", "--ipc", "--uts"]
            if own_net:
                out.append("--net")
            if not self.privileged:  # the holder's user namespace owns the others
                out += ["--user", "--preserve-credentials"]
            out += ["--", self.tool, "--unshare-cgroup-try"]
        out += ["--die-with-parent"]
        # Kept only for our init (PID 1) to empty the bounding set (and, privileged, become
        # `uid`) before it starts the program, which gets none (see _limits._INIT).
        out += ["--cap-drop", "ALL", "--cap-add", "CAP_SETPCAP"]
        if self.privileged:
            out += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            out += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.uid)]
        for path in _SYSTEM:
            if os.path.islink(path):
                out += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                out += ["--ro-bind", path, path]
        for path in _HIDDEN_FILES:
            if os.path.exists(path):
                out += ["--ro-bind", os.devnull, path]
        for path in _HIDDEN_DIRS:
            if os.path.isdir(path):
                out += ["--tmpfs", path]
        if os.path.isdir(_CPU_INFO):
            out += ["--ro-bind", _CPU_INFO, _CPU_INFO]
        if holder is None:
            out += ["--proc", "/proc"]
        else:  # the sandbox's own /proc, mounted by the holder (rw: /proc/self/...)
            out += ["--bind", "/proc", "/proc"]
        out += ["--dev", "/dev", "--tmpfs", "/run"]
        # bwrap makes /proc/sys read-only only when it runs privileged; in a user namespace
        # of root (sandbox_uid=None) the sandbox's uid is root outside and could write it
        out += ["--ro-bind", "/proc/sys", "/proc/sys"]
        out += ["--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger"]
        out += ["--perms", "0755", "--dir", "/root", "--perms", "0755", "--dir", "/home"]
        out += ["--bind", str(home), JAIL_HOME, "--bind", str(tmp), JAIL_TMP]
        out += ["--perms", "0755", "--dir", "/var", "--perms", "1777", "--tmpfs", _VAR_TMP]
        if self.tools:
            out += ["--perms", "0755", "--dir", "/opt", "--ro-bind", self.tools, JAIL_TOOLS]
        if private is not None:
            out += ["--bind", str(private), JAIL_PRIVATE]
        # The interpreter's directories last: one under /tmp (a venv in a clone there) must
        # sit on top of the private /tmp, not be hidden by it.
        made = {"/root", "/home", JAIL_HOME, JAIL_TMP, "/var", _VAR_TMP, "/run", "/opt"}
        if self.resolv:
            out += _resolv_bind(self.resolv, made)
        for path in self.extra:
            out += _parents(path, made)
            out += ["--ro-bind", path, path]
        # The storage mounts (`_mounts.py`), parents before children: a host directory
        # each, at a directory bwrap makes (below /home/user: in the sandbox's workspace).
        for mount in sorted(mounts, key=lambda m: m.target):
            out += _parents(mount.target, made)
            out += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), mount.target]
        out += ["--remount-ro", "/", "--chdir", "/", "--", *init, *argv]
        return out

    def holder_argv(
        self, home: Path, *, python: str, info_fd: int, ready_fd: int, own_net: bool
    ) -> list[str]:
        """The sandbox's namespace holder: a process that only waits, as PID 1 of the
        sandbox's PID namespace (inheriting the orphans of every command), in its own IPC,
        UTS (and, with `own_net`, network: only `lo` until an uplink joins) namespaces,
        and, unprivileged, the user namespace that owns them. Its mount namespace sees the
        host's files (the jails that join it bind what they show from there) and the
        sandbox's /proc. It keeps no capability; killing it ends every process of the
        sandbox. bwrap writes PID 1's host pid to `info_fd` (JSON, "child-pid"); a byte on
        `ready_fd` says PID 1 runs, with its namespaces complete."""
        out = [self.tool, "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        out += ["--hostname", "sandbox", "--die-with-parent", "--info-fd", str(info_fd)]
        if own_net:
            out.append("--unshare-net")
        if not self.privileged:
            out += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.uid)]
        out += ["--cap-drop", "ALL", "--bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
        # in the sandbox's directory (the start-up sweep finds a dead emulator's there;
        # without capabilities root may not enter the sandbox uid's home)
        # PID 1 is `sleep` itself, with SIGCHLD ignored: the kernel reaps the orphans it
        # inherits at once, and code in the sandbox cannot signal it (a PID namespace's
        # init gets no signal it has no handler for from inside), while bwrap's own PID 1
        # would leave its child, which the sandbox's uid may kill, unprotected. (`python`
        # sets SIG_IGN, which exec keeps; dash's `trap '' CHLD` does not.)
        wait = _HOLD.format(sleep=self.sleep, ready=ready_fd)
        out += ["--as-pid-1", "--chdir", str(home.parent), "--", python, "-I", "-S", "-c", wait]
        return out

    def path_env(self) -> str:
        """PATH inside after the kernel's interpreter's directories: the system's."""
        return os.pathsep.join(_SYSTEM_PATH)

    def exists(self, path: str, home: Path, tmp: Path) -> bool:
        """Is `path` (as the jail sees it) an existing directory inside the jail?"""
        norm = os.path.normpath(path)
        if not norm.startswith("/") or norm.startswith("//"):
            return False
        for inside, host in ((JAIL_HOME, home), (JAIL_TMP, tmp)):
            if norm == inside or norm.startswith(inside + "/"):
                rel = norm[len(inside) :].lstrip("/")
                target = (host / rel).resolve()
                inside_host = target == host.resolve() or host.resolve() in target.parents
                return target.is_dir() and inside_host
        if norm in ("/", "/root", "/home", "/proc", "/dev", "/run", "/var", _VAR_TMP):
            return True
        if norm == JAIL_TOOLS and self.tools:
            return True
        roots = [p for p in (*_SYSTEM, *self.extra) if not os.path.islink(p)]
        if any(norm == r or norm.startswith(r + "/") for r in roots):
            hidden = any(norm == d or norm.startswith(d + "/") for d in _HIDDEN_DIRS)
            return not hidden and os.path.isdir(norm)
        return False


def _parents(path: str, made: set[str]) -> list[str]:
    """`--dir` for each missing ancestor of a mount point, world-traversable (bwrap's own
    are 0700, which the sandbox uid could not traverse)."""
    out: list[str] = []
    parts = Path(path).parts[1:-1]
    current = ""
    for part in parts:
        current += "/" + part
        if current in made or any(current == s or current.startswith(s + "/") for s in _SYSTEM):
            continue
        made.add(current)
        out += ["--perms", "0755", "--dir", current]
    return out


def _resolv_bind(source: str, made: set[str], host: str = "/etc/resolv.conf") -> list[str]:
    """Bind `source` where the jail's /etc/resolv.conf (`host`) leads: the file itself, or
    the target of its symlink (systemd-resolved's lives under /run, the jail's own tmpfs)."""
    target = os.path.realpath(host)
    if not _outside_system(target) and not os.path.isfile(target):
        return []  # no resolv.conf in the host's /etc (read-only in the jail): none to cover
    return [*_parents(target, made), "--ro-bind", source, target]


def write_tools(directory: Path) -> str:
    """The read-only /opt/agentrun of every jail: `pip`, `pip3`, `sudo`, the javascript REPL."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("pip", _PIP), ("pip3", _PIP), ("sudo", _SUDO)):
        script = bin_dir / name
        script.write_text(text, encoding="utf-8")
        script.chmod(0o755)
    repl = Path(__file__).with_name("_node_repl.js")
    shutil.copyfile(repl, directory / "node_repl.js")
    (directory / "node_repl.js").chmod(0o644)
    directory.chmod(0o755)
    bin_dir.chmod(0o755)
    return str(directory)


def _outside_system(path: str) -> bool:
    return not any(path == s or path.startswith(s + "/") for s in _SYSTEM)


def _needed_paths(python: str) -> tuple[str, ...]:
    """Host paths the kernel's interpreter (and node) live in, outside the system dirs."""
    found: list[str] = []
    prefixes = interpreter_info(python).prefixes
    if not prefixes:
        raise OSError(f"{python} did not say where it is installed")
    candidates = [*prefixes, *_prefix_of(python)]
    node = shutil.which("node")
    if node is not None:
        candidates += _prefix_of(node)
    for path in candidates:
        path = os.path.realpath(path)
        if _outside_system(path) and path not in found and path != "/":
            found.append(path)
    # a venv's python is a symlink into its base install: both must be there
    return tuple(p for p in found if not any(p != q and p.startswith(q + "/") for q in found))


_MISSING = (
    "sandboxes are NOT isolated from each other or from this machine: their code can read "
    "and write whatever uid {uid} can (other sandboxes, their kernels, your files) and "
    "`/home/user` is not where their files are"
)


@functools.lru_cache(maxsize=8)
def find_jail(python: str, sandbox_uid: int | None) -> tuple[Jail | None, str]:
    """The jail this machine allows, probed once: (jail, "") or (None, why not and the fix)."""
    if not sys.platform.startswith("linux"):
        return None, (
            f"{_MISSING.format(uid=os.getuid())} (no bubblewrap on {sys.platform}; for "
            "isolation run the emulator in a Linux VM or container)"
        )
    tool = shutil.which("bwrap")
    if tool is None:
        return None, (
            f"{_MISSING.format(uid=os.getuid())} (bubblewrap is not installed; fix: "
            "`apt-get install bubblewrap`, `dnf install bubblewrap` or `apk add bubblewrap`)"
        )
    privileged = os.geteuid() == 0 and sandbox_uid is not None
    uid = sandbox_uid if privileged and sandbox_uid is not None else JAIL_INSIDE_UID
    try:
        jail = Jail(
            tool,
            uid,
            privileged,
            _needed_paths(python),
            nsenter=shutil.which("nsenter") or "",
            sleep=shutil.which("sleep") or "",
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{_MISSING.format(uid=os.getuid())} (could not ask {python}: {exc})"
    return jail, ""
