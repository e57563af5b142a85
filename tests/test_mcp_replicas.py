"""Replicas for real: two `agentrun-ci-mcp --stateless` processes behind HAProxy.

The test starts one `agentrun-ci local serve` (signed, with the key pair it makes)
as the service both replicas share, two MCP servers over streamable HTTP with
`--stateless`, the same AGENTRUN_MCP_HANDLE_KEY and the same bearer token, and
HAProxy from the OS packages in front of them (round robin; it names the replica
that answered in an `X-Replica` header). One client's 20 calls alternate between
the replicas with its state kept; then one replica is SIGKILLed between calls and
the next call still sees the state.

The client speaks the protocol's HTTP binding directly (a JSON-RPC POST per call),
so that each call is exactly one request through the balancer. Everything started
here is killed and reaped whatever happens; the client's sandbox is deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from support import EXIT_WAIT, SCRIPT, base_env, needs_script, spawned, wait_until

from agentrun_ci import Config, ControlPlane

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
pytestmark = [
    needs_script,
    pytest.mark.skipif(
        HAPROXY is None,
        reason="haproxy is not installed (apt-get install haproxy; .ci/run does it as root)",
    ),
]

_LOCAL_SERVE = [sys.executable, "-c", "from agentrun_ci.cli import run; run()", "local", "serve"]
#: generous hang guard for one call on a loaded machine (not a timing assertion)
CALL_WAIT = 120.0

HAPROXY_CONFIG = """\
global
    maxconn 256

defaults
    mode http
    timeout connect 5s
    timeout client 180s
    timeout server 180s
    # a new server connection per request, so that round robin alternates per call
    option http-server-close
    # a replica that refuses the connection (dead): try another one
    retries 3
    option redispatch 1

