"""Many MCP clients: a client beyond a limit is refused at once, with the limit and the
flag that sets it (never queued), and an idle client's sandbox is released after
`--idle-timeout`, which its next call is told.

Over real streamable HTTP (the console script, the local backend, one MCP session per
client), except the `--max-clients` case with every client busy, which only clients
without an MCP session (known by their `session` handle) can reach: that one drives the
server's state in-process against the emulator.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

from mcp.server.mcpserver.exceptions import ToolError
from support import http_server_process, needs_script, wait_until

from agentrun_ci import Config
from agentrun_ci_mcp.server import ServerOptions, build_server
from agentrun_ci_mcp.tools import using

pytestmark = pytest.mark.anyio

#: a hang guard well below the 60 s a queued pool client used to wait
REFUSAL_WAIT = 30.0


def _owner() -> str:
    return "mcli" + secrets.token_hex(3)


def _s(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content  # type: ignore[no-any-return]


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


@asynccontextmanager
async def _state(emulator: Config, **options: Any) -> AsyncIterator[Any]:
    """The MCP server's state in-process against the emulator (closed when the block exits)."""
    _, state = build_server(
        ServerOptions(
            config=emulator, backend="cloud", owner=_owner(), reap_orphans=False, **options
        )
    )
    try:
        yield state
    finally:
        await state.close()


@asynccontextmanager
async def _session(url: str, token: str) -> AsyncIterator[Any]:
    """One MCP client over streamable HTTP (its own MCP session); the session is ended
    (HTTP DELETE) when the block exits."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=300) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@needs_script
async def test_a_client_beyond_a_full_pool_is_refused_at_once_naming_pool_size(
    tmp_path: Path,
) -> None:
    args = ("--strategy", "pool", "--pool-size", "1")
    log = tmp_path / "server.log"
    with http_server_process(_owner(), log, *args) as (url, token, _):
        async with _session(url, token) as first:
            held = await first.call_tool("run_code", {"code": "x = 'first'"})
            assert not held.is_error, _text(held)
            async with _session(url, token) as second:
                with anyio.fail_after(REFUSAL_WAIT):
                    refused = await second.call_tool("run_code", {"code": "print('second')"})
                assert refused.is_error
                message = _text(refused)
                assert "--pool-size max 1" in message
                assert "--idle-timeout" in message
                # the first client keeps its sandbox and its state
                still = await first.call_tool("run_code", {"code": "print(x)"})
                assert _s(still)["stdout"] == "first\n"
        # the first client ended its session: its sandbox goes back to the pool (the
        # server releases it after answering the session's DELETE)
        wait_until(
            lambda: "released the state of client" in log.read_text(),
            "the first client's sandbox to go back to the pool",
            timeout=120,
        )
        # the refused client held nothing, so only the first client's release is logged
        # (one logged for the second could be taken for the first's, before it happened)
        assert log.read_text().count("released the state of client") == 1
        async with _session(url, token) as third:
            served = await third.call_tool("run_code", {"code": "print('third')"})
            assert _s(served)["stdout"] == "third\n"
            assert _s(served)["state_reset"] is False


@needs_script
async def test_an_idle_clients_sandbox_is_released_and_its_next_call_is_told(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    # dedicated: the HTTP default, a sandbox per client
    with http_server_process(_owner(), log, "--idle-timeout", "1") as (url, token, _):
        async with _session(url, token) as client:
            first = await client.call_tool(
                "run_code", {"code": "v = 1; open('mine.txt', 'w').write('m')"}
            )
            assert not first.is_error, _text(first)
            wait_until(
                lambda: "released the state of client" in log.read_text(),
                "the idle client's state to be released",
                timeout=120,
            )
            after = _s(
                await client.call_tool(
                    "run_code", {"code": "import os; print(os.path.exists('mine.txt')); v"}
                )
            )
            assert after["state_reset"] is True
            assert after["error"]["name"] == "NameError"
            assert after["stdout"] == "False\n"  # its sandbox, files and all, was deleted
            notes = " ".join(after["notes"])
            assert "without a call (--idle-timeout)" in notes
            assert "files" in notes
            again = _s(await client.call_tool("run_code", {"code": "v = 2"}))
            assert again["state_reset"] is False


async def test_a_client_beyond_max_clients_all_busy_is_refused_naming_the_flag(
    emulator: Config,
) -> None:
    async with _state(emulator, max_clients=1, strategy="dedicated") as state:
        busy = state.client("handle:busy")
        async with using(state, busy) as lease:
            await lease.execute_code("x = 1")
            busy.had_state = True  # as run_code marks it
            newcomer = state.client("handle:new")
            with anyio.fail_after(REFUSAL_WAIT), pytest.raises(ToolError) as refused:
                async with using(state, newcomer):
                    pytest.fail("a client beyond --max-clients was served")
            assert "--max-clients=1" in str(refused.value)
            assert list(state.clients) == ["handle:busy"]  # the refused one holds nothing
        # once the first is idle, a new client is served: the idle one is released for it
        async with using(state, state.client("handle:later")) as lease:
            execution = await lease.execute_code("print('later')")
        assert execution.stdout == "later\n"
        assert list(state.clients) == ["handle:later"]
        assert "--max-clients" in (state.registry.tombstones.get(busy.handle) or "")


async def test_a_client_refused_by_a_full_pool_holds_no_lease(emulator: Config) -> None:
    async with _state(emulator, strategy="pool", pool_size=1) as state:
        holder = state.client("handle:holder")
        async with using(state, holder) as lease:
            await lease.execute_code("x = 1")
        refused = state.client("session:refused")  # stable: kept after a failed call
        with anyio.fail_after(REFUSAL_WAIT), pytest.raises(ToolError, match="--pool-size max 1"):
            async with using(state, refused):
                pytest.fail("a client beyond a full pool was served")
        # nothing to release when it ends: its end is not logged as a release
        assert refused.lease is None
        await state.release(holder.key)
        async with using(state, refused) as lease:  # asks the pool afresh, and is served
            execution = await lease.execute_code("print('now')")
        assert execution.stdout == "now\n"
