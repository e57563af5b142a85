"""What one run used: wall time, CPU time and peak memory, read from /proc.

Which processes (chosen by the core as the run starts): the sandbox's cgroup
members where the sandbox has one (then other contexts running at the same time
count too); in a jail or PID namespace the kernel's process group (found by
listing /proc, a few milliseconds); else the kernel alone, which leads its group.
Before a run their CPU times are summed and their peak-RSS counters reset (`5`
into /proc/<pid>/clear_refs, Linux >= 4.0); after it the same processes' CPU
times are summed again and their peaks (VmHWM) added up. CPU time includes
children reaped during the run (`subprocess.run` in user code); a process started
during the run and still alive at its end is not counted. Where a peak cannot be
reset, VmHWM is the peak since the process started. Where /proc is unreadable
(not Linux) CPU and memory are None; wall time is always measured.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs

from .._procfs import read_proc, stat_fields

__all__ = ["Meter", "process_usage"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@attrs.define
class Meter:
    """`meter = Meter.start(pids)`; run; `meter.finish()` -> the wire's `usage` dict."""

    pids: list[int]
    started: float
    cpu: float | None

    @classmethod
    def start(cls, members: list[int]) -> Meter:
        for pid in members:
            _reset_peak(pid)
        return cls(members, time.monotonic(), _cpu(members))

    def finish(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        usage: dict[str, Any] = {"wallTime": round(wall, 6)}
        members = self.pids
        after = _cpu(members)
        if self.cpu is not None and after is not None:
            usage["cpuTime"] = round(max(0.0, after - self.cpu), 3)
        peak = _peak_mb(members)
        if peak is not None:
            usage["peakMemoryMb"] = peak
        return usage


def _cpu(pids: list[int]) -> float | None:
    """User + system seconds of `pids`, their reaped children included."""
    if not pids:
        return None
    ticks = 0
    seen = False
    for pid in pids:
        stat = stat_fields(pid)
        if stat is not None:  # fields 14-17: utime stime cutime cstime
            ticks += sum(int(v) for v in stat[11:15])
            seen = True
    return ticks / _TICKS if seen else None


def _peak_mb(pids: list[int]) -> float | None:
    peaks = [peak for pid in pids if (peak := _field_mb(pid, "VmHWM:")) is not None]
    return round(sum(peaks), 1) if peaks else None


def _reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS."""
    try:
        fd = os.open(f"/proc/{pid}/clear_refs", os.O_WRONLY | _CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, b"5")
    except OSError:
        pass
    finally:
        os.close(fd)


def _field_mb(pid: int, field: str) -> float | None:
    """A kB line of /proc/<pid>/status (VmRSS:, VmHWM:) in MiB."""
    raw = read_proc(f"/proc/{pid}/status")
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
