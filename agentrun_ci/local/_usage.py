"""What one run used: wall time, CPU time and peak memory, read from /proc.

Which processes (chosen by the core as the run starts): the sandbox's cgroup
members where the sandbox has one (a background job any code started counts);
in a jail or PID namespace the kernel's process group (found by listing /proc, a
few milliseconds); else the kernel alone, which leads its group. Of the kernels
only the one running the code: not the other contexts' (their runs are theirs),
nor the spare kernels kept warm for the next contexts, nor the sandbox's plumbing
(its namespace holder, each kernel's launchers, `launch_chain`), which waits on
its children and uses nothing a run does.
Before a run their CPU times are summed and their peak-RSS counters reset (`5`
into /proc/<pid>/clear_refs, Linux >= 4.0); after it the same processes' CPU
times are summed again and their peaks (VmHWM) added up. CPU time includes
children reaped during the run (`subprocess.run` in user code); a process started
during the run and still alive at its end is not counted. Where a peak cannot be
reset, VmHWM is the peak since the process started. Where /proc is unreadable
(not Linux) CPU and memory are None; wall time is always measured. The files are
opened once per process and kept (`Gauges`, one per sandbox): a run's answer waits on
these reads.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import attrs

from .._procfs import read_proc, stat_fields

__all__ = ["Gauges", "Meter", "launch_chain", "process_usage"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def launch_chain(pgid: int, candidates: list[int]) -> tuple[int, ...]:
    """A kernel's process group `pgid` (its launcher's) as the chain launcher ->
    bubblewrap -> our init -> kernel, the kernel last; () where the group is not one chain
    (it never is, then). Asked for before the kernel runs any code of its context's, when
    the group is that chain alone. Only the kernel of it does a run's work: the others
    wait on their child from its start to its end."""
    parents: dict[int, int] = {}
    for pid in candidates:
        fields = stat_fields(pid)  # state, ppid, pgrp, ...
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            parents[pid] = int(fields[1])
    if len(parents) < 2 or pgid not in parents:
        return ()
    chain = [pgid]
    while len(chain) < len(parents):
        children = [pid for pid, parent in parents.items() if parent == chain[-1]]
        if len(children) != 1:
            return ()
        chain.append(children[0])
    return tuple(chain)


class Gauges:
    """One sandbox's /proc files for measuring its runs, each opened once.

    A member process's `stat`, `status` and `clear_refs` are opened at the first run that
    measures it and kept: a later run reads each with one `pread` at offset 0 (where /proc
    makes the text anew) instead of an open, two reads and a close, about a third of the
    cost, and the run's answer waits on those reads. A descriptor names the process, not
    its number: once the process has exited, reads through it fail (it is then closed),
    and a pid reused by another process is opened anew. `close()`, when the sandbox ends,
    closes the rest, and a run that starts after it opens nothing (it measures wall time).
    """

    def __init__(self) -> None:
        self._files: dict[int, _Files] = {}
        self._closed = False
        #: each kernel's chain (`launch_chain`), by its process group
        self.chains: dict[int, tuple[int, ...]] = {}
        #: the last `listing`, the task count it was read at, and whether one of its
        #: processes has gone since
        self._listing: list[int] = []
        self._listed_at: int | None = None
        self._gone = True
        self._count_fd = -1

    def listing(self, count_file: str, read: Callable[[], list[int]]) -> list[int]:
        """The sandbox's pids (`read()`, its cgroup's `cgroup.procs`), read anew only when
        its task count (`count_file`, the cgroup's `pids.current`: one `pread` on a
        descriptor kept open) moved or one of the listed processes has gone since the last
        reading. A process that starts between two runs while another ends, leaving the
        count as it was, is listed from the run after (the ended one's files fail to read
        in this one); one that starts during a run is not counted in that run anyway."""
        if self._closed:
            return read()
        if self._count_fd < 0:
            self._count_fd = _open(count_file, os.O_RDONLY)
        raw = _pread(self._count_fd) if self._count_fd >= 0 else None
        count = int(raw) if raw and raw.strip().isdigit() else None
        if count is None or count != self._listed_at or self._gone:
            self._listing = read()
            self._listed_at = count
            self._gone = False
        return self._listing

    def start(self, members: list[int], since: float | None = None) -> Meter:
        """Reset the members' peaks and sum their CPU: `meter.finish()` after the run.
        Its wall time counts from `since` (`time.monotonic()`), default now."""
        for pid in self._files.keys() - set(members):  # left, or another context's
            if self._files[pid].stat() is None:
                self._files.pop(pid).close()
        opened = [files for pid in members if (files := self._of(pid)) is not None]
        for files in opened:
            files.reset_peak()
        stats = [files.stat() for files in opened]
        if len(opened) < len(members) or None in stats:
            self._gone = True  # list the sandbox's processes anew next time
        started = time.monotonic() if since is None else since
        return Meter(opened, started, _cpu(stats), [_faults(stat) for stat in stats])

    def close(self) -> None:
        self._closed = True
        for files in self._files.values():
            files.close()
        self._files.clear()
        if self._count_fd >= 0:
            os.close(self._count_fd)
            self._count_fd = -1

    def _of(self, pid: int) -> _Files | None:
        if self._closed:
            return None
        files = self._files.get(pid)
        if files is not None and files.gone:
            self._files.pop(pid).close()
            files = None
        if files is None:
            files = _Files.open(pid)
            if files is None:
                return None
            self._files[pid] = files
        return files


@attrs.define
class Meter:
    """`meter = gauges.start(pids)`; run; `meter.finish()` -> the wire's `usage` dict."""

    members: list[_Files]
    started: float
    cpu: float | None
    #: each member's page faults as the run started (None: unknown)
    faults: list[int | None]

    def finish(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        usage: dict[str, Any] = {"wallTime": round(wall, 6)}
        stats = [files.stat() for files in self.members]
        after = _cpu(stats)
        if self.cpu is not None and after is not None:
            usage["cpuTime"] = round(max(0.0, after - self.cpu), 3)
        peaks = []
        for files, stat, before in zip(self.members, stats, self.faults, strict=True):
            if stat is None:
                continue  # it has exited
            # A process's resident set grows only by its own page faults: one that took
            # none since its peak was reset still has that peak resident (`status`, the
            # dearest file, is read only for those that did: the kernel that ran, mostly).
            if before is not None and _faults(stat) == before:
                peak = _rss_mb(stat)
            else:
                peak = files.peak_mb()
            if peak is not None:
                peaks.append(peak)
        if peaks:
            usage["peakMemoryMb"] = round(sum(peaks), 1)
        return usage


def _cpu(stats: list[list[bytes] | None]) -> float | None:
    """User + system seconds of these stat lines' processes, reaped children included."""
    known = [stat for stat in stats if stat is not None]
    if not known:
        return None
    # fields 14-17: utime stime cutime cstime
    return sum(sum(int(v) for v in stat[11:15]) for stat in known) / _TICKS


def _faults(stat: list[bytes] | None) -> int | None:
    """minflt + majflt (fields 10 and 12) of a stat line."""
    try:
        return int(stat[7]) + int(stat[9]) if stat is not None else None
    except (IndexError, ValueError):
        return None


def _rss_mb(stat: list[bytes]) -> float | None:
    """The resident set (field 24, in pages) of a stat line, in MiB."""
    try:
        return int(stat[21]) * _PAGE / (1024 * 1024)
    except (IndexError, ValueError):
        return None


@attrs.define(eq=False)
class _Files:
    """The open /proc files of one process (-1: that one could not be opened)."""

    stat_fd: int
    status_fd: int
    clear_refs_fd: int
    #: the stat read last failed: the process has exited
    gone: bool = False

    @classmethod
    def open(cls, pid: int) -> _Files | None:
        stat_fd = _open(f"/proc/{pid}/stat", os.O_RDONLY)
        if stat_fd < 0:
            return None  # no such process (or no /proc)
        return cls(
            stat_fd,
            _open(f"/proc/{pid}/status", os.O_RDONLY),
            _open(f"/proc/{pid}/clear_refs", os.O_WRONLY),
        )

    def stat(self) -> list[bytes] | None:
        """/proc/<pid>/stat's fields after the command name (see `stat_fields`), as bytes
        (`int()` reads them as they are: not decoding them is a third of the cost)."""
        raw = _pread(self.stat_fd) if self.stat_fd >= 0 else None
        if not raw:
            self.gone = True
            return None
        return raw[raw.rfind(b")") + 2 :].split()

    def reset_peak(self) -> None:
        """Reset the process's peak RSS (VmHWM) to its current RSS."""
        if self.clear_refs_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.clear_refs_fd, b"5")

    def peak_mb(self) -> float | None:
        return _kb_field_mb(_pread(self.status_fd) if self.status_fd >= 0 else None, "VmHWM:")

    def close(self) -> None:
        for fd in (self.stat_fd, self.status_fd, self.clear_refs_fd):
            if fd >= 0:
                os.close(fd)
        self.stat_fd = self.status_fd = self.clear_refs_fd = -1
        self.gone = True


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags | _CLOEXEC)
    except OSError:
        return -1


