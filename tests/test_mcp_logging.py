"""MCP logging: the `logging` capability, `logging/setLevel`, `notifications/message`.

Records at or above a client's level reach it, masked; below it, or before it
asked, they do not. Over HTTP the level is per client, and a record logged while
serving one client's call goes to that client only. Logs still go to stderr.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp import Client
from mcp.types import LoggingMessageNotificationParams
from support import Server, base_env, http_server_process, needs_script, wait_until

from agentrun_ci_mcp.mcplog import MCP_LEVELS, Redactor, mcp_level
from agentrun_ci_mcp.server import ServerOptions, build_server

log = logging.getLogger("agentrun_ci_mcp")


def _owner() -> str:
    return "mlog" + secrets.token_hex(3)


class Received:
    """A `logging_callback` that keeps what arrived."""

    def __init__(self) -> None:
        self.items: list[LoggingMessageNotificationParams] = []

    async def __call__(self, params: LoggingMessageNotificationParams) -> None:
        self.items.append(params)

    def texts(self) -> list[str]:
        return [str(p.data) for p in self.items]

    async def wait_for(self, needle: str) -> None:
        with anyio.fail_after(60):  # a hang guard, not a timing assert
            while not any(needle in t for t in self.texts()):  # noqa: ASYNC110
                await anyio.sleep(0.02)


# ---------------------------------------------------------------- pieces


def test_levels_map_both_ways() -> None:
    assert list(MCP_LEVELS) == [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ]
    assert mcp_level(logging.DEBUG) == "debug"
    assert mcp_level(logging.INFO) == "info"
    assert mcp_level(logging.WARNING) == "warning"
    assert mcp_level(logging.ERROR) == "error"
    assert mcp_level(logging.CRITICAL) == "critical"


def test_the_redactor_masks_known_secrets_and_credential_shapes() -> None:
    handles = ["handle-one-Abc123xyz"]
    redactor = Redactor(["AKSECRET-0123456789", None, "abc"], lambda: handles)
    text = redactor.redact(
        "key AKSECRET-0123456789, handle handle-one-Abc123xyz, client http:0123456789abcdef, "
        "Authorization: Bearer tok.en-xyz-987654 password=hunter22 short abc"
    )
    for secret in ("AKSECRET", "handle-one", "0123456789abcdef", "tok.en", "hunter22"):
        assert secret not in text
    assert "short abc" in text  # values too short to be secrets are left alone
    assert "AKSECRET" not in repr(redactor)
    handles.append("later-handle-XYZ987")  # known later: masked from then on
    assert redactor.redact("later-handle-XYZ987") == "***"


# ---------------------------------------------------------------- in memory


@pytest.fixture
def quiet_deprecations() -> Iterator[None]:
    # the logging capability is deprecated by the 2026-07-28 spec; hosts still use it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.anyio
@pytest.mark.usefixtures("quiet_deprecations")
async def test_levels_chosen_by_the_client_are_what_it_receives() -> None:
    mcp, _ = build_server(ServerOptions(backend="local"))
    got = Received()
    async with Client(mcp, mode="legacy", logging_callback=got) as c:
        assert c.server_capabilities is not None
        assert c.server_capabilities.logging is not None
        log.warning("before-set-level")  # nobody asked yet: not sent
        await c.set_logging_level("warning")
        log.info("below-the-level")
        log.warning("at-the-level")
        await got.wait_for("at-the-level")
        await c.set_logging_level("debug")
        logging.getLogger("agentrun_ci.local").debug("debug-from-the-sdk")
        await got.wait_for("debug-from-the-sdk")
        logging.getLogger("mcp.server").error("not-our-logger")
        log.error("barrier")
        await got.wait_for("barrier")
    texts = got.texts()
    assert "before-set-level" not in texts
    assert "below-the-level" not in texts
    assert "not-our-logger" not in texts
    levels = {p.data: (p.level, p.logger) for p in got.items}
    assert levels["at-the-level"] == ("warning", "agentrun_ci_mcp")
    assert levels["debug-from-the-sdk"] == ("debug", "agentrun_ci.local")
    # the loggers are back at their own levels once the server stopped
    assert logging.getLogger("agentrun_ci_mcp").level == logging.NOTSET


@pytest.mark.anyio
@pytest.mark.usefixtures("quiet_deprecations")
async def test_secrets_never_reach_a_client(monkeypatch: pytest.MonkeyPatch) -> None:
    key_secret = "KeySecret-" + secrets.token_hex(8)
    sts = "StsToken-" + secrets.token_hex(8)
    auth = "AuthToken-" + secrets.token_hex(8)
    monkeypatch.setenv("AGENTRUN_ACCESS_KEY_SECRET", key_secret)
    monkeypatch.setenv("AGENTRUN_SECURITY_TOKEN", sts)
    monkeypatch.setenv("AGENTRUN_MCP_AUTH_TOKEN", auth)
    mcp, state = build_server(ServerOptions(backend="local"))
    other = state.client("http:" + secrets.token_hex(16))  # another client's key and handle
    got = Received()
    async with Client(mcp, mode="legacy", logging_callback=got) as c:
        await c.set_logging_level("debug")
        log.warning(
            "leak %s %s %s handle=%s key=%s",
            key_secret,
            sts,
            auth,
            other.handle,
            other.key,
        )
        log.error("failed", exc_info=RuntimeError(f"with {key_secret} inside"))
        log.error("barrier")
        await got.wait_for("barrier")
    sent = " ".join(got.texts())
    assert "leak" in sent
    assert "RuntimeError" in sent
    for secret in (key_secret, sts, auth, other.handle, other.key.partition(":")[2]):
        assert secret not in sent


# ---------------------------------------------------------------- stdio, a real process


@needs_script
def test_stdio_log_notifications_and_stderr(tmp_path: Path) -> None:
    """Over stdio: a setLevel'd client gets its call's records as notifications (and
    stdout stays protocol only: the helper fails on any other line); stderr still has
    the logs, at the server's own --log-level."""
    env = base_env(_owner(), log_level="WARNING") | {
        "AGENTRUN_MCP_BACKEND": "local",
        "AGENTRUN_ACCESS_KEY_ID": "LTAI" + secrets.token_hex(6),
        "AGENTRUN_ACCESS_KEY_SECRET": "stdio-secret-" + secrets.token_hex(8),
    }
    server = Server(env, tmp_path / "server.log")
    try:
        server.initialize()
        bad = server.wait_reply(server.call("logging/setLevel", {"level": "loud"}))
        assert "use one of debug" in bad["error"]["message"]
        assert server.wait_reply(server.call("logging/setLevel", {"level": "info"}))["result"] == {}
        result = server.tool_ok("run_code", code="print(1)")
        handle = result["structuredContent"]["session"]

        def messages() -> list[dict[str, Any]]:
            return [
                n["params"] for n in server.notifications if n["method"] == "notifications/message"
            ]

        wait_until(
            lambda: any("tool run_code ok" in str(m["data"]) for m in messages()),
            lambda: f"the call's log notification:\n{server.notifications}",
        )
        assert {m["level"] for m in messages()} <= {"info", "notice", "warning", "error"}
        sent = str(messages())
        assert env["AGENTRUN_ACCESS_KEY_SECRET"] not in sent
        assert handle not in sent
        assert server.stop("eof") == 0
    finally:
        server.close()
    stderr = (tmp_path / "server.log").read_text()
    assert "tool run_code ok" not in stderr  # INFO: below the server's WARNING
    assert env["AGENTRUN_ACCESS_KEY_SECRET"] not in stderr


