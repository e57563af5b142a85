"""The emulator over real loopback HTTP, route by route, with plain httpx."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import wait_until

from agentrun_ci._config import Config

pytest.importorskip("jupyter_client")

from agentrun_ci.local._routes_sandbox import ExecuteRoute


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def http(emulator: Config) -> Iterator[httpx.Client]:
    assert emulator.data_endpoint is not None
    with httpx.Client(base_url=emulator.data_endpoint, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def template(http: httpx.Client) -> Iterator[str]:
    name = _name("http")
    r = http.post(
        "/2025-09-10/templates", json={"templateName": name, "templateType": "CodeInterpreter"}
    )
    assert r.status_code == 200, r.text
    yield name
    http.delete(f"/2025-09-10/templates/{name}")


@pytest.fixture(scope="module")
def sid(http: httpx.Client, template: str) -> Iterator[str]:
    r = http.post("/sandboxes", json={"templateName": template})
    assert r.status_code == 200, r.text
    sandbox_id = r.json()["data"]["sandboxId"]
    yield sandbox_id
    http.delete(f"/sandboxes/{sandbox_id}")


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["requestId"] == r.headers["x-acs-request-id"]
    assert body["message"]
    if code is not None:
        assert body["code"] == code
    return body  # type: ignore[no-any-return]


# ---------------------------------------------------------------- control plane


def test_template_crud_and_filters(http: httpx.Client) -> None:
    name = _name("tpl")
    r = http.post(
        "/2025-09-10/templates",
        json={"templateName": name, "templateType": "CodeInterpreter", "cpu": 1, "memory": 1024},
    )
    body = r.json()
    assert body["code"] == "SUCCESS"
    assert body["requestId"] == r.headers["x-acs-request-id"]
    assert body["data"]["templateName"] == name
    assert body["data"]["status"] == "READY"
    assert body["data"]["sandboxIdleTimeoutInSeconds"] == "1800"
    _error(http.post("/2025-09-10/templates", json={"templateName": name}), 409, "ERR_CONFLICT")
    _error(http.post("/2025-09-10/templates", json={}), 400)
    got = http.get(f"/2025-09-10/templates/{name}").json()["data"]
    assert got["memory"] == 1024
    r = http.put(f"/2025-09-10/templates/{name}", json={"description": "changed"})
    assert r.json()["data"]["description"] == "changed"
    listed = http.get("/2025-09-10/templates", params={"templateName": name}).json()["data"]
    assert [t["templateName"] for t in listed["items"]] == [name]
    assert listed["total"] == 1
    none = http.get("/2025-09-10/templates", params={"templateName": name, "status": "CREATING"})
    assert none.json()["data"]["items"] == []
    other_type = http.get(
        "/2025-09-10/templates", params={"templateName": name, "templateType": "Browser"}
    )
    assert other_type.json()["data"]["items"] == []
    assert http.delete(f"/2025-09-10/templates/{name}").json()["data"]["templateName"] == name
    _error(http.get(f"/2025-09-10/templates/{name}"), 404, "ERR_NOT_FOUND")
    _error(http.delete(f"/2025-09-10/templates/{name}"), 404)


def test_sandbox_lifecycle_both_planes(http: httpx.Client, template: str) -> None:
    custom = _name("owner-x")
    r = http.post("/2025-09-10/sandboxes", json={"templateName": template, "sandboxId": custom})
    data = r.json()["data"]
    assert data["sandboxId"] == custom
    assert data["status"] == "READY"
    _error(http.post("/sandboxes", json={"templateName": template, "sandboxId": custom}), 409)
    _error(http.post("/sandboxes", json={"templateName": "no-such-template"}), 404)
    for path in (f"/sandboxes/{custom}", f"/2025-09-10/sandboxes/{custom}"):
        assert http.get(path).json()["data"]["sandboxId"] == custom
    listed = http.get("/2025-09-10/sandboxes", params={"templateName": template}).json()["data"]
    assert custom in [s["sandboxId"] for s in listed["items"]]
    by_id = http.get("/2025-09-10/sandboxes", params={"sandboxId": custom}).json()["data"]
    assert [s["sandboxId"] for s in by_id["items"]] == [custom]
    paused = http.put(f"/2025-09-10/sandboxes/{custom}/pause").json()["data"]
    assert paused["status"] == "PAUSED"
    _error(http.get(f"/sandboxes/{custom}/contexts"), 409, "ERR_CONFLICT")
    assert http.put(f"/2025-09-10/sandboxes/{custom}/resume").json()["data"]["status"] == "READY"
    assert http.get(f"/sandboxes/{custom}/health").json()["status"] == "ok"
    stopped = http.post(f"/sandboxes/{custom}/stop").json()["data"]
    assert stopped["status"] == "TERMINATED"
    assert stopped["endedAt"]
    # stop is idempotent; a stopped sandbox runs nothing
    assert (
        http.post(f"/2025-09-10/sandboxes/{custom}/stop").json()["data"]["status"] == "TERMINATED"
    )
    _error(http.post(f"/sandboxes/{custom}/contexts/execute", json={"code": "1"}), 404)
    terminated = http.get("/2025-09-10/sandboxes", params={"status": "TERMINATED"}).json()["data"]
    assert custom in [s["sandboxId"] for s in terminated["items"]]
    assert http.delete(f"/sandboxes/{custom}").json()["data"]["sandboxId"] == custom
    _error(http.get(f"/sandboxes/{custom}"), 404)


def test_unknown_route_and_bad_json(http: httpx.Client, sid: str) -> None:
    _error(http.get("/nope"), 404, "ERR_NOT_FOUND")
    r = http.post(
        f"/sandboxes/{sid}/contexts",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    _error(r, 400, "ERR_BAD_REQUEST")


# ---------------------------------------------------------------- contexts and execute


def test_contexts_and_execute(http: httpx.Client, sid: str) -> None:
    ctx = http.post(f"/sandboxes/{sid}/contexts", json={"language": "python", "cwd": "/home/user"})
    ctx_id = ctx.json()["id"]
    assert ctx.json() == {"id": ctx_id, "language": "python", "cwd": "/home/user"}
    assert ctx_id in [c["id"] for c in http.get(f"/sandboxes/{sid}/contexts").json()]
    assert http.get(f"/sandboxes/{sid}/contexts/{ctx_id}").json()["id"] == ctx_id
    run = http.post(
        f"/sandboxes/{sid}/contexts/execute",
        json={
            "code": "import sys\nx = 41\nprint('out')\nprint('err', file=sys.stderr)\nx + 1",
            "contextId": ctx_id,
        },
    ).json()
    assert run["contextId"] == ctx_id
    kinds = [e["type"] for e in run["results"]]
    assert kinds == ["stdout", "stderr", "result", "endOfExecution"]
    assert run["results"][0]["text"] == "out\n"
    assert run["results"][2]["text"] == "42"
    assert run["results"][2]["isMainResult"] is True
    assert run["results"][-1]["status"] == "ok"
    count = run["results"][-1]["executionCount"]
    again = http.post(
        f"/sandboxes/{sid}/contexts/execute", json={"code": "x", "contextId": ctx_id}
    ).json()
    assert again["results"][0]["text"] == "41"
    assert again["results"][-1]["executionCount"] == count + 1
    err = http.post(
        f"/sandboxes/{sid}/contexts/execute", json={"code": "1/0", "contextId": ctx_id}
    ).json()["results"]
    assert err[0]["type"] == "error"
    assert err[0]["name"] == "ZeroDivisionError"
    assert err[0]["value"] == "division by zero"
    assert "\x1b[" not in err[0]["traceback"]
    assert "ZeroDivisionError" in err[0]["traceback"]
    assert err[-1] == {"type": "endOfExecution", "status": "error", "executionCount": count + 2}
    assert http.delete(f"/sandboxes/{sid}/contexts/{ctx_id}").status_code == 204
    _error(http.get(f"/sandboxes/{sid}/contexts/{ctx_id}"), 404)
    _error(
        http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": "1", "contextId": ctx_id}),
        404,
    )


def test_default_context_is_reused(http: httpx.Client, sid: str) -> None:
    first = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": "y = 7"}).json()
    second = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": "y"}).json()
    assert first["contextId"] == second["contextId"]
    assert second["results"][0]["text"] == "7"


def test_matplotlib_figure_arrives_as_png(http: httpx.Client, sid: str) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    run = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code}).json()
    images = [e for e in run["results"] if e["type"] == "result" and "image/png" in e["data"]]
    assert len(images) == 1
    assert base64.b64decode(images[0]["data"]["image/png"]).startswith(b"\x89PNG")
    assert images[0]["isMainResult"] is False


def test_javascript_context(http: httpx.Client, sid: str) -> None:
    import shutil

    if shutil.which("node") is None:
        r = http.post(f"/sandboxes/{sid}/contexts", json={"language": "javascript"})
        assert "node" in _error(r, 400)["message"]
        return
    ctx = http.post(f"/sandboxes/{sid}/contexts", json={"language": "javascript"}).json()
    assert ctx["language"] == "javascript"
    url = f"/sandboxes/{sid}/contexts/execute"
    first = http.post(
        url, json={"code": "let n = 20; console.log('hi', n); n + 1", "contextId": ctx["id"]}
    ).json()["results"]
    assert [e["type"] for e in first] == ["stdout", "result", "endOfExecution"]
    assert first[0]["text"] == "hi 20\n"
    assert first[1]["text"] == "21"
    second = http.post(url, json={"code": "n * 2", "contextId": ctx["id"]}).json()["results"]
    assert second[0]["text"] == "40"
    err = http.post(url, json={"code": "null.x", "contextId": ctx["id"]}).json()["results"]
    assert err[0]["name"] == "TypeError"
    assert err[-1]["status"] == "error"
    slow = http.post(url, json={"code": "while (true) {}", "contextId": ctx["id"], "timeout": 0.5})
    assert slow.json()["results"][-1]["status"] == "timeout"
    still = http.post(url, json={"code": "n", "contextId": ctx["id"]}).json()["results"]
    assert still[0]["text"] == "20"
    default = http.post(url, json={"code": "1 + 1", "language": "javascript"}).json()
    assert default["results"][0]["text"] == "2"
    http.delete(f"/sandboxes/{sid}/contexts/{ctx['id']}")


def test_execute_validation(http: httpx.Client, sid: str) -> None:
    url = f"/sandboxes/{sid}/contexts/execute"
    assert "at most 30" in _error(http.post(url, json={"code": "1", "timeout": 31}), 400)["message"]
    _error(http.post(url, json={"timeout": 3}), 400)
    _error(http.post(f"/sandboxes/{sid}/contexts", json={"language": "cobol"}), 400)
    _error(http.post(f"/sandboxes/{sid}/contexts", json={"cwd": "/home/user/missing"}), 400)


def test_timeout_interrupts_and_keeps_state(http: httpx.Client, sid: str) -> None:
    ctx = http.post(f"/sandboxes/{sid}/contexts", json={}).json()["id"]
    url = f"/sandboxes/{sid}/contexts/execute"
    run = http.post(
        url,
        json={
            "code": "kept = 'yes'\nprint('before')\nwhile True: pass",
            "contextId": ctx,
            "timeout": 1,
        },
    ).json()["results"]
    assert run[0] == {"type": "stdout", "text": "before\n"}
    assert run[-1]["status"] == "timeout"
    assert any(e.get("name") == "TimeoutError" for e in run)
    after = http.post(url, json={"code": "kept", "contextId": ctx}).json()["results"]
    assert after[0]["text"] == "'yes'"
    http.delete(f"/sandboxes/{sid}/contexts/{ctx}")


# ---------------------------------------------------------------- files


def test_files_roundtrip(http: httpx.Client, sid: str) -> None:
    w = http.post(
        f"/sandboxes/{sid}/files", json={"path": "/home/user/d/a b.txt", "content": "héllo"}
    )
    assert w.json()["path"] == "/home/user/d/a b.txt"
    assert w.json()["size"] == len("héllo".encode())
    r = http.get(f"/sandboxes/{sid}/files", params={"path": "/home/user/d/a b.txt"}).json()
    assert (r["content"], r["encoding"], r["type"]) == ("héllo", "utf-8", "file")
    blob = bytes(range(256))
    http.post(
        f"/sandboxes/{sid}/files",
        json={
            "path": "d/bin.dat",
            "content": base64.b64encode(blob).decode(),
            "encoding": "base64",
        },
    )
    r = http.get(f"/sandboxes/{sid}/files", params={"path": "d/bin.dat"}).json()
    assert r["encoding"] == "base64"
    assert base64.b64decode(r["content"]) == blob
    # the kernel sees the same directory
    seen = http.post(
        f"/sandboxes/{sid}/contexts/execute",
        json={"code": "print(open('d/a b.txt', encoding='utf-8').read())"},
    ).json()
    assert seen["results"][0]["text"] == "héllo\n"
    _error(http.get(f"/sandboxes/{sid}/files", params={"path": "d/none.txt"}), 404)
    _error(http.get(f"/sandboxes/{sid}/files", params={"path": "d"}), 400)


def test_filesystem_routes(http: httpx.Client, sid: str) -> None:
    base = f"/sandboxes/{sid}/filesystem"
    made = http.post(f"{base}/mkdir", json={"path": "/home/user/fs/x/y"}).json()["entry"]
    assert (made["type"], made["path"], made["mode"]) == ("directory", "/home/user/fs/x/y", 0o755)
    assert http.post(f"{base}/mkdir", json={"path": "/home/user/fs/x/y"}).status_code == 200
    http.post(f"/sandboxes/{sid}/files", json={"path": "fs/x/f.txt", "content": "1"})
    shallow = http.get(base, params={"path": "/home/user/fs"}).json()
    assert shallow["path"] == "/home/user/fs"
    assert [e["name"] for e in shallow["entries"]] == ["x"]
    deep = http.get(base, params={"path": "/home/user/fs", "depth": 3}).json()["entries"]
    assert {e["path"] for e in deep} == {
        "/home/user/fs/x",
        "/home/user/fs/x/f.txt",
        "/home/user/fs/x/y",
    }
    st = http.get(f"{base}/stat", params={"path": "fs/x/f.txt"}).json()["entry"]
    assert (st["type"], st["size"], st["mode"], st["permissions"]) == (
        "file",
        1,
        0o644,
        "-rw-r--r--",
    )
    moved = http.post(f"{base}/move", json={"source": "fs/x/f.txt", "destination": "fs/g.txt"})
    assert moved.json()["entry"]["path"] == "/home/user/fs/g.txt"
    again = http.post(f"{base}/move", json={"source": "fs/x/f.txt", "destination": "fs/g.txt"})
    assert again.status_code == 200  # idempotent
    removed = http.post(f"{base}/remove", json={"path": "/home/user/fs"})
    assert removed.json()["entry"]["type"] == "directory"
    assert http.post(f"{base}/remove", json={"path": "/home/user/fs"}).status_code == 200
    _error(http.get(f"{base}/stat", params={"path": "fs"}), 404)
    _error(http.post(f"{base}/mkdir", json={"path": "p/q", "parents": False}), 404)


def test_upload_and_download(http: httpx.Client, sid: str) -> None:
    payload = b"\x00binary\xffdata" * 1000
    up = http.post(
        f"/sandboxes/{sid}/filesystem/upload",
        files={"file": ("local.bin", payload)},
        data={"path": "/home/user/up/remote.bin"},
    )
    assert up.json()["path"] == "/home/user/up/remote.bin"
    assert up.json()["size"] == len(payload)
    down = http.get(f"/sandboxes/{sid}/filesystem/download", params={"path": "up/remote.bin"})
    assert down.content == payload
    assert down.headers["content-disposition"].startswith("attachment")
    assert "remote.bin" in down.headers["content-disposition"]
    assert down.headers["content-type"] == "application/octet-stream"
    assert int(down.headers["content-length"]) == len(payload)
    into_dir = http.post(
        f"/sandboxes/{sid}/filesystem/upload",
        files={"file": ("n.txt", b"x")},
        data={"path": "/home/user/up"},
    )
    assert into_dir.json()["path"] == "/home/user/up/n.txt"
    _error(http.get(f"/sandboxes/{sid}/filesystem/download", params={"path": "up"}), 400)


def _form(
    *parts: tuple[str, str | None, bytes], boundary: str = "b0undary", end: bool = True
) -> bytes:
    """A multipart body with its parts in the order given: (name, filename or None, data)."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if end else b"")


