"""The emulator's signature check: AGENTRUN4 (data plane) and ACS3 (control plane).

As strict as Alibaba's gateways: each plane takes its own scheme only (ACS3 under the
control plane's `/2025-09-10` prefix, AGENTRUN4 elsewhere), `x-acs-date` must be within
15 minutes of the emulator's clock, `host` must be signed, and every query pair must be
covered by the signature.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, quote

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from .._auth import date_is_fresh, query_is_signable, verify_signature
from ._faults import read_body
from ._http import VERSION, deny, error_response, scope_request_id
from ._settings import EmulatorSettings

__all__ = ["UNSIGNED", "WRONG_API_KEY", "SignatureMiddleware"]

#: the refusal of a request with no signature at all (the cloud says only the first sentence)
UNSIGNED = (
    "Signature verification failed: the request is not signed. This emulator answers only "
    "requests signed with its key pair: export the AGENTRUN_ACCESS_KEY_ID and "
    "AGENTRUN_ACCESS_KEY_SECRET that `agentrun-ci local serve` printed (an in-process "
    "LocalEmulator's are in its config)"
)

_REFUSED = "Signature verification failed"

#: a data-plane request with neither a signature nor an API key, where either would do
NO_CREDENTIAL = (
    "the request carries neither a signature nor an API key: send the API key as X-API-Key "
    "(export AGENTRUN_API_KEY), or sign it with the key pair `agentrun-ci local serve` printed"
)

#: the refusal of a data-plane request whose X-API-Key is not the emulator's (inferred: the
#: cloud's wording for a wrong key is not documented)
WRONG_API_KEY = (
    "the API key (X-API-Key) is not valid here: check AGENTRUN_API_KEY; it must be the key "
    "this emulator was given (`agentrun-ci local serve --api-key`)"
)


class SignatureMiddleware:
    """With keys configured, every request must be signed (data or control scheme); with
    an API key, a data-plane request may carry that key (`X-API-Key`) instead."""

    def __init__(self, app: ASGIApp, settings: EmulatorSettings) -> None:
        self.app = app
        self.key_id = settings.access_key_id or ""
        self.secret = settings.access_key_secret or ""
        self.api_key = (settings.api_key or "").encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        signed = bool(self.key_id and self.secret)
        if scope["type"] not in ("http", "websocket") or not (signed or self.api_key):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        raw_query = scope.get("query_string", b"").decode("latin-1")
        ok = False
        control = raw_path == VERSION or raw_path.startswith(VERSION + "/")
        unsigned = "agentrun-authorization" not in headers and "authorization" not in headers
        # a WebSocket's upgrade request is a GET, signed like any data-plane request
        websocket = scope["type"] == "websocket"
        if not signed and control:  # an API key alone guards the data plane only
            await self.app(scope, receive, send)
            return
        if self.api_key and "x-api-key" in headers and not control:
            if hmac.compare_digest(headers["x-api-key"].encode("latin-1"), self.api_key):
                await self.app(scope, receive, send)
                return
            if websocket:
                await deny(WebSocket(scope, receive, send), 401, "ERR_UNAUTHORIZED", WRONG_API_KEY)
                return
            rid = scope_request_id(scope)
            response = error_response(rid, 401, "ERR_UNAUTHORIZED", WRONG_API_KEY)
            await response(scope, receive, send)
            return
        if "agentrun-authorization" in headers and not control and signed:
            ok = verify_signature(
                "GET" if websocket else scope["method"],
                raw_path,
                raw_query,
                headers,
                access_key_id=self.key_id,
                access_key_secret=self.secret,
            )
        elif (
            control
            and not websocket
            and headers.get("authorization", "").startswith("ACS3-HMAC-SHA256 ")
        ):
            body, receive = await read_body(receive)
            ok = _verify_acs3(
                scope["method"], raw_path, raw_query, headers, body, self.key_id, self.secret
            )
        if not ok and websocket:
            refused = UNSIGNED if unsigned else _REFUSED
            await deny(WebSocket(scope, receive, send), 403, "ERR_FORBIDDEN", refused)
            return
        if not ok:
            rid = scope_request_id(scope)
            said = UNSIGNED if unsigned else _REFUSED
            if unsigned and self.api_key and not control:
                said = NO_CREDENTIAL
            response = error_response(rid, 403, "ERR_FORBIDDEN", said)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _verify_acs3(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    key_id: str,
    secret: str,
) -> bool:
    """ACS3-HMAC-SHA256 as the Alibaba Tea client signs (agentrun-api.md §4.3)."""
    fields: dict[str, str] = {}
    for item in headers["authorization"][len("ACS3-HMAC-SHA256 ") :].split(","):
        key, _, value = item.strip().partition("=")
        fields[key] = value
    if fields.get("Credential") is None or not hmac.compare_digest(fields["Credential"], key_id):
        return False
    payload = headers.get("x-acs-content-sha256", "")
    if payload != hashlib.sha256(body).hexdigest():
        return False
    signed = fields.get("SignedHeaders", "").split(";")
    if not {"host", "x-acs-date", "x-acs-content-sha256"} <= set(signed):
        return False
    if not date_is_fresh(headers.get("x-acs-date", "")) or not query_is_signable(raw_query):
        return False
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    canonical_query = "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in signed)
    canonical = "\n".join(
        [method, raw_path or "/", canonical_query, canonical_headers, ";".join(signed), payload]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("Signature", ""))
