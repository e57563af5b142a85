"""The MCP server's life around the calls (issue #14): how hosts close it, how long
state lives, what a failure reads like, and the protocol details real hosts check.

Hosts (the Python and TypeScript SDK clients) close a stdio server by closing its
stdin, then send SIGTERM 2 s later, SIGKILL 2 s after that. The server must have
cleaned up and exited before the SIGTERM; a signal that does land during the
cleanup must wait for it, never cut it off.
"""

from __future__ import annotations

import logging
import random
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

import httpx
import jsonschema
from mcp import Client
from support import (
    EXIT_WAIT,
    SCRIPT,
    Server,
    base_env,
    cloud_env,
    cloud_leaks,
    initialize_request,
    live_in_session,
    live_mentioning,
    needs_script,
    remaining,
    running_emulator,
    sandbox_on,
    wait_until,
)

from agentrun_ci import AsyncControlPlane, Config
from agentrun_ci.local import EmulatorSettings, LocalEmulator
from agentrun_ci_mcp.serve import bearer_guard
from agentrun_ci_mcp.server import AppState, ServerOptions, build_server
from agentrun_ci_mcp.state import reap_interval, sandbox_idle_timeout

#: host-style closes in a row (the issue saw the race in 2 of 7)
ROUNDS = 5
SEED = 1414
#: idle seconds after which the `expiring` emulator deletes a sandbox (long enough for a
#: kernel to start on a loaded machine: the emulator does not count a request in flight)
EXPIRY = 4.0
CLEANED = "deleted the sandboxes and interpreter this server created"


def _owner() -> str:
    return "life" + secrets.token_hex(3)


def _s(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content  # type: ignore[no-any-return]


# ---------------------------------------------------------------- closed the way hosts do


@pytest.fixture(scope="module")
def cloud() -> Iterator[tuple[LocalEmulator, Config]]:
    """The emulator as the server's cloud, run by this process (its state can be read)."""
    with running_emulator(EmulatorSettings()) as running:
        yield running


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.close()


def _serve(config: Config, owner: str, where: Path, servers: list[Server]) -> tuple[Server, Path]:
    """A server with the emulator as its cloud and a private temp dir, after its first call
    (so there is a template, a sandbox and a kernel to delete)."""
    where.mkdir()
    tmp = where / "tmp"
    tmp.mkdir()
    env = cloud_env(config, owner, AGENTRUN_MCP_LOG_LEVEL="INFO", TMPDIR=str(tmp))
    server = Server(env, where / "server.log")
    servers.append(server)
    server.initialize()
    server.tool_ok("run_code", code="x = 1")
    server.tool_ok("run_command", command="nohup sleep 300 > /dev/null 2>&1 &")
    return server, tmp


def _left(
    emulator: LocalEmulator, config: Config, owner: str, server: Server, tmp: Path
) -> list[str]:
    """What the stopped server left: resources and kernels on the emulator, processes in
    its session, files in its temp dir."""
    found = cloud_leaks(emulator, config, owner)
    found += [f"in its session: {p}" for p in remaining(lambda: live_in_session(server.pid))]
    found += [f"temp: {f}" for f in tmp.iterdir()]
    return found


@needs_script
def test_closed_as_hosts_close_it_many_times_nothing_is_left(
    cloud: tuple[LocalEmulator, Config], tmp_path: Path, servers: list[Server]
) -> None:
    emulator, config = cloud
    owner = _owner()
    times, late = [], []
    for n in range(ROUNDS):
        server, tmp = _serve(config, owner, tmp_path / f"round{n}", servers)
        assert cloud_leaks(emulator, config, owner, wait=0)  # the probes see a live server
        status, elapsed, signalled = server.close_like_a_host()
        times.append(round(elapsed, 3))
        log = server.log.read_text()
        context = f"round {n}: status {status} after {elapsed:.2f} s\n{log}"
        assert _left(emulator, config, owner, server, tmp) == [], context
        assert CLEANED in log, context
        assert "could not" not in log, context
        if signalled:  # only on a machine too loaded to clean up within 2 s
            late.append(n)
            assert status in (0, 128 + signal.SIGTERM), context
            assert f"signal {int(signal.SIGTERM)}" in log or status == 0, context
        else:
            assert status == 0, context
    print(f"EOF -> exit, s: {times}; needed the SIGTERM: {late}")
    # EOF alone stops the server (the time it takes is measured in benchmarks/mcp.py)
    assert len(late) < ROUNDS, times


@needs_script
def test_a_signal_at_random_points_during_cleanup_joins_it(
    cloud: tuple[LocalEmulator, Config], tmp_path: Path, servers: list[Server]
) -> None:
    emulator, config = cloud
    owner = _owner()
    rng = random.Random(SEED)
    # how long EOF -> exit takes here: the window the signals are dropped into (measured
    # without a host's deadline: on a loaded machine the cleanup can outlast its 2 s)
    first, tmp = _serve(config, owner, tmp_path / "measure", servers)
    status, window, _ = first.close_like_a_host(signal_after=120)
    assert status == 0, first.log_tail()
    assert _left(emulator, config, owner, first, tmp) == []
    statuses = []
    for n in range(ROUNDS):
        server, tmp = _serve(config, owner, tmp_path / f"signal{n}", servers)
        delay = rng.uniform(0.0, window)
        status, _, signalled = server.close_like_a_host(signal_after=delay)
        statuses.append(status)
        log = server.log.read_text()
        context = f"round {n}, SIGTERM {delay:.3f} s after EOF (seed {SEED}), status {status}"
        # 0: the cleanup was over before the signal (which is then only recorded);
        # 143: the signal came first and waited for the cleanup, never cut it off
        assert status in (0, 128 + signal.SIGTERM), f"{context}\n{log}"
        if status:
            assert signalled, f"{context}\n{log}"
            assert f"signal {int(signal.SIGTERM)}" in log, f"{context}\n{log}"
        assert CLEANED in log, f"{context}\n{log}"
        assert "could not" not in log, f"{context}\n{log}"
        assert _left(emulator, config, owner, server, tmp) == [], f"{context}\n{log}"
    print(f"window {window:.3f} s, statuses {statuses}")


#: host-style closes right after a cancelled run (the issue saw 6 SIGTERMs in 15)
CANCELLED_ROUNDS = 8
STARTED = "run-started"


def _cancel_a_long_run(server: Server, tmp: Path, settled: bool) -> None:
    """Start a 20 s run, wait until its code runs in the kernel, cancel it. `settled`:
    also wait until the server has begun restarting the context to stop it."""
    code = f"import pathlib, time; pathlib.Path({STARTED!r}).touch(); time.sleep(20)"
    request = server.tool("run_code", code=code)
    wait_until(lambda: list(tmp.rglob(STARTED)), lambda: f"the run to start:\n{server.log_tail()}")
    server.send(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request, "reason": "the user pressed stop"},
        }
    )
    if settled:
        wait_until(
            lambda: "restarting the client's context" in server.log.read_text(),
            lambda: f"the restart after the cancel:\n{server.log_tail()}",
        )


