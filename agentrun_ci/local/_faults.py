"""Fault injection for the emulator: transient errors, resets, slowness, lost sandboxes.

Off by default. `EmulatorSettings(faults=FaultPlan(...))` turns it on at start;
`POST /_admin/faults` changes it at run time (`GET /_admin/faults` reads the
counters). Each request that the plan applies to draws once from a seeded RNG, so
a run with the same seed and the same request order injects the same faults.

Kinds (the keys of `FaultPlan.rates`):

* ``rate_limit``: 429 with ``Retry-After`` (the handler does not run);
* ``error_500`` / ``error_502`` / ``error_503`` / ``error_504``: that status,
  handler not run;
* ``reset_before``: the connection is aborted before the body is read, no answer;
* ``reset_after``: the handler runs to completion, then the connection is aborted
  and its answer dropped. This is the dangerous one: an execute *did* run, and a
  client that re-sends it runs the code twice;
* ``slow``: the answer is held back `slow_seconds`;
* ``sandbox_gone``: the sandbox is deleted before the request is handled (so it
  and every later request for it answer 404);
* ``kernel_death``: on an execute, the target context's kernel is SIGKILLed first
  (the execute answers 500 ERR_CONTEXT_LOST and the context is gone).

`FaultPlan.inject(kind, ...)` (or ``{"inject": [...]}`` on the admin route) forces
faults on the next eligible requests, for exact scenarios in tests.

By default only requests under ``/sandboxes/`` (the data plane inside a
sandbox) are eligible; the control plane, sandbox creation and ``/_admin`` never.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import threading
from collections import Counter
from typing import Any

import attrs
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FAULT_KINDS", "TRANSIENT_KINDS", "FaultMiddleware", "FaultPlan"]

log = logging.getLogger("agentrun_ci.local.faults")

ERROR_KINDS = {"error_500": 500, "error_502": 502, "error_503": 503, "error_504": 504}
FAULT_KINDS = (
    "rate_limit",
    *ERROR_KINDS,
    "reset_before",
    "reset_after",
    "slow",
    "sandbox_gone",
    "kernel_death",
)
TRANSIENT_KINDS = ("rate_limit", *ERROR_KINDS, "reset_before", "reset_after", "slow")
"""Kinds after which the sandbox and its contexts are still there."""

ADMIN_PATH = "/_admin/faults"
_SANDBOX = re.compile(r"^(?:/2025-09-10)?/sandboxes/([^/]+)(/.*)?$")


def _check_rates(_: Any, __: Any, rates: dict[str, float]) -> None:
    unknown = set(rates) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}: use some of {FAULT_KINDS}")
    if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1.0:
        raise ValueError("fault rates must be >= 0 and sum to at most 1.0")


@attrs.define(eq=False, kw_only=True)
class FaultPlan:
    """Which faults to inject, how often, and what was injected so far.

    `rates` maps a kind (see FAULT_KINDS) to the probability that one eligible request
    gets it; the sum is at most 1 (one fault per request at most). `counts` (kind →
    number injected) and `requests` (eligible requests seen) are safe to read from
    another thread; `snapshot()` returns a copy of both.
    """

    rates: dict[str, float] = attrs.field(factory=dict, validator=_check_rates)
    seed: int | None = None
    retry_after: float = 1.0
    """Seconds sent in the Retry-After header of an injected 429."""
    slow_seconds: float = 0.5
    prefixes: tuple[str, ...] = ("/sandboxes/",)
    """Path prefixes eligible for faults (the data plane inside a sandbox by default)."""
    queue: list[str] = attrs.field(factory=list)
    """Kinds forced on the next eligible requests, in order, before any random draw
    (a ``kernel_death`` waits for the next execute). Tests use it for exact scenarios."""
    counts: Counter[str] = attrs.field(factory=Counter, init=False)
    requests: int = attrs.field(default=0, init=False)
    _rng: random.Random = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @classmethod
    def transient(cls, rate: float = 0.2, *, seed: int | None = 0, **kw: Any) -> FaultPlan:
        """`rate` spread evenly over the kinds that leave the sandbox intact."""
        share = rate / len(TRANSIENT_KINDS)
        return cls(rates=dict.fromkeys(TRANSIENT_KINDS, share), seed=seed, **kw)

    def applies(self, path: str) -> bool:
        return any(path.startswith(p) for p in self.prefixes)

    def inject(self, *kinds: str) -> None:
        """Force these faults on the next eligible requests (see `queue`)."""
        _check_rates(None, None, dict.fromkeys(kinds, 0.0))
        with self._lock:
            self.queue.extend(kinds)

    def draw(self, method: str = "GET", path: str = "") -> str | None:
        """Count one eligible request and pick its fault (None = no fault)."""
        with self._lock:
            self.requests += 1
            if self.queue and (self.queue[0] != "kernel_death" or _is_execute(method, path)):
                kind = self.queue.pop(0)
                self.counts[kind] += 1
                return kind
            x = self._rng.random()
            acc = 0.0
            for kind in FAULT_KINDS:
                acc += self.rates.get(kind, 0.0)
                if x < acc:
                    self.counts[kind] += 1
                    return kind
            return None

    def update(self, body: dict[str, Any]) -> None:
        """Apply an admin request: rates / seed / retryAfter / slowSeconds / resetCounts."""
        with self._lock:
            if "rates" in body:
                rates = {str(k): float(v) for k, v in dict(body["rates"] or {}).items()}
                _check_rates(None, None, rates)
                self.rates = rates
            if "seed" in body:
                self.seed = None if body["seed"] is None else int(body["seed"])
                self._rng = random.Random(self.seed)
            if "retryAfter" in body:
                self.retry_after = float(body["retryAfter"])
            if "slowSeconds" in body:
                self.slow_seconds = float(body["slowSeconds"])
            if "inject" in body:
                kinds = [str(k) for k in body["inject"]]
                _check_rates(None, None, dict.fromkeys(kinds, 0.0))
                self.queue.extend(kinds)
            if "prefixes" in body:
                self.prefixes = tuple(str(p) for p in body["prefixes"])
            if body.get("resetCounts"):
                self.counts.clear()
                self.requests = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rates": dict(self.rates),
                "seed": self.seed,
                "retryAfter": self.retry_after,
                "slowSeconds": self.slow_seconds,
                "prefixes": list(self.prefixes),
                "requests": self.requests,
                "counts": dict(self.counts),
                "queue": list(self.queue),
            }


class FaultMiddleware:
    """Inject the plan's faults; serve `/_admin/faults`. Sits inside the signature check."""

    def __init__(self, app: ASGIApp, core: Any, plan: FaultPlan | None) -> None:
        self.app = app
        self.core = core
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == ADMIN_PATH:
            await self._admin(scope, receive, send)
            return
        plan = self.plan
        if plan is None or not plan.applies(path):
            await self.app(scope, receive, send)
            return
        kind = plan.draw(scope["method"], path)
        if kind is None:
            await self.app(scope, receive, send)
            return
        log.debug("injecting %s into %s %s", kind, scope["method"], path)
        if kind == "rate_limit":
            headers = [(b"retry-after", f"{plan.retry_after:g}".encode())]
            await _error(scope, send, 429, "ERR_TOO_MANY_REQUESTS", "injected 429", headers)
        elif kind in ERROR_KINDS:
            status = ERROR_KINDS[kind]
            await _error(scope, send, status, "ERR_INJECTED", f"injected {status}")
        elif kind == "reset_before":
            await _abort(receive)
        elif kind == "reset_after":
            await self.app(scope, receive, _discard)
            await _abort(receive)
        elif kind == "slow":
            await asyncio.sleep(plan.slow_seconds)
            await self.app(scope, receive, send)
        elif kind == "sandbox_gone":
            await self._delete_sandbox(path)
            await self.app(scope, receive, send)
        else:  # kernel_death
            receive = await self._kill_kernel(scope, receive)
            await self.app(scope, receive, send)

    async def _delete_sandbox(self, path: str) -> None:
        match = _SANDBOX.match(path)
        if match and match.group(1) in self.core.sandboxes:
            try:
                await self.core.delete_sandbox(match.group(1))
            except Exception:  # already going: the route answers 404 anyway
                log.debug("injected sandbox loss: delete failed", exc_info=True)

    async def _kill_kernel(self, scope: Scope, receive: Receive) -> Receive:
        match = _SANDBOX.match(scope["path"])
        if not match or not _is_execute(scope["method"], scope["path"]):
            return receive
        body, receive = await read_body(receive)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return receive
        if not isinstance(data, dict):
            return receive
        cid = data.get("contextId")
        language = data.get("language") or "python"
        await self.core.kill_kernel(
            match.group(1), cid if isinstance(cid, str) else None, str(language)
        )
        return receive

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            raw, _ = await read_body(receive)
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                if body.get("enabled") is False:
                    self.plan = None
                elif self.plan is None:
                    self.plan = FaultPlan()
                    self.plan.update(body)
                else:
                    self.plan.update(body)
            except (ValueError, TypeError) as exc:
                await _error(scope, send, 400, "ERR_BAD_REQUEST", f"bad fault plan: {exc}")
                return
        elif scope["method"] != "GET":
            await _error(scope, send, 405, "ERR_METHOD_NOT_ALLOWED", "use GET or POST")
            return
        state = {"enabled": self.plan is not None, **(self.plan.snapshot() if self.plan else {})}
        await _send_json(send, 200, state)


def _is_execute(method: str, path: str) -> bool:
    match = _SANDBOX.match(path)
    return method == "POST" and match is not None and match.group(2) == "/contexts/execute"


async def read_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; return it and a `receive` that replays it once."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _discard(message: Message) -> None:
    return None


async def _abort(receive: Receive) -> None:
    """Drop the connection without an answer (a TCP reset as the client sees it).

    ASGI has no "abort" message; uvicorn's receive is a bound method of the
    request cycle that holds the transport, so we reach for it. Elsewhere we fall
    back to raising after the response started, which makes the server close.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
        # Let connection_lost run so the server sees a disconnect, not an unanswered request.
        for _ in range(3):
            await asyncio.sleep(0)
        return
    raise ConnectionResetError("injected connection reset")


async def _send_json(
    send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _error(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    rid = scope.get("agentrun_request_id", "")
    body = {"code": code, "message": message, "requestId": rid}
    await _send_json(send, status, body, headers)
