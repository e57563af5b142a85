"""Local discovery: the registry of this user's running emulators, and the CLI on it.

Real processes: `agentrun-ci local serve` and `agentrun-ci-mcp` (local backend) as
subprocesses, each registered in a registry directory of the test's own
(`AGENTRUN_LOCAL_REGISTRY`); `agentrun-ci sessions|interpreters|run` through `main()` (or
as a subprocess where it must run while the test watches), with no credentials: the
default backend, which acts on every registered emulator.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import EXIT_WAIT, Server, base_env, needs_script, spawned, wait_until

from agentrun_ci import ControlPlane, DataPlane
from agentrun_ci._discovery import Entry, live_entries, register
from agentrun_ci._procfs import start_time
from agentrun_ci.cli import RUN_TEMPLATE, main

pytest.importorskip("jupyter_client")

#: `agentrun-ci ARGS`, as the console script runs it
_CLI = [sys.executable, "-c", "from agentrun_ci.cli import run; run()"]
_CREDENTIALS = ("AGENTRUN_", "ALIBABA_CLOUD_", "FC_")


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of the test's own, and no credentials: the CLI's default backend."""
    for name in [k for k in os.environ if k.startswith(_CREDENTIALS)]:
        monkeypatch.delenv(name)
    where = tmp_path / "registry"
    monkeypatch.setenv("AGENTRUN_LOCAL_REGISTRY", str(where))
    return where


def _env(registry: Path, tmp: Path, owner: str) -> dict[str, str]:
    env = base_env(owner)
    env["AGENTRUN_LOCAL_REGISTRY"] = str(registry)
    env["TMPDIR"] = str(tmp)
    tmp.mkdir(exist_ok=True)
    return env


def _entries_of(registry: Path, pid: int) -> list[Entry]:
    return [e for e in live_entries() if e.pid == pid] if registry.exists() else []