def _post_form(http: httpx.Client, sid: str, body: bytes) -> httpx.Response:
    return http.post(
        f"/sandboxes/{sid}/filesystem/upload",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )


def test_upload_with_the_file_before_its_path(http: httpx.Client, sid: str) -> None:
    payload = bytes(range(256)) * 9000  # over one write batch: spooled, then copied
    up = _post_form(http, sid, _form(("file", "a.bin", payload), ("path", None, b"late/a.bin")))
    assert up.json()["path"] == "/home/user/late/a.bin"
    assert up.json()["size"] == len(payload)
    down = http.get(f"/sandboxes/{sid}/filesystem/download", params={"path": "late/a.bin"})
    assert down.content == payload
    # no path field at all: /home/user under the file's own name
    named = _post_form(http, sid, _form(("file", "named.txt", b"hi")))
    assert named.json()["path"] == "/home/user/named.txt"
    listing = http.get(f"/sandboxes/{sid}/filesystem", params={"path": "late"}).json()
    assert [e["name"] for e in listing["entries"]] == ["a.bin"]  # no temporary file left


def test_upload_refuses_malformed_forms(http: httpx.Client, sid: str) -> None:
    path = ("path", None, b"bad/x.bin")
    not_multipart = http.post(
        f"/sandboxes/{sid}/filesystem/upload", content=b"raw", params={"path": "bad/x.bin"}
    )
    assert "multipart field 'file' is required" in _error(not_multipart, 400)["message"]
    two = _post_form(http, sid, _form(path, ("file", "a", b"1"), ("file", "b", b"2")))
    assert "too many files" in _error(two, 400)["message"]
    misnamed = _post_form(http, sid, _form(path, ("data", "a", b"1")))
    assert "send it as field 'file'" in _error(misnamed, 400)["message"]
    cut = _post_form(http, sid, _form(path, ("file", "a", b"1" * 100_000), end=False))
    assert "ended before its closing boundary" in _error(cut, 400)["message"]
    twice = _post_form(http, sid, _form(path, ("file", "a", b"1"), ("path", None, b"other")))
    assert "'path' is given more than once" in _error(twice, 400)["message"]
    no_file = _post_form(http, sid, _form(path))
    assert "multipart field 'file' is required" in _error(no_file, 400)["message"]
    # the first file part created bad/ (its parents are made); nothing was left in it
    leftovers = http.get(f"/sandboxes/{sid}/filesystem", params={"path": "bad"})
    assert leftovers.json()["entries"] == []


