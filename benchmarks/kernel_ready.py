"""A cold python context: our kernel readiness check against jupyter_client's, side by side.

Run: python benchmarks/kernel_ready.py [--runs 15]
Prints a markdown table and writes it to benchmarks/results/kernel_ready.md.

One local emulator without spare kernels (every context is a cold kernel start, in the
jail where bubblewrap is installed); runs alternate between the two ways of waiting for
the new kernel, so the machine's load hits both alike:

* ours: `_python_kernel.wait_until_ready` -- a kernel_info reply on shell, then that request's
  `idle` status on iopub;
* jupyter_client's `KernelClient.wait_for_ready` -- the same, then 0.2 s of iopub silence.

Each run times a new sandbox's first context (the kernel start) and the first execute in
it (`print(1)`), which must see its own output whichever way the kernel was waited for.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from agentrun_ci._sync.data_plane import DataPlane
from agentrun_ci.local import EmulatorSettings, LocalEmulator, _python_kernel

RESULTS = Path(__file__).parent / "results" / "kernel_ready.md"
OURS = _python_kernel.wait_until_ready


async def jupyter_client_wait(km: Any, kc: Any, timeout: float) -> None:
    await kc.wait_for_ready(timeout=timeout)


WAYS = {
    "ours (kernel_info reply + idle status)": OURS,
    "jupyter_client wait_for_ready": jupyter_client_wait,
}


def measure(runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0))
    with emulator as config, DataPlane(config) as dp:
        with httpx.Client(base_url=str(config.control_endpoint)) as http:
            http.post("/2025-09-10/templates", json={"templateName": "bench-ready"})
        try:
            for _ in range(runs):
                for way, wait in WAYS.items():
                    _python_kernel.wait_until_ready = wait
                    sid = dp.create_sandbox("bench-ready").sandbox_id
                    try:
                        start = time.perf_counter()
                        ctx = dp.create_context(sid).id
                        execution = dp.execute(sid, "print(1)", context_id=ctx)
                        times[way].append(time.perf_counter() - start)
                        assert execution.stdout == "1\n", execution
                    finally:
                        dp.delete_sandbox(sid)
        finally:
            _python_kernel.wait_until_ready = OURS
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    times = measure(args.runs)
    ours, theirs = (statistics.median(v) * 1e3 for v in times.values())
    lines = [
        "# Kernel readiness: a cold context, our check against jupyter_client's",
        "",
        f"{args.runs} runs each, alternating; local emulator without spare kernels; Python "
        f"{platform.python_version()} on {platform.system()} {platform.machine()}, 2 shared "
        "cores. Each run: a new sandbox's first python context (a cold kernel start) and "
        "`print(1)` in it.",
        "",
        "| waiting for the new kernel | median ms | min ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for way, values in times.items():
        ms = [v * 1e3 for v in values]
        lines.append(f"| {way} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")
    lines += [
        "",
        f"Ours takes {theirs - ours:.0f} ms less per cold start (median; × "
        f"{ours / theirs:.2f}): jupyter_client ends its wait with 0.2 s of silence on iopub, "
        "which we skip because every reader matches messages to its own request id.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
