"""`--stateless`: client state travels in signed `session` handles, so any replica serves
any call. In memory, against the session's emulator: two servers ("replicas") with one
key share a client; forged, altered and foreign handles are refused; the key never shows.
The real thing (processes behind HAProxy) is tests/test_mcp_replicas.py.
"""

from __future__ import annotations

import base64
import json
import pickle
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

from mcp import Client, MCPError

from agentrun_ci import AsyncControlPlane, AsyncDataPlane, Config
from agentrun_ci_mcp.__main__ import main
from agentrun_ci_mcp.server import ServerOptions, build_server
from agentrun_ci_mcp.stateless import HANDLE_KEY_ENV, Handle, HandleKey

pytestmark = pytest.mark.anyio

KEY = secrets.token_urlsafe(32)


def _s(result: Any) -> dict[str, Any]:
    assert result.structured_content is not None, result.content
    return result.structured_content  # type: ignore[no-any-return]


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
async def shared(emulator: Config) -> AsyncIterator[tuple[Config, str, str]]:
    """(config, interpreter, owner): an interpreter the replicas share; every sandbox the
    test's servers made is deleted at the end (they outlive the servers by design)."""
    name = "mcp-stateless-" + secrets.token_hex(3)
    owner = "msl" + secrets.token_hex(3)
    async with AsyncControlPlane(emulator) as control:
        await control.create_template(name)
        await control.wait_template_ready(name, timeout=60)
        try:
            yield emulator, name, owner
        finally:
            for sandbox in await control.list_sandboxes():
                if sandbox.template_name == name:
                    await control.delete_sandbox(sandbox.sandbox_id)
            await control.delete_template(name)


def _replica(shared: tuple[Config, str, str], key: str = KEY) -> Any:
    config, interpreter, owner = shared
    options = ServerOptions(
        config=config,
        backend="cloud",
        owner=owner,
        interpreter=interpreter,
        stateless=True,
        handle_key=HandleKey.from_text(key),
        strategy="dedicated",
    )
    mcp, _state = build_server(options)
    return mcp


async def test_two_replicas_share_one_clients_state(shared: tuple[Config, str, str]) -> None:
    async with Client(_replica(shared)) as one, Client(_replica(shared)) as two:
        first = await one.call_tool("run_code", {"code": "x = 41"})
        assert not first.is_error, _text(first)
        handle = _s(first)["session"]
        await one.call_tool("write_file", {"path": "f.txt", "content": "kept", "session": handle})
        for i, replica in enumerate([two, one, two, one]):
            r = await replica.call_tool("run_code", {"code": "x += 1; x", "session": handle})
            assert not r.is_error, _text(r)
            assert _s(r)["results"][0]["text"] == str(42 + i)
            assert _s(r)["state_reset"] is False
            handle = _s(r)["session"]
        read = await two.call_tool("read_file", {"path": "f.txt", "session": handle})
        assert _s(read)["content"] == "kept"
        # a second language: a context of its own, in the same sandbox, in the handle
        js = await two.call_tool(
            "run_code", {"code": "let y = 2; y", "language": "javascript", "session": handle}
        )
        handle = _s(js)["session"]
        assert Handle.from_payload(_payload(handle)).context("javascript")
        again = await one.call_tool("run_code", {"code": "print(x)", "session": handle})
        assert _s(again)["stdout"] == "45\n"
        # a new client (no handle) gets a sandbox of its own
        other = await two.call_tool("run_code", {"code": "x"})
        assert _s(other)["error"]["name"] == "NameError"
        assert _sandbox(_s(other)["session"]) != _sandbox(handle)


