"""Local discovery: the registry of this user's running local emulators.

Every `LocalEmulator` (a script's or the MCP server's in-process one, `agentrun-ci local
serve`) writes one JSON file while it serves: its pid and start time, its endpoints, its
key pair, what kind of program runs it. `agentrun-ci sessions list`, `interpreters list`,
`sessions stop|kill` and `run` read them, so one command sees and reaches what every
local emulator of the user runs.

Where: `$AGENTRUN_LOCAL_REGISTRY` (a directory, or `off` for no registry at all), else
`$XDG_RUNTIME_DIR/agentrun-ci/emulators` (a per-user tmpfs, emptied at logout and at
boot), else `~/.cache/agentrun-ci/emulators`. The directory is the user's, mode 0700
(made so, or refused when someone else owns it); each file is 0600, written under a
temporary name and renamed, so a reader never sees half of one.

An entry names one process: pid, start time (clock ticks since boot) and boot id, so a
pid reused by another process is not mistaken for the emulator. The emulator removes its
file when it stops; a file whose process is gone (killed, crashed) is skipped and removed
by whoever reads it next.

The key pair is the emulator's own defence against the code it runs (sandboxed code may
share the loopback): it is written only where that code cannot read the file, which is
when sandboxes run in the jail (no host home, no `/run`) or as another uid. An emulator
whose sandboxes run as this user without the jail registers without it: it is listed,
but not reached.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._config import Config
from ._procfs import is_running, start_time

__all__ = [
    "ENV",
    "Entry",
    "Registration",
    "is_alive",
    "live_entries",
    "program_label",
    "register",
    "registry_dir",
]

log = logging.getLogger("agentrun_ci.discovery")

#: the variable naming the registry directory (or `off`)
ENV = "AGENTRUN_LOCAL_REGISTRY"
_VERSION = 1
KINDS = ("embedded", "serve", "mcp")


@attrs.frozen(kw_only=True)
class Entry:
    """One running emulator, as its registry file says."""

    pid: int
    start_time: int | None
    boot_id: str | None
    pid_namespace: str | None
    kind: str
    label: str
    url: str
    account_id: str = "local"
    access_key_id: str | None = attrs.field(default=None, repr=False)
    access_key_secret: str | None = attrs.field(default=None, repr=False)
    withheld: bool = False
    """True when the emulator has a key pair but did not write it here (its sandboxes
    run as this user without the jail, so their code could read this file)."""
    started: float = 0.0
    path: Path | None = attrs.field(default=None, eq=False)

    @property
    def config(self) -> Config:
        """A Config that reaches this emulator (unsigned when it has no key pair here)."""
        return Config(
            access_key_id=self.access_key_id,
            access_key_secret=self.access_key_secret,
            account_id=self.account_id,
            control_endpoint=self.url,
            data_endpoint=self.url,
        )

    @property
    def reachable(self) -> bool:
        """Can a client reach it: unsigned, or with the key pair written here."""
        return not self.withheld

    def describe(self) -> str:
        """`pid 123 agentrun-ci-mcp (mcp) http://127.0.0.1:4567`: which emulator."""
        return f"pid {self.pid} {self.label} ({self.kind}) {self.url}"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "pid": self.pid,
            "startTime": self.start_time,
            "bootId": self.boot_id,
            "pidNamespace": self.pid_namespace,
            "kind": self.kind,
            "label": self.label,
            "url": self.url,
            "accountId": self.account_id,
            "accessKeyId": self.access_key_id,
            "accessKeySecret": self.access_key_secret,
            "withheld": self.withheld,
            "started": self.started,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Path | None = None) -> Entry | None:
        """The entry, or None when `data` is not one (another version, a damaged file)."""
        try:
            pid, url = data["pid"], data["url"]
            if not isinstance(pid, int) or pid <= 0 or not isinstance(url, str):
                return None
            started = data.get("startTime")
            return cls(
                pid=pid,
                start_time=started if isinstance(started, int) else None,
                boot_id=_text(data.get("bootId")),
                pid_namespace=_text(data.get("pidNamespace")),
                kind=_text(data.get("kind")) or "embedded",
                label=_text(data.get("label")) or "?",
                url=url,
                account_id=_text(data.get("accountId")) or "local",
                access_key_id=_text(data.get("accessKeyId")),
                access_key_secret=_text(data.get("accessKeySecret")),
                withheld=data.get("withheld") is True,
                started=float(data.get("started") or 0.0),
                path=path,
            )
        except (KeyError, TypeError, ValueError):
            return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------- where


def registry_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The registry directory (not created here), or None when `AGENTRUN_LOCAL_REGISTRY=off`."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(ENV, "").strip()
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(os.path.expanduser(chosen))
    return state_base(environ) / "emulators"


def state_base(environ: Mapping[str, str] | None = None) -> Path:
    """This user's directory for agentrun-ci's machine state (not created here):
    `$XDG_RUNTIME_DIR/agentrun-ci` where that runtime directory is ours, else
    `~/.cache/agentrun-ci`."""
    environ = os.environ if environ is None else environ
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _mine(runtime):
        return Path(runtime) / "agentrun-ci"
    return Path(os.path.expanduser("~")) / ".cache" / "agentrun-ci"


def _mine(path: str) -> bool:
    """Is `path` a directory of this user's (not, say, the runtime directory of the user
    who ran `sudo`)?"""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and (
        not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
    )


def _private_dir(path: Path) -> Path:
    """`path`, made if missing, checked to be this user's directory, and mode 0700.

    Raises OSError naming the problem when it is a link, not a directory, or someone
    else's (then nothing is written there or believed from there)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{path} is not a directory: remove it, or set {ENV} to another place")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise OSError(
            f"{path} belongs to uid {info.st_uid}, not to you: set {ENV} to a directory of your own"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


