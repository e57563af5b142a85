"""SSE resumability over streamable HTTP: event ids, a priming event with `retry:`,
and a bounded event store, so a stream dropped during a long call resumes with
`GET` + `Last-Event-ID` and still delivers the result."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import httpx
from mcp.server.streamable_http import EventMessage
from mcp.types import JSONRPCMessage, JSONRPCNotification
from support import http_server_process, initialize_request, needs_script

from agentrun_ci_mcp.events import (
    SSE_RETRY_MS,
    EventStoreLimits,
    MemoryEventStore,
    SessionEvents,
)

# ---------------------------------------------------------------- the store


def _note(n: int, pad: str = "") -> JSONRPCMessage:
    return JSONRPCNotification(
        jsonrpc="2.0", method="notifications/progress", params={"n": n, "pad": pad}
    )


async def _replayed(view: SessionEvents, last: str) -> tuple[Any, list[Any]]:
    got: list[EventMessage] = []

    async def send(event: EventMessage) -> None:
        got.append(event)

    stream = await view.replay_events_after(last, send)
    return stream, [e.message.params["n"] for e in got]  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_replay_is_what_came_after_in_that_stream_only() -> None:
    store = MemoryEventStore()
    a = SessionEvents(store, "session-a")
    priming = await a.store_event("1", None)
    first = await a.store_event("1", _note(1))
    await a.store_event("2", _note(99))  # another stream of the session
    await a.store_event("1", _note(2))
    await a.store_event("1", _note(3))
    assert await _replayed(a, priming) == ("1", [1, 2, 3])
    assert await _replayed(a, first) == ("1", [2, 3])
    assert await _replayed(a, "no-such-id") == (None, [])
    # the same stream id in another session is another stream; an id resumes only in its own
    b = SessionEvents(store, "session-b")
    await b.store_event("1", _note(50))
    assert await _replayed(b, first) == (None, [])
    assert await _replayed(a, first) == ("1", [2, 3])
    assert len({priming, first}) == 2
    assert "session-a" not in repr(a)


@pytest.mark.anyio
async def test_the_store_is_bounded_per_stream_in_all_and_in_time() -> None:
    now = [0.0]
    limits = EventStoreLimits(
        max_events=3, max_bytes=10_000, max_streams=2, max_total_bytes=20_000, ttl=60
    )
    store = MemoryEventStore(limits, clock=lambda: now[0])
    view = SessionEvents(store, "s")
    ids = [await view.store_event("1", _note(n)) for n in range(5)]
    # at most 3 events per stream: resuming from a dropped one is refused
    assert await _replayed(view, ids[0]) == (None, [])
    assert await _replayed(view, ids[2]) == ("1", [3, 4])
    # bytes per stream: one big event pushes the older ones out
    big = await view.store_event("1", _note(5, "x" * 9990))
    assert await _replayed(view, ids[4]) == (None, [])
    assert await _replayed(view, big) == ("1", [])
    # at most 2 streams: the least recently written goes
    await view.store_event("2", _note(6))
    await view.store_event("3", _note(7))
    assert store.stream_count == 2
    assert await _replayed(view, big) == (None, [])
    # a stream nothing was written to for `ttl` seconds is forgotten
    last = await view.store_event("3", _note(8))
    now[0] += 61
    assert await _replayed(view, last) == (None, [])
    assert store.stream_count == 0
    assert store.total_bytes == 0


# ---------------------------------------------------------------- a dropped stream, resumed


def _sse(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The events of an SSE response, as their fields."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
            continue
        name, _, value = line.partition(":")
        event[name] = event.get(name, "") + value.removeprefix(" ")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    with http_server_process("resume" + secrets.token_hex(3), tmp_path / "server.log") as s:
        yield s


def _session(http: httpx.Client, url: str, token: str) -> dict[str, str]:
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "authorization": f"Bearer {token}",
    }
    opened = http.post(url, json=initialize_request("resume"), headers=headers)
    assert opened.status_code == 200, opened.text
    headers |= {
        "mcp-session-id": opened.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    done = http.post(
        url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
    )
    assert done.status_code == 202, done.text
    return headers


@needs_script
def test_a_stream_dropped_during_a_long_run_resumes_with_last_event_id(
    server: tuple[str, str, Path],
) -> None:
    url, token, log = server
    code = "import time; print('before'); time.sleep(4); print('after')"
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "run_code",
            "arguments": {"code": code},
            "_meta": {"progressToken": "p7"},
        },
    }
    with httpx.Client(timeout=60) as http:
        headers = _session(http, url, token)
        with http.stream("POST", url, json=call, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            priming = next(_sse(response))
        # the connection is gone, the call (sleeping 4 s) not answered on it
        assert priming["data"] == ""
        assert priming["retry"] == str(SSE_RETRY_MS)
        assert priming["id"]

        resumed_headers = headers | {"accept": "text/event-stream", "last-event-id": priming["id"]}
        answer: dict[str, Any] | None = None
        seen: list[dict[str, Any]] = []
        with http.stream("GET", url, headers=resumed_headers) as resumed:
            assert resumed.status_code == 200, resumed.read()
            for event in _sse(resumed):
                if not event.get("data"):
                    continue  # the resumed stream's own priming event
                assert event["id"]  # every event can be resumed from
                message = json.loads(event["data"])
                seen.append(message)
                if message.get("id") == 7:
                    answer = message
                    break
        assert answer is not None, seen
        result = answer["result"]
        assert not result.get("isError"), result
        assert result["structuredContent"]["stdout"] == "before\nafter\n"
        assert all(m.get("method") == "notifications/progress" for m in seen[:-1]), seen

        # an event id resumes only in the session it was sent to
        other = _session(http, url, token)
        stolen = other | {"accept": "text/event-stream", "last-event-id": priming["id"]}
        with http.stream("GET", url, headers=stolen) as refused:
            assert [e for e in _sse(refused) if e.get("data")] == []
    assert "Traceback" not in log.read_text()