def _payload(handle: str) -> bytes:
    body = handle.split(".")[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _sandbox(handle: str) -> str:
    return str(json.loads(_payload(handle))["s"])


async def test_forged_altered_and_foreign_handles_are_refused(
    shared: tuple[Config, str, str],
) -> None:
    other_key = secrets.token_urlsafe(32)
    async with Client(_replica(shared)) as mine, Client(_replica(shared, other_key)) as theirs:
        good = _s(await mine.call_tool("run_code", {"code": "secret = 1"}))["session"]
        version, body, signature = good.split(".")
        # the same fields pointing at another sandbox, signed with a guessed key
        forged_body = json.loads(_payload(good))
        forged_body["s"] = "someone-elses-sandbox"
        forged = HandleKey.from_text("g" * 40).sign(
            Handle.from_payload(json.dumps(forged_body).encode())
        )
        altered = ".".join(
            [
                version,
                base64.urlsafe_b64encode(json.dumps(forged_body).encode()).decode().rstrip("="),
                signature,
            ]
        )
        flipped = good[:-1] + ("A" if good[-1] != "A" else "B")
        # the same signature bytes spelt otherwise: the last character's unused low bits
        last = signature[-1]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        respelt_sig = signature[:-1] + alphabet[alphabet.index(last) ^ 1]
        respelt = f"{version}.{body}.{respelt_sig}"
        for bad in [
            forged,
            altered,
            flipped,
            respelt,
            "v1..",
            "garbage",
            "v2." + body + "." + signature,
        ]:
            r = await mine.call_tool("run_code", {"code": "secret", "session": bad})
            assert r.is_error
            text = _text(r)
            assert "refused" in text
            assert "Omit `session`" in text
            assert KEY not in text
        # another deployment's key: its replicas do not trust ours
        r = await theirs.call_tool("run_code", {"code": "secret", "session": good})
        assert r.is_error
        assert "refused" in _text(r)
        ok = await mine.call_tool("run_code", {"code": "secret", "session": good})
        assert _s(ok)["results"][0]["text"] == "1"


async def test_reset_gives_a_new_context_and_handle(shared: tuple[Config, str, str]) -> None:
    async with Client(_replica(shared)) as one, Client(_replica(shared)) as two:
        handle = _s(await one.call_tool("run_code", {"code": "v = 1"}))["session"]
        reset = await two.call_tool("reset_context", {"session": handle})
        assert not reset.is_error, _text(reset)
        fresh = _s(reset)["session"]
        assert fresh != handle
        assert _sandbox(fresh) == _sandbox(handle)
        r = await one.call_tool("run_code", {"code": "v", "session": fresh})
        assert _s(r)["error"]["name"] == "NameError"
        # the old handle's context was deleted: a fresh one, and the client is told
        stale = await one.call_tool("run_code", {"code": "1", "session": handle})
        assert _s(stale)["state_reset"] is True


async def test_a_gone_sandbox_is_replaced_and_said(shared: tuple[Config, str, str]) -> None:
    config = shared[0]
    async with Client(_replica(shared)) as one:
        handle = _s(await one.call_tool("run_code", {"code": "w = 1"}))["session"]
        async with AsyncControlPlane(config) as control:
            await control.delete_sandbox(_sandbox(handle))
        files = await one.call_tool("list_files", {"session": handle})
        assert files.is_error
        assert "Omit `session`" in _text(files)
        r = await one.call_tool("run_code", {"code": "1 + 1", "session": handle})
        assert not r.is_error, _text(r)
        assert _s(r)["state_reset"] is True
        assert "sandbox was gone" in _text(r)
        assert _sandbox(_s(r)["session"]) != _sandbox(handle)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_cancelled_run_is_stopped_and_the_next_call_says_so(
    shared: tuple[Config, str, str], mode: str
) -> None:
    async with Client(_replica(shared), mode=mode) as one:
        handle = _s(await one.call_tool("run_code", {"code": "before = 1"}))["session"]
        with pytest.raises(MCPError):
            await one.call_tool(
                "run_code",
                {"code": "import time\ntime.sleep(25)", "session": handle},
                read_timeout_seconds=0.5,
            )
        after = await one.call_tool("run_code", {"code": "before", "session": handle})
        assert _s(after)["state_reset"] is True
        assert _s(after)["error"]["name"] == "NameError"
        # the stopped run's context was deleted, and no spare one was made for nobody
        async with AsyncDataPlane(shared[0]) as data:
            contexts = await data.list_contexts(_sandbox(handle))
        assert [c.id for c in contexts] == [
            Handle.from_payload(_payload(_s(after)["session"])).context("python")
        ]


async def test_sandboxes_outlive_the_replica_that_made_them(
    shared: tuple[Config, str, str],
) -> None:
    async with Client(_replica(shared)) as one:
        handle = _s(await one.call_tool("run_code", {"code": "kept = 'yes'"}))["session"]
    # that replica shut down; another still finds the state
    async with Client(_replica(shared)) as two:
        r = await two.call_tool("run_code", {"code": "print(kept)", "session": handle})
        assert _s(r)["stdout"] == "yes\n"


def test_the_key_is_required_checked_and_never_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HANDLE_KEY_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--transport", "streamable-http", "--stateless"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert HANDLE_KEY_ENV in err
    assert "secrets.token_urlsafe" in err
    monkeypatch.setenv(HANDLE_KEY_ENV, "short")
    with pytest.raises(SystemExit):
        main(["--transport", "streamable-http", "--stateless"])
    assert "shorter than 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--stateless"])
    assert "--stateless is for --transport streamable-http" in capsys.readouterr().err
    monkeypatch.setenv(HANDLE_KEY_ENV, KEY)
    with pytest.raises(SystemExit):
        main(["--transport", "streamable-http", "--stateless", "--strategy", "singleton"])
    assert "Drop --strategy" in capsys.readouterr().err
    key = HandleKey.from_text(KEY)
    options = ServerOptions(stateless=True, handle_key=key)
    for shown in (repr(key), str(key), repr(options)):
        assert KEY not in shown
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_stateless_has_an_environment_twin() -> None:
    from agentrun_ci_mcp.__main__ import build_parser, options_from_args

    env = {"AGENTRUN_MCP_STATELESS": "1", "AGENTRUN_MCP_TRANSPORT": "streamable-http"}
    options = options_from_args(build_parser(env).parse_args([]))
    assert options.stateless
    assert options.strategy == "dedicated"
    assert not options_from_args(build_parser({}).parse_args([])).stateless


def test_keys_rotate_the_first_signs_any_verifies() -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    handle = Handle(sandbox="s", contexts=(("python", "c"),))
    issued_by_old = HandleKey.from_text(old).sign(handle)
    rotating = HandleKey.from_text(f"{new},{old}")
    assert rotating.verify(issued_by_old) == handle
    assert HandleKey.from_text(new).verify(rotating.sign(handle)) == handle