def test_upload_refused_mid_body_is_answered_not_reset(http: httpx.Client, sid: str) -> None:
    """A target refused when the file part starts is an answer, though the client is still
    sending 20 MB: the server takes the rest of the body first."""
    big = b"z" * (20 * 1024 * 1024)
    refused = http.post(
        f"/sandboxes/{sid}/filesystem/upload",
        files={"file": ("big.bin", big)},
        data={"path": "/etc/big.bin"},
    )
    _error(refused, 400)
    # the connection is still good for the next request
    assert http.get(f"/sandboxes/{sid}/health").json()["status"] == "ok"


# ---------------------------------------------------------------- processes and health


def test_commands_and_processes(http: httpx.Client, sid: str) -> None:
    http.post(f"/sandboxes/{sid}/filesystem/mkdir", json={"path": "work"})
    r = http.post(
        f"/sandboxes/{sid}/processes/cmd",
        json={"command": "pwd; echo oops >&2; exit 3", "cwd": "/home/user/work"},
    ).json()
    assert r["status"] == "completed"
    assert r["result"]["exitCode"] == 3
    assert r["result"]["stdout"].strip().endswith("/work")
    assert r["result"]["stderr"] == "oops\n"
    assert r["result"]["cwd"] == "/home/user/work"
    slow = http.post(
        f"/sandboxes/{sid}/processes/cmd", json={"command": "echo start; sleep 20", "timeout": 2}
    ).json()
    assert slow["status"] == "timeout"
    assert slow["result"]["stdout"] == "start\n"
    bg = http.post(
        f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 30 & echo started"}
    ).json()
    assert bg["result"]["stdout"] == "started\n"
    items = http.get(f"/sandboxes/{sid}/processes").json()
    assert items["total"] == len(items["items"])
    sleeper = next(p for p in items["items"] if p["command"] == "sleep 30 & echo started")
    got = http.get(f"/sandboxes/{sid}/processes/{sleeper['processId']}").json()
    assert got["processId"] == sleeper["processId"]
    assert got["environment"] == {}
    killed = http.delete(f"/sandboxes/{sid}/processes/{sleeper['processId']}").json()
    assert killed["stopped"] is True
    _error(http.get(f"/sandboxes/{sid}/processes/1"), 404)
    _error(
        http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "true", "timeout": 99}), 400
    )