def _local_server_after_a_run(where: Path, servers: list[Server]) -> tuple[Server, Path]:
    """A stdio server on the local backend (as a host with no credentials runs it), its
    temp dir in `where`, after one answered run (its sandbox and kernel exist)."""
    tmp = where / "tmp"
    tmp.mkdir(parents=True)
    env = base_env(_owner(), log_level="INFO") | {
        "AGENTRUN_MCP_BACKEND": "local",
        "TMPDIR": str(tmp),
    }
    server = Server(env, where / "server.log")
    servers.append(server)
    server.initialize()
    server.tool_ok("run_code", code="x = 1")
    return server, tmp


def _left_locally(pid: int, tmp: Path) -> list[str]:
    """What a stopped server on the local backend left: processes of its session or
    mentioning its temp dir (kernels, commands), files in that dir."""
    left = [f"in its session: {p}" for p in remaining(lambda: live_in_session(pid))]
    left += [f"process: {p}" for p in remaining(lambda: live_mentioning(str(tmp)))]
    return left + [f"temp: {f}" for f in tmp.iterdir()]


@needs_script
def test_closed_as_hosts_close_it_right_after_a_cancelled_run(
    tmp_path: Path, servers: list[Server]
) -> None:
    """Local backend (the embedded emulator), as a host with no credentials runs it: after
    a cancelled run, stdin EOF alone stops the server, before the host's SIGTERM (exit 0,
    never 143), and nothing is left: no process of its session or mentioning its temp dir,
    no file in its temp dir."""
    statuses = []
    for n in range(CANCELLED_ROUNDS):
        server, tmp = _local_server_after_a_run(tmp_path / f"round{n}", servers)
        _cancel_a_long_run(server, tmp, settled=n % 2 == 1)
        status, _, signalled = server.close_like_a_host()
        statuses.append(status)
        context = f"round {n}: status {status}, SIGTERM sent: {signalled}\n{server.log_tail()}"
        # the host's grace is the condition: past it the host sends SIGTERM (exit 143)
        assert not signalled, context
        assert status == 0, context
        assert _left_locally(server.pid, tmp) == [], context
    assert statuses == [0] * CANCELLED_ROUNDS


