"""DataPlane and AsyncDataPlane against respx (every endpoint) and a real loopback server."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
import respx

from agentrun_ci import (
    APIError,
    AsyncDataPlane,
    AuthenticationError,
    BadRequestError,
    CommandResult,
    Config,
    ConflictError,
    Context,
    DataPlane,
    Execution,
    FileContent,
    FileEntry,
    Health,
    InsufficientStorageError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProcessInfo,
    RateLimitError,
    RequestTimeout,
    RetryPolicy,
    Sandbox,
    ServerError,
    TransportError,
    WaitTimeout,
    __version__,
)
from agentrun_ci._auth import verify_signature

AK, SK = "LTAI5t5opp3xMWk2B3a4gZVq", "secret"
BASE = "https://123-ram.agentrun-data.cn-hangzhou.aliyuncs.com"
SIGNED = Config(access_key_id=AK, access_key_secret=SK, account_id="123")
SBX = "/sandboxes/sbx1"
SANDBOX = {"sandboxId": "sbx1", "templateName": "t1", "status": "READY"}
ENTRY = {"name": "a.txt", "path": "/home/user/a.txt", "type": "file", "size": 3, "mode": 420}
EXECUTE_BODY = {
    "results": [
        {"type": "stdout", "text": "hi\n"},
        {"type": "result", "text": "2", "isMainResult": True, "executionCount": 1},
        {"type": "endOfExecution", "status": "ok", "executionCount": 1},
    ],
    "contextId": "ctx1",
}


def envelope(data: Any) -> dict[str, Any]:
    return {"code": "SUCCESS", "requestId": "r1", "data": data}


def run(twin: str, config: Config, method: str, *args: Any, **kw: Any) -> Any:
    """Call one DataPlane method on the sync or the async twin."""
    if twin == "sync":
        with DataPlane(config) as plane:
            return getattr(plane, method)(*args, **kw)

    async def main() -> Any:
        async with AsyncDataPlane(config) as plane:
            return await getattr(plane, method)(*args, **kw)

    return anyio.run(main)


TWINS = pytest.mark.parametrize("twin", ["sync", "async"])

# (method, args, kwargs, http method, path, query, JSON body sent, JSON answered, check)
ENDPOINTS: list[Any] = [
    (
        "create_sandbox",
        ("t1",),
        {"idle_timeout": 600, "sandbox_id": "sbx1"},
        "POST",
        "/sandboxes",
        None,
        {"templateName": "t1", "sandboxIdleTimeoutSeconds": 600, "sandboxId": "sbx1"},
        envelope(SANDBOX),
        lambda r: r == Sandbox.from_wire(SANDBOX),
    ),
    (
        "get_sandbox",
        ("sbx1",),
        {},
        "GET",
        SBX,
        None,
        None,
        envelope(SANDBOX),
        lambda r: isinstance(r, Sandbox) and r.status == "READY",
    ),
    (
        "stop_sandbox",
        ("sbx1",),
        {},
        "POST",
        SBX + "/stop",
        None,
        None,
        envelope({**SANDBOX, "status": "TERMINATED"}),
        lambda r: r.status == "TERMINATED",
    ),
    (
        "delete_sandbox",
        ("sbx1",),
        {},
        "DELETE",
        SBX,
        None,
        None,
        envelope(SANDBOX),
        lambda r: r.sandbox_id == "sbx1",
    ),
    (
        "health",
        ("sbx1",),
        {},
        "GET",
        SBX + "/health",
        None,
        None,
        {"status": "ok"},
        lambda r: isinstance(r, Health) and r.ok,
    ),
    (
        "create_context",
        ("sbx1",),
        {"language": "javascript", "cwd": "/tmp"},
        "POST",
        SBX + "/contexts",
        None,
        {"language": "javascript", "cwd": "/tmp"},
        {"id": "c1", "language": "javascript", "cwd": "/tmp"},
        lambda r: r == Context("c1", "javascript", "/tmp"),
    ),
    (
        "list_contexts",
        ("sbx1",),
        {},
        "GET",
        SBX + "/contexts",
        None,
        None,
        [{"id": "c1", "language": "python", "cwd": "/home/user"}],
        lambda r: [c.id for c in r] == ["c1"],
    ),
    (
        "get_context",
        ("sbx1", "c1"),
        {},
        "GET",
        SBX + "/contexts/c1",
        None,
        None,
        {"id": "c1", "language": "python", "cwd": "/home/user"},
        lambda r: r.id == "c1",
    ),
    (
        "delete_context",
        ("sbx1", "c1"),
        {},
        "DELETE",
        SBX + "/contexts/c1",
        None,
        None,
        None,
        lambda r: r is None,
    ),
    (
        "execute",
        ("sbx1", "print('hi'); 1+1"),
        {"context_id": "ctx1", "timeout": 10},
        "POST",
        SBX + "/contexts/execute",
        None,
        {"code": "print('hi'); 1+1", "timeout": 10.0, "contextId": "ctx1"},
        EXECUTE_BODY,
        lambda r: isinstance(r, Execution) and r.stdout == "hi\n" and r.text == "2",
    ),
    (
        "read_file",
        ("sbx1", "/home/user/a b.txt"),
        {},
        "GET",
        SBX + "/files",
        {"path": ["/home/user/a b.txt"]},
        None,
        {**ENTRY, "content": "abc", "encoding": "utf-8"},
        lambda r: isinstance(r, FileContent) and r.content == b"abc",
    ),
    (
        "write_file",
        ("sbx1", "/home/user/a.txt", "abc"),
        {},
        "POST",
        SBX + "/files",
        None,
        {
            "path": "/home/user/a.txt",
            "content": "abc",
            "mode": "644",
            "encoding": "utf-8",
            "createDir": True,
        },
        {"path": "/home/user/a.txt", "size": 3},
        lambda r: isinstance(r, FileEntry) and r.size == 3,
    ),
    (
        "list_files",
        ("sbx1", "/home/user"),
        {"depth": 2},
        "GET",
        SBX + "/filesystem",
        {"path": ["/home/user"], "depth": ["2"]},
        None,
        {"path": "/home/user", "entries": [ENTRY]},
        lambda r: [e.name for e in r] == ["a.txt"],
    ),
    (
        "stat",
        ("sbx1", "/home/user/a.txt"),
        {},
        "GET",
        SBX + "/filesystem/stat",
        {"path": ["/home/user/a.txt"]},
        None,
        {"entry": ENTRY},
        lambda r: r.mode == 0o644,
    ),
    (
        "mkdir",
        ("sbx1", "/home/user/d"),
        {},
        "POST",
        SBX + "/filesystem/mkdir",
        None,
        {"path": "/home/user/d", "parents": True, "mode": "0755"},
        {"entry": {"path": "/home/user/d", "type": "directory", "mode": 493}},
        lambda r: r.is_dir and r.mode == 0o755,
    ),
    (
        "move",
        ("sbx1", "/a", "/b"),
        {},
        "POST",
        SBX + "/filesystem/move",
        None,
        {"source": "/a", "destination": "/b"},
        {"entry": {"path": "/b"}},
        lambda r: r.path == "/b",
    ),
    (
        "remove",
        ("sbx1", "/b"),
        {},
        "POST",
        SBX + "/filesystem/remove",
        None,
        {"path": "/b"},
        {"entry": {"path": "/b"}},
        lambda r: r is None,
    ),
    (
        "run_command",
        ("sbx1", "ls -la"),
        {"cwd": "/tmp", "timeout": 5},
        "POST",
        SBX + "/processes/cmd",
        None,
        {"command": "ls -la", "cwd": "/tmp", "timeout": 5.0},
        {
            "executionId": "e1",
            "status": "completed",
            "result": {
                "exitCode": 0,
                "stdout": "x",
                "stderr": "",
                "cwd": "/tmp",
                "executionTimeMs": 12,
            },
        },
        lambda r: isinstance(r, CommandResult) and r.ok and r.stdout == "x",
    ),
    (
        "list_processes",
        ("sbx1",),
        {},
        "GET",
        SBX + "/processes",
        None,
        None,
        {"items": [{"processId": "7", "status": "running", "command": "sleep"}], "total": 1},
        lambda r: [p.pid for p in r] == ["7"],
    ),
    (
        "get_process",
        ("sbx1", "7"),
        {},
        "GET",
        SBX + "/processes/7",
        None,
        None,
        {"processId": "7", "status": "running"},
        lambda r: isinstance(r, ProcessInfo),
    ),
    (
        "kill_process",
        ("sbx1", "7"),
        {},
        "DELETE",
        SBX + "/processes/7",
        None,
        None,
        {"pid": "7", "stopped": True},
        lambda r: r is None,
    ),
]


def _check_common(request: httpx.Request, *, signed: bool) -> None:
    assert request.headers["user-agent"] == f"agentrun-ci/{__version__}"
    if request.content:
        assert request.headers["content-type"] == "application/json"
    if signed:
        assert request.headers["agentrun-authorization"].startswith("AGENTRUN4-HMAC-SHA256 ")
        assert "x-acs-date" in request.headers
        assert "x-acs-content-sha256" in request.headers
        raw_path, _, raw_query = request.url.raw_path.decode().partition("?")
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert verify_signature(
            request.method, raw_path, raw_query, headers, access_key_id=AK, access_key_secret=SK
        )
    else:
        assert "agentrun-authorization" not in request.headers


@TWINS
@pytest.mark.parametrize(
    ("method", "args", "kwargs", "verb", "path", "query", "sent", "answer", "check"),
    ENDPOINTS,
    ids=[e[0] for e in ENDPOINTS],
)
def test_endpoint(
    twin: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    verb: str,
    path: str,
    query: dict[str, list[str]] | None,
    sent: dict[str, Any] | None,
    answer: Any,
    check: Callable[[Any], bool],
) -> None:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        response = httpx.Response(204) if answer is None else httpx.Response(200, json=answer)
        route = mock.request(verb, path).mock(return_value=response)
        result = run(twin, SIGNED, method, *args, **kwargs)
    assert check(result)
    request = route.calls.last.request
    assert parse_qs(request.url.query.decode()) == (query or {})
    if sent is None:
        assert request.content == b""
    else:
        assert json.loads(request.content) == sent
    _check_common(request, signed=True)


@TWINS
def test_unsigned_without_keys_uses_the_plain_host(twin: str) -> None:
    config = Config(account_id="123")
    with respx.mock(base_url="https://123.agentrun-data.cn-hangzhou.aliyuncs.com") as mock:
        route = mock.get(SBX + "/health").respond(json={"status": "ok"})
        assert run(twin, config, "health", "sbx1").ok
    _check_common(route.calls.last.request, signed=False)


@TWINS
def test_upload_is_multipart_from_disk(twin: str, tmp_path: Path) -> None:
    local = tmp_path / "data.bin"
    local.write_bytes(b"\x00\x01payload")
    with respx.mock(base_url=BASE) as mock:
        route = mock.post(SBX + "/filesystem/upload").respond(
            json={"path": "/home/user/data.bin", "size": 9}
        )
        entry = run(twin, SIGNED, "upload", "sbx1", local, "/home/user/data.bin")
    assert entry.size == 9
    request = route.calls.last.request
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="file"; filename="data.bin"' in request.content
    assert b"\x00\x01payload" in request.content
    assert b'name="path"\r\n\r\n/home/user/data.bin' in request.content
    _check_common_signed_only(request)


def _check_common_signed_only(request: httpx.Request) -> None:
    assert request.headers["agentrun-authorization"].startswith("AGENTRUN4-HMAC-SHA256 ")


@TWINS
def test_download_streams_to_disk(twin: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 1024
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(SBX + "/filesystem/download").respond(content=payload)
        target = run(twin, SIGNED, "download", "sbx1", "/home/user/x.bin", tmp_path / "x.bin")
    assert target.read_bytes() == payload
    assert list(tmp_path.iterdir()) == [target]  # the .part file is gone
    assert parse_qs(route.calls.last.request.url.query.decode()) == {"path": ["/home/user/x.bin"]}


@TWINS
def test_failed_download_leaves_no_file(twin: str, tmp_path: Path) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get(SBX + "/filesystem/download").respond(404, json={"code": "NOT_FOUND"})
        with pytest.raises(NotFoundError):
            run(twin, SIGNED, "download", "sbx1", "/nope", tmp_path / "x.bin")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ error mapping

NO_RETRY = Config(access_key_id=AK, access_key_secret=SK, account_id="123", max_retries=0)


@TWINS
@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (413, PayloadTooLargeError),
        (429, RateLimitError),
        (500, ServerError),
        (507, InsufficientStorageError),
    ],
)
def test_error_mapping(twin: str, status: int, cls: type[APIError]) -> None:
    body = {"code": "ERR_X", "message": "it failed", "requestId": "body-req"}
    with respx.mock(base_url=BASE) as mock:
        mock.get(SBX + "/contexts").respond(status, json=body)
        with pytest.raises(cls) as info:
            run(twin, NO_RETRY, "list_contexts", "sbx1")
    assert (info.value.status_code, info.value.code, info.value.message) == (
        status,
        "ERR_X",
        "it failed",
    )
    assert info.value.request_id == "body-req"


@TWINS
@pytest.mark.parametrize(
    "header", ["x-acs-request-id", "x-agentrun-request-id", "x-request-id", "x-fc-request-id"]
)
def test_request_id_headers(twin: str, header: str) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get(SBX + "/health").respond(
            403, json={"code": "ERR_FORBIDDEN"}, headers={header: "H"}
        )
        with pytest.raises(PermissionDeniedError) as info:
            run(twin, NO_RETRY, "health", "sbx1")
    assert info.value.request_id == "H"


@TWINS
def test_older_error_body(twin: str) -> None:
    body = {"error": {"code": "DISK_FULL", "message": "no space", "details": {}}}
    with respx.mock(base_url=BASE) as mock:
        mock.post(SBX + "/files").respond(507, json=body, headers={"x-fc-request-id": "fc"})
        with pytest.raises(InsufficientStorageError) as info:
            run(twin, NO_RETRY, "write_file", "sbx1", "/a", "x")
    assert (info.value.code, info.value.message, info.value.request_id) == (
        "DISK_FULL",
        "no space",
        "fc",
    )


# ------------------------------------------------------------------ retries


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def sleep(self, delay: float) -> None:
        self.delays.append(delay)

    async def asleep(self, delay: float) -> None:
        self.delays.append(delay)


def run_with_retries(
    twin: str, recorder: Recorder, method: str, *args: Any, max_retries: int = 3, **kw: Any
) -> Any:
    config = Config(access_key_id=AK, access_key_secret=SK, account_id="123")
    policy = RetryPolicy(max_retries, jitter=lambda lo, hi: hi)
    if twin == "sync":
        with DataPlane(config, retry=policy, sleep=recorder.sleep) as plane:
            return getattr(plane, method)(*args, **kw)

    async def main() -> Any:
        async with AsyncDataPlane(config, retry=policy, sleep=recorder.asleep) as plane:
            return await getattr(plane, method)(*args, **kw)

    return anyio.run(main)


@TWINS
def test_idempotent_get_is_retried_on_503_with_backoff(twin: str) -> None:
    recorder = Recorder()
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(SBX + "/health").mock(
            side_effect=[
                httpx.Response(503),
                httpx.Response(502),
                httpx.Response(200, json={"status": "ok"}),
            ]
        )
        assert run_with_retries(twin, recorder, "health", "sbx1").ok
    assert route.call_count == 3
    assert recorder.delays == [0.25, 0.5]


@TWINS
def test_retry_after_is_honoured(twin: str) -> None:
    recorder = Recorder()
    with respx.mock(base_url=BASE) as mock:
        mock.post(SBX + "/filesystem/mkdir").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "2"}),
                httpx.Response(200, json={"entry": {"path": "/d", "type": "directory"}}),
            ]
        )
        assert run_with_retries(twin, recorder, "mkdir", "sbx1", "/d").is_dir
    assert recorder.delays == [2.0]


@TWINS
def test_retries_run_out(twin: str) -> None:
    recorder = Recorder()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post(SBX + "/stop").respond(504)
        with pytest.raises(ServerError):
            run_with_retries(twin, recorder, "stop_sandbox", "sbx1", max_retries=2)
    assert route.call_count == 3
    assert len(recorder.delays) == 2


@TWINS
@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_execute_is_not_retried_on_status(twin: str, status: int) -> None:
    recorder = Recorder()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post(SBX + "/contexts/execute").respond(status)
        with pytest.raises(APIError):
            run_with_retries(twin, recorder, "execute", "sbx1", "x = 1")
    assert route.call_count == 1
    assert recorder.delays == []


@TWINS
@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError]
)
def test_execute_is_not_retried_after_its_body_may_have_left(
    twin: str, exc: type[httpx.TransportError]
) -> None:
    recorder = Recorder()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post(SBX + "/contexts/execute").mock(side_effect=exc("boom"))
        with pytest.raises(TransportError, match="not re-sent"):
            run_with_retries(twin, recorder, "execute", "sbx1", "x = 1")
    assert route.call_count == 1


@TWINS
def test_read_timeout_is_a_request_timeout(twin: str) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.post(SBX + "/contexts/execute").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(RequestTimeout):
            run_with_retries(twin, Recorder(), "execute", "sbx1", "x = 1")


@TWINS
@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout])
def test_connect_error_is_retried_even_for_execute(
    twin: str, exc: type[httpx.TransportError]
) -> None:
    recorder = Recorder()
    with respx.mock(base_url=BASE) as mock:
        route = mock.post(SBX + "/contexts/execute").mock(
            side_effect=[exc("refused"), httpx.Response(200, json=EXECUTE_BODY)]
        )
        execution = run_with_retries(twin, recorder, "execute", "sbx1", "x = 1")
    assert execution.ok
    assert route.call_count == 2
    assert recorder.delays == [0.25]


@TWINS
def test_max_retries_zero_turns_retries_off(twin: str) -> None:
    recorder = Recorder()
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(SBX + "/health").mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(TransportError, match="could not connect"):
            run_with_retries(twin, recorder, "health", "sbx1", max_retries=0)
    assert route.call_count == 1
    assert recorder.delays == []


@TWINS
def test_execute_read_timeout_is_the_execute_timeout_plus_a_margin(twin: str) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post(SBX + "/contexts/execute").respond(json=EXECUTE_BODY)
        run(twin, SIGNED, "execute", "sbx1", "x", timeout=20)
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout["read"] > 20
    assert timeout["connect"] == SIGNED.connect_timeout


@TWINS
def test_execute_timeout_above_the_cap_sends_nothing(twin: str) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.post(SBX + "/contexts/execute").respond(json=EXECUTE_BODY)
        with pytest.raises(InvalidArgumentError, match="30 s"):
            run(twin, SIGNED, "execute", "sbx1", "x", timeout=60)
    assert route.call_count == 0


# ------------------------------------------------------------------ health polling, lifecycle


@TWINS
def test_wait_until_healthy_rides_out_a_booting_sandbox(twin: str) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(SBX + "/health").mock(
            side_effect=[
                httpx.Response(404, json={"code": "NOT_FOUND"}),
                httpx.Response(200, json={"status": "starting"}),
                httpx.Response(200, json={"status": "ok"}),
            ]
        )
        health = run(twin, SIGNED, "wait_until_healthy", "sbx1", timeout=10, interval=0.001)
    assert health.ok
    assert route.call_count == 3


@TWINS
def test_wait_until_healthy_gives_up(twin: str) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get(SBX + "/health").respond(json={"status": "starting"})
        with pytest.raises(WaitTimeout, match="starting"):
            run(twin, SIGNED, "wait_until_healthy", "sbx1", timeout=0.05, interval=0.01)


@TWINS
def test_wait_until_healthy_stops_on_auth_errors(twin: str) -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(SBX + "/health").respond(401, json={"code": "ERR_UNAUTHORIZED"})
        with pytest.raises(AuthenticationError):
            run(twin, SIGNED, "wait_until_healthy", "sbx1", timeout=10, interval=0.001)
    assert route.call_count == 1


def test_close_is_idempotent_sync() -> None:
    plane = DataPlane(SIGNED)
    plane.close()
    plane.close()
    with DataPlane(SIGNED) as other:
        pass
    other.close()


@pytest.mark.anyio
async def test_close_is_idempotent_async() -> None:
    plane = AsyncDataPlane(SIGNED)
    await plane.close()
    await plane.close()
    async with AsyncDataPlane(SIGNED) as other:
        pass
    await other.close()


def test_transport_seam() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    with DataPlane(SIGNED, transport=httpx.MockTransport(handler)) as plane:
        assert plane.health("sbx1").ok
    assert str(seen[0].url) == BASE + SBX + "/health"


def test_repr_hides_secrets() -> None:
    with DataPlane(SIGNED) as plane:
        assert SK not in repr(plane)
        assert BASE in repr(plane)


# ------------------------------------------------------------------ connection reuse


class _CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        type(self).connections += 1
        super().process_request(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = json.dumps(EXECUTE_BODY).encode()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[tuple[str, type[_CountingServer]]]:
    server_cls = type("Server", (_CountingServer,), {"connections": 0})
    server = server_cls(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server_cls
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_sync_calls_share_one_connection(loopback: tuple[str, type[_CountingServer]]) -> None:
    url, server_cls = loopback
    with DataPlane(Config(data_endpoint=url)) as plane:
        for _ in range(10):
            assert plane.execute("sbx1", "1+1").text == "2"
    assert server_cls.connections == 1


@pytest.mark.anyio
async def test_async_calls_share_one_connection(
    loopback: tuple[str, type[_CountingServer]],
) -> None:
    url, server_cls = loopback
    async with AsyncDataPlane(Config(data_endpoint=url)) as plane:
        for _ in range(10):
            assert (await plane.execute("sbx1", "1+1")).text == "2"
    assert server_cls.connections == 1


class _ChunkRecorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A transport that consumes the request body chunk by chunk, as a socket would."""

    def __init__(self) -> None:
        self.chunks: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        for chunk in request.stream:
            self.chunks.append(len(chunk))
        return httpx.Response(200, json={"path": "/r", "size": sum(self.chunks)})

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for chunk in request.stream:
            self.chunks.append(len(chunk))
        return httpx.Response(200, json={"path": "/r", "size": sum(self.chunks)})


