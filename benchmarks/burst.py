"""A burst of sandbox creations: each new sandbox's first result, with and without spares.

Run: python benchmarks/burst.py [--sandboxes 10] [--rounds 3]
Prints a markdown table and writes it to benchmarks/results/burst.md.

Each round starts a fresh local emulator, waits until its first spare kernel is ready (an
emulator that has sat idle a moment), then creates `--sandboxes` sandboxes back to back,
each with its first `execute` (`1`) before the next is created, and deletes them at the
end. Timed per sandbox: from its creation request to its first result.

* floor: an emulator with `spare_kernels=0`: every sandbox a cold kernel start;
* spares: the emulator's defaults (spares kept to demand; in releases before demand-sized
  spares, one spare, replaced after each taking).

Rounds alternate between the two, so load drift hits them alike; ratios are of medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

from agentrun_ci import __version__

RESULTS = Path(__file__).parent / "results" / "burst.md"


def one_round(spares: bool, sandboxes: int) -> list[float]:
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

    settings = EmulatorSettings() if spares else EmulatorSettings(spare_kernels=0)
    emulator = LocalEmulator(settings)
    times: list[float] = []
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=300) as http:
        core = emulator.core
        assert core is not None
        deadline = time.monotonic() + 300
        while spares and core.pool.ready < 1:  # the emulator warm, as after a moment idle
            if time.monotonic() > deadline:
                raise RuntimeError("the first spare kernel was not ready within 300 s")
            time.sleep(0.02)
        http.post("/2025-09-10/templates", json={"templateName": "burst"}).raise_for_status()
        made = []
        try:
            for _ in range(sandboxes):
                started = time.perf_counter()
                r = http.post("/sandboxes", json={"templateName": "burst"})
                r.raise_for_status()
                sid = r.json()["data"]["sandboxId"]
                made.append(sid)
                r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": "1"})
                r.raise_for_status()
                times.append(time.perf_counter() - started)
        finally:
            for sid in made:
                http.delete(f"/sandboxes/{sid}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = {"floor: no spares (every sandbox a cold start)": False, "spares (defaults)": True}
    samples: dict[str, list[float]] = {name: [] for name in rows}
    load_start = os.getloadavg()[0]
    for index in range(args.rounds):
        order = list(rows) if index % 2 == 0 else list(reversed(rows))
        for name in order:
            samples[name] += one_round(rows[name], args.sandboxes)
            print(f"round {index + 1}/{args.rounds} {name}: done", file=sys.stderr)
    load_end = os.getloadavg()[0]
    floor = statistics.median(samples[next(iter(rows))])
    lines = [
        f"# A burst of {args.sandboxes} sandbox creations (agentrun-ci {__version__})",
        "",
        f"{args.rounds} rounds, the two emulators taking turns; each sandbox created and given "
        "its first `execute` before the next is created; time from its creation request to "
        f"its first result. Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, 1-minute load average {load_start:.1f} "
        f"at the start and {load_end:.1f} at the end.",
        "",
        "| emulator | n | p50 s | p95 s | max s | × floor (p50) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in samples.items():
        values = sorted(values)
        p50 = statistics.median(values)
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        lines.append(
            f"| {name} | {len(values)} | {p50:.2f} | {p95:.2f} | {values[-1]:.2f} | "
            f"{p50 / floor:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
