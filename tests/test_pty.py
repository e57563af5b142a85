"""Terminals: the `/processes/tty` frames, the emulator's WebSocket route, `DataPlane.open_tty`,
and E2B's `sandbox.pty` on them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from support import alive, running_emulator, sandbox_on, wait_until

from agentrun_ci import (
    Config,
    ControlPlane,
    DataPlane,
    NotFoundError,
    PermissionDeniedError,
    Tty,
    TtyExit,
    TtyOutput,
    TtyStarted,
    TtyWarning,
    _tty,
    e2b,
)
from agentrun_ci.local import EmulatorSettings

pytest.importorskip("websockets")

# ------------------------------------------------------------------ pure: the frames


def test_input_is_text_when_utf8_and_base64_otherwise() -> None:
    assert json.loads(_tty.input_frame(b"ls\n")) == {"type": "input", "data": "ls\n"}
    assert json.loads(_tty.input_frame("é")) == {"type": "input", "data": "é"}
    raw = json.loads(_tty.input_frame(b"\xff\x00"))
    assert raw == {"type": "input", "data": "/wA=", "encoding": "base64"}


def test_frames_parse_tolerantly() -> None:
    parse = _tty.parse_frame
    assert parse('{"type":"output","data":"hi","stream":"stdout"}') == TtyOutput(b"hi")
    assert parse('{"type":"output","data":"/wA=","encoding":"base64"}') == TtyOutput(b"\xff\x00")
    assert parse('{"type":"connectionEstablished","pid":42}') == TtyStarted(42)
    assert parse('{"type":"connectionEstablished"}') == TtyStarted(None)
    assert parse('{"type":"status","status":"exited","exitCode":3}') == TtyExit(3)
    assert parse('{"type":"status","status":"running"}') is None  # progress, not the end
    assert parse('{"type":"timeoutWarning","closesIn":30}') == TtyWarning(30.0)
    assert parse('{"type":"ping"}') == "ping"
    for noise in ('{"type":"pong"}', '{"type":"somethingNew","x":1}', "[1]", "not json"):
        assert parse(noise) is None


def test_the_url_carries_the_tenant_and_the_emulator_extensions() -> None:
    config = Config(data_endpoint="https://x.example", account_id="123")
    url = _tty.tty_url(config, "sb 1", rows=24, cols=80, cwd="/tmp", envs={"A": "1"}, pid=7)
    assert url.startswith("wss://x.example/sandboxes/sb%201/processes/tty?protocol=json")
    assert "tenantId=123" in url
    assert "pid=7" in url
    assert "cwd=%2Ftmp" in url


# ------------------------------------------------------------------ the emulator's route


@pytest.fixture(scope="module")
def sandbox(emulator: Config) -> Iterator[tuple[DataPlane, str]]:
    with sandbox_on(emulator) as pair:
        yield pair


def _until_exit(tty: Tty) -> tuple[bytes, list[object]]:
    """Everything the terminal printed and every other event, until it ends."""
    out, other = b"", []
    for event in tty.events():
        if isinstance(event, TtyOutput):
            out += event.data
        else:
            other.append(event)
    return out, other


def test_a_shell_echoes_resizes_and_reports_its_exit_code(
    sandbox: tuple[DataPlane, str],
) -> None:
    plane, sid = sandbox
    with plane.open_tty(sid, rows=10, cols=33, envs={"GREETING": "hi-there"}) as tty:
        assert tty.pid is not None
        tty.send("stty size; echo $GREETING\n")
        tty.resize(20, 100)
        tty.send(b"stty size; exit 3\n")
        out, other = _until_exit(tty)
    text = out.decode()
    assert "hi-there" in text
    assert "20 100" in text
    assert other[-1] == TtyExit(3)


def test_the_shell_is_a_process_of_the_sandbox_and_dies_when_killed(
    sandbox: tuple[DataPlane, str],
) -> None:
    plane, sid = sandbox
    with plane.open_tty(sid) as tty:
        pid = tty.pid
        listed = {p.pid: p for p in plane.list_processes(sid)}
        assert listed[str(pid)].tag == "tty"
        plane.kill_process(sid, str(pid))
        _, other = _until_exit(tty)
    assert isinstance(other[-1], TtyExit)
    assert other[-1].exit_code != 0
    assert plane.get_process(sid, str(pid)).status == "killed"


def test_a_shell_outlives_its_connection_and_takes_a_new_one_by_pid(
    sandbox: tuple[DataPlane, str],
) -> None:
    plane, sid = sandbox
    with plane.open_tty(sid) as first:
        pid = first.pid
        assert pid is not None
    with plane.open_tty(sid, pid=pid) as again:
        assert again.pid == pid
        again.send("exit 0\n")
        _, other = _until_exit(again)
    assert other[-1] == TtyExit(0)
    with pytest.raises(NotFoundError):
        plane.open_tty(sid, pid=pid)  # ended: nothing to attach to


def test_deleting_the_sandbox_ends_its_shells(emulator: Config) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    with ControlPlane(emulator) as cp, DataPlane(emulator) as plane:
        cp.create_template(name)
        sid = plane.create_sandbox(name).sandbox_id
        with plane.open_tty(sid) as tty:
            pid = tty.pid
            assert pid is not None
            assert alive(pid)
            plane.delete_sandbox(sid)
            _, other = _until_exit(tty)
        cp.delete_template(name)
    assert isinstance(other[-1], TtyExit)
    assert not alive(pid)


def test_an_idle_connection_is_warned_then_closed_and_its_shell_ended() -> None:
    settings = EmulatorSettings(tty_idle_timeout=1.0, tty_ping_interval=0.2, reaper_interval=0.2)
    with running_emulator(settings) as (_, config), sandbox_on(config) as (plane, sid):
        with plane.open_tty(sid) as tty:
            pid = tty.pid
            events = list(tty.events())  # pings are answered; idle all the same
        assert any(isinstance(e, TtyWarning) for e in events)
        assert not any(isinstance(e, TtyExit) for e in events)  # closed, not ended
        # left without a connection for the idle time, the shell is ended too
        wait_until(lambda: plane.get_process(sid, str(pid)).status != "running", "shell ended")


def test_the_upgrade_must_be_signed_when_the_emulator_has_keys() -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with running_emulator(access_key_id="AK", access_key_secret="SK") as (_, config):
        name = f"t-{uuid.uuid4().hex[:8]}"
        with ControlPlane(config) as cp, DataPlane(config) as plane:
            cp.create_template(name)
            sid = plane.create_sandbox(name).sandbox_id
            url = _tty.tty_url(config, sid, rows=24, cols=80)
            with pytest.raises(InvalidStatus) as refused, connect(url):  # no signature
                pass
            assert refused.value.response.status_code == 403
            wrong = Config(
                data_endpoint=config.data_url, access_key_id="AK", access_key_secret="nope"
            )
            with DataPlane(wrong) as bad, pytest.raises(PermissionDeniedError):
                bad.open_tty(sid)
            with plane.open_tty(sid) as tty:  # signed
                tty.send("echo signed-ok; exit\n")
                out, _ = _until_exit(tty)
            assert b"signed-ok" in out
            plane.delete_sandbox(sid)
            cp.delete_template(name)


# ------------------------------------------------------------------ E2B's sandbox.pty


@pytest.fixture
def _shared_interpreter_closed() -> Iterator[None]:
    """The E2B shim's shared interpreter is removed while the session's emulator runs."""
    yield
    e2b.close_shared()


@pytest.mark.usefixtures("_shared_interpreter_closed")
def test_e2b_pty_create_input_resize_and_exit(emulator: Config) -> None:
    with e2b.Sandbox(config=emulator) as sbx:
        terminal = sbx.pty.create(e2b.PtySize(rows=24, cols=80), envs={"ABC": "123"}, cwd="/")
        sbx.pty.resize(terminal.pid, e2b.PtySize(rows=30, cols=111))
        sbx.pty.send_stdin(terminal.pid, b"echo $ABC; pwd; tput cols\nexit\n")
        chunks: list[bytes] = []
        result = terminal.wait(on_pty=chunks.append)
        text = b"".join(chunks).decode()
        assert result.exit_code == 0
        assert "123" in text
        assert "111" in text


@pytest.mark.usefixtures("_shared_interpreter_closed")
def test_e2b_pty_kill_and_kill_of_nothing(emulator: Config) -> None:
    with e2b.Sandbox(config=emulator) as sbx:
        terminal = sbx.pty.create(e2b.PtySize(rows=24, cols=80))
        assert sbx.pty.kill(terminal.pid)
        with pytest.raises(e2b.CommandExitException):
            terminal.wait()
        assert not sbx.pty.kill(999999)


@pytest.mark.anyio
@pytest.mark.usefixtures("_shared_interpreter_closed")
async def test_e2b_async_pty_connect_takes_over_the_output(emulator: Config) -> None:
    sbx = await e2b.AsyncSandbox.create(config=emulator)
    try:
        first: list[bytes] = []
        second: list[bytes] = []
        terminal = await sbx.pty.create(e2b.PtySize(24, 80), on_data=first.append)
        await terminal.disconnect()
        again = await sbx.pty.connect(terminal.pid, on_data=second.append)
        await sbx.pty.send_stdin(terminal.pid, b"echo taken-over\nexit 0\n")
        await again.wait()
        assert again.pid == terminal.pid
        assert again.exit_code == 0
        assert b"taken-over" in b"".join(second)
        assert b"taken-over" not in b"".join(first)
        with pytest.raises(e2b.NotFoundException):
            await sbx.pty.send_stdin(terminal.pid, b"true\n")
    finally:
        await sbx.kill()
