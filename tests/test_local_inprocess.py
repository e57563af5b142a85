"""The in-process emulator of the SDK's and the MCP server's local backend, attacked from
the code it runs: sandboxed code shares this machine's loopback with it, so it may find
its port. It holds a key pair only its own process knows, and has no fault route unless
fault injection was asked for. These hold with or without the jail (bubblewrap).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci import CodeInterpreter

# Sandboxed code driving an emulator it found at URL: list and delete its sandboxes, run
# code in each context it finds, turn fault injection on. Prints every status it got.
_ATTACK = r"""
import json, urllib.request, urllib.error
URL = __URL__
codes, stolen = [], []
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as answer:
            codes.append(answer.status)
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        codes.append(exc.code)
    except OSError:
        codes.append(0)
    return None
call("POST", "/_admin/faults", {"rates": {"server_error": 1.0}})
call("GET", "/2025-09-10/templates")
listing = call("GET", "/2025-09-10/sandboxes") or {}
for sandbox in (listing.get("data") or {}).get("items") or []:
    sid = sandbox.get("sandboxId")
    contexts = call("GET", f"/sandboxes/{sid}/contexts") or []
    for ctx in contexts if isinstance(contexts, list) else []:
        run = call("POST", f"/sandboxes/{sid}/contexts/execute",
                   {"contextId": ctx.get("id"), "code": "print(secret)"})
        stolen.append(json.dumps(run))
    call("DELETE", f"/sandboxes/{sid}")
print(json.dumps({"codes": codes, "stolen": stolen}))
"""

_REFUSED = (0, 401, 403, 404)


def _attack(url: str) -> str:
    return _ATTACK.replace("__URL__", repr(url.rstrip("/")))


def test_sdk_in_process_emulator_refuses_sandboxed_code() -> None:
    with CodeInterpreter(backend="local", reap_on_start=False) as ci:
        assert ci.run_code("secret = 'sdk-a-3f9e'").error is None
        config = ci._async.config
        assert config is not None
        assert config.access_key_secret  # a key pair only this process holds
        assert config.data_endpoint is not None
        run = ci.run_code(_attack(config.data_endpoint))
        assert run.error is None, run.error
        report = json.loads(run.stdout)
        assert report["codes"], report
        assert all(code in _REFUSED for code in report["codes"]), report
        assert report["stolen"] == []
        # the context it tried to read and the sandbox it tried to delete are untouched
        assert ci.run_code("print(secret)").stdout == "sdk-a-3f9e\n"


@pytest.mark.anyio
async def test_mcp_client_b_cannot_reach_client_as_context() -> None:
    pytest.importorskip("mcp")
    from mcp import Client

    from agentrun_ci_mcp.server import ServerOptions, build_server

    def _s(result: Any) -> dict[str, Any]:
        assert result.structured_content is not None, result.content
        return result.structured_content  # type: ignore[no-any-return]

    # Two MCP clients, each with its own server and in-process emulator (as two stdio
    # clients on one machine): B's code knows where A's emulator listens.
    mcp_a, state_a = build_server(ServerOptions(backend="local", reap_orphans=False))
    mcp_b, _ = build_server(ServerOptions(backend="local", reap_orphans=False))
    async with Client(mcp_a) as a, Client(mcp_b) as b:
        assert _s(await a.call_tool("run_code", {"code": "secret = 'mcp-a-77c1'"}))
        assert state_a.interpreter is not None
        config = state_a.interpreter.config
        assert config is not None
        assert config.data_endpoint is not None
        result = _s(await b.call_tool("run_code", {"code": _attack(config.data_endpoint)}))
        report = json.loads(result["stdout"])
        assert report["codes"], report
        assert all(code in _REFUSED for code in report["codes"]), report
        assert report["stolen"] == []
        again = _s(await a.call_tool("run_code", {"code": "print(secret)"}))
        assert again["stdout"] == "mcp-a-77c1\n"
