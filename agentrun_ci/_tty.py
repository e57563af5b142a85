"""Sans-I/O for AgentRun's terminal WebSocket, `GET /sandboxes/{id}/processes/tty`.

AgentRun documents the route, `protocol=json|text` and `tenantId={accountId}` in the
query, the frame names `input`, `output{data,stream}`, `resize{rows,cols}`, `status`,
`ping`/`pong`, `connectionEstablished`, `timeoutWarning` and `connectionClosing`, a
ping every 30 s and a close after 2 minutes idle (agentrun-api.md §3.3). Everything
else here is inferred, so the parser is tolerant:

* frames are JSON objects with a `type`; unknown types are ignored;
* `data` is text (UTF-8 in both directions); a frame with `"encoding": "base64"` carries
  base64 instead (we send one only for input that is not valid UTF-8);
* `connectionEstablished` may carry the shell's `pid`; `status` carries `exitCode` once
  the shell has ended (`status` frames without one are progress, not the end);
* the query's `rows`, `cols`, `cwd`, `envs` (a JSON object) and `pid` (re-attach to a
  running shell) are the local emulator's extensions: the service may ignore them,
  so the client also sends a `resize` frame after connecting.

The I/O lives in `agentrun_ci._async.tty` (and its generated sync twin).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import attrs

from ._auth import signature_headers
from ._config import Config

__all__ = [
    "TtyClosing",
    "TtyEvent",
    "TtyExit",
    "TtyOutput",
    "TtyStarted",
    "TtyWarning",
    "input_frame",
    "parse_frame",
    "ping_frame",
    "pong_frame",
    "resize_frame",
    "tty_headers",
    "tty_url",
]


@attrs.frozen
class TtyStarted:
    """The connection is up (`connectionEstablished`); `pid` if the service said it."""

    pid: int | None


@attrs.frozen
class TtyOutput:
    """Bytes the terminal printed."""

    data: bytes


@attrs.frozen
class TtyExit:
    """The shell ended with `exit_code` (None if the service did not say)."""

    exit_code: int | None


@attrs.frozen
class TtyWarning:
    """`timeoutWarning`: the connection is idle and will be closed soon."""

    closes_in: float | None


@attrs.frozen
class TtyClosing:
    """`connectionClosing`: the service is about to close the connection, and why."""

    reason: str | None


TtyEvent = TtyStarted | TtyOutput | TtyExit | TtyWarning | TtyClosing


def tty_url(
    config: Config,
    sandbox_id: str,
    *,
    rows: int,
    cols: int,
    cwd: str | None = None,
    envs: Mapping[str, str] | None = None,
    pid: int | None = None,
) -> str:
    """The ws:// or wss:// URL of a sandbox's terminal, query included."""
    base = config.data_url
    scheme, _, rest = base.partition("://")
    ws = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme)
    query: dict[str, str] = {"protocol": "json"}
    if config.account_id:
        query["tenantId"] = config.account_id
    query.update(rows=str(rows), cols=str(cols))
    if cwd:
        query["cwd"] = cwd
    if envs:
        query["envs"] = json.dumps(dict(envs), separators=(",", ":"))
    if pid is not None:
        query["pid"] = str(pid)
    path = f"/sandboxes/{quote(sandbox_id, safe='')}/processes/tty"
    return f"{ws}://{rest}{path}?{urlencode(query, quote_via=quote)}"


def tty_headers(config: Config, url: str, user_agent: str) -> dict[str, str]:
    """The upgrade request's headers: the API key, or signed as a data-plane GET when a key
    pair is set."""
    headers = {"User-Agent": user_agent, **config.data_headers}
    key_id, secret = config.access_key_id, config.access_key_secret
    if key_id and secret and not config.api_key:
        # signed over the http(s) form of the URL: the same host, path and query
        http_url = "http" + url[2:] if url.startswith("ws") else url
        headers.update(
            signature_headers(
                "GET",
                http_url,
                access_key_id=key_id,
                access_key_secret=secret,
                region=config.region,
                security_token=config.security_token,
            )
        )
    return headers


def input_frame(data: str | bytes) -> str:
    """An `input` frame: text as is, bytes as UTF-8 text when they are, else base64."""
    if isinstance(data, str):
        return json.dumps({"type": "input", "data": data})
    try:
        return json.dumps({"type": "input", "data": bytes(data).decode("utf-8")})
    except UnicodeDecodeError:
        encoded = base64.b64encode(data).decode("ascii")
        return json.dumps({"type": "input", "data": encoded, "encoding": "base64"})


def resize_frame(rows: int, cols: int) -> str:
    return json.dumps({"type": "resize", "rows": rows, "cols": cols})


def ping_frame() -> str:
    return json.dumps({"type": "ping"})


def pong_frame() -> str:
    return json.dumps({"type": "pong"})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _data(frame: Mapping[str, Any]) -> bytes:
    data = frame.get("data")
    if isinstance(data, bytes):
        return data
    if not isinstance(data, str):
        return b""
    if frame.get("encoding") == "base64":
        try:
            return base64.b64decode(data)
        except (binascii.Error, ValueError):
            return data.encode("utf-8", "replace")
    return data.encode("utf-8", "surrogateescape")


def parse_frame(message: str | bytes) -> TtyEvent | str | None:
    """One received message as an event; "ping" for a ping (answer it with a pong);
    None for what carries nothing for us (pong, unknown types, non-JSON noise)."""
    try:
        frame = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(frame, dict):
        return None
    kind = frame.get("type")
    if kind == "output":
        data = _data(frame)
        return TtyOutput(data) if data else None
    if kind == "status":
        code = frame.get("exitCode", frame.get("exit_code", frame.get("code")))
        ended = str(frame.get("status", "")).lower() in ("exited", "exit", "closed", "completed")
        if code is None and not ended:
            return None  # progress, not the end
        return TtyExit(_int(code))
    if kind == "connectionEstablished":
        return TtyStarted(_int(frame.get("pid", frame.get("processId"))))
    if kind == "ping":
        return "ping"
    if kind == "timeoutWarning":
        return TtyWarning(_number(frame.get("closesIn")))
    if kind == "connectionClosing":
        reason = frame.get("reason")
        return TtyClosing(reason if isinstance(reason, str) else None)
    return None
