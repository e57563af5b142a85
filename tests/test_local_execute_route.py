"""Execute is answered before the router (`ExecuteRoute`): the same answers, case by case,
as the route's handler behind the router gives."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentrun_ci._config import Config

pytest.importorskip("jupyter_client")

from agentrun_ci.local._routes_sandbox import ExecuteRoute


@pytest.fixture(scope="module")
def http(emulator: Config) -> Iterator[httpx.Client]:
    assert emulator.data_endpoint is not None
    with httpx.Client(base_url=emulator.data_endpoint, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def sid(http: httpx.Client) -> Iterator[str]:
    name = f"route-{uuid.uuid4().hex[:8]}"
    assert http.post("/2025-09-10/templates", json={"templateName": name}).status_code == 200
    r = http.post("/sandboxes", json={"templateName": name})
    assert r.status_code == 200, r.text
    sandbox_id: str = r.json()["data"]["sandboxId"]
    yield sandbox_id
    http.delete(f"/sandboxes/{sandbox_id}")
    http.delete(f"/2025-09-10/templates/{name}")


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
