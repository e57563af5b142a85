"""Attacker tests: the servers started the documented way authenticate every request.

`agentrun-ci local serve` without a key pair makes one and prints it among its exports;
unsigned requests are refused on both planes, so the code running in its own sandboxes,
which shares the machine's loopback, cannot list, read, run in or delete other
sandboxes (`--insecure` brings the old behaviour back, with a warning). The MCP server
over streamable HTTP without `--auth-token` makes a token and prints it on stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from support import EXIT_WAIT, SCRIPT, base_env, initialize_request, needs_script, wait_until

from agentrun_ci import Config, ControlPlane, DataPlane, NotFoundError
from agentrun_ci.local._signing import UNSIGNED

pytest.importorskip("jupyter_client")

#: `agentrun-ci local serve ARGS`, as the console script runs it (sys.argv[1:] = ARGS)
_CLI = [sys.executable, "-c", "from agentrun_ci.cli import run; run()", "local", "serve"]


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """Our environment without credentials, with a private TMPDIR for the server's files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    env["TMPDIR"] = str(tmp_path)
    return env


@contextlib.contextmanager
def _serve(tmp_path: Path, *args: str) -> Iterator[tuple[dict[str, str], Path]]:
    """`local serve --port 0 ARGS` as a subprocess: its exports (once all are printed)
    and its stderr file; SIGTERMed (killed if it hangs) and reaped at exit."""
    run = tmp_path / "run"
    run.mkdir()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [*_CLI, "--port", "0", "--spare-kernels", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            env=_clean_env(run),
        )
    try:

        def exported() -> dict[str, str]:
            assert proc.poll() is None, err.read_text()
            lines = out.read_text().splitlines()
            if not any(line.startswith("export AGENTRUN_ACCOUNT_ID=") for line in lines):
                return {}  # not yet: it is the last export line
            pairs = (line.removeprefix("export ").split("=", 1) for line in lines)
            return {p[0]: p[1] for p in pairs if len(p) == 2 and p[0].startswith("AGENTRUN_")}

        yield wait_until(exported, lambda: f"the exports of local serve: {err.read_text()}"), err
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_WAIT) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # everything the server made under its TMPDIR is gone
    assert list(run.iterdir()) == []


def _config(exports: dict[str, str]) -> Config:
    return Config(
        access_key_id=exports["AGENTRUN_ACCESS_KEY_ID"],
        access_key_secret=exports["AGENTRUN_ACCESS_KEY_SECRET"],
        account_id=exports["AGENTRUN_ACCOUNT_ID"],
        control_endpoint=exports["AGENTRUN_CONTROL_ENDPOINT"],
        data_endpoint=exports["AGENTRUN_DATA_ENDPOINT"],
    )


def test_serve_without_a_key_pair_makes_one_and_refuses_unsigned_requests(
    tmp_path: Path,
) -> None:
    with _serve(tmp_path) as (exports, err):
        url = exports["AGENTRUN_DATA_ENDPOINT"]
        assert exports["AGENTRUN_CONTROL_ENDPOINT"] == url
        assert exports["AGENTRUN_ACCESS_KEY_ID"].startswith("local-")
        secret = exports["AGENTRUN_ACCESS_KEY_SECRET"]
        assert len(secret) >= 32
        with httpx.Client(base_url=url, timeout=30) as plain:
            for method, path in [
                ("GET", "/2025-09-10/sandboxes"),  # control plane (ACS3)
                ("GET", "/2025-09-10/templates"),
                ("POST", "/sandboxes"),  # data plane (AGENTRUN4)
                ("GET", "/sandboxes/any/health"),
            ]:
                r = plain.request(method, path, json={} if method == "POST" else None)
                assert r.status_code == 403, (method, path, r.text)
                assert r.json()["message"] == UNSIGNED
                assert "agentrun-ci local serve" in r.json()["message"]
        # the printed exports sign, on both planes
        with ControlPlane(_config(exports)) as cp, DataPlane(_config(exports)) as dp:
            assert cp.list_templates() == []
            assert cp.list_sandboxes() == []
            with pytest.raises(NotFoundError):  # past the signature check: no such sandbox
                dp.get_sandbox("nope")
        assert "UNSIGNED" not in err.read_text()  # no --insecure warning
        # the secret is printed on stdout for the user, never on stderr (logs)
        assert secret not in err.read_text()