@contextlib.contextmanager
def _serve(registry: Path, tmp_path: Path, *args: str) -> Iterator[tuple[Entry, Path]]:
    """`agentrun-ci local serve` as a subprocess: its registry entry once written, and its
    stderr file; SIGTERMed (killed if it hangs) at exit."""
    log = tmp_path / f"serve-{uuid.uuid4().hex[:6]}.log"
    env = _env(registry, tmp_path / "serve-tmp", "disc" + secrets.token_hex(3))
    with (
        log.open("wb") as stderr,
        spawned(
            [*_CLI, "local", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        ) as proc,
    ):

        def entry() -> Entry | None:
            assert proc.poll() is None, log.read_text()
            found = _entries_of(registry, proc.pid)
            return found[0] if found else None

        registered = wait_until(entry, lambda: f"local serve to register: {log.read_text()}")
        try:
            yield registered, log
        finally:  # a clean stop, whatever the test did: a SIGKILL would leave its mounts
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(EXIT_WAIT)
        assert proc.returncode == 0, log.read_text()
        assert registered.path is not None
        assert not registered.path.exists()  # removed at its clean stop


@contextlib.contextmanager
def _mcp_server(registry: Path, tmp_path: Path) -> Iterator[tuple[Server, Entry]]:
    """`agentrun-ci-mcp` on the local backend (its embedded emulator), initialized, and
    the entry its emulator registered once it started (at the first tool call)."""
    env = _env(registry, tmp_path / "mcp-tmp", "discmcp" + secrets.token_hex(3))
    env["AGENTRUN_MCP_BACKEND"] = "local"
    server = Server(env, tmp_path / "mcp.log")
    try:
        server.initialize()
        server.tool_ok("run_code", code="x = 41")
        found = wait_until(
            lambda: _entries_of(registry, server.pid),
            lambda: f"the MCP server to register: {server.log_tail()}",
        )
        yield server, found[0]
        assert server.stop("eof") == 0, server.log_tail()
        assert found[0].path is not None
        assert not found[0].path.exists()  # removed at its clean stop
    finally:
        server.close()


def _session_lines(out: str) -> dict[str, list[str]]:
    """`sessions list` output: {sandbox id: its columns}."""
    return {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}


# ---------------------------------------------------------------- the registry


def test_an_emulator_registers_privately_and_unregisters_at_stop(registry: Path) -> None:
    from agentrun_ci.local import LocalEmulator

    registry.mkdir(mode=0o755)  # too open: made private before anything is written
    os.chmod(registry, 0o755)
    emulator = LocalEmulator(access_key_id="local-id", access_key_secret="s" * 40)
    config = emulator.start()
    try:
        assert stat.S_IMODE(registry.stat().st_mode) == 0o700
        files = [p for p in registry.iterdir()]
        assert len(files) == 1
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        data = json.loads(files[0].read_text())
        assert data["pid"] == os.getpid()
        assert data["startTime"] == start_time(os.getpid())
        assert data["url"] == config.data_endpoint
        assert (data["accessKeyId"], data["accessKeySecret"]) == ("local-id", "s" * 40)
        [entry] = live_entries()
        assert "s" * 40 not in repr(entry)
    finally:
        emulator.stop()
    assert list(registry.iterdir()) == []


#: a process that registers an emulator entry for itself (no emulator: SIGKILLing a real
#: one would leave its sandboxes' mounts behind), says so, and waits to be killed
_REGISTERED = """
import sys
from agentrun_ci._discovery import register
register(url="http://127.0.0.1:9", kind="serve", access_key_id=None, access_key_secret=None,
         withhold=False)
print("registered", flush=True)
sys.stdin.read()
"""


def test_a_stale_entry_is_ignored_and_pruned(registry: Path, tmp_path: Path) -> None:
    env = _env(registry, tmp_path / "child-tmp", "stale" + secrets.token_hex(3))
    with spawned(
        [sys.executable, "-c", _REGISTERED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "registered\n"
        [entry] = live_entries()
        assert (entry.pid, entry.kind) == (child.pid, "serve")
        child.kill()
        child.wait(EXIT_WAIT)
    assert entry.path is not None
    assert entry.path.exists()  # a SIGKILL left it behind
    # and one whose pid now names another process (ours, with another start time)
    reused = registry / "reused.json"
    reused.write_text(json.dumps({**entry.to_json(), "pid": os.getpid()}))
    status, out, err = cli("sessions", "list")
    assert (status, out) == (0, "")
    assert "no local emulator of yours is running" in err
    assert sorted(registry.iterdir()) == []


def test_an_unsigned_emulator_registers_and_is_reached_unsigned(registry: Path) -> None:
    from agentrun_ci.local import LocalEmulator

    with LocalEmulator() as config, ControlPlane(config) as control:  # as serve --insecure
        [entry] = live_entries()
        assert (entry.access_key_id, entry.access_key_secret, entry.withheld) == (None, None, False)
        name = f"disc-{secrets.token_hex(3)}"
        control.create_template(name, memory=1024)
        try:
            status, out, err = cli("interpreters", "list")
            assert status == 0, err
            assert f"{name}\t" in out
            assert entry.describe() in out
        finally:
            control.delete_template(name)


def test_a_secret_is_withheld_where_sandboxed_code_could_read_it(registry: Path) -> None:
    registration = register(
        url="http://127.0.0.1:9",
        kind="embedded",
        access_key_id="local-id",
        access_key_secret="hidden-" + "x" * 30,
        withhold=True,
    )
    assert registration is not None
    try:
        text = registration.path.read_text()
        assert "hidden-" not in text
        [entry] = live_entries()
        assert entry.withheld
        assert not entry.reachable
        status, out, err = cli("sessions", "list")
        assert (status, out) == (0, "")
        assert f"pid {os.getpid()}" in err
        assert "without the jail" in err
    finally:
        registration.remove()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_a_registry_someone_else_owns_is_not_believed(registry: Path) -> None:
    registration = register(
        url="http://127.0.0.1:9",
        kind="embedded",
        access_key_id=None,
        access_key_secret=None,
        withhold=False,
    )
    assert registration is not None
    os.chown(registry, 65534, 65534)
    try:
        assert live_entries() == []
        assert (
            register(
                url="http://127.0.0.1:9",
                kind="embedded",
                access_key_id=None,
                access_key_secret=None,
                withhold=False,
            )
            is None
        )
    finally:
        os.chown(registry, 0, 0)
        registration.remove()


def test_off_turns_the_registry_off(registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentrun_ci.local import LocalEmulator

    monkeypatch.setenv("AGENTRUN_LOCAL_REGISTRY", "off")
    with LocalEmulator():
        assert not registry.exists()
        status, out, err = cli("sessions", "list")
    assert (status, out) == (0, "")
    assert "AGENTRUN_LOCAL_REGISTRY=off" in err


# ---------------------------------------------------------------- the CLI on every emulator


@needs_script
def test_sessions_list_shows_every_local_emulators_sessions_and_kill_stops_one(
    registry: Path, tmp_path: Path
) -> None:
    with (
        _serve(registry, tmp_path) as (served, _),
        _mcp_server(registry, tmp_path) as (mcp, mcp_entry),
        ControlPlane(served.config) as control,
    ):
        assert served.access_key_secret  # serve's generated key pair, registered
        assert mcp_entry.kind == "mcp"
        name = f"disc-{secrets.token_hex(3)}"
        control.create_template(name, memory=1024)
        control.wait_template_ready(name)
        sandbox = control.create_sandbox(name)
        with ControlPlane(mcp_entry.config) as mcp_control:
            mcp_sandboxes = {s.sandbox_id for s in mcp_control.list_sandboxes()}
        assert mcp_sandboxes  # the MCP client's session

        status, out, err = cli("sessions", "list")
        assert status == 0, err
        lines = _session_lines(out)
        assert set(lines) == {sandbox.sandbox_id, *mcp_sandboxes}, out
        assert lines[sandbox.sandbox_id][2] == name
        assert lines[sandbox.sandbox_id][4] == served.describe()
        for sandbox_id in mcp_sandboxes:
            assert lines[sandbox_id][4] == mcp_entry.describe()
        assert f"pid {mcp.pid} " in mcp_entry.describe()
        assert served.access_key_secret not in out + err

        status, out, err = cli("interpreters", "list")
        assert status == 0, err
        templates = {line.split("\t")[0]: line for line in out.splitlines()}
        assert templates[name].endswith(served.describe())
        assert any(line.endswith(mcp_entry.describe()) for line in templates.values())

        status, out, err = cli("sessions", "kill", sandbox.sandbox_id)
        assert (status, out) == (0, f"killed {sandbox.sandbox_id}\n"), err
        assert sandbox.sandbox_id not in {s.sandbox_id for s in control.list_sandboxes()}
        status, out, _ = cli("sessions", "list")
        assert set(_session_lines(out)) == mcp_sandboxes
        # the MCP server's session is untouched: its state is still there
        result = mcp.tool_ok("run_code", code="x + 1")
        assert "42" in json.dumps(result)

        status, _, err = cli("sessions", "kill", sandbox.sandbox_id)
        assert status == 1
        assert "no local emulator of yours runs a session" in err
        control.delete_template(name)


# ---------------------------------------------------------------- run


def test_run_uses_a_running_emulator(registry: Path, tmp_path: Path) -> None:
    with _serve(registry, tmp_path) as (served, _), ControlPlane(served.config) as control:
        before = {s.sandbox_id for s in control.list_sandboxes()}
        # the code waits for a file that the test writes through the served emulator's
        # own file API: only a sandbox of that emulator ever sees it
        code = (
            "import os, time\n"
            "while not os.path.exists('/home/user/go'):\n"
            "    time.sleep(0.05)\n"
            "print(open('/home/user/go').read())\n"
        )
        env = _env(registry, tmp_path / "run-tmp", "discrun" + secrets.token_hex(3))
        with spawned(
            [*_CLI, "run", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as run:

            def new_sandbox() -> set[str]:
                assert run.poll() is None, run.communicate()
                return {s.sandbox_id for s in control.list_sandboxes()} - before

            [sandbox_id] = wait_until(new_sandbox, "run's sandbox in the served emulator")
            token = uuid.uuid4().hex
            with DataPlane(served.config) as data:
                data.write_file(sandbox_id, "/home/user/go", token)
            out, err = run.communicate(timeout=120)
        assert (run.returncode, out) == (0, token + "\n"), err
        assert f"in the running local emulator {served.describe()}" in err
        # its session is gone from the emulator it used; its template is kept for the next
        assert {s.sandbox_id for s in control.list_sandboxes()} == before
        assert RUN_TEMPLATE in {t.name for t in control.list_templates()}
        status, out, err = cli("run", "--json", "print('again'); 6 * 7")
        assert status == 0, err
        assert json.loads(out)["stdout"] == "again\n"
        assert [t.name for t in control.list_templates()].count(RUN_TEMPLATE) == 1
        assert {s.sandbox_id for s in control.list_sandboxes()} == before


def test_run_starts_its_own_emulator_when_none_is_running(registry: Path) -> None:
    status, out, err = cli("run", "6 * 7")
    assert (status, out) == (0, "42\n"), err
    assert "running local emulator" not in err
    assert list(registry.iterdir()) == []  # its own emulator unregistered at the end


def test_run_falls_back_when_the_running_emulator_refuses_it(
    registry: Path, tmp_path: Path
) -> None:
    with _serve(registry, tmp_path) as (served, _):
        # a second entry for the same live emulator, newer, with a wrong secret
        wrong = {**served.to_json(), "accessKeySecret": "wrong-" + "w" * 30}
        (registry / "wrong.json").write_text(json.dumps({**wrong, "started": 9e12}))
        status, out, err = cli("run", "6 * 7")
        assert (status, out) == (0, "42\n"), err
        assert "failed" in err
        assert "starting one of this command's own" in err
        status, out, err = cli("run", "--own-emulator", "6 * 7")
        assert (status, out) == (0, "42\n"), err
        assert "running local emulator" not in err
