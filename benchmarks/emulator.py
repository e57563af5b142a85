"""Emulator speed: warm (spare kernel) vs cold context creation, and execute overhead.

Run: python benchmarks/emulator.py [--runs 200]
Prints a markdown table and writes it to benchmarks/results/emulator.md.
Targets (issue #3): warm context create >= 10x faster than cold; `print(1)` through
the DataPlane within 1.5x of a bare jupyter_client round trip on the same kind of kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
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


class _Bench:
    """One emulator (jail on or off) with a template, for interleaved measurements."""

    def __init__(self, stack: contextlib.ExitStack, spare: int, jail: bool) -> None:
        self.spare = spare
        self.emulator = LocalEmulator(EmulatorSettings(spare_kernels=spare, jail=jail))
        config = stack.enter_context(self.emulator)
        assert self.emulator.core is not None
        if (self.emulator.core.jail is not None) != jail:
            raise RuntimeError("the jail is not available here: install bubblewrap")
        self.dp = stack.enter_context(DataPlane(config))
        with httpx.Client(base_url=str(config.control_endpoint)) as http:
            http.post("/2025-09-10/templates", json={"templateName": "bench"})

    def context_create(self) -> float:
        """A new sandbox's first python context: warm (its spare kernel) or cold."""
        core = self.emulator.core
        assert core is not None
        deadline = time.monotonic() + 60
        while core.pool.ready < self.spare:  # let the spare be refilled
            if time.monotonic() > deadline:
                raise RuntimeError("the spare kernel did not start in 60 s")
            time.sleep(0.05)
        sid = self.dp.create_sandbox("bench").sandbox_id
        start = time.perf_counter()
        self.dp.create_context(sid)
        elapsed = time.perf_counter() - start
        self.dp.delete_sandbox(sid)
        return elapsed


def context_create(spare: int, runs: int) -> tuple[list[float], list[float]]:
    """(jail, no jail): runs alternate between the two, so load hits both alike."""
    on: list[float] = []
    off: list[float] = []
    with contextlib.ExitStack() as stack:
        jailed, bare = _Bench(stack, spare, True), _Bench(stack, spare, False)
        for _ in range(runs):
            on.append(jailed.context_create())
            off.append(bare.context_create())
    return on, off


def execute_dataplane(runs: int) -> tuple[list[float], list[float]]:
    """`print(1)` round trips (jail, no jail), alternating call by call."""
    on: list[float] = []
    off: list[float] = []
    with contextlib.ExitStack() as stack:
        targets = []
        for bench, times in ((_Bench(stack, 1, True), on), (_Bench(stack, 1, False), off)):
            sid = bench.dp.create_sandbox("bench").sandbox_id
            ctx = bench.dp.create_context(sid)
            for _ in range(10):
                bench.dp.execute(sid, "print(1)", context_id=ctx.id)
            targets.append((bench.dp, sid, ctx.id, times))
        for _ in range(runs):
            for dp, sid, ctx_id, times in targets:
                start = time.perf_counter()
                run = dp.execute(sid, "print(1)", context_id=ctx_id)
                times.append(time.perf_counter() - start)
                assert run.stdout == "1\n"
        for dp, sid, _, _ in targets:
            dp.delete_sandbox(sid)
    return on, off


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

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    warm, warm_off = context_create(1, args.context_runs)
    cold, cold_off = context_create(0, args.context_runs)
    dp, dp_off = execute_dataplane(args.runs)
    bare = asyncio.run(_bare(args.runs))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

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
        f"{args.runs} executes per row, {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} at the start and {load_after:.1f} at the end (other work shares "
        "the machine: compare rows with each other, not with other runs). Sandboxes run in "
        "the bubblewrap jail unless marked otherwise.\n",
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
        "The two emulators run side by side; runs alternate between them.",
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
