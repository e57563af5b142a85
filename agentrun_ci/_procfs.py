"""Reading /proc/<pid>/stat (Linux), in one place: the SDK's owner tags, the emulator's
process groups and the tests all ask the same three questions."""

from __future__ import annotations

import os

__all__ = ["is_running", "parse_stat", "read_proc", "start_time", "stat_fields"]

#: states of a process that has exited (zombie, dead)
_EXITED = ("Z", "X")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def read_proc(path: str, size: int = 16384) -> bytes | None:
    """A /proc file's bytes (one read: they are generated whole, and small); None when
    it cannot be read. Plain descriptors, no file object: the emulator reads several per
    execute (see local/_usage.py), and this costs about half of `open().read()`."""
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, size):  # a long one comes a page at a time
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session,
    ... (proc(5) fields 3 onwards, so starttime is index 19); None when there is no such
    process (or no /proc)."""
    raw = read_proc(f"/proc/{pid}/stat")
    return None if raw is None else parse_stat(raw)


def parse_stat(raw: bytes) -> list[str]:
    """The fields of a /proc/<pid>/stat text after the command name (see `stat_fields`)."""
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def is_running(pid: int | str) -> bool:
    """Does the process exist and has it not exited (a zombie counts as exited)?"""
    fields = stat_fields(pid)
    return fields is not None and len(fields) > 0 and fields[0] not in _EXITED


def start_time(pid: int | str) -> int | None:
    """The process's start time in clock ticks since boot; with the pid it names one
    process (a pid alone can be reused). None when unknown."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
