"""Reliability under injected faults: the chaos suite's workload, counted.

Run: python benchmarks/reliability.py [--ops 1000] [--mcp-ops 1000] [--rate 0.2] [--seed 11]
Prints markdown tables and writes them to benchmarks/results/reliability.md.

70% of the operations go through DataPlane directly (execute, files, commands,
context create/delete, listings), 15% through CodeInterpreter (singleton) and 15%
through AsyncCodeInterpreter (pool of 4, 4 concurrent leases), while the emulator
injects `rate` transient faults (429, 500/502/503/504, resets before and after the
body was read, slow answers). A second, smaller run adds destructive faults (a
sandbox that vanishes, a kernel that dies). Every execute and command appends a
unique token to a ledger; counting tokens afterwards gives duplicates and losses.

Then `mcp_ops` tool calls through the MCP server (run_code, run_command, write_file,
read_file, list_files, reset_context) under the same faults: 45% from 4 concurrent
streamable-HTTP clients on an in-process server with the singleton strategy, 45% the
same with the pool strategy, 10% through the `agentrun-ci-mcp` process over stdio;
plus a smaller destructive run (pool, 3 clients).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import anyio

# This folder holds mcp.py, which would shadow the `mcp` package the MCP rows import.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "tests"))

from chaos_workload import (  # noqa: E402 -- after the sys.path fix above
    DataPlaneWorkload,
    Stats,
    ensure_template,
    facade_pool_workload,
    facade_sync_workload,
    mcp_http_workload,
    mcp_leftovers,
    mcp_stdio_env,
    mcp_stdio_workload,
)
from mcp_support import SCRIPT  # noqa: E402

from agentrun_ci import DataPlane  # noqa: E402
from agentrun_ci.local import (  # noqa: E402
    FAULT_KINDS,
    TRANSIENT_KINDS,
    EmulatorSettings,
    FaultPlan,
    LocalEmulator,
)

RESULTS = Path(__file__).parent / "results" / "reliability.md"
DESTRUCTIVE = {"sandbox_gone": 0.02, "kernel_death": 0.04, "error_503": 0.07, "reset_after": 0.07}


Row = tuple[str, Stats, Counter[str], float]


def run(ops: int, rate: float, seed: int, mcp_ops: int = 1000) -> str:
    plan = FaultPlan(seed=seed, retry_after=0.05, slow_seconds=0.05)
    transient = dict.fromkeys(TRANSIENT_KINDS, rate / len(TRANSIENT_KINDS))
    rows: list[Row] = []
    eligible: list[int] = []
    mcp_rows: list[Row] = []
    mcp_eligible: list[int] = []
    emulator = LocalEmulator(EmulatorSettings(faults=plan, spare_kernels=2))
    with emulator as config:
        stage = iter(range(100))

        def on(rates: dict[str, float]) -> None:
            plan.update({"rates": rates, "seed": seed + next(stage), "resetCounts": True})

        def off() -> None:
            plan.update({"rates": {}})

        def dataplane(n: int, rates: dict[str, float]) -> Stats:
            template = f"rel-{uuid.uuid4().hex[:8]}"
            ensure_template(config, template)
            on(rates)
            with DataPlane(config) as dp:
                work = DataPlaneWorkload(dp, template, random.Random(seed))
                try:
                    work.run(n)
                finally:
                    off()
                    stats = work.finish()
            return stats

        def record(name: str, stats: Stats, started: float, *, mcp: bool = False) -> None:
            row = (name, stats, Counter(plan.counts), time.perf_counter() - started)
            (mcp_rows if mcp else rows).append(row)
            (mcp_eligible if mcp else eligible).append(plan.requests)

        n_dp = round(ops * 0.7)
        n_sync = round(ops * 0.15)
        n_pool = ops - n_dp - n_sync
        t = time.perf_counter()
        stats = dataplane(n_dp, transient)
        record("DataPlane, transient", stats, t)

        t = time.perf_counter()
        on(transient)
        stats = facade_sync_workload(
            config, "rel" + uuid.uuid4().hex[:6], n_sync, random.Random(seed), off
        )
        off()
        record("CodeInterpreter, transient", stats, t)

        t = time.perf_counter()
        on(transient)
        stats = asyncio.run(
            facade_pool_workload(config, "rel" + uuid.uuid4().hex[:6], n_pool, off, callers=4)
        )
        off()
        record("AsyncCodeInterpreter pool, transient", stats, t)

        t = time.perf_counter()
        stats = dataplane(max(50, ops // 10), DESTRUCTIVE)
        record("DataPlane, destructive", stats, t)

        def mcp_http(name: str, n: int, rates: dict[str, float], strategy: str, k: int) -> None:
            t = time.perf_counter()
            on(rates)
            owner = "rel" + uuid.uuid4().hex[:6]
            try:
                stats = anyio.run(
                    lambda: mcp_http_workload(
                        config, owner, n, seed, off, strategy=strategy, clients=k
                    )
                )
            finally:
                off()
            record(name, stats, t, mcp=True)

        if mcp_ops > 0:
            n_stdio = round(mcp_ops * 0.1) if SCRIPT else 0
            n_single = (mcp_ops - n_stdio) // 2
            mcp_http(
                "MCP HTTP, singleton, 4 clients, transient", n_single, transient, "singleton", 4
            )
            n_pool = mcp_ops - n_stdio - n_single
            mcp_http("MCP HTTP, pool, 4 clients, transient", n_pool, transient, "pool", 4)
            if n_stdio:
                t = time.perf_counter()
                on(transient)
                owner = "rel" + uuid.uuid4().hex[:6]
                try:
                    stats = anyio.run(
                        mcp_stdio_workload, SCRIPT, mcp_stdio_env(config, owner), n_stdio, seed, off
                    )
                finally:
                    off()
                stats.leaked_sandboxes += len(mcp_leftovers(config, owner))
                record("MCP stdio process, transient", stats, t, mcp=True)
            n_bad = max(50, mcp_ops // 10)
            mcp_http("MCP HTTP, pool, 3 clients, destructive", n_bad, DESTRUCTIVE, "pool", 3)

        assert emulator.core is not None
        leaked_sandboxes = sum(
            1 for s in list(emulator.core.sandboxes.values()) if s.status != "TERMINATED"
        )
    tables = _tables(rows, eligible, leaked_sandboxes, ops, rate, seed, mcp_ops)
    if mcp_rows:
        tables += "\n" + _mcp_tables(mcp_rows, mcp_eligible)
    return tables


def _stat_cells(s: Stats, *, sandboxes: bool, bold: bool = False) -> str:
    """The outcome columns both result tables share (MCP adds sandboxes left)."""
    b = "**" if bold else ""
    cells = [
        str(sum(s.ok.values())),
        str(sum(s.errors.values())),
        f"{b}{len(s.untyped)}{b}",
        f"{b}{len(s.wrong)}{b}",
        f"{b}{s.duplicates}{b}",
        f"{b}{s.lost}{b}",
        str(s.ran_despite_error),
        str(len(s.tokens_unverifiable)),
        str(s.leaked_contexts),
        *([f"{b}{s.leaked_sandboxes}{b}"] if sandboxes else []),
        str(s.state_resets),
    ]
    return " | ".join(cells)


def _outcome_rows(rows: list[Row], *, sandboxes: bool) -> tuple[list[str], Stats]:
    total = Stats()
    out = []
    for name, s, _, secs in rows:
        total.merge(s)
        out.append(f"| {name} | {s.total} | {_stat_cells(s, sandboxes=sandboxes)} | {secs:.1f} |")
    cells = _stat_cells(total, sandboxes=sandboxes, bold=True)
    seconds = sum(r[3] for r in rows)
    out.append(f"| **all** | **{total.total}** | {cells} | {seconds:.1f} |")
    return out, total


def _fault_table(title: str, rows: list[Row], eligible: list[int]) -> list[str]:
    out = [
        title,
        "",
        "| workload | requests eligible | " + " | ".join(FAULT_KINDS) + " | total |",
        "|---|---:|" + "---:|" * (len(FAULT_KINDS) + 1),
    ]
    for (name, _, counts, _), requests in zip(rows, eligible, strict=True):
        cells = " | ".join(str(counts.get(k, 0)) for k in FAULT_KINDS)
        out.append(f"| {name} | {requests} | {cells} | {sum(counts.values())} |")
    return out


def _tables(
    rows: list[Row],
    eligible: list[int],
    leaked_sandboxes: int,
    ops: int,
    rate: float,
    seed: int,
    mcp_ops: int = 0,
) -> str:
    out = [
        "# Reliability under injected faults",
        "",
        f"`python benchmarks/reliability.py --ops {ops} --mcp-ops {mcp_ops} --rate {rate} "
        f"--seed {seed}` "
        f"(Python {platform.python_version()}, {platform.machine()}, local emulator).",
        "",
        "| workload | ops | ok | typed errors | untyped errors | wrong results | "
        "executions duplicated | results lost | ran though the call failed | unverifiable | "
        "leaked contexts | state resets | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table, total = _outcome_rows(rows, sandboxes=False)
    out += table
    out += [
        "",
        f"Sandboxes left running after every client closed: **{leaked_sandboxes}**.",
        "",
    ]
    out += _fault_table("## Faults injected, by kind", rows, eligible)
    out += ["", "## Errors the callers saw, by type", "", "| type | count |", "|---|---:|"]
    for kind, count in total.errors.most_common():
        out.append(f"| {kind} | {count} |")
    out += [
        "",
        "Reading: *executions duplicated* counts ledger tokens found twice (code that ran twice);",
        "*results lost* counts calls that reported success whose token is missing;",
        "*ran though the call failed* are executes/commands whose answer was dropped after the",
        "server ran them (`reset_after`): the SDK reported a TransportError and did not re-send.",
        "*unverifiable* tokens were sent to a session that was lost afterwards (its ledger went",
        "with it). *leaked contexts* were created by a call whose answer was lost, so the client",
        "never learned their id; they die with their sandbox.",
        "",
    ]
    return "\n".join(out)


def _mcp_tables(rows: list[Row], eligible: list[int]) -> str:
    out = [
        "## Through the MCP server",
        "",
        "| workload | tool calls | ok | clear error results | unclear or protocol errors | "
        "wrong results | executions duplicated | results lost | ran though the call failed | "
        "unverifiable | contexts no lease knew | sandboxes left after close | "
        "state resets reported | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table, total = _outcome_rows(rows, sandboxes=True)
    out += table
    out += [""]
    out += _fault_table("### Faults injected during the MCP runs, by kind", rows, eligible)
    out += ["", "### Error results the MCP clients saw, by kind", "", "| kind | count |"]
    out.append("|---|---:|")
    for kind, count in total.errors.most_common():
        if count > 0:
            out.append(f"| {kind} | {count} |")
    out += [
        "",
        "Reading: every tool call ended in a correct result or an error result whose text",
        "names what failed (an HTTP status and code, a transport failure that was not re-sent,",
        "a lost session); *unclear or protocol errors* counts the rest (a JSON-RPC error, an",
        'exception in the client, a hang, a bare "Error executing tool X"). Every run_code',
        "also prints the mark its predecessor left in the context: *wrong results* include",
        "state lost without `state_reset: true`. Ledgers are read with faults off, from every",
        "sandbox the server still had. *contexts no lease knew* were created by a call whose",
        "answer was lost; they were deleted with their sandbox when the server closed.",
        "*sandboxes left after close* counts sandboxes and templates with the server's owner",
        "prefix once it had shut down.",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--mcp-ops", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    table = run(args.ops, args.rate, args.seed, args.mcp_ops)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)


if __name__ == "__main__":
    main()