def test_health(http: httpx.Client, sid: str) -> None:
    body = http.get(f"/sandboxes/{sid}/health").json()
    assert body["status"] == "ok"
    assert body["service"] == "sandbox-code-interpreter"
    _error(http.get("/sandboxes/nope/health"), 404)


def test_provisioning_delay_and_upload_limit() -> None:
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

    settings = EmulatorSettings(provisioning_delay=0.3, spare_kernels=0, max_upload_bytes=1000)
    with LocalEmulator(settings) as config, httpx.Client(base_url=str(config.data_endpoint)) as c:
        t = c.post("/2025-09-10/templates", json={"templateName": "slow"}).json()["data"]
        assert t["status"] == "CREATING"
        _error(c.post("/sandboxes", json={"templateName": "slow"}), 409)
        wait_until(
            lambda: c.get("/2025-09-10/templates/slow").json()["data"]["status"] == "READY",
            "the template to become READY",
        )
        s = c.post("/sandboxes", json={"templateName": "slow"}).json()["data"]
        assert s["status"] == "CREATING"
        assert c.get(f"/sandboxes/{s['sandboxId']}/health").json()["status"] == "creating"
        wait_until(
            lambda: c.get(f"/sandboxes/{s['sandboxId']}").json()["data"]["status"] == "READY",
            "the sandbox to become READY",
        )
        big = c.post(
            f"/sandboxes/{s['sandboxId']}/filesystem/upload",
            files={"file": ("big", b"x" * 5000)},
            data={"path": "big"},
        )
        _error(big, 413, "ERR_PAYLOAD_TOO_LARGE")
        small = c.post(
            f"/sandboxes/{s['sandboxId']}/filesystem/upload",
            files={"file": ("small", b"x" * 10)},
            data={"path": "small"},
        )
        assert small.json()["size"] == 10


