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
import uuid
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
        if name != "AGENTRUN_LOCAL_REGISTRY":  # not a credential: where emulators are listed
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
    status, out, _ = cli("doctor", "--no-kernel", "--no-network", environ=environ)
    assert status == 1
    assert "AGENTRUN_ACCOUNT_ID is not set" in out
    assert "export AGENTRUN_ACCOUNT_ID=" in out
    assert "1 problem(s) found." in out  # one cause, reported once
    assert SECRET not in out
    assert SECRET[:4] not in out
    assert KEY_ID not in out


def test_doctor_half_a_key_pair() -> None:
    status, out, _ = cli(
        "doctor", "--no-kernel", "--no-network", environ={"AGENTRUN_ACCESS_KEY_ID": KEY_ID}
    )
    assert status == 1
    assert "half a key pair" in out
    assert "AGENTRUN_ACCESS_KEY_SECRET" in out
    assert KEY_ID not in out


def test_doctor_half_a_key_pair_secret_only() -> None:
    status, out, _ = cli(
        "doctor", "--no-kernel", "--no-network", environ={"AGENTRUN_ACCESS_KEY_SECRET": SECRET}
    )
    assert status == 1
    assert "AGENTRUN_ACCESS_KEY_ID" in out
    assert SECRET not in out


def test_doctor_no_credentials_explains_the_local_default() -> None:
    status, out, _ = cli("doctor", "--no-network", environ={})
    assert "local emulator" in out
    assert "AGENTRUN_ACCESS_KEY_ID" in out
    assert status == 0, out
    # and whether the sandboxes it would run are isolated (as this machine allows)
    assert "sandboxes are isolated: bubblewrap jail" in out or "sandboxes are NOT" in out
    assert "network: " in out


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
    status, out, _ = cli("doctor", "--no-kernel", environ=environ)
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
    status, out, _ = cli("doctor", "--no-kernel", environ=environ)
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