def test_serve_insecure_answers_unsigned_requests_and_warns(tmp_path: Path) -> None:
    with _serve(tmp_path, "--insecure", "--log-level", "ERROR") as (exports, err):
        assert "AGENTRUN_ACCESS_KEY_ID" not in exports
        assert "AGENTRUN_ACCESS_KEY_SECRET" not in exports
        url = exports["AGENTRUN_DATA_ENDPOINT"]
        r = httpx.get(f"{url}/2025-09-10/templates", timeout=30)
        assert r.status_code == 200
        assert r.json()["code"] == "SUCCESS"
        # even with logging at ERROR, the warning is there at start
        warning = err.read_text()
        assert "WARNING" in warning
        assert "UNSIGNED" in warning
        assert "its own sandboxes" in warning


def test_serve_insecure_with_a_key_pair_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agentrun_ci.cli import main

    status = main(["local", "serve", "--insecure", "--access-key-id", "K"])
    assert status == 2
    assert "not both" in capsys.readouterr().err


#: run in sandbox A: drive the emulator over loopback as sandboxed code could, knowing
#: the URL and sandbox B's id but not the key pair (the exports went to the user)
_ATTACK = """
import json, urllib.error, urllib.request
URL, B = {url!r}, {victim!r}
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={{"content-type": "application/json"}})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return [r.status, r.read().decode()[:2000]]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode()[:2000]]
    except OSError as e:
        return [0, repr(e)]
print(json.dumps({{
    "list": call("GET", "/2025-09-10/sandboxes"),
    "list-data": call("GET", "/sandboxes/" + B + "/contexts"),
    "read": call("GET", "/sandboxes/" + B + "/files?path=/home/user/secret.txt"),
    "execute": call("POST", "/sandboxes/" + B + "/contexts/execute",
                    {{"code": "open('/home/user/pwned', 'w').write('x')"}}),
    "command": call("POST", "/sandboxes/" + B + "/processes/cmd", {{"command": "touch pwned"}}),
    "delete": call("DELETE", "/sandboxes/" + B),
    "delete-control": call("DELETE", "/2025-09-10/sandboxes/" + B),
}}))
"""


def test_code_in_a_sandbox_cannot_drive_the_emulator_that_runs_it(tmp_path: Path) -> None:
    with _serve(tmp_path) as (exports, _):
        config = _config(exports)
        url = exports["AGENTRUN_DATA_ENDPOINT"]
        with ControlPlane(config) as cp, DataPlane(config) as dp:
            cp.create_template("t")
            cp.wait_template_ready("t")
            attacker = dp.create_sandbox("t").sandbox_id
            victim = dp.create_sandbox("t").sandbox_id
            for sid in (attacker, victim):
                dp.wait_until_healthy(sid)
            dp.write_file(victim, "/home/user/secret.txt", "victim's data")
            run = dp.execute(attacker, _ATTACK.format(url=url, victim=victim))
            assert run.error is None, run.error
            tried = json.loads(run.stdout)
            statuses = {name: status for name, (status, _) in tried.items()}
            if set(statuses.values()) == {0}:
                # unreachable: the sandbox's network namespace has a loopback of its own,
                # and its uplink refuses the host's (test_local_network.py)
                assert all("Connection refused" in body for _, body in tried.values()), tried
            else:
                # where sandboxes share the host's network (no slirp4netns or pasta):
                # refused, every call got the emulator's answer
                assert statuses == dict.fromkeys(tried, 403), tried
                assert all(json.loads(body)["message"] == UNSIGNED for _, body in tried.values())
            # sandbox B is untouched
            assert dp.get_sandbox(victim).status == "READY"
            assert dp.read_file(victim, "/home/user/secret.txt").text == "victim's data"
            assert [e.name for e in dp.list_files(victim)] == ["secret.txt"]
            for sid in (attacker, victim):
                dp.delete_sandbox(sid)
            cp.delete_template("t")


# ---------------------------------------------------------------- the MCP server over HTTP