#: host-style closes while a run is in flight, not cancelled
IN_FLIGHT_ROUNDS = 3


def _start_a_long_run_and_go_quiet(server: Server, tmp: Path) -> None:
    """Start a 20 s run, wait until its code runs, then stay quiet for longer than a
    batch would (what makes the client a host closing stdin to stop the server)."""
    from agentrun_ci_mcp.serve import EOF_BATCH_WINDOW

    code = f"import pathlib, time; pathlib.Path({STARTED!r}).touch(); time.sleep(20)"
    server.tool("run_code", code=code)
    wait_until(lambda: list(tmp.rglob(STARTED)), lambda: f"the run to start:\n{server.log_tail()}")
    quiet_from = time.monotonic()
    wait_until(lambda: time.monotonic() - quiet_from > EOF_BATCH_WINDOW, "the client to go quiet")


@needs_script
def test_closed_as_hosts_close_it_during_a_run(tmp_path: Path, servers: list[Server]) -> None:
    """A host that quits while a run is in flight closes stdin after going quiet (MCP's
    stdio shutdown): the run is cancelled, not waited for, and the server exits before
    the host's SIGTERM (exit 0), leaving nothing. (A batch, which closes stdin right after
    its requests, is waited for: tests/test_mcp_stdio.py.)"""
    for n in range(IN_FLIGHT_ROUNDS):
        server, tmp = _local_server_after_a_run(tmp_path / f"round{n}", servers)
        _start_a_long_run_and_go_quiet(server, tmp)
        status, _, signalled = server.close_like_a_host()
        log = server.log.read_text()
        context = f"round {n}: status {status}, SIGTERM sent: {signalled}\n{server.log_tail()}"
        assert "a client stopping the server; cancelling them" in log, context
        assert not signalled, context
        assert status == 0, context
        assert _left_locally(server.pid, tmp) == [], context


@pytest.mark.anyio
async def test_killing_the_local_sandboxes_at_once_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: Config
) -> None:
    """The stop used when the graceful cleanup after EOF is too slow: every kernel and
    command (a background one too) is killed, the emulator's directories are removed.
    Another emulator in the same process (the session's) keeps its kernels."""
    with sandbox_on(emulator) as (plane, other):
        before = await anyio.to_thread.run_sync(lambda: plane.execute(other, "k = 41"))
        assert before.error is None
        await _kill_now_leaves_nothing(tmp_path, monkeypatch)
        after = await anyio.to_thread.run_sync(lambda: plane.execute(other, "print(k + 1)"))
        assert after.error is None
        assert after.stdout == "42\n"


async def _kill_now_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the emulator puts its own
    mcp, state = build_server(ServerOptions(backend="local", owner=_owner()))
    async with Client(mcp) as c:
        first = await c.call_tool("run_code", {"code": "import os; os.getpid()"})
        assert not first.is_error, first.content
        ran = await c.call_tool("run_command", {"command": "nohup sleep 300 > /dev/null 2>&1 &"})
        assert not ran.is_error, ran.content
        assert await anyio.to_thread.run_sync(live_mentioning, str(tmp_path))
        assert state.kill_now()
        left = await anyio.to_thread.run_sync(remaining, lambda: live_mentioning(str(tmp_path)))
        assert left == []
        assert await anyio.to_thread.run_sync(lambda: list(tmp_path.iterdir())) == []
    # the graceful cleanup that follows finds nothing left, and finishes


# ---------------------------------------------------------------- one lifetime model


def test_the_sandbox_outlives_every_client_state() -> None:
    for idle in (0.5, 60.0, 1800.0, 7200.0):
        options = ServerOptions(idle_timeout=idle)
        assert sandbox_idle_timeout(options) > idle + reap_interval(options)


@pytest.fixture
def expiring() -> Iterator[tuple[LocalEmulator, Config]]:
    """An emulator whose sandboxes expire after EXPIRY s idle (as if the service's idle timeout
    were shorter than the server asked for)."""
    with running_emulator(EmulatorSettings(idle_timeout=EXPIRY, reaper_interval=0.1)) as running:
        yield running


async def _sandboxes(config: Config, owner: str) -> set[str]:
    """The owner's live sandboxes (an expired one stays listed, stopped)."""
    async with AsyncControlPlane(config) as control:
        listed = await control.list_sandboxes()
    return {
        s.sandbox_id
        for s in listed
        if s.sandbox_id.startswith(f"arci-{owner}-") and s.status in ("READY", "CREATING")
    }


