"""The `agentrun-ci` command line, through `main(argv, out=, err=)`.

`run` and the resource commands talk to the session's running emulator through
AGENTRUN_CONTROL_ENDPOINT / AGENTRUN_DATA_ENDPOINT (an explicit endpoint pair is
what makes the facade use a remote backend without keys), except one `run` that
takes the true default: no variables at all, emulator in-process.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrun_ci._config import Config
from agentrun_ci._ownership import OwnerTag, default_owner
from agentrun_ci._sync.control_plane import ControlPlane
from agentrun_ci.cli import main

ENV_PREFIXES = ("AGENTRUN_", "ALIBABA_CLOUD_", "FC_")


def cli(*argv: str, **kwargs: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err, **kwargs)  # type: ignore[arg-type]
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [k for k in os.environ if k.startswith(ENV_PREFIXES)]:
        monkeypatch.delenv(name)


@pytest.fixture
def at_emulator(emulator: Config, no_env: None, monkeypatch: pytest.MonkeyPatch) -> Config:
    assert emulator.control_endpoint
    assert emulator.data_endpoint
    monkeypatch.setenv("AGENTRUN_CONTROL_ENDPOINT", emulator.control_endpoint)
    monkeypatch.setenv("AGENTRUN_DATA_ENDPOINT", emulator.data_endpoint)
    monkeypatch.setenv("AGENTRUN_ACCOUNT_ID", "local")
    return emulator


@pytest.fixture
def control(emulator: Config) -> Iterator[ControlPlane]:
    with ControlPlane(emulator) as plane:
        yield plane


def _unique(name: str) -> str:
    import secrets

    return f"clitest-{name}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------- run


def test_run_code_argument(at_emulator: Config) -> None:
    status, out, err = cli("run", "x = 6\nprint('x is', x)\nx * 7")
    assert status == 0, err
    assert out == "x is 6\n42\n"


def test_run_on_the_local_default_without_any_variables(no_env: None) -> None:
    status, out, err = cli("run", "import sys; print(sys.version_info[0]); 6 * 7")
    assert status == 0, err
    assert out == "3\n42\n"


def test_run_file(at_emulator: Config, tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text("import sys\nprint('out')\nprint('oops', file=sys.stderr)\n")
    status, out, err = cli("run", "-f", str(script))
    assert status == 0
    assert out == "out\n"
    assert "oops\n" in err


def test_run_stdin(at_emulator: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("print('from stdin')\n"))
    status, out, _ = cli("run")
    assert (status, out) == (0, "from stdin\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("print('dash')\n"))
    status, out, _ = cli("run", "-f", "-")
    assert (status, out) == (0, "dash\n")


def test_run_without_code_on_a_terminal_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    status, out, err = cli("run")
    assert status == 2
    assert "-f FILE" in err
    assert out == ""


def test_run_error_exits_1_with_traceback_on_stderr(at_emulator: Config) -> None:
    status, out, err = cli("run", "print('before')\ndef f():\n    return 1 / 0\nf()")
    assert status == 1
    assert out == "before\n"
    assert "ZeroDivisionError" in err
    assert "Traceback" in err or "----> " in err
    assert "return 1 / 0" in err


def test_run_timeout_exits_1(at_emulator: Config) -> None:
    status, out, err = cli(
        "run", "-t", "1", "import time\nprint('start', flush=True)\ntime.sleep(5)"
    )
    assert status == 1
    assert out == "start\n"  # what ran before the interrupt is kept
    assert "TimeoutError" in err


def test_run_timeout_over_the_cap_names_the_limit(at_emulator: Config) -> None:
    status, out, err = cli("run", "-t", "45", "print(1)")
    assert status == 1
    assert out == ""
    assert "30 s" in err


def test_run_json(at_emulator: Config) -> None:
    status, out, _ = cli("run", "--json", "print('hi'); {'a': 1}")
    assert status == 0
    data = json.loads(out)
    assert data["stdout"] == "hi\n"
    assert data["status"] == "ok"
    assert data["error"] is None
    assert [r["text"] for r in data["results"]] == ["{'a': 1}"]

    status, out, _ = cli("run", "--json", "raise KeyError('k')")
    assert status == 1
    data = json.loads(out)
    assert data["error"]["name"] == "KeyError"
    assert data["status"] == "error"
    assert "KeyError" in data["error"]["traceback"]


def test_run_existing_interpreter(at_emulator: Config, control: ControlPlane) -> None:
    name = _unique("interp")
    control.create_template(name, memory=1024)
    control.wait_template_ready(name)
    try:
        status, out, _ = cli("run", "--interpreter", name, "print('attached')")
        assert (status, out) == (0, "attached\n")
        # attached, so not ours to delete
        assert control.get_template(name).name == name
    finally:
        control.delete_template(name)


# ---------------------------------------------------------------- doctor

SECRET = "s3cr3t-VALUE-never-shown-0123456789"
KEY_ID = "LTAI5tEXAMPLEKEYID123"


def test_doctor_missing_account_id() -> None:
    environ = {"AGENTRUN_ACCESS_KEY_ID": KEY_ID, "AGENTRUN_ACCESS_KEY_SECRET": SECRET}
    status, out, _ = cli("doctor", "--no-network", environ=environ)
    assert status == 1
    assert "AGENTRUN_ACCOUNT_ID is not set" in out
    assert "export AGENTRUN_ACCOUNT_ID=" in out
    assert "1 problem(s) found." in out  # one cause, reported once
    assert SECRET not in out
    assert SECRET[:4] not in out
    assert KEY_ID not in out


def test_doctor_half_a_key_pair() -> None:
    status, out, _ = cli("doctor", "--no-network", environ={"AGENTRUN_ACCESS_KEY_ID": KEY_ID})
    assert status == 1
    assert "half a key pair" in out
    assert "AGENTRUN_ACCESS_KEY_SECRET" in out
    assert KEY_ID not in out


def test_doctor_half_a_key_pair_secret_only() -> None:
    status, out, _ = cli("doctor", "--no-network", environ={"AGENTRUN_ACCESS_KEY_SECRET": SECRET})
    assert status == 1
    assert "AGENTRUN_ACCESS_KEY_ID" in out
    assert SECRET not in out


def test_doctor_no_credentials_explains_the_local_default() -> None:
    status, out, _ = cli("doctor", "--no-network", environ={})
    assert "local emulator" in out
    assert "AGENTRUN_ACCESS_KEY_ID" in out
    assert status == 0, out


def test_doctor_full_configuration_reaches_the_endpoints(emulator: Config) -> None:
    assert emulator.control_endpoint
    assert emulator.data_endpoint
    environ = {
        "AGENTRUN_ACCESS_KEY_ID": KEY_ID,
        "AGENTRUN_ACCESS_KEY_SECRET": SECRET,
        "AGENTRUN_ACCOUNT_ID": "1234567890",
        "AGENTRUN_CONTROL_ENDPOINT": emulator.control_endpoint,
        "AGENTRUN_DATA_ENDPOINT": emulator.data_endpoint,
    }
    status, out, _ = cli("doctor", environ=environ)
    assert status == 0, out
    assert out.count("reachable") == 2
    assert "No problems found." in out
    assert SECRET not in out
    assert KEY_ID not in out


def test_doctor_unreachable_endpoint() -> None:
    with __import__("socket").socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environ = {
        "AGENTRUN_ACCESS_KEY_ID": KEY_ID,
        "AGENTRUN_ACCESS_KEY_SECRET": SECRET,
        "AGENTRUN_ACCOUNT_ID": "1234567890",
        "AGENTRUN_CONTROL_ENDPOINT": f"http://127.0.0.1:{port}",
        "AGENTRUN_DATA_ENDPOINT": f"http://127.0.0.1:{port}",
    }
    status, out, _ = cli("doctor", environ=environ)
    assert status == 1
    assert "is not reachable" in out


# ---------------------------------------------------------------- interpreters, sessions, reap


def test_interpreters_create_list_delete(at_emulator: Config, control: ControlPlane) -> None:
    name = _unique("crud")
    try:
        status, out, _ = cli("interpreters", "create", name, "--memory", "1024", "--cpu", "1")
        assert (status, out) == (0, f"{name}\tREADY\n")
        status, out, _ = cli("interpreters", "list")
        assert status == 0
        assert f"{name}\tREADY\tcpu=1.0\tmemory=1024\n" in out
    finally:
        status, out, _ = cli("interpreters", "delete", name)
    assert (status, out) == (0, f"deleted {name}\n")
    assert name not in {t.name for t in control.list_templates()}
    _, out, _ = cli("interpreters", "list")
    assert name not in out


def test_resource_commands_without_credentials_name_the_fix(no_env: None) -> None:
    status, out, err = cli("interpreters", "list")
    assert status == 1
    assert out == ""
    assert "AGENTRUN_ACCESS_KEY_ID" in err
    assert "local serve" in err


def test_sessions_list_and_stop(at_emulator: Config, control: ControlPlane) -> None:
    name = _unique("sess")
    control.create_template(name, memory=1024)
    control.wait_template_ready(name)
    sandbox = control.create_sandbox(name)
    try:
        status, out, _ = cli("sessions", "list", "--interpreter", name)
        assert status == 0
        lines = out.splitlines()
        assert len(lines) == 1
        sandbox_id, state, template, use = lines[0].split("\t")
        assert (sandbox_id, template) == (sandbox.sandbox_id, name)
        assert use in ("no processes", "-")  # nothing ran yet (see test_usage.py)
        status, out, _ = cli("sessions", "stop", sandbox.sandbox_id)
        assert (status, out) == (0, f"stopped {sandbox.sandbox_id}\n")
        after = control.get_sandbox(sandbox.sandbox_id)
        assert after.status != state
    finally:
        control.delete_sandbox(sandbox.sandbox_id)
        control.delete_template(name)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_reap_deletes_only_dead_owners_resources(
    at_emulator: Config, control: ControlPlane
) -> None:
    owner = "clireap" + default_owner()[:4]
    orphan = OwnerTag(owner=owner, pid=_dead_pid(), start=1).new_name("orphan")
    alive = OwnerTag.current(owner).new_name("alive")
    for name in (orphan, alive):
        control.create_template(name, memory=1024)
        control.wait_template_ready(name)
    try:
        # too young for --older-than: nothing goes (opening the facade must not reap either)
        status, out, _ = cli("reap", "--owner", owner, "--older-than", "3600")
        assert (status, out) == (0, "reaped 0 orphaned resource(s)\n")
        assert orphan in {t.name for t in control.list_templates()}

        before = (
            [(t.name, t.status) for t in control.list_templates()],
            [(s.sandbox_id, s.template_name, s.status) for s in control.list_sandboxes()],
        )
        status, out, _ = cli("reap", "--owner", owner)
        assert (status, out) == (0, "reaped 1 orphaned resource(s)\n"), (orphan, alive, before)
        names = {t.name for t in control.list_templates()}
        assert orphan not in names
        assert alive in names  # its process (this one) is still running
    finally:
        control.delete_template(alive)
        control.delete_template(orphan)


# ---------------------------------------------------------------- help


def test_local_serve_help() -> None:
    status, out, _ = cli("local", "serve", "--help")
    assert status == 0
    assert "--port" in out
    assert "--access-key-id" in out


def test_help_and_usage_errors_return_a_status() -> None:
    status, out, _ = cli("--help")
    assert status == 0
    for command in ("run", "interpreters", "sessions", "reap", "doctor", "local"):
        assert command in out
    status, _, err = cli("interpreters", "frobnicate")
    assert status == 2
    assert "invalid choice" in err
