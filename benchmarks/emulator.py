"""Emulator speed: warm (spare kernel) vs cold context creation, and execute overhead.

Run: python benchmarks/emulator.py [--runs 200]
Prints a markdown table and writes it to benchmarks/results/emulator.md.
Targets (issue #3): warm context create >= 10x faster than cold; `print(1)` through
the DataPlane within 1.5x of a bare jupyter_client round trip on the same kind of kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from agentrun_ci._sync.data_plane import DataPlane
from agentrun_ci.local import EmulatorSettings, LocalEmulator

RESULTS = Path(__file__).parent / "results" / "emulator.md"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def context_create(spare: int, runs: int, jail: bool = True) -> list[float]:
    """A new sandbox's first python context: warm (its spare kernel) or cold."""
    times: list[float] = []
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=spare, jail=jail))
    with emulator as config, DataPlane(config) as dp:
        assert emulator.core is not None
        assert (emulator.core.jail is not None) == jail, "the jail is not available here"
        with httpx.Client(base_url=str(config.control_endpoint)) as http:
            http.post("/2025-09-10/templates", json={"templateName": "bench"})
        for _ in range(runs):
            if spare:
                deadline = time.monotonic() + 60
                while emulator.core.pool.ready < spare:  # let the spare be refilled
                    if time.monotonic() > deadline:
                        raise RuntimeError("the spare kernel did not start in 60 s")
                    time.sleep(0.05)
            sid = dp.create_sandbox("bench").sandbox_id
            start = time.perf_counter()
            dp.create_context(sid)
            times.append(time.perf_counter() - start)
            dp.delete_sandbox(sid)
    return times


def execute_dataplane(runs: int, jail: bool = True) -> list[float]:
    times: list[float] = []
    settings = EmulatorSettings(spare_kernels=1, jail=jail)
    with LocalEmulator(settings) as config, DataPlane(config) as dp:
        with httpx.Client(base_url=str(config.control_endpoint)) as http:
            http.post("/2025-09-10/templates", json={"templateName": "bench"})
        sid = dp.create_sandbox("bench").sandbox_id
        ctx = dp.create_context(sid)
        for _ in range(10):
            dp.execute(sid, "print(1)", context_id=ctx.id)
        for _ in range(runs):
            start = time.perf_counter()
            run = dp.execute(sid, "print(1)", context_id=ctx.id)
            times.append(time.perf_counter() - start)
            assert run.stdout == "1\n"
        dp.delete_sandbox(sid)
    return times


async def _bare(runs: int) -> list[float]:
    """The same kernel command line and transport, driven directly with jupyter_client."""
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        km = AsyncKernelManager(transport="ipc", connection_file=f"{tmp}/k.json")
        km._kernel_spec = KernelSpec(
            argv=[
                sys.executable,
                "-m",
                "ipykernel_launcher",
                "-f",
                "{connection_file}",
                "--HistoryManager.enabled=False",
            ],
            language="python",
            display_name="python",
        )
        await km.start_kernel(cwd=tmp)
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)

        async def once() -> None:
            msg_id = kc.execute("print(1)")
            while True:
                msg = await kc.get_iopub_msg(timeout=30)
                if (
                    msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                ):
                    break
            while (await kc.get_shell_msg(timeout=30))["parent_header"].get("msg_id") != msg_id:
                pass

        for _ in range(10):
            await once()
        for _ in range(runs):
            start = time.perf_counter()
            await once()
            times.append(time.perf_counter() - start)
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--context-runs", type=int, default=5)
    args = parser.parse_args()

    warm = context_create(1, args.context_runs)
    cold = context_create(0, args.context_runs)
    dp = execute_dataplane(args.runs)
    warm_off = context_create(1, args.context_runs, jail=False)
    cold_off = context_create(0, args.context_runs, jail=False)
    dp_off = execute_dataplane(args.runs, jail=False)
    bare = asyncio.run(_bare(args.runs))

    ms = 1000.0
    rows = [
        ("context create, cold (no spare)", cold),
        ("context create, warm (spare kernel)", warm),
        ("execute print(1), bare jupyter_client (IPC)", bare),
        ("execute print(1), DataPlane → emulator (HTTP)", dp),
    ]
    lines = [
        "# Emulator benchmark\n",
        f"{platform.platform()}, Python {platform.python_version()}, "
        f"{args.context_runs} context creates (a new sandbox's first context), "
        f"{args.runs} executes per row. Sandboxes run in the bubblewrap jail unless "
        "marked otherwise.\n",
        "| measurement | n | p50 (ms) | p95 (ms) | mean (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, values in rows:
        lines.append(
            f"| {label} | {len(values)} | {pct(values, 0.5) * ms:.1f} | "
            f"{pct(values, 0.95) * ms:.1f} | {statistics.mean(values) * ms:.1f} |"
        )
    lines += [
        "",
        "## Isolation on and off",
        "",
        "| measurement | jail p50 (ms) | no jail p50 (ms) | jail p95 (ms) | no jail p95 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, on, off in (
        ("context create, cold", cold, cold_off),
        ("context create, warm", warm, warm_off),
        ("execute print(1)", dp, dp_off),
    ):
        lines.append(
            f"| {label} | {pct(on, 0.5) * ms:.1f} | {pct(off, 0.5) * ms:.1f} | "
            f"{pct(on, 0.95) * ms:.1f} | {pct(off, 0.95) * ms:.1f} |"
        )
    warm_ratio = statistics.median(cold) / statistics.median(warm)
    exec_ratio50 = pct(dp, 0.5) / pct(bare, 0.5)
    exec_ratio95 = pct(dp, 0.95) / pct(bare, 0.95)
    lines += [
        "",
        f"- warm context create is **{warm_ratio:.0f}×** faster than cold (target ≥ 10×)",
        f"- DataPlane execute / bare jupyter_client: **{exec_ratio50:.2f}×** at p50, "
        f"**{exec_ratio95:.2f}×** at p95 (target ≤ 1.5×)",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
