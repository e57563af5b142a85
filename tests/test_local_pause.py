"""The emulator's PauseSandbox / ResumeSandbox: what a pause does to the sandbox's processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("jupyter_client")

from support import alive, proc_stat, still_alive, wait_until

from agentrun_ci.local import EmulatorSettings, LocalEmulator
from agentrun_ci.local._limits import group_members

#: /proc states of a stopped task: SIGSTOP (T, t) or a cgroup v1 freezer (D)
_HELD = ("T", "t", "D")


@pytest.fixture
def emulator() -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    settings = EmulatorSettings(spare_kernels=0, reaper_interval=0.05)
    emulator = LocalEmulator(settings)
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=30) as http:
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        yield emulator, http


def _sandbox(http: httpx.Client, **body: object) -> str:
    data = http.post("/sandboxes", json={"templateName": "t", **body}).json()["data"]
    return str(data["sandboxId"])


def _status(http: httpx.Client, sid: str) -> str:
    return str(http.get(f"/sandboxes/{sid}").json()["data"]["status"])


def _members(http: httpx.Client, sid: str) -> list[int]:
    items = http.get(f"/sandboxes/{sid}/processes").json()["items"]
    return [m for item in items for m in group_members(item["processId"])]


def _held(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] in _HELD


def test_pause_holds_every_process_and_resume_lets_them_run_with_state_kept(
    emulator: tuple[LocalEmulator, httpx.Client],
) -> None:
    local, http = emulator
    sid = _sandbox(http)
    ctx = http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"}).json()["id"]
    run = {"contextId": ctx, "code": "x = 41"}
    assert http.post(f"/sandboxes/{sid}/contexts/execute", json=run).status_code == 200
    http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 60 &"})
    pids = _members(http, sid)
    assert len(pids) >= 2  # the kernel and the background sleep

    paused = http.put(f"/2025-09-10/sandboxes/{sid}/pause").json()["data"]
    assert paused["status"] == "PAUSED"
    # (the shell that put `sleep` in the background may have exited after the listing)
    wait_until(
        lambda: not [p for p in pids if alive(p) and not _held(p)],
        lambda: f"every process held; running: {[p for p in pids if alive(p) and not _held(p)]}",
    )
    assert local.core is not None
    cgroup = local.core.sandboxes[sid].launch.cgroup  # type: ignore[union-attr]
    if cgroup is not None and cgroup.freezer is not None:  # the freezer, not signals, held them
        state = os.path.join(cgroup.freezer, "freezer.state")
        if os.path.exists(state):
            with open(state) as fh:
                assert fh.read().strip() == "FROZEN"
    # pausing twice is no error, and the health check says what the sandbox is
    assert http.put(f"/2025-09-10/sandboxes/{sid}/pause").json()["data"]["status"] == "PAUSED"
    assert http.get(f"/sandboxes/{sid}/health").json()["status"] == "paused"

    resumed = http.put(f"/2025-09-10/sandboxes/{sid}/resume").json()["data"]
    assert resumed["status"] == "READY"
    assert [p for p in pids if _held(p)] == []
    out = http.post(
        f"/sandboxes/{sid}/contexts/execute", json={"contextId": ctx, "code": "x + 1"}
    ).json()
    assert [r["text"] for r in out["results"] if r["type"] == "result"] == ["42"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "contexts/execute", {"code": "1"}),
        ("POST", "processes/cmd", {"command": "true"}),
        ("GET", "files?path=/home/user/a.txt", None),
        ("GET", "processes", None),
    ],
    ids=["execute", "command", "read-file", "processes"],
)
def test_a_paused_sandbox_refuses_work_with_409_naming_resume(
    emulator: tuple[LocalEmulator, httpx.Client], method: str, path: str, body: object
) -> None:
    _, http = emulator
    sid = _sandbox(http)
    http.put(f"/2025-09-10/sandboxes/{sid}/pause")
    answer = http.request(method, f"/sandboxes/{sid}/{path}", json=body)
    assert answer.status_code == 409
    error = answer.json()
    assert error["code"] == "ERR_CONFLICT"
    assert "PAUSED" in error["message"]
    assert "resume" in error["message"]


def test_resume_of_a_running_sandbox_is_no_error_and_of_a_stopped_one_is_409(
    emulator: tuple[LocalEmulator, httpx.Client],
) -> None:
    _, http = emulator
    sid = _sandbox(http)
    assert http.put(f"/2025-09-10/sandboxes/{sid}/resume").json()["data"]["status"] == "READY"
    http.post(f"/sandboxes/{sid}/stop")
    assert http.put(f"/2025-09-10/sandboxes/{sid}/resume").status_code == 409
    assert http.put(f"/2025-09-10/sandboxes/{sid}/pause").status_code == 409


def test_stopping_a_paused_sandbox_kills_every_process(
    emulator: tuple[LocalEmulator, httpx.Client],
) -> None:
    _, http = emulator
    sid = _sandbox(http)
    http.post(f"/sandboxes/{sid}/contexts", json={"language": "python"})
    http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 60 &"})
    pids = _members(http, sid)
    http.put(f"/2025-09-10/sandboxes/{sid}/pause")
    assert http.post(f"/sandboxes/{sid}/stop").json()["data"]["status"] == "TERMINATED"
    assert still_alive(pids) == []


def test_the_idle_timeout_does_not_stop_a_paused_sandbox(
    emulator: tuple[LocalEmulator, httpx.Client],
) -> None:
    _, http = emulator
    paused = _sandbox(http, sandboxIdleTimeoutSeconds=1)
    http.put(f"/2025-09-10/sandboxes/{paused}/pause")
    idle = _sandbox(http, sandboxIdleTimeoutSeconds=1)  # younger, so reaped no sooner
    wait_until(lambda: _status(http, idle) == "TERMINATED", "the idle sandbox to be reaped")
    assert _status(http, paused) == "PAUSED"
    # resumed, its idle clock starts again from now
    assert http.put(f"/2025-09-10/sandboxes/{paused}/resume").json()["data"]["status"] == "READY"
    wait_until(lambda: _status(http, paused) == "TERMINATED", "the resumed sandbox to idle out")