#: run by the MCP server's run_code: open an MCP session of its own, as the code could
_MCP_ATTACK = """
import json, urllib.error, urllib.request
body = {{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {{
    "protocolVersion": "2025-11-25", "capabilities": {{}},
    "clientInfo": {{"name": "inner", "version": "0"}}}}}}
req = urllib.request.Request({url!r}, data=json.dumps(body).encode(), method="POST", headers={{
    "content-type": "application/json", "accept": "application/json, text/event-stream"}})
try:
    with urllib.request.urlopen(req, timeout=20) as r:
        print(r.status, end="")
except urllib.error.HTTPError as e:
    print(e.code, end="")
except OSError as e:
    print(repr(e), end="")
"""


async def _run_code(url: str, token: str, code: str) -> str:
    """`run_code(code)` through an official MCP client holding the token; its stdout."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("run_code", {"code": code})
        assert result.structured_content is not None, result
        return str(result.structured_content["stdout"])


@needs_script
def test_mcp_http_without_a_token_makes_one_and_requires_it(tmp_path: Path) -> None:
    pytest.importorskip("mcp")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = base_env(f"sa{os.getpid()}") | {"AGENTRUN_MCP_BACKEND": "local", "TMPDIR": str(tmp_path)}
    err = tmp_path / "stderr"
    with open(err, "wb") as e:
        proc = subprocess.Popen(
            [SCRIPT, "--transport", "streamable-http", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=e,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"accept": "application/json, text/event-stream"}
    init = initialize_request("tests")
    try:

        def token() -> str:
            assert proc.poll() is None, err.read_text()
            for line in err.read_text().splitlines():
                if line.startswith("AGENTRUN_MCP_AUTH_TOKEN="):
                    return line.split("=", 1)[1]
            return ""

        secret = wait_until(token, lambda: f"the generated token on stderr: {err.read_text()}")
        assert len(secret) >= 32

        def listening() -> list[httpx.Response]:
            assert proc.poll() is None, err.read_text()
            try:
                return [httpx.post(url, json=init, headers=headers, timeout=10)]
            except httpx.TransportError:
                return []

        [refused] = wait_until(listening, "the server to listen")
        assert refused.status_code == 401
        assert "Authorization: Bearer" in refused.json()["error"]
        wrong = headers | {"authorization": "Bearer " + "x" * len(secret)}
        assert httpx.post(url, json=init, headers=wrong, timeout=10).status_code == 401
        good = headers | {"authorization": f"Bearer {secret}"}
        accepted = httpx.post(url, json=init, headers=good, timeout=30)
        assert accepted.status_code == 200, accepted.text
        assert accepted.headers.get("mcp-session-id")
        # the code the server runs, without the token: refused where its sandbox shares
        # the host's loopback (no uplink tool), else unreachable (test_local_network.py)
        inner = anyio.run(_run_code, url, secret, _MCP_ATTACK.format(url=url))
        assert inner in ("401", "URLError(ConnectionRefusedError(111, 'Connection refused'))")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_WAIT) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # printed once, deliberately; never in a log line
    assert err.read_text().count(secret) == 1


def test_serve_with_an_api_key_accepts_it_on_the_data_plane(tmp_path: Path) -> None:
    key = "serve-key-0123456789"
    with _serve(tmp_path, "--api-key", key) as (exports, err):
        keyed = Config(
            api_key=key,
            account_id=exports["AGENTRUN_ACCOUNT_ID"],
            control_endpoint=exports["AGENTRUN_CONTROL_ENDPOINT"],
            data_endpoint=exports["AGENTRUN_DATA_ENDPOINT"],
        )
        with DataPlane(keyed) as dp, pytest.raises(NotFoundError):  # past the key check
            dp.get_sandbox("nope")
        r = httpx.get(
            exports["AGENTRUN_DATA_ENDPOINT"] + "/sandboxes/nope",
            headers={"X-API-Key": "wrong"},
            timeout=30,
        )
        assert r.status_code == 401
        assert "API key" in r.json()["message"]
        assert key not in err.read_text()  # never logged


def test_serve_refuses_an_api_key_no_header_can_carry(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*_CLI, "--port", "0", "--api-key", "two words"],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--api-key" in proc.stderr
