"""Idle timeout, TTL, and the `local serve` command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator
from agentrun_ci.local.cli import serve_main


def _wait_status(http: httpx.Client, sid: str, status: str, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if http.get(f"/sandboxes/{sid}").json()["data"]["status"] == status:
            return True
        time.sleep(0.05)
    return False


def _gone(pid: int, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            return True
        if stat[stat.rfind(b")") + 2 :][:1] in (b"Z", b"X"):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize(
    ("settings", "body"),
    [
        (EmulatorSettings(spare_kernels=0, reaper_interval=0.05), {"sandboxIdleTimeoutSeconds": 1}),
        (EmulatorSettings(spare_kernels=0, reaper_interval=0.05, ttl=1.0), {}),
    ],
    ids=["idle-timeout", "ttl"],
)
def test_sandbox_is_stopped_and_cleaned(settings: EmulatorSettings, body: dict[str, int]) -> None:
    emulator = LocalEmulator(settings)
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=30) as http:
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        sid = http.post("/sandboxes", json={"templateName": "t", **body}).json()["data"][
            "sandboxId"
        ]
        bg = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 60 & echo $!"})
        pid = int(bg.json()["result"]["stdout"])
        assert emulator.core is not None
        root = emulator.core.sandboxes[sid].root
        assert _wait_status(http, sid, "TERMINATED")
        assert not root.exists()
        assert _gone(pid)


def test_serve_refuses_remote_host_without_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_serve_prints_endpoint_and_stops_on_sigterm() -> None:
    code = (
        "import sys; from agentrun_ci.local.cli import serve_main; "
        "sys.exit(serve_main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "--port", "0", "--spare-kernels", "0"]
    with subprocess.Popen(
        [*argv, "--log-level", "ERROR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(5)]
            exports = dict(
                line.removeprefix("export ").strip().split("=", 1)
                for line in lines
                if line.startswith("export ")
            )
            url = exports["AGENTRUN_DATA_ENDPOINT"]
            assert exports["AGENTRUN_CONTROL_ENDPOINT"] == url
            assert exports["AGENTRUN_ACCOUNT_ID"] == "local"
            assert url.startswith("http://127.0.0.1:")
            r = httpx.get(f"{url}/2025-09-10/templates")
            assert r.json()["code"] == "SUCCESS"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.anyio
async def test_async_context_manager() -> None:
    async with LocalEmulator(EmulatorSettings(spare_kernels=0)) as config:
        assert config.account_id == "local"
        assert config.data_endpoint == config.control_endpoint
        async with httpx.AsyncClient(base_url=str(config.data_endpoint)) as http:
            r = await http.get("/2025-09-10/sandboxes")
            assert r.json()["data"] == {"items": [], "nextToken": None}