# ---------------------------------------------------------------- which process


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_alive(entry: Entry) -> bool | None:
    """Is the entry's process still running: True, False (gone, or its pid now names
    another process), or None when this process cannot tell (another pid namespace)."""
    boot = _boot_id()
    if entry.boot_id and boot and entry.boot_id != boot:
        return False  # written before this boot (~/.cache outlives it)
    if entry.pid_namespace and entry.pid_namespace != _pid_namespace():
        return None  # its pid means another process here
    if entry.start_time is not None:
        return is_running(entry.pid) and start_time(entry.pid) == entry.start_time
    try:  # no /proc (macOS): the pid alone
        os.kill(entry.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def program_label() -> str:
    """What runs the emulator, for a person reading the list: the program's name and,
    for `python -m pkg`, the module. Never its arguments (they may hold a secret)."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if len(argv) >= 3 and argv[1] == "-m":
        return f"python -m {argv[2]}"
    first = sys.argv[0] if sys.argv else ""
    if first in ("", "-c"):
        return "python -c" if first == "-c" else "python"
    name = os.path.basename(first)
    if name == "__main__.py":
        return f"python -m {os.path.basename(os.path.dirname(os.path.abspath(first)))}"
    return name


def program_kind() -> str:
    """`mcp` in an MCP server's process, else `embedded` (serve says `serve` itself)."""
    return "mcp" if "agentrun_ci_mcp.state" in sys.modules else "embedded"


# ---------------------------------------------------------------- writing


class Registration:
    """One emulator's registry file, removed by `remove()` (idempotent)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"Registration({str(self.path)!r})"

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def register(
    *,
    url: str,
    kind: str,
    access_key_id: str | None,
    access_key_secret: str | None,
    withhold: bool,
    environ: Mapping[str, str] | None = None,
) -> Registration | None:
    """Write this process's emulator at `url` into the registry; None when the registry
    is off or cannot be written (said once in the log: the emulator serves regardless)."""
    where = registry_dir(environ)
    if where is None:
        return None
    pid = os.getpid()
    signed = bool(access_key_id and access_key_secret)
    entry = Entry(
        pid=pid,
        start_time=start_time(pid),
        boot_id=_boot_id(),
        pid_namespace=_pid_namespace(),
        kind=kind,
        label=program_label(),
        url=url,
        access_key_id=None if withhold else access_key_id,
        access_key_secret=None if withhold else access_key_secret,
        withheld=withhold and signed,
        started=time.time(),
    )
    name = f"{pid}-{secrets.token_hex(4)}.json"
    try:
        directory = _private_dir(where)
        prune(directory)
        _write(directory, name, json.dumps(entry.to_json()).encode())
    except OSError as exc:
        log.warning("could not register this emulator in %s: %s", where, exc)
        return None
    return Registration(directory / name)


def _write(directory: Path, name: str, body: bytes) -> None:
    """`body` as `directory/name`, mode 0600, whole or not at all."""
    temporary = directory / f".{name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(body)
        os.replace(temporary, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------- reading


def _load(path: Path) -> Entry | None:
    """The entry in `path` if it is a regular file of ours (not followed if a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            return None
        try:
            data = json.loads(fh.read(1 << 16))
        except ValueError:
            return None
    return Entry.from_json(data, path) if isinstance(data, dict) else None


def prune(directory: Path) -> list[Entry]:
    """The live entries in `directory`, oldest first; remove those whose process is gone."""
    found: list[Entry] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        entry = _load(directory / name)
        if entry is None:
            continue
        alive = is_alive(entry)
        if alive is False:
            with contextlib.suppress(OSError):
                os.unlink(directory / name)
        elif alive:
            found.append(entry)
    found.sort(key=lambda e: e.started)
    return found


def live_entries(environ: Mapping[str, str] | None = None) -> list[Entry]:
    """Every running emulator of this user, oldest first (stale entries removed); [] when
    the registry is off, missing or not private to this user (the last one logged)."""
    where = registry_dir(environ)
    if where is None or not where.exists():
        return []
    try:
        return prune(_private_dir(where))
    except OSError as exc:
        log.warning("not reading the emulator registry: %s", exc)
        return []
