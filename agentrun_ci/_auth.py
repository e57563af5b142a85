"""AGENTRUN4-HMAC-SHA256: the data plane's request signature (agentrun-api.md §4.1).

The algorithm, in short: a canonical request over the method, the raw path, the
sorted query and a few headers (the body is never hashed: `UNSIGNED-PAYLOAD`),
hashed into a two-line string-to-sign, signed with a key derived from the secret,
the date, the region and the product `agentrun`.

Both halves live here: `signature_headers` for clients (wrapped as the
`AgentRunAuth` httpx auth flow, which serves sync and async clients alike) and
`verify_signature` for the local emulator, so the two can never drift apart.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Generator, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote_plus, urlsplit

import httpx

ALGORITHM = "AGENTRUN4-HMAC-SHA256"
PRODUCT = "agentrun"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
AUTHORIZATION_HEADER = "Agentrun-Authorization"

__all__ = [
    "MAX_CLOCK_SKEW",
    "AgentRunAuth",
    "date_is_fresh",
    "query_is_signable",
    "signature_headers",
    "verify_signature",
]

MAX_CLOCK_SKEW = timedelta(minutes=15)
"""How far `x-acs-date` may be from the verifier's clock, either way (Alibaba's gateways
refuse requests older or newer than 15 minutes)."""


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _encode(value: str) -> str:
    # RFC 3986 unreserved characters stay; everything else is percent-encoded.
    return quote(value, safe="-_.~")


def _canonical_query(raw_query: str) -> str:
    params: dict[str, str] = {}
    for pair in raw_query.split("&"):
        if "=" not in pair:
            continue  # the reference signer drops pairs without '='
        key, _, value = pair.partition("=")
        params[unquote_plus(key)] = unquote_plus(value)  # later duplicates win
    return "&".join(f"{_encode(k)}={_encode(params[k])}" for k in sorted(params))


def _is_signed(name: str) -> bool:
    return name.startswith("x-acs-") or name in ("host", "content-type")


def _signature(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed: Iterable[str],
    secret: str,
    date: str,
    region: str,
) -> str:
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip()}\n" for n in names)
    canonical_request = "\n".join(
        [
            method.upper(),
            raw_path or "/",
            _canonical_query(raw_query),
            canonical_headers,
            ";".join(names),
            UNSIGNED_PAYLOAD,
        ]
    )
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    key = _signing_key(secret, date, region)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=16)
def _signing_key(secret: str, date: str, region: str) -> bytes:
    # Derived once per (secret, day, region): four HMACs saved on every request.
    key = _hmac(("aliyun_v4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, PRODUCT)
    return _hmac(key, "aliyun_v4_request")


def signature_headers(
    method: str,
    url: str,
    *,
    access_key_id: str,
    access_key_secret: str,
    region: str,
    security_token: str | None = None,
    content_type: str | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """Return the headers that sign one request (`host` is signed but left to the client)."""
    parts = urlsplit(url)
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    acs_date = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    date = when.strftime("%Y%m%d")
    headers = {
        "host": parts.netloc,
        "x-acs-date": acs_date,
        "x-acs-content-sha256": UNSIGNED_PAYLOAD,
    }
    if security_token:
        headers["x-acs-security-token"] = security_token
    if content_type:
        headers["content-type"] = content_type
    signed = sorted(n for n in headers if _is_signed(n))
    signature = _signature(
        method, parts.path, parts.query, headers, signed, access_key_secret, date, region
    )
    out = {k: v for k, v in headers.items() if k != "host"}
    out[AUTHORIZATION_HEADER] = (
        f"{ALGORITHM} Credential={access_key_id}/{date}/{region}/{PRODUCT}/aliyun_v4_request,"
        f"SignedHeaders={';'.join(signed)},Signature={signature}"
    )
    return out


def _parse_authorization(value: str) -> dict[str, str] | None:
    if not value.startswith(ALGORITHM + " "):
        return None
    fields: dict[str, str] = {}
    for item in value[len(ALGORITHM) + 1 :].split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        fields[key] = val
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    return fields


def date_is_fresh(x_acs_date: str, now: datetime | None = None) -> bool:
    """Whether an `x-acs-date` (`YYYY-MM-DDTHH:MM:SSZ`) is within `MAX_CLOCK_SKEW` of now."""
    try:
        when = datetime.strptime(x_acs_date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    return abs((now or datetime.now(timezone.utc)) - when) <= MAX_CLOCK_SKEW


def query_is_signable(raw_query: str) -> bool:
    """Whether every pair of a query is covered by its canonical form.

    The reference signer drops pairs without `=` and keeps the last of duplicate keys,
    so such pairs could be added to a signed request unnoticed: a verifier refuses them.
    """
    seen: set[str] = set()
    for pair in raw_query.split("&") if raw_query else []:
        key, sep, _ = pair.partition("=")
        if not sep or unquote_plus(key) in seen:
            return False
        seen.add(unquote_plus(key))
    return True


def verify_signature(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    *,
    access_key_id: str,
    access_key_secret: str,
    now: datetime | None = None,
) -> bool:
    """Check a received request's `Agentrun-Authorization` against our key pair.

    `headers` maps lower-case names to the values as received. The server accepts
    whatever `SignedHeaders` lists (the official SDK signs `content-type` on some
    paths and not on others), but `host` and `x-acs-date` must always be signed.
    As strict as Alibaba's gateways: `x-acs-date` within 15 minutes of `now` (default:
    the current time), and every query pair signed (no pair without `=`, no duplicate).
    """
    fields = _parse_authorization(headers.get(AUTHORIZATION_HEADER.lower(), ""))
    if fields is None:
        return False
    if not date_is_fresh(headers.get("x-acs-date", ""), now) or not query_is_signable(raw_query):
        return False
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[3] != PRODUCT or scope[4] != "aliyun_v4_request":
        return False
    key_id, date, region = scope[0], scope[1], scope[2]
    signed = fields["SignedHeaders"].split(";")
    if not {"host", "x-acs-date"} <= set(signed) or any(not _is_signed(n) for n in signed):
        return False
    if not headers.get("x-acs-date", "").replace("-", "").startswith(date):
        return False
    expected = _signature(
        method, raw_path, raw_query, headers, signed, access_key_secret, date, region
    )
    return hmac.compare_digest(key_id, access_key_id) and hmac.compare_digest(
        expected, fields["Signature"]
    )


class AgentRunAuth(httpx.Auth):
    """Sign every request with AGENTRUN4-HMAC-SHA256 (sync and async httpx clients)."""

    def __init__(
        self,
        access_key_id: str,
        access_key_secret: str,
        region: str,
        security_token: str | None = None,
    ) -> None:
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._security_token = security_token
        self._region = region

    def __repr__(self) -> str:  # never show the secret or the token
        return f"AgentRunAuth(access_key_id={self._access_key_id[:4]}…, region={self._region!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # httpx has already encoded the URL; sign exactly the bytes that go on the wire.
        raw_path = request.url.raw_path.decode("ascii")
        path, _, query = raw_path.partition("?")
        url = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}{path}"
        if query:
            url += "?" + query
        request.headers.update(
            signature_headers(
                request.method,
                url,
                access_key_id=self._access_key_id,
                access_key_secret=self._access_key_secret,
                region=self._region,
                security_token=self._security_token,
            )
        )
        yield request