async def _wait_expired(config: Config, owner: str, sandbox: set[str]) -> None:
    with anyio.fail_after(20):
        while await _sandboxes(config, owner) & sandbox:  # noqa: ASYNC110 -- another process
            await anyio.sleep(0.1)


def _options(config: Config, **kw: Any) -> ServerOptions:
    return ServerOptions(config=config, backend="cloud", owner=_owner(), **kw)


@pytest.mark.anyio
async def test_idle_past_the_sandbox_timeout_the_client_is_told_once(
    expiring: tuple[LocalEmulator, Config],
) -> None:
    _, config = expiring
    options = _options(config)
    mcp, _ = build_server(options)
    async with Client(mcp) as c:
        assert not _s(await c.call_tool("run_code", {"code": "x = 1"}))["state_reset"]
        await _wait_expired(
            config, options.owner or "", await _sandboxes(config, options.owner or "")
        )
        after = _s(await c.call_tool("run_code", {"code": "x"}))
        assert after["error"]["name"] == "NameError"
        assert after["state_reset"] is True
        assert any("sandbox was gone" in n and "files" in n for n in after["notes"])
        again = _s(await c.call_tool("run_code", {"code": "x = 2"}))
        assert again["state_reset"] is False


@pytest.mark.anyio
async def test_a_new_client_after_a_reset_had_no_state_to_lose(
    expiring: tuple[LocalEmulator, Config],
) -> None:
    _, config = expiring
    options = _options(config)
    mcp, state = build_server(options)
    async with Client(mcp) as c:
        await c.call_tool("run_code", {"code": "x = 1"})
        await _wait_expired(
            config, options.owner or "", await _sandboxes(config, options.owner or "")
        )
        # the client goes away (no tombstone: as if it had never been seen) ...
        await state.release("stdio")
        # ... and a brand-new one starts on the expired sandbox: nothing of its own was lost
        first = _s(await c.call_tool("run_code", {"code": "print('new')"}))
        assert first["stdout"] == "new\n"
        assert first["state_reset"] is False
        assert not any("state reset" in n for n in first["notes"])


@pytest.mark.anyio
async def test_after_an_idle_release_the_next_call_says_state_reset(emulator: Config) -> None:
    options = _options(emulator, idle_timeout=0.2)
    mcp, state = build_server(options)
    async with Client(mcp) as c:
        await c.call_tool("run_code", {"code": "v = 1; open('kept.txt', 'w').write('k')"})
        with anyio.fail_after(10):
            while state.clients:  # noqa: ASYNC110 -- the background reaper releases it
                await anyio.sleep(0.02)
        r = _s(await c.call_tool("run_code", {"code": "print(open('kept.txt').read()); v"}))
        assert r["error"]["name"] == "NameError"
        assert r["stdout"] == "k\n"  # singleton: the sandbox, and its files, are shared
        assert r["state_reset"] is True
        assert any("without a call" in n and "files are kept" in n for n in r["notes"]), r
        assert _s(await c.call_tool("run_code", {"code": "v = 2"}))["state_reset"] is False


@pytest.mark.anyio
async def test_a_cancelled_run_says_files_are_kept(emulator: Config) -> None:
    from mcp import MCPError

    mcp, _ = build_server(_options(emulator, progress_interval=0.1))
    async with Client(mcp) as c:
        await c.call_tool("write_file", {"path": "/home/user/kept.txt", "content": "k"})
        with pytest.raises(MCPError):
            await c.call_tool(
                "run_code", {"code": "import time; time.sleep(25)"}, read_timeout_seconds=0.5
            )
        after = _s(await c.call_tool("run_code", {"code": "print(open('kept.txt').read())"}))
    assert after["stdout"] == "k\n"
    assert after["state_reset"] is True
    assert any("files are kept" in n for n in after["notes"])
    assert not any("may be gone" in n for n in after["notes"])


# ---------------------------------------------------------------- failures and details


