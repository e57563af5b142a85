"""Chaos through the MCP server (issue #7): tool calls under ~20% injected faults.

Several official MCP clients (streamable HTTP, both protocol eras) share one
in-process server, with the singleton and the pool strategy, while the emulator
behind it injects transient faults (429 with Retry-After, 5xx, resets before and
after the body was read, slow answers). Every tool call ends in a correct result
or an error result that says what failed; no run_code or run_command runs twice
(each appends a unique token to a ledger, counted with faults off); the server
keeps serving and, once closed, leaves nothing with its owner prefix. A smaller
run adds destructive faults (a sandbox vanishes, a kernel dies), and one run
goes through the real `agentrun-ci-mcp` process over stdio. The full run of
more than 1,000 tool calls is marked slow; a ~200-call share runs by default.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

from chaos_workload import (
    Stats,
    check_stats,
    mcp_http_client,
    mcp_http_workload,
    mcp_leftovers,
    mcp_options,
    mcp_stdio_env,
    mcp_stdio_workload,
    serve_mcp_http,
    set_faults,
)
from mcp import Client
from support import SCRIPT, needs_script

from agentrun_ci import Config
from agentrun_ci.local import TRANSIENT_KINDS, EmulatorSettings, FaultPlan, LocalEmulator
from agentrun_ci_mcp.server import build_server

pytestmark = pytest.mark.anyio

RATE = 0.2
DESTRUCTIVE = {"sandbox_gone": 0.03, "kernel_death": 0.05, "error_503": 0.05, "reset_after": 0.05}


@pytest.fixture(scope="module")
def chaos() -> Iterator[tuple[Config, FaultPlan]]:
    """An emulator of our own with a fault plan (off until a test sets rates)."""
    plan = FaultPlan(seed=17, retry_after=0.05, slow_seconds=0.05)
    with LocalEmulator(EmulatorSettings(faults=plan, spare_kernels=2)) as config:
        yield config, plan


def _transient() -> dict[str, float]:
    return dict.fromkeys(TRANSIENT_KINDS, RATE / len(TRANSIENT_KINDS))


def _on(plan: FaultPlan, rates: dict[str, float], seed: int = 17) -> None:
    plan.update({"rates": rates, "seed": seed, "resetCounts": True})


def _off(plan: FaultPlan) -> None:
    plan.update({"rates": {}})


def _owner() -> str:
    return "mcpc" + secrets.token_hex(3)


def _s(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content  # type: ignore[no-any-return]


@pytest.mark.parametrize("strategy", ["singleton", "pool"])
async def test_mcp_clients_under_transient_faults(
    chaos: tuple[Config, FaultPlan], strategy: str
) -> None:
    config, plan = chaos
    _on(plan, _transient())
    try:
        stats = await mcp_http_workload(
            config, _owner(), 80, 5, lambda: _off(plan), strategy=strategy, clients=4
        )
    finally:
        _off(plan)
    assert stats.total == 80
    assert sum(plan.counts.values()) >= 5  # faults were really injected
    assert sum(stats.errors.values()) > 0  # and some reached the tools
    check_stats(stats)


async def test_mcp_clients_under_destructive_faults(chaos: tuple[Config, FaultPlan]) -> None:
    """Sandboxes vanish and kernels die: clear errors and reported resets, never a wrong
    result or lost state without `state_reset: true`."""
    config, plan = chaos
    _on(plan, DESTRUCTIVE, seed=3)
    try:
        stats = await mcp_http_workload(
            config, _owner(), 40, 6, lambda: _off(plan), strategy="pool", clients=2
        )
    finally:
        _off(plan)
    assert plan.counts["sandbox_gone"] + plan.counts["kernel_death"] > 0
    check_stats(stats, allow_unverifiable=True)


@pytest.mark.parametrize("strategy", ["singleton", "pool"])
async def test_a_vanished_sandbox_is_replaced_and_the_reset_reported(
    chaos: tuple[Config, FaultPlan], strategy: str
) -> None:
    config, plan = chaos
    owner = _owner()
    mcp, state = build_server(mcp_options(config, owner, strategy=strategy, pool_size=(1, 2)))
    async with Client(mcp) as client:
        assert not (await client.call_tool("run_code", {"code": "x = 41"})).is_error
        lease = state.clients["stdio"].lease
        assert lease is not None
        dead = lease.session_id
        plan.inject("sandbox_gone")  # the next request deletes the sandbox first
        after = await client.call_tool("run_code", {"code": "print('x' in globals())"})
        assert not after.is_error, after.content
        assert _s(after)["state_reset"] is True
        assert _s(after)["stdout"] == "False\n"
        assert lease.session_id not in (None, dead)
        again = await client.call_tool("run_code", {"code": "print('ok')"})
        assert _s(again)["state_reset"] is False
    assert plan.counts["sandbox_gone"] >= 1
    assert await anyio.to_thread.run_sync(mcp_leftovers, config, owner) == []


@pytest.mark.parametrize("strategy", ["singleton", "pool"])
async def test_a_file_call_on_a_vanished_sandbox_says_so_and_replaces_it(
    chaos: tuple[Config, FaultPlan], strategy: str
) -> None:
    """Regression: file and command calls on a lease whose sandbox vanished answered 404
    (\"no such file\") until a run_code noticed; now the first one says the session was
    lost and replaced, the next succeeds, and the next run reports state_reset."""
    config, plan = chaos
    owner = _owner()
    mcp, state = build_server(mcp_options(config, owner, strategy=strategy, pool_size=(1, 2)))
    async with Client(mcp) as client:
        await client.call_tool("run_code", {"code": "z = 1"})
        await client.call_tool("write_file", {"path": "/home/user/a.txt", "content": "a"})
        lease = state.clients["stdio"].lease
        assert lease is not None
        dead = lease.session_id
        plan.inject("sandbox_gone")
        lost = await client.call_tool("read_file", {"path": "/home/user/a.txt"})
        assert lost.is_error
        text = lost.content[0].text  # type: ignore[union-attr]
        assert "is gone" in text
        assert "repeat the call" in text
        assert lease.session_id not in (None, dead)
        missing = await client.call_tool("read_file", {"path": "/home/user/a.txt"})
        assert missing.is_error  # the file went with the old sandbox: a plain 404 now
        assert "[404" in missing.content[0].text  # type: ignore[union-attr]
        cmd = await client.call_tool("run_command", {"command": "echo fine"})
        assert _s(cmd)["stdout"].strip() == "fine"
        after = await client.call_tool("run_code", {"code": "print('z' in globals())"})
        assert _s(after)["state_reset"] is True
        assert _s(after)["stdout"] == "False\n"
    assert await anyio.to_thread.run_sync(mcp_leftovers, config, owner) == []


async def test_a_dead_kernel_is_reported_then_the_next_run_says_state_reset(
    chaos: tuple[Config, FaultPlan],
) -> None:
    config, plan = chaos
    owner = _owner()
    mcp, _ = build_server(mcp_options(config, owner))
    async with Client(mcp) as client:
        assert not (await client.call_tool("run_code", {"code": "y = 1"})).is_error
        plan.inject("kernel_death")
        died = await client.call_tool("run_code", {"code": "y"})
        assert died.is_error
        assert "ERR_CONTEXT_LOST" in died.content[0].text  # type: ignore[union-attr]
        after = await client.call_tool("run_code", {"code": "print('y' in globals())"})
        assert _s(after)["state_reset"] is True
        assert _s(after)["stdout"] == "False\n"
    assert await anyio.to_thread.run_sync(mcp_leftovers, config, owner) == []


async def test_a_reset_is_reported_even_when_recreating_the_context_failed_first(
    chaos: tuple[Config, FaultPlan],
) -> None:
    """Regression: after a lost context, if recreating it failed, the run after that made a
    fresh context but said `state_reset: false`."""
    config, plan = chaos
    owner = _owner()
    mcp, _ = build_server(mcp_options(config, owner))
    async with Client(mcp) as client:
        assert not (await client.call_tool("run_code", {"code": "w = 1"})).is_error
        plan.inject("kernel_death")
        assert (await client.call_tool("run_code", {"code": "w"})).is_error
        # next run: the execute answers 404 (context gone), the health probe passes, and
        # creating the new context fails
        plan.inject("slow", "slow", "error_500")
        failed = await client.call_tool("run_code", {"code": "w"})
        assert failed.is_error
        assert "[500" in failed.content[0].text  # type: ignore[union-attr]
        after = await client.call_tool("run_code", {"code": "print('w' in globals())"})
        assert _s(after)["stdout"] == "False\n"
        assert _s(after)["state_reset"] is True
    assert not plan.queue
    assert await anyio.to_thread.run_sync(mcp_leftovers, config, owner) == []


async def test_a_failed_first_call_without_a_session_id_frees_its_sandbox(
    chaos: tuple[Config, FaultPlan],
) -> None:
    """Regression: a client without an MCP session id never learns the handle of a state
    whose first call failed, so the server must not keep it (in a pool of one, its
    sandbox blocked every later client until the 30-minute idle timeout)."""
    config, _ = chaos
    owner = _owner()
    options = mcp_options(config, owner, strategy="pool", pool_size=(1, 1))
    async with serve_mcp_http(options) as (url, state), mcp_http_client(url, legacy=False) as call:
        missing = await call("read_file", {"path": "/home/user/none.txt"})
        assert missing.is_error
        assert state.clients == {}  # nobody has its handle: released at once
        first = await call("run_code", {"code": "kept = 1"})
        assert not first.is_error, first.content
        handle = _s(first)["session"]
        # a later failure keeps the state: the caller has its handle
        again = await call("read_file", {"path": "/home/user/none.txt", "session": handle})
        assert again.is_error
        after = await call("run_code", {"code": "print(kept)", "session": handle})
        assert _s(after)["stdout"] == "1\n"
    assert await anyio.to_thread.run_sync(mcp_leftovers, config, owner) == []


async def _stdio_run(config: Config, n: int, seed: int) -> Stats:
    """The console script against the faulty emulator; faults set over the admin route."""
    owner = _owner()
    url = config.data_url

    def off() -> None:
        set_faults(url, {"rates": {}})

    set_faults(url, {"rates": _transient(), "seed": seed, "resetCounts": True})
    try:
        stats = await mcp_stdio_workload(SCRIPT, mcp_stdio_env(config, owner), n, seed, off)
    finally:
        off()
    # the process saw EOF, deleted what it made and exited
    stats.leaked_sandboxes += len(await anyio.to_thread.run_sync(mcp_leftovers, config, owner))
    return stats


@needs_script
async def test_stdio_process_keeps_serving_under_transient_faults(
    chaos: tuple[Config, FaultPlan],
) -> None:
    config, plan = chaos
    stats = await _stdio_run(config, 40, 9)
    assert stats.total == 40
    assert sum(plan.counts.values()) > 0
    check_stats(stats)


@pytest.mark.slow
@needs_script
async def test_over_one_thousand_mcp_calls_under_faults(chaos: tuple[Config, FaultPlan]) -> None:
    config, plan = chaos
    total = Stats()
    for strategy, seed in (("singleton", 21), ("pool", 22)):
        _on(plan, _transient(), seed)
        try:
            total.merge(
                await mcp_http_workload(
                    config, _owner(), 450, seed, lambda: _off(plan), strategy=strategy, clients=4
                )
            )
        finally:
            _off(plan)
    total.merge(await _stdio_run(config, 100, 23))
    check_stats(total)
    _on(plan, DESTRUCTIVE, seed=24)
    try:
        destructive = await mcp_http_workload(
            config, _owner(), 100, 24, lambda: _off(plan), strategy="pool", clients=3
        )
    finally:
        _off(plan)
    check_stats(destructive, allow_unverifiable=True)
    total.merge(destructive)
    assert total.total >= 1000
