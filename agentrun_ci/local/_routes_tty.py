"""`GET /sandboxes/{sid}/processes/tty`: a shell in a pseudo-terminal over a WebSocket.

AgentRun documents the route, its query (`protocol=json|text`, `tenantId`), the names of
its JSON frames, a ping every 30 s and a close after 2 minutes idle (agentrun-api.md
§3.3). The fields of each frame are not documented: the layout below is ours
(inferred), and the SDK's client (`agentrun_ci._async.tty`) reads it tolerantly.

Frames, one JSON object per WebSocket text message (inferred):

    client -> server
      {"type": "input", "data": "ls\\n"}                 text typed into the terminal;
      {"type": "input", "data": "...", "encoding": "base64"}   or raw bytes as base64
      {"type": "resize", "rows": 24, "cols": 80}
      {"type": "ping"}   answered with {"type": "pong"};  {"type": "pong"} (to our ping)
    server -> client
      {"type": "connectionEstablished", "pid": 123, "rows": 24, "cols": 80}
      {"type": "output", "data": "...", "stream": "stdout"}   UTF-8 text (bad bytes: U+FFFD)
      {"type": "status", "status": "exited", "pid": 123, "exitCode": 0}   then a close
      {"type": "ping"}   every `tty_ping_interval` seconds
      {"type": "timeoutWarning", "idleSeconds": 90.0, "closesIn": 30.0}
      {"type": "connectionClosing", "reason": "idle"}   then a close
      {"type": "error", "message": "..."}   a frame that could not be read

Unknown frame types are ignored. Idle means no input, resize or output (pings do not
count). With `protocol=text` every message in either direction is terminal data only.

Query parameters beyond AgentRun's (emulator extensions, inferred): `rows`, `cols`
(the first size; default 24 x 80), `cwd`, `envs` (a JSON object of variables), and
`pid`, which attaches to a running shell instead of starting one (404 if there is none).
The shell outlives its connection; it ends on `exit`, on `DELETE /processes/{pid}`, with
its sandbox, or after `tty_idle_timeout` seconds with no connection attached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import json
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ._core import Core, Sandbox
from ._errors import ApiError, bad_request
from ._http import deny
from ._records import int_query
from ._tty import TtySession

__all__ = ["tty"]


def _envs(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and "\x00" not in k + v and "=" not in k
        for k, v in data.items()
    ):
        raise bad_request("envs must be a JSON object of variable names to string values")
    return data


async def _session(core: Core, sandbox: Sandbox, query: Any) -> TtySession:
    raw_pid = query.get("pid")
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            raise bad_request("pid must be an integer") from None
        return core.tty(sandbox, pid)
    rows = int_query(query, "rows", 24, low=1, high=1000)
    cols = int_query(query, "cols", 80, low=1, high=1000)
    return await core.open_tty(
        sandbox, cwd=query.get("cwd") or None, rows=rows, cols=cols, envs=_envs(query.get("envs"))
    )


async def tty(websocket: WebSocket) -> None:
    core: Core = websocket.app.state.core
    query = websocket.query_params
    protocol = query.get("protocol") or "json"
    try:
        if protocol not in ("json", "text"):
            raise bad_request(f"protocol must be json or text (got {protocol!r})")
        sandbox = core.live(websocket.path_params["sid"])
        session = await _session(core, sandbox, query)
    except ApiError as exc:
        await deny(websocket, exc.status, exc.code, exc.message)
        return
    await websocket.accept()
    await _Connection(core, sandbox, session, websocket, json_frames=protocol == "json").run()


class _Connection:
    """One WebSocket attached to one shell until either ends."""

    def __init__(
        self,
        core: Core,
        sandbox: Sandbox,
        session: TtySession,
        websocket: WebSocket,
        *,
        json_frames: bool,
    ) -> None:
        self.settings = core.settings
        self.sandbox = sandbox
        self.session = session
        self.ws = websocket
        self.json = json_frames
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.last_active = time.monotonic()

    def _touch(self) -> None:
        self.last_active = self.sandbox.last_active = time.monotonic()

    async def _send(self, frame: dict[str, Any]) -> None:
        if self.json:
            await self.ws.send_text(json.dumps(frame))

    async def run(self) -> None:
        session = self.session
        kept = session.attach(self.queue.put_nowait)
        try:
            rows, cols = session.size() if not session.ended.is_set() else (0, 0)
            await self._send(
                {"type": "connectionEstablished", "pid": session.pid, "rows": rows, "cols": cols}
            )
            if kept:
                self.queue.put_nowait(kept)
            if session.ended.is_set():
                self.queue.put_nowait(None)
            tasks = [
                asyncio.ensure_future(self._pump_output()),
                asyncio.ensure_future(self._read_input()),
                asyncio.ensure_future(self._tick()),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(BaseException):
                        await task
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the client went away
        finally:
            session.detach(self.queue.put_nowait, time.monotonic())
        with contextlib.suppress(Exception):
            await self.ws.close(code=1000)

    async def _pump_output(self) -> None:
        while True:
            data = await self.queue.get()
            if data is None:
                tail = self.decoder.decode(b"", final=True)
                if tail:
                    await self._output(tail)
                await self._send(
                    {
                        "type": "status",
                        "status": "exited",
                        "pid": self.session.pid,
                        "exitCode": self.session.exit_code,
                    }
                )
                return
            self._touch()
            text = self.decoder.decode(data)
            if text:
                await self._output(text)

    async def _output(self, text: str) -> None:
        if self.json:
            await self._send({"type": "output", "data": text, "stream": "stdout"})
        else:
            await self.ws.send_text(text)

    async def _read_input(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, raw = message.get("text"), message.get("bytes")
            if not self.json:
                self._touch()
                self.session.write(raw if raw is not None else (text or "").encode())
                continue
            try:
                frame = json.loads(text if text is not None else (raw or b"").decode())
                if not isinstance(frame, dict):
                    raise ValueError("not a JSON object")
                await self._apply(frame)
            except (ValueError, TypeError, KeyError, binascii.Error) as exc:
                await self._send({"type": "error", "message": f"unreadable frame: {exc}"})

    async def _apply(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "input":
            data = frame.get("data", "")
            if not isinstance(data, str):
                raise TypeError("input data must be a string")
            payload = (
                base64.b64decode(data, validate=True)
                if frame.get("encoding") == "base64"
                else data.encode()
            )
            self._touch()
            self.session.write(payload)
        elif kind == "resize":
            rows, cols = int(frame["rows"]), int(frame["cols"])
            if not (0 < rows <= 1000 and 0 < cols <= 1000):
                raise ValueError("rows and cols must be 1..1000")
            self._touch()
            self.session.resize(rows, cols)
        elif kind == "ping":
            await self._send({"type": "pong"})
        # pong and anything unknown: nothing to do

    async def _tick(self) -> None:
        """Ping every `tty_ping_interval`; warn, then close, after `tty_idle_timeout` idle."""
        idle, every = self.settings.tty_idle_timeout, self.settings.tty_ping_interval
        margin = min(30.0, idle / 4)
        next_ping = time.monotonic() + every
        warned_for: float | None = None
        while True:
            now = time.monotonic()
            close_at = self.last_active + idle
            warn_at = close_at - margin
            if now >= close_at:
                await self._send({"type": "connectionClosing", "reason": "idle"})
                return
            if now >= warn_at and warned_for != self.last_active:
                warned_for = self.last_active
                await self._send(
                    {
                        "type": "timeoutWarning",
                        "idleSeconds": round(now - self.last_active, 3),
                        "closesIn": round(close_at - now, 3),
                    }
                )
            if now >= next_ping:
                next_ping = now + every
                await self._send({"type": "ping", "timestamp": int(time.time() * 1000)})
            wake = min(next_ping, close_at, warn_at if warned_for != self.last_active else close_at)
            await asyncio.sleep(max(0.01, wake - time.monotonic()))
