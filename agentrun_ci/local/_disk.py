"""A sandbox's disk: its /home/user and /tmp on one filesystem capped at the template's
`diskSize` (MB; AgentRun's default is 512).

As root each sandbox's directory holds a tmpfs of its own (`disk`, mounted on the host,
before the sandbox's namespace holder copies the host's mounts), with its workspace and
its temporary directory inside: code that writes past the cap gets ENOSPC ("No space
left on device"), the file API a 507, and nothing else on the machine fills up. A tmpfs
rather than a loop-mounted image: it needs no mkfs, loop device or disk space, is made
and removed in microseconds, and its pages exist only as written; they count against
the sandbox's memory cgroup (the template's `memory`), so a sandbox's files and its
processes together stay within its memory, and a machine holds as many full disks as its
RAM allows (24 GiB: some 40 sandboxes writing their whole 512 MB at once). Not root (no
mount) the directories are plain ones and nothing is capped (one warning says so).

Only mounts whose source is `_SOURCE` are ever unmounted (`unmount_below`): when a sandbox
goes, when the emulator closes, and by the start-up sweep of a dead emulator's directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
from pathlib import Path

__all__ = ["DEFAULT_DISK_MB", "disk_of", "home_of", "mount_disk", "resize_disk", "tmp_of"]

DEFAULT_DISK_MB = 512
_SOURCE = "agentrun-disk"
_MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 2, 4, 32
_MNT_DETACH, _UMOUNT_NOFOLLOW = 2, 8
#: one inode per 4 KiB of disk: pip's many small files fit, an inode flood does not
_BYTES_PER_INODE = 4096


def disk_of(base: Path) -> Path:
    """The mount point of a sandbox's disk inside its directory."""
    return base / "disk"


def home_of(base: Path) -> Path:
    """A sandbox's /home/user on the host."""
    return disk_of(base) / "home"


def tmp_of(base: Path) -> Path:
    """A sandbox's /tmp on the host."""
    return disk_of(base) / "tmp"


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _options(megabytes: int) -> bytes:
    inodes = max(1024, megabytes * 1024 * 1024 // _BYTES_PER_INODE)
    return f"size={megabytes}m,nr_inodes={inodes},mode=0711".encode()


def mount_disk(path: Path, megabytes: int) -> str:
    """Mount a tmpfs of `megabytes` at `path` (an existing empty directory): "" when
    done, else why not (not root, or no mount allowed here)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the emulator does not run as root, which mounting a filesystem needs"
    flags = _MS_NOSUID | _MS_NODEV
    try:
        done = _libc().mount(
            _SOURCE.encode(), os.fsencode(path), b"tmpfs", flags, _options(megabytes)
        )
    except (OSError, AttributeError) as exc:  # no libc mount (not Linux)
        return str(exc)
    if done != 0:
        code = ctypes.get_errno()
        return f"mount -t tmpfs failed: {os.strerror(code)}"
    return ""


def resize_disk(path: Path, megabytes: int) -> bool:
    """Change the cap of a mounted disk (a spare's, taken by a sandbox of some template);
    False if it is not mounted or holds more than the new size already."""
    flags = _MS_REMOUNT | _MS_NOSUID | _MS_NODEV
    try:
        done: int = _libc().mount(
            _SOURCE.encode(), os.fsencode(path), b"tmpfs", flags, _options(megabytes)
        )
    except (OSError, AttributeError):
        return False
    return done == 0


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def disks_below(path: str | os.PathLike[str]) -> list[str]:
    """Our disks mounted at or below `path` (in this mount namespace), deepest first."""
    top = os.path.realpath(path)
    found: list[str] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return found
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 2:
            continue
        point = _unescape(fields[4])
        if after[1] != _SOURCE:
            continue
        if point == top or point.startswith(top.rstrip("/") + "/"):
            found.append(point)
    return sorted(set(found), key=len, reverse=True)


def unmount_below(path: str | os.PathLike[str]) -> None:
    """Detach every disk of ours at or below `path`; never raises (root only)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    for point in disks_below(path):
        with contextlib.suppress(OSError, AttributeError):
            _libc().umount2(os.fsencode(point), _MNT_DETACH | _UMOUNT_NOFOLLOW)