# ---------------------------------------------------------------- HTTP, per client


@pytest.fixture
def local_http(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    with http_server_process(_owner(), tmp_path / "server.log") as running:
        yield running


@needs_script
@pytest.mark.anyio
@pytest.mark.usefixtures("quiet_deprecations")
async def test_http_each_client_has_its_own_level_and_its_own_records(
    local_http: tuple[str, str, Path],
) -> None:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    url, token, log_file = local_http
    headers = {"authorization": f"Bearer {token}"}
    one, two = Received(), Received()
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as h1,
        httpx2.AsyncClient(headers=headers, timeout=120) as h2,
        streamable_http_client(url, http_client=h1) as (r1, w1, *_),
        streamable_http_client(url, http_client=h2) as (r2, w2, *_),
        ClientSession(r1, w1, logging_callback=one) as first,
        ClientSession(r2, w2, logging_callback=two) as second,
    ):
        await first.initialize()
        await second.initialize()
        await first.set_logging_level("debug")
        await second.set_logging_level("error")
        mine = await first.call_tool("run_code", {"code": "print(1)"})
        assert mine.structured_content is not None
        await one.wait_for("tool run_code ok")
        theirs = await second.call_tool("run_code", {"code": "print(2)"})
        assert theirs.structured_content is not None
        # client two asks for more now: what comes from its next call arrives, and what
        # its first call logged at INFO (then below its level) never does
        await second.set_logging_level("info")
        again = await second.call_tool("run_code", {"code": "print(3)"})
        assert again.structured_content is not None
        await two.wait_for("tool run_code ok")
    first_sent, second_sent = " ".join(one.texts()), " ".join(two.texts())
    assert second_sent.count("tool run_code ok") == 1
    # each call's records went to its own client only (a handle's last characters show)
    mine_tag = mine.structured_content["session"][-8:]
    theirs_tag = theirs.structured_content["session"][-8:]
    assert mine_tag in first_sent
    assert mine_tag not in second_sent
    assert theirs_tag not in first_sent
    for sent in (first_sent, second_sent):
        assert token not in sent
        assert mine.structured_content["session"] not in sent
        assert theirs.structured_content["session"] not in sent
    assert "tool run_code ok" in log_file.read_text()  # stderr keeps its own logs
