"""One uid per sandbox (root, privileged jail): nothing kept per uid is shared.

The kernel keeps some things per uid, not per namespace: the user keyrings, the
RLIMIT_NPROC count, who may signal or ptrace whom, file ownership. Sandboxes sharing one
uid share them all (one read a key another put in its user keyring). So each sandbox
leases a uid of its own from `first` .. `first + UIDS - 1` (`sandbox_uid` is `first`),
unique across every emulator on the machine: a uid is taken by holding an exclusive
`flock` on `/run/agentrun-ci/uids/<uid>` (a root-only directory), which the kernel drops
when the lease is released or its emulator dies, so a crash leaks nothing. A uid that
some live process still runs as (a dead emulator's sandbox not swept yet, or a real user)
is skipped, and a fresh lease starts with the uid's user keyrings emptied (they outlive
the uid's processes).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import platform
import subprocess
from pathlib import Path

__all__ = ["UIDS", "UidLease", "lease_uid"]

#: how many uids the sandboxes of one machine may hold at once
UIDS = 4096
_DIR = Path("/run/agentrun-ci/uids")
_KEYCTL = {"x86_64": 250, "amd64": 250, "aarch64": 219, "arm64": 219}
_KEYCTL_CLEAR = 7
_KEY_SPEC_USER_KEYRING, _KEY_SPEC_USER_SESSION_KEYRING = -4, -5


class UidLease:
    """A uid held for one sandbox until `release()` (or this process's end)."""

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self._fd = fd

    def release(self) -> None:
        """Give the uid back (closing the lock file drops the lock); idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _uids_running() -> set[int]:
    """The real uids of every live process."""
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        found.add(int(line.split()[1]))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return found


def _clear_keyrings(uid: int) -> None:
    """Empty the user and user-session keyrings of `uid` (as that uid, in a child)."""
    number = _KEYCTL.get(platform.machine().lower())
    true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"
    if number is None or not os.path.exists(true):
        return
    libc = ctypes.CDLL(None, use_errno=True)

    def clear() -> None:  # pragma: no cover - runs in the child, as `uid`
        for ring in (_KEY_SPEC_USER_KEYRING, _KEY_SPEC_USER_SESSION_KEYRING):
            libc.syscall(number, _KEYCTL_CLEAR, ring)

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [true],
            user=uid,
            group=uid,
            extra_groups=[],
            preexec_fn=clear,  # after the uid change (CPython sets ids first)
            check=False,
            timeout=30,
            cwd="/",
            env={},
        )


def lease_uid(first: int) -> UidLease:
    """A uid of `first` .. `first + UIDS - 1` that no other sandbox on this machine holds
    and no process runs as; OSError when every one is taken."""
    _DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(_DIR, 0o700)
    running = _uids_running()
    for uid in range(first, first + UIDS):
        if uid in running:
            continue
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(_DIR / str(uid), flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _clear_keyrings(uid)
        return UidLease(uid, fd)
    raise OSError(
        f"every sandbox uid ({first}..{first + UIDS - 1}) is taken: stop some sandboxes, "
        "or set sandbox_uid to the start of a free range"
    )
