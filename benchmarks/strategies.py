"""Facade strategies side by side against the local emulator (one emulator, one run).

Measures, per strategy (every one in agentrun_ci.STRATEGY_NAMES, or --strategies):

* time to first result: from constructing an AsyncCodeInterpreter to the first
  execute's result (interpreter create + session start + context + execute);
* throughput at concurrency 1, 8 and 32: C callers, each with its own lease, run
  trivial executes (`1 + 1`) back to back. Each caller first does one warm-up
  execute (that creates its context / takes its session); the steady-state rate
  counts only the timed executes after all callers are warm. "incl. setup" counts
  everything from the first acquire to the last release.

Usage: python benchmarks/strategies.py [--ops 20] [--ephemeral-ops 3] [--pool 4,8]
       [--strategies singleton,pool,ephemeral,dedicated]
Writes benchmarks/results/strategies.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pathlib
import platform
import statistics
import time
import uuid

from agentrun_ci import STRATEGY_NAMES, AsyncCodeInterpreter, Config
from agentrun_ci.local import EmulatorSettings, LocalEmulator

RESULTS = pathlib.Path(__file__).parent / "results" / "strategies.md"
CODE = "1 + 1"


def _max_sessions(pool: tuple[int, int]) -> int:
    return max(8, pool[1])


def _capacity(strategy: str, pool: tuple[int, int]) -> int | None:
    """How many callers' leases can hold a session at once (None: all of them). For
    dedicated, `start_session()` below holds one of max_sessions for the facade's own
    calls."""
    return {"pool": pool[1], "dedicated": _max_sessions(pool) - 1}.get(strategy)


def _interpreter(config: Config, strategy: str, pool: tuple[int, int]) -> AsyncCodeInterpreter:
    return AsyncCodeInterpreter(
        config,
        strategy=strategy,  # type: ignore[arg-type]
        pool_size=pool,
        owner="bench" + uuid.uuid4().hex[:6],
        max_sessions=_max_sessions(pool),
        lease_timeout=600,
        reap_on_start=False,
    )


async def first_result(config: Config, strategy: str, pool: tuple[int, int]) -> float:
    started = time.perf_counter()
    ci = _interpreter(config, strategy, pool)
    try:
        execution = await ci.execute_code(CODE)
        assert execution.text == "2", execution
        return time.perf_counter() - started
    finally:
        await ci.close()


async def throughput(
    config: Config, strategy: str, pool: tuple[int, int], concurrency: int, ops: int
) -> dict[str, float]:
    ci = _interpreter(config, strategy, pool)
    try:
        await ci.start_session()  # template + warm sessions: not part of the measurement
        latencies: list[float] = []
        ready = asyncio.Event()
        warmed = 0

        async def caller(i: int) -> None:
            nonlocal warmed
            async with ci.lease(f"c{i}") as lease:
                assert (await lease.execute_code(CODE)).text == "2"  # warm-up
                warmed += 1
                if warmed == concurrency:
                    ready.set()
                await ready.wait()
                for _ in range(ops):
                    t0 = time.perf_counter()
                    execution = await lease.execute_code(CODE)
                    latencies.append(time.perf_counter() - t0)
                    assert execution.text == "2", execution

        t_setup = time.perf_counter()
        tasks = [asyncio.ensure_future(caller(i)) for i in range(concurrency)]
        capacity = _capacity(strategy, pool)
        if capacity is not None and concurrency > capacity:
            # leases beyond the pool (or max_sessions, for dedicated) wait for a session
            # that a warm caller releases only at its end: no common "all warm" moment
            ready.set()
        done = asyncio.ensure_future(asyncio.gather(*tasks))
        # a failing caller must not leave the others waiting for "all warm" forever
        await asyncio.wait(
            [done, asyncio.ensure_future(ready.wait())], return_when="FIRST_COMPLETED"
        )
        ready.set()
        t_steady = time.perf_counter()
        await done
        t_end = time.perf_counter()
        total = concurrency * ops
        return {
            "steady": total / (t_end - t_steady),
            "setup": (total + concurrency) / (t_end - t_setup),
            "p50": statistics.median(latencies) * 1000,
            "p95": sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000,
        }
    finally:
        await ci.close()


async def main_async(args: argparse.Namespace) -> str:
    pool = tuple(int(x) for x in args.pool.split(","))
    assert len(pool) == 2
    pool_t = (pool[0], pool[1])
    strategies = args.strategies.split(",")
    unknown = sorted(set(strategies) - set(STRATEGY_NAMES))
    if unknown or "singleton" not in strategies:
        raise SystemExit(
            f"--strategies: unknown {unknown} or no singleton (the baseline); "
            f"choose from {','.join(STRATEGY_NAMES)}"
        )
    settings = EmulatorSettings(spare_kernels=2)
    async with LocalEmulator(settings) as config:
        firsts: dict[str, list[float]] = {s: [] for s in strategies}
        for _ in range(args.first_rounds):
            for strategy in strategies:  # interleaved
                firsts[strategy].append(await first_result(config, strategy, pool_t))
        rows: list[tuple[str, int, int, dict[str, float]]] = []
        for concurrency in (1, 8, 32):
            for strategy in strategies:
                ops = args.ephemeral_ops if strategy == "ephemeral" else args.ops
                result = await throughput(config, strategy, pool_t, concurrency, ops)
                rows.append((strategy, concurrency, ops, result))
                print(f"  {strategy:9} c={concurrency:2} {result}", flush=True)

    lines = [
        "# Facade strategies against the local emulator",
        "",
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.machine()}; pool_size={pool_t}, max_sessions=8; "
        f"trivial execute `{CODE}`.",
        "",
        "## Time to first result (construct → first execute returns)",
        "",
        "| strategy | median s | runs |",
        "|---|---:|---:|",
    ]
    base = statistics.median(firsts["singleton"])
    for strategy in strategies:
        med = statistics.median(firsts[strategy])
        lines.append(
            f"| {strategy} | {med:.2f} ({med / base:.1f}× singleton) | {len(firsts[strategy])} |"
        )
    lines += [
        "",
        "## Throughput (executes/s; each caller holds one lease)",
        "",
        "| strategy | concurrency | ops/caller | steady exec/s | incl. setup exec/s "
        "| p50 ms | p95 ms | vs singleton (steady) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    steady = {(s, c): r["steady"] for s, c, _, r in rows}
    for strategy, concurrency, ops, r in rows:
        ratio = r["steady"] / steady[("singleton", concurrency)]
        lines.append(
            f"| {strategy} | {concurrency} | {ops} | {r['steady']:.1f} | {r['setup']:.1f} "
            f"| {r['p50']:.0f} | {r['p95']:.0f} | {ratio:.2f}× |"
        )
    lines += [
        "",
        "Notes: ephemeral pays a sandbox create + kernel start + delete per execute (bounded "
        "by max_sessions=8 live sandboxes); singleton runs every caller's context in one "
        "sandbox; pool gives each lease a whole session (callers beyond the pool's max wait "
        "FIFO for one, so at concurrency 32 the steady rate includes waiting and the "
        "sessions' context churn); dedicated starts a session per lease and deletes it at "
        "release (at most max_sessions leases at once; at concurrency 32 the others wait, as "
        "for pool). The emulator runs kernels on this "
        "machine's CPUs, so these numbers rank the strategies' overheads; they are not "
        "cloud latencies.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20)
    parser.add_argument("--ephemeral-ops", type=int, default=3)
    parser.add_argument("--first-rounds", type=int, default=3)
    parser.add_argument("--pool", default="4,8")
    parser.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    table = asyncio.run(main_async(args))
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
