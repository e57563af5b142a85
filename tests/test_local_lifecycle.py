"""Idle timeout, TTL, and the `local serve` command."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import attrs
import httpx
import pytest

pytest.importorskip("jupyter_client")

from support import await_until, spawned, still_alive, wait_until

from agentrun_ci import Config
from agentrun_ci.local import EmulatorSettings, LocalEmulator
from agentrun_ci.local._limits import group_members
from agentrun_ci.local.cli import serve_main


def _status(http: httpx.Client, sid: str) -> str:
    return str(http.get(f"/sandboxes/{sid}").json()["data"]["status"])


@pytest.mark.parametrize("expiry", ["idle-timeout", "ttl"])
def test_sandbox_is_stopped_and_cleaned(expiry: str) -> None:
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0, reaper_interval=0.05))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=30) as http:
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        body = {"templateName": "t", "sandboxIdleTimeoutSeconds": 3600}
        sid = http.post("/sandboxes", json=body).json()["data"]["sandboxId"]
        http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 60 &"})
        # host pids: the sandbox may print its own PID namespace's pids (`echo $!`)
        items = http.get(f"/sandboxes/{sid}/processes").json()["items"]
        pids = [m for item in items for m in group_members(item["processId"])]
        assert pids  # the background sleep (and its namespace init) still run
        core = emulator.core
        assert core is not None
        sandbox = core.sandboxes[sid]
        assert sandbox.idle_timeout == 3600  # from the request's body
        root = sandbox.root
        # Its time runs out only now that its processes are known: a 1 s timeout given at
        # creation ran out, on a loaded machine, before the command had answered.
        if expiry == "idle-timeout":
            sandbox.idle_timeout = 0.0
        else:
            core.settings = attrs.evolve(core.settings, ttl=0.0)
        wait_until(lambda: _status(http, sid) == "TERMINATED", f"sandbox {sid} to stop")
        assert not root.exists()
        assert still_alive(pids) == []


def test_serve_refuses_remote_host_without_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_serve_prints_endpoint_and_stops_on_sigterm() -> None:
    from agentrun_ci import ControlPlane

    code = (
        "import sys; from agentrun_ci.local.cli import serve_main; "
        "sys.exit(serve_main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "--port", "0", "--spare-kernels", "0"]
    with spawned(
        [*argv, "--log-level", "ERROR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("export AGENTRUN_ACCOUNT_ID="):
            line = proc.stdout.readline()
            assert line, f"serve ended its output early: {lines}"
            lines.append(line)
        exports = dict(
            line.removeprefix("export ").strip().split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        url = exports["AGENTRUN_DATA_ENDPOINT"]
        assert exports["AGENTRUN_CONTROL_ENDPOINT"] == url
        assert exports["AGENTRUN_ACCOUNT_ID"] == "local"
        assert url.startswith("http://127.0.0.1:")
        # no key pair given: one was made, and unsigned requests are refused
        assert httpx.get(f"{url}/2025-09-10/templates").status_code == 403
        config = Config(
            access_key_id=exports["AGENTRUN_ACCESS_KEY_ID"],
            access_key_secret=exports["AGENTRUN_ACCESS_KEY_SECRET"],
            account_id="local",
            control_endpoint=url,
            data_endpoint=url,
        )
        with ControlPlane(config) as cp:
            assert cp.list_templates() == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.anyio
async def test_async_context_manager() -> None:
    async with LocalEmulator(EmulatorSettings(spare_kernels=0)) as config:
        assert config.account_id == "local"
        assert config.data_endpoint == config.control_endpoint
        async with httpx.AsyncClient(base_url=str(config.data_endpoint)) as http:
            r = await http.get("/2025-09-10/sandboxes")
            assert r.json()["data"] == {"items": [], "nextToken": None}


@pytest.mark.parametrize("source", ["file", "environment"])
def test_serve_takes_the_secret_from_a_file_or_the_environment_not_argv(
    source: str, tmp_path: Path
) -> None:
    import os

    from agentrun_ci import Config, ControlPlane, PermissionDeniedError

    secret = "serve-secret-" + os.urandom(8).hex()
    code = (
        "import sys; from agentrun_ci.local.cli import serve_main; "
        "sys.exit(serve_main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "--spare-kernels", "0", "--access-key-id", "KID"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    if source == "file":
        path = tmp_path / "secret"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        argv += ["--access-key-secret-file", str(path)]
    else:
        env["AGENTRUN_ACCESS_KEY_SECRET"] = secret
    with spawned(
        [*argv, "--log-level", "ERROR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[4]
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
            assert secret.encode() not in fh.read()
        assert httpx.get(f"{url}/2025-09-10/templates").status_code == 403
        good = Config(
            access_key_id="KID",
            access_key_secret=secret,
            account_id="local",
            control_endpoint=url,
            data_endpoint=url,
        )
        with ControlPlane(good) as cp:
            assert cp.list_templates() == []
        bad = Config(
            access_key_id="KID",
            access_key_secret="wrong",
            account_id="local",
            control_endpoint=url,
            data_endpoint=url,
        )
        with ControlPlane(bad) as cp, pytest.raises(PermissionDeniedError):
            cp.list_templates()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        assert "WARNING" not in proc.stderr.read()
        # a secret the user gave is never echoed: the exports name it only
        assert secret not in proc.stdout.read()


def test_serve_warns_about_a_secret_in_argv_and_refuses_a_missing_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agentrun_ci.local.cli import _parser, _secret

    monkeypatch.delenv("AGENTRUN_ACCESS_KEY_SECRET", raising=False)
    args = _parser().parse_args(["--access-key-id", "K", "--access-key-secret", "S"])
    assert _secret(args) == "S"
    assert "every user of this machine can read" in capsys.readouterr().err
    # an id without a secret, an unreadable or empty file: usage errors, nothing served
    assert serve_main(["--access-key-id", "K"]) == 2
    assert "--access-key-secret-file" in capsys.readouterr().err
    assert serve_main(["--access-key-id", "K", "--access-key-secret-file", "/nonexistent"]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "empty").write_text("")
    empty = str(tmp_path / "empty")
    assert serve_main(["--access-key-id", "K", "--access-key-secret-file", empty]) == 2
    assert "is empty" in capsys.readouterr().err
    # an exported secret alone (no id) turns nothing on
    monkeypatch.setenv("AGENTRUN_ACCESS_KEY_SECRET", "S")
    assert _secret(_parser().parse_args([])) == ""


@pytest.mark.parametrize("failure", ["dies", "cannot-move-in"])
def test_a_kernel_that_fails_at_birth_is_reaped_and_reported_as_nothing_ran(
    monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """A new context whose kernel fails before it is ready: a clear 500, no kernel left."""
    from agentrun_ci.local import _kernels, _limits

    started: list[int] = []
    adopt = _kernels.PythonKernel.adopt

    async def failing(self: _kernels.PythonKernel, home: str, *args: object) -> None:
        pid = self.pgid
        assert pid is not None
        started.append(pid)
        if failure == "dies":  # really dies, as under the kernel_death fault
            _limits.kill_group(pid)
            with anyio.fail_after(20):  # reaped: a hang guard, not a timing assertion
                while await self._km.is_alive():  # noqa: ASYNC110 -- no event to await
                    await asyncio.sleep(0.01)
        else:  # alive, but its chdir into the sandbox fails
            home = "/nonexistent/sandbox/home"
        await adopt(self, home, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_kernels.PythonKernel, "adopt", failing)
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=30) as http:
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        sid = http.post("/sandboxes", json={"templateName": "t"}).json()["data"]["sandboxId"]
        reply = http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"})
        assert reply.status_code == 500, reply.text
        message = reply.json()["message"]
        assert "could not start a python kernel for a new context" in message
        assert "no code ran" in message
        assert "state lost" not in message
        assert len(started) == 1
        # shut down, not left running until the emulator stops
        assert still_alive(started) == []
        assert emulator.core is not None
        assert emulator.core.sandboxes[sid].contexts == {}


@pytest.mark.anyio
async def test_a_context_deleted_while_its_code_runs_answers_the_run() -> None:
    """The run's request gets a clear 500 ERR_CONTEXT_LOST, not a dropped connection."""
    async with (
        LocalEmulator(EmulatorSettings(spare_kernels=0)) as config,
        httpx.AsyncClient(base_url=str(config.data_endpoint), timeout=30) as http,
    ):
        await http.post("/2025-09-10/templates", json={"templateName": "t"})
        created = await http.post("/sandboxes", json={"templateName": "t"})
        sid = created.json()["data"]["sandboxId"]
        ctx = (await http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"})).json()
        code = "open('started', 'w').close()\nimport time\ntime.sleep(20)"
        body = {"code": code, "contextId": ctx["id"], "timeout": 25}

        async def running() -> bool:
            started = await http.get(f"/sandboxes/{sid}/files", params={"path": "started"})
            return started.status_code == 200

        async with anyio.create_task_group() as tg:
            answers: list[httpx.Response] = []

            async def run() -> None:
                answers.append(await http.post(f"/sandboxes/{sid}/contexts/execute", json=body))

            tg.start_soon(run)
            await await_until(running, "the code to start running")
            deleted = await http.delete(f"/sandboxes/{sid}/contexts/{ctx['id']}")
            assert deleted.status_code == 204, deleted.text
        (answer,) = answers
        assert answer.status_code == 500, answer.text
        assert answer.json()["code"] == "ERR_CONTEXT_LOST"
        assert "was deleted, or its sandbox stopped, while the code ran" in answer.json()["message"]