@TWINS
def test_upload_streams_the_file_in_chunks(twin: str, tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(b"x" * (3 * 1024 * 1024))
    transport = _ChunkRecorder()
    if twin == "sync":
        with DataPlane(SIGNED, transport=transport) as plane:
            plane.upload("sbx1", local, "/r")
    else:

        async def main() -> None:
            async with AsyncDataPlane(SIGNED, transport=transport) as plane:
                await plane.upload("sbx1", local, "/r")

        anyio.run(main)
    assert sum(transport.chunks) > 3 * 1024 * 1024
    assert max(transport.chunks) <= 1024 * 1024  # never the whole file in one piece


class _BodyRecorder(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Records each request's headers and whole body; the first `refuse` ones fail to connect."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.requests: list[tuple[httpx.Headers, bytes]] = []

    def _answer(self, request: httpx.Request, body: bytes) -> httpx.Response:
        if self.refuse:
            self.refuse -= 1
            raise httpx.ConnectError("refused", request=request)
        self.requests.append((request.headers, body))
        return httpx.Response(200, json={"path": "/home/user/r", "size": len(body)})

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse:
            return self._answer(request, b"")
        return self._answer(request, b"".join(request.stream))  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.refuse:
            return self._answer(request, b"")
        return self._answer(request, b"".join([c async for c in request.stream]))  # type: ignore[union-attr]


def _upload(twin: str, transport: _BodyRecorder, source: Any, remote: str = "/home/user/r") -> Any:
    config = Config(access_key_id=AK, access_key_secret=SK, account_id="123", max_retries=2)
    fast = RetryPolicy(2, jitter=lambda low, high: 0.0)
    if twin == "sync":
        with DataPlane(config, transport=transport, retry=fast) as plane:
            return plane.upload("sbx1", source, remote)

    async def main() -> Any:
        async with AsyncDataPlane(config, transport=transport, retry=fast) as plane:
            return await plane.upload("sbx1", source, remote)

    return anyio.run(main)


def _form_file(headers: httpx.Headers, body: bytes) -> bytes:
    """The `file` part's bytes of a multipart body, parsed with the standard library."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + headers["content-type"].encode() + b"\r\n\r\n" + body
    )
    parts = {
        part.get_param("name", header="content-disposition"): part for part in message.iter_parts()
    }
    assert parts["path"].get_payload(decode=True) == b"/home/user/r"
    data = parts["file"].get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


@TWINS
@pytest.mark.parametrize("kind", ["path", "bytes", "file", "iterable"])
def test_upload_sources_send_the_same_form(twin: str, kind: str, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5000  # over one read chunk
    local = tmp_path / "data.bin"
    local.write_bytes(payload)
    transport = _BodyRecorder()
    with local.open("rb") as handle:
        handle.read(10)  # a file object is sent from where it stands
        source: Any = {
            "path": local,
            "bytes": payload[10:],
            "file": handle,
            "iterable": iter([payload[10:5000], b"", payload[5000:]]),
        }[kind]
        _upload(twin, transport, source)
        if kind == "file":
            assert not handle.closed  # the caller's file stays open
    ((headers, body),) = transport.requests
    assert _form_file(headers, body) == (payload if kind == "path" else payload[10:])
    if kind == "iterable":  # length unknown beforehand
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
    else:
        assert int(headers["content-length"]) == len(body)
    assert headers["agentrun-authorization"].startswith("AGENTRUN4-HMAC-SHA256 ")
    assert headers["x-acs-content-sha256"] == "UNSIGNED-PAYLOAD"  # the body is never hashed


def test_upload_from_an_async_iterable(tmp_path: Path) -> None:
    async def chunks() -> Any:
        for piece in (b"one ", b"two ", b"three"):
            yield piece

    transport = _BodyRecorder()
    _upload("async", transport, chunks())
    ((headers, body),) = transport.requests
    assert _form_file(headers, body) == b"one two three"

    with pytest.raises(InvalidArgumentError, match="only be uploaded with AsyncDataPlane"):
        _upload("sync", transport, chunks())
    assert len(transport.requests) == 1


@TWINS
def test_upload_after_a_connect_failure_sends_the_whole_file_again(
    twin: str, tmp_path: Path
) -> None:
    payload = b"0123456789" * 300_000
    local = tmp_path / "data.bin"
    local.write_bytes(payload)
    transport = _BodyRecorder(refuse=1)
    with local.open("rb") as handle:
        _upload(twin, transport, handle)
    ((headers, body),) = transport.requests
    assert _form_file(headers, body) == payload


@TWINS
def test_upload_refuses_a_source_it_cannot_read(twin: str, tmp_path: Path) -> None:
    transport = _BodyRecorder()
    writing = (tmp_path / "w.bin").open("wb")
    with writing, pytest.raises(InvalidArgumentError, match=r"open it with open\(path, 'rb'\)"):
        _upload(twin, transport, writing)
    text = (tmp_path / "w.bin").open("r", encoding="utf-8")
    with text, pytest.raises(InvalidArgumentError, match="text mode"):
        _upload(twin, transport, text)
    with pytest.raises(InvalidArgumentError, match="got int"):
        _upload(twin, transport, 42)
    with pytest.raises(InvalidArgumentError, match="gave str, not bytes"):
        _upload(twin, transport, iter(["text"]))
    assert transport.requests == []  # nothing reached the service