def _pread(fd: int) -> bytes | None:
    """A /proc file's text, made anew (it fits one read: stat and status are short)."""
    try:
        return os.pread(fd, 16384, 0)
    except OSError:
        return None


def _field_mb(pid: int, field: str) -> float | None:
    """A kB line of /proc/<pid>/status (VmRSS:, VmHWM:) in MiB."""
    return _kb_field_mb(read_proc(f"/proc/{pid}/status"), field)


def _kb_field_mb(raw: bytes | None, field: str) -> float | None:
    if raw is None:
        return None
    at = raw.find(b"\n" + field.encode("ascii"))
    if at < 0:
        return None
    try:
        return int(raw[at + len(field) + 1 : raw.index(b"\n", at + 1)].split()[0]) / 1024
    except (ValueError, IndexError):
        return None


def process_usage(pid: int) -> dict[str, float | None]:
    """The wire's `resourceUsage` of one process: resident MiB, CPU % since it started."""
    stat = stat_fields(pid)
    cpu_percent = None
    if stat is not None:
        try:
            with open("/proc/uptime", encoding="ascii") as fh:
                uptime = float(fh.read().split()[0])
            alive = uptime - int(stat[19]) / _TICKS  # field 22: starttime
            busy = (int(stat[11]) + int(stat[12])) / _TICKS  # utime + stime
            cpu_percent = round(100 * busy / alive, 1) if alive > 0 else 0.0
        except (OSError, ValueError, IndexError):
            pass
    rss = _field_mb(pid, "VmRSS:")
    return {"cpuPercent": cpu_percent, "memoryMb": None if rss is None else round(rss, 1)}