def test_resource_commands_without_credentials_name_the_fix(
    no_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = cli("interpreters", "create", "x")
    assert status == 1
    assert out == ""
    assert "AGENTRUN_ACCESS_KEY_ID" in err
    assert "local serve" in err
    # listing acts on this user's running local emulators (test_discovery.py): none here
    monkeypatch.setenv("AGENTRUN_LOCAL_REGISTRY", str(tmp_path))
    for argv in (("interpreters", "list"), ("sessions", "list")):
        status, out, err = cli(*argv)
        assert (status, out) == (0, "")
        assert "no local emulator of yours is running" in err
        assert "local serve" in err
        assert "AGENTRUN_ACCESS_KEY_ID" in err


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


def test_sessions_kill_deletes_the_session(at_emulator: Config, control: ControlPlane) -> None:
    name = _unique("kill")
    control.create_template(name, memory=1024)
    control.wait_template_ready(name)
    sandbox = control.create_sandbox(name)
    try:
        status, out, err = cli("sessions", "kill", sandbox.sandbox_id)
        assert (status, out) == (0, f"killed {sandbox.sandbox_id}\n"), err
        assert sandbox.sandbox_id not in {s.sandbox_id for s in control.list_sandboxes()}
        status, out, err = cli("sessions", "kill", sandbox.sandbox_id)
        assert (status, out) == (1, "")
        assert "nothing killed" in err
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


# ---------------------------------------------------------------- rough edges (issue 17)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_file_that_is_not_utf8_is_a_clear_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "latin1.py"
    script.write_bytes(b"print('ok')\nprint('caf\xe9')\n")
    status, out, err = cli("run", "-f", str(script))
    assert status == 2
    assert out == ""
    assert str(script) in err
    assert "not UTF-8" in err
    assert "0xe9 on line 2" in err
    assert "Traceback" not in err


def test_run_file_that_does_not_exist_is_a_clear_usage_error(tmp_path: Path) -> None:
    status, _, err = cli("run", "-f", str(tmp_path / "missing.py"))
    assert status == 2
    assert "cannot read" in err
    assert "No such file" in err


@pytest.mark.parametrize("timeout", ["100", "nan", "0", "-1"])
def test_bad_timeout_is_refused_before_any_backend_starts(
    timeout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentrun_ci.cli as cli_module

    def no_backend(args: object) -> None:
        raise AssertionError("a backend was started for a timeout that is refused")

    monkeypatch.setattr(cli_module, "_interpreter", no_backend)
    status, out, err = cli("run", "-t", timeout, "print(1)")
    assert status == 1
    assert out == ""
    assert "timeout" in err
    if timeout == "100":
        assert "30 s" in err


def test_run_prints_before_the_session_is_torn_down(
    at_emulator: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentrun_ci.cli as cli_module

    real = cli_module._interpreter
    out = io.StringIO()
    seen_at_close: list[str] = []

    def spying(args: object) -> object:
        interpreter = real(args)  # type: ignore[arg-type]
        close = interpreter.close

        def close_and_record() -> None:
            seen_at_close.append(out.getvalue())
            close()

        interpreter.close = close_and_record  # type: ignore[method-assign]
        return interpreter

    monkeypatch.setattr(cli_module, "_interpreter", spying)
    status = main(["run", "print('early')"], out=out, err=io.StringIO())
    assert status == 0
    assert seen_at_close == ["early\n"]


def test_one_shot_run_on_the_local_default_runs_in_the_kernel_started_first(
    no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator starts a kernel at once; the run's sandbox takes it, ready or still
    starting, and no request of the run cold-starts another beside it."""
    import agentrun_ci.local._core as core_module
    from agentrun_ci.local import _kernels

    started: list[str] = []
    cold: list[str] = []
    real_start = _kernels.PythonKernel.start.__func__  # type: ignore[attr-defined]
    real_cold = core_module.start_python  # type: ignore[attr-defined]

    async def counting(cls: type, *args: object, **kwargs: object) -> object:
        started.append("kernel")
        return await real_start(cls, *args, **kwargs)

    async def counting_cold(*args: object, **kwargs: object) -> object:
        cold.append("cold")
        return await real_cold(*args, **kwargs)

    monkeypatch.setattr(_kernels.PythonKernel, "start", classmethod(counting))
    monkeypatch.setattr(core_module, "start_python", counting_cold)
    status, out, err = cli("run", "--backend", "local", "6 * 7")
    assert (status, out) == (0, "42\n"), err
    assert cold == []
    # the first kernel served the run; a replacement spare may have begun after it was up
    assert started[:1] == ["kernel"]


def test_run_save_images_writes_the_plot(at_emulator: Config, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    code = (
        "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\nprint('plotted')"
    )
    target = tmp_path / "images"
    status, out, err = cli("run", "--save-images", str(target), code)
    assert status == 0, err
    files = sorted(target.iterdir())
    assert len(files) == 1
    assert files[0].suffix == ".png"
    assert files[0].read_bytes().startswith(b"\x89PNG")
    assert out.startswith("plotted\n")
    assert f"saved to {files[0]}" in out

    status, out, _ = cli("run", code)  # without the option: named, with the hint
    assert "[image/png] (--save-images DIR writes it to a file)" in out


def test_empty_lists_say_so(at_emulator: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

    with monkeypatch.context() as patch, LocalEmulator(EmulatorSettings(spare_kernels=0)) as empty:
        assert empty.control_endpoint
        patch.setenv("AGENTRUN_CONTROL_ENDPOINT", empty.control_endpoint)
        status, out, err = cli("interpreters", "list")
        assert (status, out) == (0, "")
        assert "no interpreters" in err
        status, out, err = cli("sessions", "list")
        assert (status, out) == (0, "")
        assert "no sessions" in err
    status, out, err = cli("sessions", "list", "--interpreter", _unique("none"))
    assert (status, out) == (0, "")
    assert "no sessions of interpreter" in err


def test_deleting_a_missing_interpreter_is_an_error(at_emulator: Config) -> None:
    name = _unique("missing")
    status, out, err = cli("interpreters", "delete", name)
    assert status == 1
    assert out == ""
    assert f"no interpreter named {name!r}" in err


def test_warnings_do_not_land_in_the_middle_of_the_progress_line(
    no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentrun_ci._backend as backend

    monkeypatch.setattr(backend, "_noticed", False)  # the local-backend notice is said once
    err = _Terminal()
    status = main(["run", "print(1)"], out=io.StringIO(), err=err)
    assert status == 0
    lines = err.getvalue().replace("\r", "\n").splitlines()
    notice = [line for line in lines if "no AgentRun credentials found" in line]
    assert notice
    assert all(line.startswith("agentrun-ci: ") for line in notice), lines
    progress = [line for line in lines if "starting a session" in line]
    assert progress
    assert all(line.startswith("starting a session") for line in progress), lines
    assert any(line.startswith("starting a session: done in") for line in progress), lines


def test_status_ends_an_open_progress_line_before_other_output() -> None:
    from agentrun_ci.cli import _Status

    terminal = _Terminal()
    status = _Status(terminal)
    with status.progress("waiting"):
        status.write("a warning\n")
    with status.progress("quiet"):
        pass
    assert terminal.getvalue().split("\n") == [
        "waiting…",
        "a warning",
        "waiting: done in 0.0 s",
        "quiet…\rquiet: done in 0.0 s",
        "",
    ]


def test_bad_endpoint_url_is_refused_before_anything_starts(
    no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRUN_DATA_ENDPOINT", "ftp://x")
    status, out, err = cli("run", "1")
    assert (status, out) == (1, "")
    assert "AGENTRUN_DATA_ENDPOINT" in err
    assert "ftp" in err


def test_doctor_knows_agentrun_regions() -> None:
    status, out, _ = cli(
        "doctor", "--no-network", "--no-kernel", environ={"AGENTRUN_REGION": "mars-north-1"}
    )
    assert status == 1
    assert "'mars-north-1' is not an AgentRun region" in out
    assert "cn-hangzhou" in out
    status, out, _ = cli(
        "doctor", "--no-network", "--no-kernel", environ={"AGENTRUN_REGION": "ap-southeast-1"}
    )
    assert status == 0, out
    # with credentials, the endpoints built from an unknown region are not tried as well:
    # one cause, one problem
    environ = {
        "AGENTRUN_ACCESS_KEY_ID": KEY_ID,
        "AGENTRUN_ACCESS_KEY_SECRET": SECRET,
        "AGENTRUN_ACCOUNT_ID": "1234567890",
        "AGENTRUN_REGION": "mars-north-1",
    }
    status, out, _ = cli("doctor", "--no-kernel", environ=environ)
    assert status == 1
    assert "1 problem(s) found." in out, out
    assert "not tried (fix the region first)" in out


def test_doctor_names_a_bad_endpoint_variable() -> None:
    environ = {"AGENTRUN_CONTROL_ENDPOINT": "not a url", "AGENTRUN_DATA_ENDPOINT": "not a url"}
    status, out, _ = cli("doctor", "--no-network", "--no-kernel", environ=environ)
    assert status == 1
    assert "AGENTRUN_CONTROL_ENDPOINT" in out
    assert "'not a url'" in out


def test_doctor_gives_one_verdict_per_endpoint() -> None:
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
    status, out, _ = cli("doctor", "--no-kernel", environ=environ)
    assert status == 1
    endpoint_lines = [
        line for line in out.splitlines() if "control endpoint" in line or "data endpoint" in line
    ]
    assert len(endpoint_lines) == 2, out
    assert all(line.lstrip().startswith("FIX") for line in endpoint_lines), out
    assert "2 problem(s) found." in out


def test_doctor_runs_a_kernel_on_the_local_backend() -> None:
    status, out, _ = cli("doctor", "--no-network", environ={})
    assert status == 0, out
    assert "started a Python kernel and ran 1 + 1" in out


def test_doctor_reports_a_local_backend_that_cannot_start_a_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentrun_ci.local import _kernels

    async def broken(cls: type, *args: object, **kwargs: object) -> object:
        raise _kernels.KernelError("kernel died at birth (simulated)")

    monkeypatch.setattr(_kernels.PythonKernel, "start", classmethod(broken))
    status, out, _ = cli("doctor", "--no-network", environ={})
    assert status == 1
    assert "FIX   the local emulator could not run code" in out
    assert "No problems found" not in out


def test_log_format_json_formats_every_line_the_user_facing_ones_too(
    no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    import agentrun_ci._backend as backend

    monkeypatch.setattr(backend, "_noticed", False)  # the local-backend notice is said once
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # only the command's own handler
    status, out, err = cli("--log-format", "json", "run", "print(1)")
    assert (status, out) == (0, "1\n")
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert logged, err
    assert all({"time", "level", "logger", "message"} <= set(line) for line in logged)
    assert any("no AgentRun credentials found" in line["message"] for line in logged), logged


def test_unknown_log_format_from_the_environment_is_a_usage_error(
    no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRUN_LOG_FORMAT", "xml")
    status, _, err = cli("doctor", "--no-network", "--no-kernel")
    assert status == 2
    assert "AGENTRUN_LOG_FORMAT" in err
    assert "'xml'" in err


# ---------------------------------------------------------------- a CLI that behaves (issue 25)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run", "--timout", "5", "print(1)"], "unknown option --timout (did you mean --timeout?)"),
        (["run", "--jsno", "print(1)"], "unknown option --jsno (did you mean --json?)"),
        (["sessions", "list", "--interpeter", "x"], "(did you mean --interpreter?)"),
        (["doctor", "--no-netwrok"], "(did you mean --no-network?)"),
        (["run", "print(1)", "extra"], "unexpected argument 'extra'"),
    ],
)
def test_a_mistyped_option_is_named_with_the_closest_and_nothing_runs(
    argv: list[str], said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentrun_ci.cli as cli_module

    def no_backend(args: object) -> None:
        raise AssertionError("a command ran despite a mistyped option")

    monkeypatch.setattr(cli_module, "_interpreter", no_backend)
    status, out, err = cli(*argv)
    assert status == 2
    assert out == ""
    assert said in err
    # the usage shown is the subcommand's, not the top level's
    assert f"usage: agentrun-ci {argv[0]}" in err


def test_ctrl_c_says_interrupted_and_nothing_about_the_network(tmp_path: Path) -> None:
    import signal

    from support import base_env, wait_until

    marker = f"started-{uuid.uuid4().hex}"
    code = (
        f"open('/home/user/{marker}', 'w').close()\n"
        "import time\nprint('before', flush=True)\ntime.sleep(60)\n"
    )
    env = base_env(f"ctrlc{uuid.uuid4().hex[:6]}")
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from agentrun_ci.cli import run; run()", "run", code],
        # as a terminal starts it: SIGINT at its default, whatever this worker ignores
        # (a child started with SIGINT ignored keeps ignoring it, and Python then never
        # raises KeyboardInterrupt)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # interrupted once its code runs (the file it makes appears in its sandbox's home)
        # (a fixed-depth glob: a recursive walk of the emulator's tree is slow when loaded)
        homes = ("*/sandboxes/*/disk/home", "*/sandboxes/*/home")
        wait_until(
            lambda: (
                any(p for h in homes for p in tmp_path.glob(f"{h}/{marker}"))
                or proc.poll() is not None
            ),
            "the code to start",
            timeout=300,
        )
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.rstrip().splitlines()[-1] == "agentrun-ci run: interrupted"
    for noise in ("network", "could not", "Traceback", "ENDPOINT"):
        assert noise not in err, err
    assert not any(tmp_path.rglob(marker))  # its sandbox is gone with it


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        ({"AGENTRUN_ACCESS_KEY_ID": "garbage"}, "does not look like an Alibaba Cloud AccessKey"),
        ({"AGENTRUN_ACCESS_KEY_SECRET": "short"}, "has 5 characters"),
        ({"AGENTRUN_ACCOUNT_ID": "my-account"}, "is not a number"),
        ({"AGENTRUN_ACCESS_KEY_ID": "STS.NUxyzEXAMPLE123"}, "needs its security token"),
    ],
)
def test_doctor_flags_a_credential_that_cannot_be_right_by_its_shape(
    environ: dict[str, str], said: str
) -> None:
    full = {
        "AGENTRUN_ACCESS_KEY_ID": KEY_ID,
        "AGENTRUN_ACCESS_KEY_SECRET": SECRET,
        "AGENTRUN_ACCOUNT_ID": "1234567890",
        **environ,
    }
    status, out, _ = cli("doctor", "--no-kernel", "--no-network", environ=full)
    assert status == 1
    assert said in out
    assert "FIX" in out
    assert "garbage" not in out  # the id is shown masked, as everywhere


def test_doctor_does_not_judge_an_emulators_own_key_pair(emulator: Config) -> None:
    assert emulator.control_endpoint
    environ = {
        "AGENTRUN_ACCESS_KEY_ID": "local-3f9c0a1b2c3d4e5f",
        "AGENTRUN_ACCESS_KEY_SECRET": "x" * 43,
        "AGENTRUN_ACCOUNT_ID": "local",
        "AGENTRUN_CONTROL_ENDPOINT": emulator.control_endpoint,
        "AGENTRUN_DATA_ENDPOINT": emulator.control_endpoint,
    }
    status, out, _ = cli("doctor", "--no-kernel", "--no-network", environ=environ)
    assert status == 0, out


# ---------------------------------------------------------------- mcp-config


@pytest.mark.anyio
async def test_mcp_config_for_a_desktop_client_launches_a_server_that_runs_code(
    no_env: None, tmp_path: Path
) -> None:
    pytest.importorskip("mcp")
    pytest.importorskip("jupyter_client")
    from mcp import Client, StdioServerParameters
    from support import base_env

    status, out, err = cli("mcp-config", "--client", "claude-desktop")
    assert status == 0, err
    entry = json.loads(out)["mcpServers"]["agentrun"]
    assert Path(entry["command"]).is_absolute()
    assert entry["args"][-2:] == ["--backend", "local"]
    assert "claude_desktop_config.json" in err
    # launched as a host launches it: the command, its args, a clean environment
    env = {**base_env(f"mcpcfg{uuid.uuid4().hex[:6]}"), "TMPDIR": str(tmp_path)}
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env)
    async with Client(params) as client:
        result = await client.call_tool("run_code", {"code": "6 * 7"})
    assert result.structured_content is not None
    assert [r["text"] for r in result.structured_content["results"]] == ["42"]


def test_mcp_config_says_when_local_kernels_lack_the_data_stack(
    no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentrun_ci.cli as cli_module

    status, _, err = cli("mcp-config", "--client", "cursor")
    assert status == 0
    assert "data extra" not in err  # the test environment has it
    real = cli_module._has
    monkeypatch.setattr(cli_module, "_has", lambda m: m != "pandas" and real(m))
    status, out, err = cli("mcp-config", "--client", "cursor")
    assert status == 0
    assert json.loads(out)["mcpServers"]["agentrun"]["args"][-1] == "local"
    assert "lacks pandas" in err
    assert "pip install -e '.[mcp,local,data]'" in err


def test_mcp_config_for_claude_code_is_one_command_line(no_env: None) -> None:
    import shlex

    status, out, _ = cli("mcp-config", "--client", "claude-code", "--name", "ci")
    assert status == 0
    words = shlex.split(out)
    assert words[:4] == ["claude", "mcp", "add", "ci"]
    command = words[words.index("--") + 1 :]
    assert Path(command[0]).is_absolute()
    assert command[-2:] == ["--backend", "local"]


def test_mcp_config_for_the_cloud_names_the_variables_without_the_key_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTRUN_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AGENTRUN_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.setenv("AGENTRUN_ACCOUNT_ID", "1234567890")
    status, out, err = cli("mcp-config", "--client", "cursor")
    assert status == 0
    entry = json.loads(out)["mcpServers"]["agentrun"]
    assert entry["args"][-2:] == ["--backend", "cloud"]
    assert entry["env"]["AGENTRUN_ACCOUNT_ID"] == "1234567890"
    assert entry["env"]["AGENTRUN_ACCESS_KEY_SECRET"] == "<your AccessKey secret>"
    assert SECRET not in out + err
    assert KEY_ID not in out + err
    assert ".cursor/mcp.json" in err