@pytest.mark.anyio
async def test_an_unexpected_exception_is_a_readable_result() -> None:
    async def broken(options: ServerOptions) -> Any:
        raise RuntimeError("the disk is on fire")

    options = ServerOptions(backend="local", reap_orphans=False)
    mcp, _ = build_server(options, state=AppState(options, broken))
    async with Client(mcp) as c:
        for tool, args in (("run_code", {"code": "1"}), ("list_files", {})):
            r = await c.call_tool(tool, args)
            assert r.is_error
            text = r.content[0].text  # type: ignore[union-attr]
            assert "RuntimeError: the disk is on fire" in text
            assert "Retry" in text


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_only_tools_are_advertised_and_schemas_are_portable(mode: str) -> None:
    options = ServerOptions(backend="local", reap_orphans=False)
    mcp, _ = build_server(options)
    async with Client(mcp, mode=mode) as c:
        caps = c.server_capabilities
        assert caps.tools is not None
        assert caps.prompts is None
        assert caps.resources is None
        tools = (await c.list_tools()).tools

    def type_arrays(node: Any, path: str) -> list[str]:
        """Inspector --strict (Ajv strictTypes) warns on every `type: [...]`."""
        found = []
        if isinstance(node, dict):
            if isinstance(node.get("type"), list):
                found.append(path)
            for key, value in node.items():
                found += type_arrays(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                found += type_arrays(value, f"{path}/{i}")
        return found

    for tool in tools:
        for kind, schema in (("input", tool.input_schema), ("output", tool.output_schema)):
            if schema is None:
                continue
            jsonschema.Draft202012Validator.check_schema(schema)
            assert type_arrays(schema, f"{tool.name}:{kind}") == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (b"Bearer s3cret", 200),
        (b"bearer s3cret", 200),
        (b"BEARER  s3cret ", 200),
        (b"Bearer S3CRET", 401),
        (b"Basic s3cret", 401),
        (b"Bearer", 401),
        (b"", 401),
    ],
)
async def test_the_bearer_scheme_is_case_insensitive_the_token_is_not(
    header: bytes, status: int
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = bearer_guard(app, "s3cret")
    transport = httpx.ASGITransport(app=guarded)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        headers = {"authorization": header.decode()} if header else {}
        assert (await http.get("/mcp", headers=headers)).status_code == status


@pytest.mark.anyio
async def test_oauth_discovery_is_a_404_and_a_missing_token_a_bearer_401() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=bearer_guard(app, "s3cret"))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for path in (
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-authorization-server",
        ):
            found = await http.get(path)
            assert found.status_code == 404, path
            assert "not an OAuth server" in found.json()["error"]
        denied = await http.post("/mcp", json={})
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Bearer ")
        assert "Authorization: Bearer" in denied.json()["error"]
        wrong = await http.post("/mcp", json={}, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401


@pytest.mark.anyio
async def test_a_failed_delete_is_logged_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    class Lease:
        async def release(self) -> None:
            raise OSError("connection refused")

    class Interpreter:
        async def close(self) -> None:
            raise OSError("the control plane answered 500")

    state = AppState(ServerOptions(backend="local", reap_orphans=False))
    state.interpreter = Interpreter()  # type: ignore[assignment]
    state.client("stdio").lease = Lease()  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="agentrun_ci_mcp"):
        await state.close()
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        "could not release the state of client stdio: connection refused" in m for m in failed
    )
    assert any(
        "could not delete everything this server created: the control plane answered 500" in m
        and "AGENTRUN_CI_OWNER" in m
        for m in failed
    ), failed
    text = caplog.text
    assert CLEANED not in text
    assert "released the state of client" not in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@needs_script
def test_max_clients_bounds_http_sessions_with_a_clear_refusal(tmp_path: Path) -> None:
    port = _free_port()
    token = secrets.token_urlsafe(16)
    env = base_env(_owner(), log_level="INFO") | {
        "AGENTRUN_MCP_BACKEND": "local",
        "AGENTRUN_MCP_AUTH_TOKEN": token,
    }
    args = ["--transport", "streamable-http", "--port", str(port), "--max-clients", "2"]
    with open(tmp_path / "server.log", "wb") as err:
        proc = subprocess.Popen(
            [SCRIPT, *args], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env
        )
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "authorization": f"Bearer {token}",
    }
    initialize = initialize_request("tests")
    try:
        with httpx.Client(timeout=30) as http:
            deadline = time.monotonic() + EXIT_WAIT
            while True:
                try:
                    first = http.post(url, json=initialize, headers=headers)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, (tmp_path / "server.log").read_text()
                    assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                    time.sleep(0.05)
            second = http.post(url, json=initialize, headers=headers)
            sessions = [r.headers.get("mcp-session-id") for r in (first, second)]
            assert [first.status_code, second.status_code] == [200, 200]
            assert all(sessions)
            assert len(set(sessions)) == 2

            refused = http.post(url, json=initialize, headers=headers)
            assert refused.status_code == 503
            message = refused.json()["error"]["message"]
            assert "at most 2" in message
            assert "--max-clients" in message
            assert "DELETE" in message

            # a session ended makes room for a new one
            ended = http.delete(url, headers=headers | {"mcp-session-id": sessions[0] or ""})
            assert ended.status_code == 200
            assert http.post(url, json=initialize, headers=headers).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_WAIT) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
