"""One PID namespace per local sandbox, as on AgentRun (one container per sandbox): every
command and kernel of a sandbox sees the others' processes, a background job outlives
its command, and nothing of the sandbox outlives its deletion. Over HTTP, jailed, in
both ways the jail is built."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest

pytest.importorskip("jupyter_client")

from support import still_alive, wait_until

from agentrun_ci.local import EmulatorSettings, LocalEmulator, _jail, _probe

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or shutil.which("bwrap") is None
    or shutil.which("nsenter") is None,
    reason="a sandbox's shared namespaces need Linux, bubblewrap and util-linux nsenter",
)

_MODES = [
    pytest.param(
        {},
        id="sandbox-uid",
        marks=pytest.mark.skipif(os.geteuid() != 0, reason="the same as user-namespace"),
    ),
    pytest.param({"sandbox_uid": None}, id="user-namespace"),
]


@pytest.fixture(scope="module", params=_MODES)
def emu(request: pytest.FixtureRequest) -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1, **request.param))
    try:
        config = emulator.start()
        assert emulator.core is not None
        jail = emulator.core.jail
        assert jail is not None, "bwrap is installed but the jail did not start"
        assert jail.shares_namespaces
        with httpx.Client(base_url=str(config.data_endpoint), timeout=60) as client:
            client.post("/2025-09-10/templates", json={"templateName": "ns"})
            yield emulator, client
    finally:
        emulator.stop()


@pytest.fixture
def sid(emu: tuple[LocalEmulator, httpx.Client]) -> Iterator[str]:
    _, http = emu
    r = http.post("/sandboxes", json={"templateName": "ns"})
    assert r.status_code == 200, r.text
    sandbox_id = str(r.json()["data"]["sandboxId"])
    yield sandbox_id
    http.delete(f"/sandboxes/{sandbox_id}")


def _cmd(http: httpx.Client, sid: str, command: str, **extra: object) -> dict[str, object]:
    r = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": command, **extra})
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()["result"]
    return result


def _run(http: httpx.Client, sid: str, code: str) -> str:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code})
    assert r.status_code == 200, r.text
    events = r.json()["results"]
    errors = [e for e in events if e["type"] == "error"]
    assert not errors, errors
    return "".join(e.get("text") or "" for e in events if e["type"] == "stdout")


def _marker() -> str:
    """A `sleep` argument no other process on the machine has: `sleep 300.<digits>`."""
    return f"300.{secrets.randbelow(10**9):09d}"


def _background(http: httpx.Client, sid: str, marker: str) -> int:
    """Start `sleep <marker>` detached from a command; its pid inside the sandbox."""
    out = _cmd(http, sid, f"nohup setsid sleep {marker} >/dev/null 2>&1 & echo $!")
    assert out["exitCode"] == 0, out
    return int(str(out["stdout"]).strip())


def _host_pids(marker: str) -> list[int]:
    """Host pids of the live processes whose command line has `marker`."""
    found = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def _seen_inside(http: httpx.Client, sid: str, marker: str) -> bool:
    """Does a command of `sid` find a process whose command line has `marker`?"""
    # a pattern that does not match itself: grep's and the shell's command lines hold it
    pattern = marker.replace(".", "[.]")
    out = _cmd(http, sid, f"grep -lsE -- '{pattern}' /proc/[0-9]*/cmdline; true")
    return bool(str(out["stdout"]).strip())


def test_a_background_job_is_seen_and_killed_by_later_commands(
    emu: tuple[LocalEmulator, httpx.Client], sid: str
) -> None:
    _, http = emu
    marker = _marker()
    pid = _background(http, sid, marker)  # this command has ended; its job runs on
    out = _cmd(http, sid, f"kill -0 {pid} && tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert out["exitCode"] == 0, out
    assert f"sleep {marker}" in str(out["stdout"])
    assert _seen_inside(http, sid, marker)
    assert _cmd(http, sid, f"kill {pid}")["exitCode"] == 0
    wait_until(
        lambda: _cmd(http, sid, f"kill -0 {pid} 2>/dev/null")["exitCode"] != 0,
        f"pid {pid} still there after `kill {pid}` from another command",
    )
    assert still_alive(_host_pids(marker)) == []


def test_sandboxes_do_not_see_each_others_processes(
    emu: tuple[LocalEmulator, httpx.Client], sid: str
) -> None:
    _, http = emu
    r = http.post("/sandboxes", json={"templateName": "ns"})
    other = str(r.json()["data"]["sandboxId"])
    try:
        marker = _marker()
        _background(http, sid, marker)
        assert _seen_inside(http, sid, marker)
        assert not _seen_inside(http, other, marker)
        code = (
            "import glob\n"
            "print([p for p in glob.glob('/proc/[0-9]*/cmdline')"
            f" if b'{marker}' in open(p, 'rb').read()])"
        )
        assert _run(http, other, code).strip() == "[]"
    finally:
        http.delete(f"/sandboxes/{other}")


def test_a_kernel_and_a_command_share_the_pid_namespace(
    emu: tuple[LocalEmulator, httpx.Client], sid: str
) -> None:
    _, http = emu
    from_command = _marker()
    pid = _background(http, sid, from_command)
    seen = _run(
        http, sid, f"import os\nos.kill({pid}, 0)\nprint(open('/proc/{pid}/cmdline').read())"
    )
    assert from_command in seen
    from_kernel = _marker()
    code = (
        "import subprocess\n"
        f"p = subprocess.Popen(['sleep', '{from_kernel}'], start_new_session=True)\n"
        "print(p.pid)"
    )
    kernel_pid = int(_run(http, sid, code).strip())
    out = _cmd(http, sid, f"kill -0 {kernel_pid} && tr '\\0' ' ' < /proc/{kernel_pid}/cmdline")
    assert out["exitCode"] == 0, out
    assert from_kernel in str(out["stdout"])


def test_deleting_the_sandbox_kills_its_background_jobs_and_holder(
    emu: tuple[LocalEmulator, httpx.Client],
) -> None:
    emulator, http = emu
    sandbox_id = str(
        http.post("/sandboxes", json={"templateName": "ns"}).json()["data"]["sandboxId"]
    )
    marker = _marker()
    _background(http, sandbox_id, marker)
    # `$!` is known at the fork; the marker is on its command line from its exec on
    jobs = wait_until(lambda: _host_pids(marker), f"the background job {marker}")
    assert len(jobs) == 1, jobs
    assert emulator.core is not None
    launch = emulator.core.sandboxes[sandbox_id].launch
    assert launch is not None
    assert launch.holder is not None
    holder = [p for p in (launch.holder.pid, launch.holder.launcher_pid) if p is not None]
    assert len(holder) == 2
    assert http.delete(f"/sandboxes/{sandbox_id}").status_code == 200
    assert still_alive(jobs + holder) == []


def test_a_timed_out_command_loses_its_foreground_processes(
    emu: tuple[LocalEmulator, httpx.Client], sid: str
) -> None:
    _, http = emu
    marker = _marker()
    out = _cmd(http, sid, f"sleep {marker}", timeout=1)
    assert out["exitCode"] == 124, out
    assert still_alive(_host_pids(marker)) == []
    assert _cmd(http, sid, "echo still usable")["stdout"] == "still usable\n"


def test_where_a_holder_does_not_work_each_process_keeps_its_namespaces(
    tmp_path: Path,
) -> None:
    jail, why = _jail.find_jail(os.path.abspath(sys.executable), None)
    assert jail is not None, why
    broken = attrs.evolve(jail, nsenter=shutil.which("false") or "/bin/false")
    assert not _probe._with_holder(
        broken, tmp_path, os.path.abspath(sys.executable)
    ).shares_namespaces


_SERVE = """
import sys
from http.server import HTTPServer, SimpleHTTPRequestHandler
HTTPServer(("127.0.0.1", int(sys.argv[1])), SimpleHTTPRequestHandler).serve_forever()
"""

_FETCH = """
import time, urllib.request
end = time.monotonic() + {wait}
while True:
    try:
        print(urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=5).status)
        break
    except OSError as exc:
        if time.monotonic() > end:
            print(type(exc).__name__)
            break
        time.sleep(0.1)
"""


def test_without_network_a_sandbox_has_one_loopback_of_its_own() -> None:
    settings = EmulatorSettings(spare_kernels=0, no_network=True)
    port = 20000 + secrets.randbelow(30000)
    emulator = LocalEmulator(settings)
    with emulator as config:
        assert emulator.core is not None
        assert emulator.core.jail is not None
        assert emulator.core.jail.shares_namespaces
        with httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
            http.post("/2025-09-10/templates", json={"templateName": "ns"})
            a, b = (
                str(
                    http.post("/sandboxes", json={"templateName": "ns"}).json()["data"]["sandboxId"]
                )
                for _ in range(2)
            )
            serve = f"nohup setsid python3 -c '{_SERVE}' {port} >/dev/null 2>&1 &"
            assert _cmd(http, a, serve)["exitCode"] == 0
            # the command's server, from a kernel of the same sandbox (waits until it listens)
            assert _run(http, a, _FETCH.format(port=port, wait=30)).strip() == "200"
            # not from another sandbox, nor from the host's loopback
            assert _run(http, b, _FETCH.format(port=port, wait=0)).strip() != "200"
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
