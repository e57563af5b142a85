"""AGENTRUN4-HMAC-SHA256: the published test vectors, byte for byte, and the verifier."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from agentrun_ci._auth import AgentRunAuth, signature_headers, verify_signature

AK = "LTAI5t5opp3xMWk2B3a4gZVq"
SK = "secret"
WHEN = datetime(2026, 3, 6, 12, 0, 0, tzinfo=timezone.utc)
HOST = "https://1431999136518149-ram.agentrun-data.cn-hangzhou.aliyuncs.com"


def _sign(method: str, url: str, content_type: str | None = None) -> dict[str, str]:
    return signature_headers(
        method,
        url,
        access_key_id=AK,
        access_key_secret=SK,
        region="cn-hangzhou",
        content_type=content_type,
        now=WHEN,
    )


@pytest.mark.parametrize(
    ("method", "path", "content_type", "signed_headers", "signature"),
    [
        (
            "GET",
            "/sandboxes/sbx-xxx/health",
            None,
            "host;x-acs-content-sha256;x-acs-date",
            "e1479ea1aec37e55f91d82b1ccc48df2feef04184a911f91a3e3fe0e27d02610",
        ),
        (
            "GET",
            "/path?foo=bar&zoo=",
            None,
            "host;x-acs-content-sha256;x-acs-date",
            "2de34f2c0ef3d6f0f6460f994ee3fea8c940241fcc2ff2f008a776f1be9b4dba",
        ),
        (
            "POST",
            "/path?foo=bar&zoo=",
            None,
            "host;x-acs-content-sha256;x-acs-date",
            "a0d4e04405ddf83d93cf8b30c6064c1a68a298cf95ca6ff56be04f515b98ddbe",
        ),
        (
            "POST",
            "/path?foo=bar&zoo=",
            "application/json",
            "content-type;host;x-acs-content-sha256;x-acs-date",
            "fdcde808b0dc7526d8083e681ca9a64728e5c1e67e4c92735dfb2268ecc71fb2",
        ),
    ],
)
def test_published_vectors(
    method: str, path: str, content_type: str | None, signed_headers: str, signature: str
) -> None:
    headers = _sign(method, HOST + path, content_type)
    assert headers["Agentrun-Authorization"] == (
        f"AGENTRUN4-HMAC-SHA256 Credential={AK}/20260306/cn-hangzhou/agentrun/aliyun_v4_request,"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )
    assert headers["x-acs-date"] == "2026-03-06T12:00:00Z"
    assert headers["x-acs-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert "host" not in headers  # the HTTP client sets it; it is signed all the same


def test_security_token_is_sent_and_signed() -> None:
    headers = signature_headers(
        "GET",
        HOST + "/x",
        access_key_id=AK,
        access_key_secret=SK,
        region="cn-hangzhou",
        security_token="sts-token",
        now=WHEN,
    )
    assert headers["x-acs-security-token"] == "sts-token"
    assert "x-acs-security-token" in headers["Agentrun-Authorization"]


def _received(method: str, url: str, **kw: str | None) -> tuple[str, str, dict[str, str]]:
    request = httpx.Request(method, url)
    headers = {k.lower(): v for k, v in _sign(method, url, **kw).items()}  # type: ignore[arg-type]
    headers["host"] = request.url.netloc.decode()
    path, _, query = request.url.raw_path.decode().partition("?")
    return path, query, headers


def test_verify_accepts_what_we_sign() -> None:
    path, query, headers = _received("POST", HOST + "/sandboxes/a/files?path=%2Fhome%2Fuser+x")
    assert verify_signature(
        "POST", path, query, headers, access_key_id=AK, access_key_secret=SK, now=WHEN
    )


@pytest.mark.parametrize("tamper", ["method", "path", "query", "secret", "key_id", "date"])
def test_verify_rejects_tampering(tamper: str) -> None:
    path, query, headers = _received("GET", HOST + "/sandboxes/a/files?path=a")
    method, key_id, secret = "GET", AK, SK
    if tamper == "method":
        method = "DELETE"
    elif tamper == "path":
        path = "/sandboxes/b/files"
    elif tamper == "query":
        query = "path=b"
    elif tamper == "secret":
        secret = "other"
    elif tamper == "key_id":
        key_id = "LTAIother"
    else:
        headers["x-acs-date"] = "2026-03-07T12:00:00Z"
    assert not verify_signature(
        method, path, query, headers, access_key_id=key_id, access_key_secret=secret, now=WHEN
    )


def test_verify_rejects_missing_or_malformed_header() -> None:
    assert not verify_signature(
        "GET", "/", "", {}, access_key_id=AK, access_key_secret=SK, now=WHEN
    )
    bad = {"agentrun-authorization": "AGENTRUN4-HMAC-SHA256 nonsense", "host": "h"}
    assert not verify_signature(
        "GET", "/", "", bad, access_key_id=AK, access_key_secret=SK, now=WHEN
    )


def test_auth_flow_signs_the_encoded_url_and_verifies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    auth = AgentRunAuth(AK, SK, "cn-hangzhou", security_token="tok")
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        client.get(HOST + "/sandboxes/s1/files", params={"path": "/home/user/a b.txt"})
    request = seen[0]
    path, _, query = request.url.raw_path.decode().partition("?")
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert verify_signature("GET", path, query, headers, access_key_id=AK, access_key_secret=SK)
    assert "secret" not in repr(auth)
    assert "tok" not in repr(auth)


@pytest.mark.parametrize("skew_minutes", [-16, 16, -60 * 24 * 365 * 6, 60 * 24 * 365 * 9])
def test_verify_rejects_dates_outside_15_minutes(skew_minutes: int) -> None:
    path, query, headers = _received("GET", HOST + "/sandboxes/a/health")
    now = WHEN + timedelta(minutes=skew_minutes)
    assert not verify_signature(
        "GET", path, query, headers, access_key_id=AK, access_key_secret=SK, now=now
    )
    near = WHEN + timedelta(minutes=14 if skew_minutes > 0 else -14)
    assert verify_signature(
        "GET", path, query, headers, access_key_id=AK, access_key_secret=SK, now=near
    )


@pytest.mark.parametrize("extra", ["&code", "&flag&x=1", "&path=b"])
def test_verify_rejects_query_pairs_the_signature_does_not_cover(extra: str) -> None:
    # the reference signer drops pairs without '=' and keeps the last duplicate: a
    # captured signature must not carry pairs added after signing
    path, query, headers = _received("GET", HOST + "/sandboxes/a/files?path=a")
    assert not verify_signature(
        "GET", path, query + extra, headers, access_key_id=AK, access_key_secret=SK, now=WHEN
    )
