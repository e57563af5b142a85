"""The local emulator's start: its jail probes run, against their answers remembered.

Run: python benchmarks/emulator_start.py [--rounds 8]
Prints a markdown table and writes it to benchmarks/results/emulator_start.md.

Each round builds the emulator's `Core` (what `LocalEmulator.start()` does before its
HTTP server and its first kernel) twice, in alternating order, so the machine's load
hits both alike:

* probing: nothing remembered (`probes.json` off), as every start was before: the
  interpreter asked where it lives, bubblewrap, a namespace holder and the uplink tried
  with scratch processes;
* remembered: the answers kept in a private scratch `probes.json` by the first round,
  as a later emulator on the same machine finds them.

The in-process caches are emptied before each build, so each one is a new process's.
The first round only warms up (and fills the file) and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agentrun_ci.local import EmulatorSettings, _core, _jail, _memo, _probe

RESULTS = Path(__file__).parent / "results" / "emulator_start.md"
MODES = ("probing", "remembered")


def build(kept: Path | None) -> float:
    """Seconds to build a Core with `kept` as the probes' directory (None: no memory)."""
    _memo._machine = _memo.ProbeMemo(kept)
    for cache in ("_jail_works", "_holder_works", "_uplink_works"):
        setattr(_probe, cache, {})
    _jail.interpreter_info.cache_clear()
    _jail.find_jail.cache_clear()
    started = time.perf_counter()
    core = _core.Core(EmulatorSettings(spare_kernels=0))
    elapsed = time.perf_counter() - started
    asyncio.run(core.close())
    return elapsed


def measure(rounds: int) -> dict[str, list[float]]:
    kept = Path(tempfile.mkdtemp(prefix="emulator-start-"))
    out: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for n in range(rounds + 1):
            order = MODES if n % 2 == 0 else MODES[::-1]
            for mode in order:
                seconds = build(None if mode == "probing" else kept)
                if n:  # round 0 warms up and fills probes.json
                    out[mode].append(seconds)
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    return out


def table(results: dict[str, list[float]], rounds: int) -> str:
    probing = statistics.median(results["probing"])
    lines = [
        "# Local emulator start: jail probes run, or remembered",
        "",
        f"{rounds} rounds, modes alternating; Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, 1-minute load "
        f"average {os.getloadavg()[0]:.1f} at the end. Time to build the emulator's core "
        "(before its HTTP server and first kernel).",
        "",
        "| mode | p50 ms | max ms | × probing |",
        "|---|---:|---:|---:|",
    ]
    for mode in MODES:
        rows = results[mode]
        median = statistics.median(rows)
        lines.append(
            f"| {mode} | {median * 1000:.0f} | {max(rows) * 1000:.0f} | {median / probing:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    text = table(measure(args.rounds), args.rounds)
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
