"""Attacker tests for the emulator's HTTP surface: races, bounds, signatures, bad values.

Each test here failed on the emulator before the change it guards (issue 13, items
5-8), and the kernel-restart field replaces a stderr text match (issue 16).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from agentrun_ci._config import Config
from agentrun_ci._models import Execution

pytest.importorskip("jupyter_client")


@pytest.fixture(scope="module")
def http(emulator: Config) -> Iterator[httpx.Client]:
    assert emulator.data_endpoint is not None
    with httpx.Client(base_url=emulator.data_endpoint, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def sid(http: httpx.Client) -> Iterator[str]:
    name = f"atk-{uuid.uuid4().hex[:8]}"
    assert http.post("/2025-09-10/templates", json={"templateName": name}).status_code == 200
    r = http.post("/sandboxes", json={"templateName": name})
    assert r.status_code == 200, r.text
    sandbox_id = r.json()["data"]["sandboxId"]
    yield sandbox_id
    http.delete(f"/sandboxes/{sandbox_id}")
    http.delete(f"/2025-09-10/templates/{name}")


def _execute(http: httpx.Client, sid: str, code: str, timeout: float = 20) -> httpx.Response:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code, "timeout": timeout})
    assert r.status_code == 200, r.text
    return r


# ---------------------------------------------------------------- kernel restart


def test_a_kernel_restart_is_an_explicit_field_not_a_stderr_text(
    http: httpx.Client, sid: str
) -> None:
    _execute(http, sid, "keep = 1")
    interrupted = _execute(http, sid, "import time\ntime.sleep(3)", timeout=0.5).json()
    assert "kernelRestarted" not in interrupted  # an interrupt that worked keeps state
    assert not Execution.from_wire(interrupted).kernel_restarted
    # SIGINT ignored: the interrupt cannot stop it, so the kernel is restarted
    stuck = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    body = _execute(http, sid, stuck, timeout=0.5).json()
    assert body["kernelRestarted"] is True
    execution = Execution.from_wire(body)
    assert execution.kernel_restarted
    assert execution.status == "timeout"
    after = _execute(http, sid, "print('keep' in globals())").json()
    assert "kernelRestarted" not in after
    assert Execution.from_wire(after).stdout == "False\n"


def test_the_restart_field_is_read_tolerantly() -> None:
    for value in ("true", 1, None, {"x": 1}):
        assert not Execution.from_wire({"results": [], "kernelRestarted": value}).kernel_restarted
    assert not Execution.from_wire([]).kernel_restarted