# ------------------------------------------- execute, answered before the router (ExecuteRoute)


async def _through_the_router(self: ExecuteRoute, scope: Any, receive: Any, send: Any) -> None:
    await self.app(scope, receive, send)


def _both(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch, method: str, path: str, **kw: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The answer of the route before the router, then the router's."""
    fast = http.request(method, path, **kw)
    with monkeypatch.context() as patch:
        patch.setattr(ExecuteRoute, "__call__", _through_the_router)
        routed = http.request(method, path, **kw)
    return fast, routed


def _same(fast: httpx.Response, routed: httpx.Response) -> dict[str, Any]:
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.headers.get("retry-after") == routed.headers.get("retry-after")
    assert fast.headers["x-acs-request-id"]
    body, other = fast.json(), routed.json()
    if "requestId" in body:  # an error: its id is the header's
        assert body.pop("requestId") == fast.headers["x-acs-request-id"]
        other.pop("requestId")
    assert body == other
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("prefix", ["", "/2025-09-10"])
def test_errors_are_the_routers(
    http: httpx.Client, sid: str, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    path = f"{prefix}/sandboxes/{sid}/contexts/execute"
    cases: list[dict[str, Any]] = [
        {"content": b"{not json"},
        {"content": b"[1, 2]"},
        {"json": {}},
        {"json": {"code": 1}},
        {"json": {"code": "1", "timeout": -1}},
        {"json": {"code": "1", "timeout": "soon"}},
        {"json": {"code": "1", "contextId": "no-such-context"}},
        {"json": {"code": "1", "language": "cobol"}},
        {"content": b'{"code": "\\ud800"}'},
    ]
    for case in cases:
        body = _same(*_both(http, monkeypatch, "POST", path, **case))
        assert body["code"].startswith("ERR_"), (case, body)
    missing = f"{prefix}/sandboxes/no-such-sandbox/contexts/execute"
    assert _same(*_both(http, monkeypatch, "POST", missing, json={"code": "1"}))["code"] == (
        "ERR_NOT_FOUND"
    )
    # other methods on the path are the router's to answer (GET: a context named "execute")
    assert _same(*_both(http, monkeypatch, "GET", path))["code"] == "ERR_NOT_FOUND"


def test_a_run_answers_alike(http: httpx.Client, sid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = f"/sandboxes/{sid}/contexts/execute"
    fast, routed = _both(http, monkeypatch, "POST", path, json={"code": "print('hi'); 6 * 7"})
    assert fast.status_code == routed.status_code == 200
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert fast.headers["content-length"] == str(len(fast.content))
    one, two = fast.json(), routed.json()
    for answer in (one, two):
        answer.pop("usage")  # measured per run
        for event in answer["results"]:
            event.pop("executionCount", None)
    assert one == two
    assert [e["type"] for e in one["results"]] == ["stdout", "result", "endOfExecution"]