frontend mcp
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    # which replica answered (for this test; harmless in production)
    http-response set-header X-Replica %s
    server one 127.0.0.1:{one} check inter 500ms fall 1 rise 1
    server two 127.0.0.1:{two} check inter 500ms fall 1 rise 1
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _service(tmp: Path) -> Iterator[dict[str, str]]:
    """`agentrun-ci local serve` (signed, its own key pair): its AGENTRUN_* exports."""
    run = tmp / "service"
    run.mkdir()
    out, err = tmp / "service.out", tmp / "service.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    env["TMPDIR"] = str(run)
    with (
        open(out, "wb") as o,
        open(err, "wb") as e,
        spawned(
            [*_LOCAL_SERVE, "--port", "0", "--spare-kernels", "0"],
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            env=env,
        ) as proc,
    ):

        def exported() -> dict[str, str]:
            assert proc.poll() is None, err.read_text()
            lines = out.read_text().splitlines()
            if not any(line.startswith("export AGENTRUN_ACCOUNT_ID=") for line in lines):
                return {}  # not yet: it is the last export line
            pairs = (line.removeprefix("export ").split("=", 1) for line in lines)
            return {p[0]: p[1] for p in pairs if len(p) == 2 and p[0].startswith("AGENTRUN_")}

        yield wait_until(exported, lambda: f"the exports of local serve: {err.read_text()}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_WAIT) == 0, err.read_text()


@contextlib.contextmanager
def _replica(log: Path, port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`agentrun-ci-mcp --transport streamable-http --stateless` on `port`, stderr to `log`."""
    with (
        open(log, "wb") as err,
        spawned(
            [SCRIPT, "--transport", "streamable-http", "--stateless", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        ) as proc,
    ):
        yield proc


class McpHttp:
    """One client: JSON-RPC POSTs through the balancer; which replica answered each."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(
            timeout=CALL_WAIT,
            headers={
                "authorization": f"Bearer {token}",
                "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2025-11-25",
            },
        )
        self.replicas: list[str] = []
        self._id = 0

    def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """The tool's result (`structuredContent` and all); records the replica."""
        self._id += 1
        body = {
            "jsonrpc": "2.0",
            "id": self._id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }
        response = self.http.post(self.url, json=body)
        assert response.status_code == 200, response.text
        self.replicas.append(response.headers.get("x-replica", "?"))
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            messages = [
                json.loads(line[len("data:") :])
                for line in response.text.splitlines()
                if line.startswith("data:") and line[len("data:") :].strip()
            ]
            [reply] = [m for m in messages if m.get("id") == self._id]
        else:
            reply = response.json()
        result: dict[str, Any] = reply["result"]
        assert not result.get("isError"), result
        return result


def test_two_replicas_behind_haproxy_serve_one_client(tmp_path: Path) -> None:
    assert HAPROXY is not None
    owner = f"rep{os.getpid()}"
    key, token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    one_port, two_port, lb_port = _free_port(), _free_port(), _free_port()
    with _service(tmp_path) as exports:
        env = base_env(owner, log_level="INFO") | exports
        env |= {
            "AGENTRUN_MCP_BACKEND": "cloud",
            "AGENTRUN_MCP_HANDLE_KEY": key,
            "AGENTRUN_MCP_AUTH_TOKEN": token,
            "TMPDIR": str(tmp_path),
        }
        one_log, two_log = tmp_path / "one.err", tmp_path / "two.err"
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=lb_port, one=one_port, two=two_port))
        lb_log = tmp_path / "haproxy.log"
        sandbox = None
        with (
            _replica(one_log, one_port, env) as one,
            _replica(two_log, two_port, env) as two,
            open(lb_log, "wb") as lb_err,
            spawned(
                [HAPROXY, "-f", str(config), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=lb_err,
                stderr=lb_err,
            ) as balancer,
        ):

            def logs() -> str:
                return "\n".join(
                    f"--- {p.name}\n{p.read_text()[-3000:]}" for p in (one_log, two_log, lb_log)
                )

            def up(port: int) -> bool:
                assert one.poll() is None, logs()
                assert two.poll() is None, logs()
                assert balancer.poll() is None, logs()
                try:
                    httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=5)
                except httpx.TransportError:
                    return False
                return True

            for port in (one_port, two_port, lb_port):
                wait_until(lambda p=port: up(p), logs, timeout=120)  # type: ignore[misc]
            # and the balancer's health checks found both (requests without the token are
            # refused by the replica, which is all this needs)
            seen: set[str] = set()

            def both_in_rotation() -> bool:
                answer = httpx.get(f"http://127.0.0.1:{lb_port}/mcp", timeout=10)
                seen.add(answer.headers.get("x-replica", "?"))
                return {"one", "two"} <= seen

            wait_until(both_in_rotation, logs, timeout=60)
            client = McpHttp(f"http://127.0.0.1:{lb_port}/mcp", token)
            try:
                first = client.call("run_code", code="counter = 1; counter")
                handle = first["structuredContent"]["session"]
                sandbox = _sandbox_of(handle)
                for i in range(2, 21):
                    result = client.call("run_code", code="counter += 1; counter", session=handle)
                    out = result["structuredContent"]
                    assert out["results"][0]["text"] == str(i), out
                    assert out["state_reset"] is False
                    handle = out["session"]
                calls = client.replicas
                assert len(calls) == 20
                # round robin: every call went to the other replica than the one before
                assert set(calls) == {"one", "two"}, calls
                assert all(a != b for a, b in itertools.pairwise(calls)), calls
                # the official client, through the balancer, picks the state up from its handle
                seen_by_sdk = anyio.run(_sdk_call, client.url, token, handle)
                assert seen_by_sdk["results"][0]["text"] == "20", seen_by_sdk
                handle = seen_by_sdk["session"]
                # one replica dies between calls (SIGKILL: no cleanup of any kind)
                one.kill()
                one.wait(EXIT_WAIT)
                for _ in range(3):
                    result = client.call("run_code", code="counter += 1; counter", session=handle)
                    handle = result["structuredContent"]["session"]
                assert result["structuredContent"]["results"][0]["text"] == "23"
                assert client.replicas[-3:] == ["two", "two", "two"], client.replicas
            finally:
                client.http.close()
            # the survivor stops cleanly, and leaves the client's sandbox to its idle timeout
            two.send_signal(signal.SIGTERM)
            assert two.wait(EXIT_WAIT) == 128 + signal.SIGTERM, logs()
            assert key not in logs()
            with ControlPlane(_config(exports)) as control:
                assert control.get_sandbox(sandbox).sandbox_id == sandbox
        if sandbox is not None:  # it outlives the replicas by design: delete it now
            with ControlPlane(_config(exports)) as control:
                control.delete_sandbox(sandbox)


async def _sdk_call(url: str, token: str, handle: str) -> dict[str, Any]:
    """`run_code("counter")` with the handle, through the `mcp` SDK's own HTTP client
    (the 2025-11-25 handshake, then the call: several requests, any replica each)."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=CALL_WAIT) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("run_code", {"code": "counter", "session": handle})
        assert not result.is_error, result
        assert result.structured_content is not None
        return dict(result.structured_content)


def _sandbox_of(handle: str) -> str:
    import base64

    body = handle.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["s"])


def _config(exports: dict[str, str]) -> Config:
    return Config(
        access_key_id=exports["AGENTRUN_ACCESS_KEY_ID"],
        access_key_secret=exports["AGENTRUN_ACCESS_KEY_SECRET"],
        account_id=exports["AGENTRUN_ACCOUNT_ID"],
        control_endpoint=exports["AGENTRUN_CONTROL_ENDPOINT"],
        data_endpoint=exports["AGENTRUN_DATA_ENDPOINT"],
    )
