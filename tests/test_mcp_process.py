"""The installed `agentrun-ci-mcp` console script as a real subprocess.

The server runs against the session's emulator (`--backend cloud` with the
emulator's endpoints in the environment), with a unique owner tag, so that
after EOF, SIGTERM or SIGINT the test can list the emulator and check that
nothing this server created is left.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun_ci._ownership import OwnerTag

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

import httpx
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from support import (
    SCRIPT,
    cloud_env,
    initialize_request,
    needs_script,
    owned,
    remaining,
    wait_until,
)

from agentrun_ci import Config, ControlPlane, DataPlane, NotFoundError, __version__

pytestmark = needs_script


def _owner() -> str:
    return "mcpp" + secrets.token_hex(3)


# ---------------------------------------------------------------- raw JSON-RPC over stdio


class RawServer:
    """Speaks newline-delimited JSON-RPC to the server so the test can signal it."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [SCRIPT, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._id = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._id += 1
        self.send({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, "server closed stdout"
            message = json.loads(line)  # anything but JSON-RPC on stdout fails here
            if message.get("id") == self._id:
                return message  # type: ignore[no-any-return]

    def initialize(self) -> dict[str, Any]:
        reply = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def run_code(self, code: str) -> dict[str, Any]:
        reply = self.request("tools/call", {"name": "run_code", "arguments": {"code": code}})
        return reply["result"]  # type: ignore[no-any-return]

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def raw(emulator: Config) -> Iterator[tuple[RawServer, Config, str]]:
    owner = _owner()
    server = RawServer(cloud_env(emulator, owner))
    try:
        yield server, emulator, owner
    finally:
        server.close()


def test_stdio_handshake_and_state_then_eof_cleans_up(
    raw: tuple[RawServer, Config, str],
) -> None:
    server, config, owner = raw
    init = server.initialize()["result"]
    assert init["serverInfo"] == {"name": "agentrun-ci", "version": __version__}
    assert server.run_code("a = 20")["isError"] is False
    result = server.run_code("print(a + 1)")
    assert result["structuredContent"]["stdout"] == "21\n"
    assert json.loads(result["content"][0]["text"])["stdout"] == ["21\n"]
    assert owned(config, owner)  # it really created something
    assert server.proc.stdin is not None
    server.proc.stdin.close()
    assert server.wait() == 0
    assert owned(config, owner) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_delete_everything_even_mid_run(
    raw: tuple[RawServer, Config, str], signum: int, code: int
) -> None:
    server, config, owner = raw
    server.initialize()
    assert server.run_code("b = 1")["isError"] is False
    # a long run in flight must not hold up the cleanup
    long_run = "open('running', 'w').close()\nimport time\ntime.sleep(25)"
    server.send(
        {
            "jsonrpc": "2.0",
            "id": 99,
            "method": "tools/call",
            "params": {"name": "run_code", "arguments": {"code": long_run}},
        }
    )
    wait_until(lambda: _running_in(config, owner), "the long run to start")
    started = time.monotonic()
    server.proc.send_signal(signum)
    assert server.wait() == code
    # well short of the 25 s the run would take (a hang guard with room for a loaded
    # machine: the deletes themselves took up to 5 s there)
    assert time.monotonic() - started < 15
    assert owned(config, owner) == []


def _running_in(config: Config, owner: str) -> bool:
    """Has the owner's sandbox the file that the long run writes as it starts?"""
    with ControlPlane(config) as control, DataPlane(config) as data:
        for sandbox in control.list_sandboxes():
            sid = sandbox.sandbox_id
            if not sid.startswith(f"arci-{owner}-"):
                continue
            try:
                data.read_file(sid, "running")
            except NotFoundError:
                continue
            return True
    return False


def test_nothing_but_protocol_on_stdout_and_idle_start_creates_nothing(
    raw: tuple[RawServer, Config, str],
) -> None:
    server, config, owner = raw
    server.initialize()
    tools = server.request("tools/list", {})["result"]["tools"]
    assert "run_code" in {t["name"] for t in tools}
    assert owned(config, owner) == []  # the handshake is answered before any sandbox
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 143


@pytest.mark.anyio
async def test_official_stdio_client_both_spellings(emulator: Config) -> None:
    owner = _owner()
    params = StdioServerParameters(command=SCRIPT, args=[], env=cloud_env(emulator, owner))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.server_info.name == "agentrun-ci"
        r = await session.call_tool("run_code", {"code": "print('legacy')"})
        assert r.structured_content is not None
        assert r.structured_content["stdout"] == "legacy\n"
    async with Client(params) as client:
        r = await client.call_tool("run_code", {"code": "1/0"})
        assert r.is_error
        assert r.structured_content is not None
        assert r.structured_content["error"]["name"] == "ZeroDivisionError"
    assert owned(emulator, owner) == []


# ---------------------------------------------------------------- streamable HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_http_server(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """`agentrun-ci-mcp` over streamable HTTP on a free port, once it answers there.

    A port found free can be taken by another test's server before this one binds it
    (a loaded machine widens that window): only this server's own refusal (401 with a
    Bearer challenge) counts as listening, and a server that could not bind is started
    again on another port.
    """
    for _ in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [SCRIPT, "--transport", "streamable-http", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

        def ours(proc: subprocess.Popen[bytes] = proc, port: int = port) -> str:
            if proc.poll() is not None:
                return "exited"
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/mcp", json=_INIT, headers=_ACCEPT, timeout=10
                )
            except httpx.TransportError:
                return ""
            bearer = "bearer" in answer.headers.get("www-authenticate", "").lower()
            return "listening" if answer.status_code == 401 and bearer else ""

        if wait_until(ours, f"the server to listen on port {port}", timeout=120) == "listening":
            return proc, port
        if proc.stderr is not None:
            proc.stderr.close()
    pytest.fail("the HTTP server could not start on three free ports in a row")


@pytest.fixture
def http_server(emulator: Config) -> Iterator[tuple[str, str, Config, str]]:
    owner = _owner()
    token = secrets.token_urlsafe(16)
    env = cloud_env(emulator, owner) | {"AGENTRUN_MCP_AUTH_TOKEN": token}
    proc, port = _start_http_server(env)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        yield url, token, emulator, owner
    finally:
        proc.send_signal(signal.SIGTERM)
        status = None
        try:
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = proc.wait(0.1)
            if status is None:
                # a second signal, as an impatient host sends: it joins the cleanup
                proc.send_signal(signal.SIGTERM)
                status = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
    assert status == 128 + signal.SIGTERM
    assert owned(emulator, owner) == []


_INIT = initialize_request("t")
_ACCEPT = {"accept": "application/json, text/event-stream"}


def test_http_needs_the_bearer_token_and_a_local_host_header(
    http_server: tuple[str, str, Config, str],
) -> None:
    url, token, _, _ = http_server
    with httpx.Client(timeout=10) as http:
        assert http.post(url, json=_INIT, headers=_ACCEPT).status_code == 401
        wrong = {**_ACCEPT, "authorization": "Bearer nope"}
        assert http.post(url, json=_INIT, headers=wrong).status_code == 401
        auth = {**_ACCEPT, "authorization": f"Bearer {token}"}
        assert http.post(url, json=_INIT, headers=auth).status_code == 200
        # DNS rebinding: a foreign Host or Origin is refused even with the token
        rebind = {**auth, "host": "evil.example:80"}
        assert http.post(url, json=_INIT, headers=rebind).status_code in (403, 421)
        origin = {**auth, "origin": "http://evil.example"}
        assert http.post(url, json=_INIT, headers=origin).status_code == 403


@pytest.mark.anyio
async def test_http_clients_do_not_share_state(
    http_server: tuple[str, str, Config, str],
) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    url, token, config, owner = http_server
    headers = {"authorization": f"Bearer {token}"}

    def contexts() -> int:
        with ControlPlane(config) as control, DataPlane(config) as data:
            sandboxes = [
                s.sandbox_id
                for s in control.list_sandboxes()
                if s.sandbox_id.startswith(f"arci-{owner}-") and s.status == "READY"
            ]
            total = 0
            for sid in sandboxes:
                with contextlib.suppress(NotFoundError):  # deleted since the listing
                    total += len(data.list_contexts(sid))
            return total

    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as h1,
        httpx2.AsyncClient(headers=headers, timeout=120) as h2,
        streamable_http_client(url, http_client=h1) as (r1, w1, *_),
        ClientSession(r1, w1) as one,
    ):
        await one.initialize()
        async with (
            streamable_http_client(url, http_client=h2) as (r2, w2, *_),
            ClientSession(r2, w2) as two,
        ):
            await two.initialize()
            await one.call_tool("run_code", {"code": "secret = 'one'"})
            mine = await one.call_tool("run_code", {"code": "print(secret)"})
            assert mine.structured_content is not None
            assert mine.structured_content["stdout"] == "one\n"
            theirs = await two.call_tool("run_code", {"code": "print(secret)"})
            assert theirs.is_error
            assert theirs.structured_content is not None
            assert theirs.structured_content["error"]["name"] == "NameError"
            # nor can client two borrow client one's handle
            handle = mine.structured_content["session"]
            stolen = await two.call_tool("run_code", {"code": "secret", "session": handle})
            assert stolen.is_error
            assert stolen.structured_content is None
            # by default over HTTP each client has a sandbox of its own: files too
            await one.call_tool("write_file", {"path": "/home/user/mine.txt", "content": "1"})
            peek = await two.call_tool("read_file", {"path": "/home/user/mine.txt"})
            assert peek.is_error
            plant = {"path": "/home/user/colorsys.py", "content": "print('planted')"}
            assert not (await two.call_tool("write_file", plant)).is_error
            imported = await one.call_tool("run_code", {"code": "import colorsys"})
            assert imported.structured_content is not None
            assert "planted" not in imported.structured_content["stdout"]
            assert contexts() == 2
        # client two ended its session (HTTP DELETE): its sandbox and context are released
        wait_until(lambda: contexts() == 1, "client two's context released")


@pytest.mark.anyio
async def test_http_clients_without_a_session_id_use_session_handles(
    http_server: tuple[str, str, Config, str],
) -> None:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    url, token, _, _ = http_server
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as h1,
        httpx2.AsyncClient(headers=headers, timeout=120) as h2,
        Client(streamable_http_client(url, http_client=h1)) as one,
        Client(streamable_http_client(url, http_client=h2)) as two,
    ):
        first = await one.call_tool("run_code", {"code": "v = 'kept'"})
        assert first.structured_content is not None
        handle = first.structured_content["session"]
        again = await one.call_tool("run_code", {"code": "print(v)", "session": handle})
        assert again.structured_content is not None
        assert again.structured_content["stdout"] == "kept\n"
        # no mcp-session-id on this protocol era: without the handle, a call starts afresh
        bare = await one.call_tool("run_code", {"code": "print(v)"})
        assert bare.structured_content is not None
        assert bare.structured_content["error"]["name"] == "NameError"
        fresh = await two.call_tool("run_code", {"code": "print(v)"})
        assert fresh.structured_content is not None
        assert fresh.structured_content["error"]["name"] == "NameError"
        assert fresh.structured_content["session"] != handle
        forged = await two.call_tool("run_code", {"code": "1", "session": "forged"})
        assert forged.is_error


def test_orphans_of_a_crashed_server_are_reaped_at_start(emulator: Config) -> None:
    owner = _owner()
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = OwnerTag(owner, dead.pid, 0).prefix + "dead01"
    with ControlPlane(emulator) as control:
        control.create_template(orphan)
    assert owned(emulator, owner) == [orphan]
    server = RawServer(cloud_env(emulator, owner))
    try:
        server.initialize()  # no tool call: the sweep runs in the background at start
        assert remaining(lambda: owned(emulator, owner), timeout=120) == []
        assert server.proc.stdin is not None
        server.proc.stdin.close()
        assert server.wait() == 0
    finally:
        server.close()
