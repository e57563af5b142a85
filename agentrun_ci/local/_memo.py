"""What the jail probes found, remembered per machine and user (`probes.json`).

Each emulator start used to try bubblewrap, a namespace holder and the uplink tool
with scratch processes: most of a second on a loaded machine, before the first
kernel could start. An answer is now kept in a file private to the user and used
again while nothing it depends on has changed: the same boot, kernel release and
user, the same files (the interpreter, bubblewrap, nsenter, the uplink tool: path,
inode, size, mtime) and the same knobs the fixes point at (the user-namespace
sysctls, /dev/net/tun). Only successes are kept: a failure may be passing (a probe
that timed out on a loaded machine) and is tried again at the next start, as is
everything after the file is deleted.

The directory is `$XDG_RUNTIME_DIR/agentrun-ci` (a tmpfs emptied at each boot) or
else `~/.cache/agentrun-ci` (as the registry of local emulators, `_discovery.py`);
it is used only if it belongs to this user (and is made 0700), and probes.json only
if it is a regular file of the user's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._discovery import _private_dir, _write, state_base

log = logging.getLogger("agentrun_ci.local")

#: the knobs the probes' fixes name: part of every answer's key
_KNOBS = (
    "/proc/sys/kernel/random/boot_id",
    "/proc/sys/kernel/unprivileged_userns_clone",
    "/proc/sys/user/max_user_namespaces",
    "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
)
_DEVICES = ("/dev/net/tun",)


_machine: ProbeMemo | None = None


def machine_memo() -> ProbeMemo:
    """This process's view of what was probed on this machine (made at first use)."""
    global _machine
    if _machine is None:
        _machine = ProbeMemo(state_dir())
    return _machine


def state_dir() -> Path | None:
    """This user's private directory for agentrun-ci's machine state, made 0700 if
    needed; None where there is none we may trust (a link, or someone else's)."""
    try:
        return _private_dir(state_base())
    except OSError as exc:
        log.info("not keeping the jail probes' answers: %s", exc)
        return None


class ProbeMemo:
    """Probe answers by key, in `<dir>/probes.json`; with `directory=None`, none kept."""

    def __init__(self, directory: Path | None) -> None:
        self._file = None if directory is None else directory / "probes.json"

    def worked(self, kind: str, key: object, files: Iterable[str]) -> bool:
        """Did this probe work here, with everything it depends on as it is now?"""
        return bool(self.recall(kind, key, files) == "")

    def remember(self, kind: str, key: object, files: Iterable[str], why: str) -> None:
        """Keep a success ("" for `why`); a failure is not kept."""
        if not why:
            self.keep(kind, key, files, "")

    def recall(self, kind: str, key: object, files: Iterable[str]) -> Any:
        """The answer kept for this probe with everything as it is now, else None."""
        if self._file is None:
            return None
        entry = self._load().get(_digest(kind, key, files))
        if not isinstance(entry, dict) or "value" not in entry:
            return None
        log.debug("%s: the answer kept in %s", kind, self._file)
        return entry["value"]

    def keep(self, kind: str, key: object, files: Iterable[str], value: Any) -> None:
        """Keep `value` (JSON) as this probe's answer."""
        if self._file is None:
            return
        entries = self._load()
        entries[_digest(kind, key, files)] = {"kind": kind, "value": value, "at": time.time()}
        try:  # atomically, so a concurrent reader sees the old file or the new one
            _write(self._file.parent, self._file.name, json.dumps(entries, indent=1).encode())
        except OSError as exc:
            log.debug("could not keep a probe's answer in %s: %s", self._file, exc)

    def _load(self) -> dict[str, Any]:
        assert self._file is not None
        try:
            info = os.stat(self._file, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                return {}
            loaded = json.loads(self._file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}


def _digest(kind: str, key: object, files: Iterable[str]) -> str:
    facts: list[object] = [kind, repr(key), os.uname().release, os.geteuid()]
    for path in _KNOBS:
        try:
            facts.append(Path(path).read_text(encoding="ascii", errors="replace").strip())
        except OSError:
            facts.append(None)
    for path in (*_DEVICES, *(f for f in files if f)):
        try:
            info = os.stat(path)
        except OSError:
            facts.append([path, None])
        else:
            facts.append([path, info.st_ino, info.st_size, info.st_mtime_ns])
    return hashlib.sha256(json.dumps(facts, default=str).encode()).hexdigest()
