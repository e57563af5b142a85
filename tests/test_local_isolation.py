"""What the emulator keeps away from the host: paths, secrets, memory, processes, time."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("jupyter_client")

from support import alive, running_emulator, still_alive

from agentrun_ci.local import EmulatorSettings, LocalEmulator

SECRET = "s3cr3t-value-never-visible"


def _host_pid(inner: int, anchors: list[int]) -> int:
    """The host pid of a pid printed inside the sandbox, whose kernels and commands (the
    `anchors`, as the processes API lists them) may each have their own PID namespace."""
    spaces = set()
    for anchor in anchors:
        with contextlib.suppress(OSError):
            own = os.readlink(f"/proc/{anchor}/ns/pid")
            if os.readlink(f"/proc/{anchor}/ns/pid_for_children") != own:
                spaces.add(os.readlink(f"/proc/{anchor}/ns/pid_for_children"))
        # bubblewrap clones its child into the new namespace (unshare enters it first)
        for child in _children(anchor):
            with contextlib.suppress(OSError):
                spaces.add(os.readlink(f"/proc/{child}/ns/pid"))
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            space = os.readlink(f"/proc/{name}/ns/pid")
            with open(f"/proc/{name}/status") as fh:
                nspid = next(line for line in fh if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        if space in spaces and int(nspid[-1]) == inner:
            return int(name)
    return inner


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    os.environ["AGENTRUN_ACCESS_KEY_SECRET"] = SECRET
    os.environ["MY_SERVICE_TOKEN"] = SECRET
    settings = EmulatorSettings(memory_mb=1024, max_processes=64, spare_kernels=1)
    try:
        with (
            running_emulator(settings) as (emulator, config),
            httpx.Client(base_url=str(config.data_endpoint), timeout=60) as client,
        ):
            client.post("/2025-09-10/templates", json={"templateName": "iso"})
            yield emulator, client
    finally:
        del os.environ["AGENTRUN_ACCESS_KEY_SECRET"]
        del os.environ["MY_SERVICE_TOKEN"]


@pytest.fixture
def sid(emu: tuple[LocalEmulator, httpx.Client]) -> Iterator[str]:
    _, http = emu
    sandbox_id = http.post("/sandboxes", json={"templateName": "iso"}).json()["data"]["sandboxId"]
    yield sandbox_id
    http.delete(f"/sandboxes/{sandbox_id}")


def _run(http: httpx.Client, sid: str, code: str, **extra: object) -> list[dict[str, object]]:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code, **extra})
    assert r.status_code == 200, r.text
    return r.json()["results"]  # type: ignore[no-any-return]


def test_path_traversal_and_symlink_escape_refused(
    emu: tuple[LocalEmulator, httpx.Client], sid: str
) -> None:
    _, http = emu
    for path in ("/etc/passwd", "/home/user/../../etc/passwd", "../x", "a/../../b"):
        r = http.get(f"/sandboxes/{sid}/files", params={"path": path})
        assert r.status_code == 400, (path, r.text)
        w = http.post(f"/sandboxes/{sid}/files", json={"path": path, "content": "x"})
        assert w.status_code == 400, (path, w.text)
    # a symlink made inside the sandbox that points out of it
    _run(http, sid, "import os; os.symlink('/etc', 'link'); os.symlink('/etc/passwd', 'pw')")
    for path in ("link/passwd", "/home/user/pw"):
        assert http.get(f"/sandboxes/{sid}/files", params={"path": path}).status_code == 400
        assert (
            http.get(f"/sandboxes/{sid}/filesystem/download", params={"path": path}).status_code
            == 400
        )
    assert (
        http.post(f"/sandboxes/{sid}/files", json={"path": "link/evil", "content": "x"}).status_code
        == 400
    )
    assert not os.path.exists("/etc/evil")
    up = http.post(
        f"/sandboxes/{sid}/filesystem/upload",
        files={"file": ("e", b"x")},
        data={"path": "link/evil2"},
    )
    assert up.status_code == 400
    assert (
        http.post(
            f"/sandboxes/{sid}/filesystem/move", json={"source": "pw", "destination": "/var/x"}
        ).status_code
        == 400
    )


def test_environment_is_scrubbed(emu: tuple[LocalEmulator, httpx.Client], sid: str) -> None:
    _, http = emu
    out = _run(http, sid, "import os; print(sorted(os.environ.items()))")
    text = str(out[0]["text"])
    assert SECRET not in text
    assert "AGENTRUN_ACCESS_KEY_SECRET" not in text
    assert "'HOME'" in text
    home = _run(http, sid, "import os; print(os.environ['HOME'] == os.getcwd())")
    assert home[0]["text"] == "True\n"
    cmd = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "env"}).json()
    assert SECRET not in cmd["result"]["stdout"]
    assert "MY_SERVICE_TOKEN" not in cmd["result"]["stdout"]
    assert "HOME=" in cmd["result"]["stdout"]


def test_memory_hog_is_contained(emu: tuple[LocalEmulator, httpx.Client], sid: str) -> None:
    _, http = emu
    out = _run(http, sid, "x = 'k'\nhog = bytearray(4 * 1024 ** 3)")
    assert out[-1]["status"] == "error"
    assert any(e.get("name") == "MemoryError" for e in out)
    assert _run(http, sid, "x")[0]["text"] == "'k'"  # same kernel, state intact


def _sandbox_pids(emulator: LocalEmulator, sid: str) -> list[int]:
    """Every live process of the sandbox: its pids cgroup, else its process groups."""
    from agentrun_ci.local._limits import group_members

    assert emulator.core is not None
    sandbox = emulator.core.sandboxes[sid]
    if sandbox.launch is not None and sandbox.launch.cgroup is not None:
        return [p for p in sandbox.launch.cgroup.pids() if alive(p)]
    return [m for pid in sandbox.processes for m in group_members(pid)]


def test_fork_bomb_is_contained(emu: tuple[LocalEmulator, httpx.Client], sid: str) -> None:
    emulator, http = emu
    bomb = http.post(
        f"/sandboxes/{sid}/processes/cmd",
        json={"command": "b() { b | b & }; b; sleep 1", "timeout": 3},
    ).json()
    assert bomb["status"] in ("completed", "timeout")
    # capped at max_processes (64) while it rages; the server keeps answering
    assert len(_sandbox_pids(emulator, sid)) <= 64
    assert http.get(f"/sandboxes/{sid}/health").json()["status"] == "ok"
    pids = _sandbox_pids(emulator, sid)
    http.post(f"/sandboxes/{sid}/stop")
    assert still_alive(pids) == []
    # a fresh sandbox works normally afterwards
    other = http.post("/sandboxes", json={"templateName": "iso"}).json()["data"]["sandboxId"]
    r = http.post(f"/sandboxes/{other}/processes/cmd", json={"command": "echo alive"})
    assert r.json()["result"]["stdout"] == "alive\n"
    http.delete(f"/sandboxes/{other}")


def test_infinite_loop_is_interrupted(emu: tuple[LocalEmulator, httpx.Client], sid: str) -> None:
    _, http = emu
    _run(http, sid, "state = 123")
    out = _run(http, sid, "while True:\n    pass", timeout=1)
    assert out[-1]["status"] == "timeout"
    assert _run(http, sid, "state + 1")[0]["text"] == "124"


def _kernel_pids(http: httpx.Client, sid: str, status: str = "running") -> list[int]:
    items = http.get(f"/sandboxes/{sid}/processes").json()["items"]
    return [p["processId"] for p in items if p["status"] == status or not status]


def test_no_process_left_after_context_delete_and_stop(
    emu: tuple[LocalEmulator, httpx.Client], sid: str
) -> None:
    _, http = emu
    ctx = http.post(f"/sandboxes/{sid}/contexts", json={}).json()["id"]
    child = _run(
        http, sid, "import subprocess; p = subprocess.Popen(['sleep', '60']); p.pid", contextId=ctx
    )
    kernel = next(
        p
        for p in http.get(f"/sandboxes/{sid}/processes").json()["items"]
        if p["tag"] == f"context:{ctx}"
    )["processId"]
    child_pid = _host_pid(int(str(child[0]["text"])), [kernel])
    assert alive(child_pid)
    assert alive(kernel)
    assert http.delete(f"/sandboxes/{sid}/contexts/{ctx}").status_code == 204
    assert still_alive([kernel, child_pid]) == []
    # sandbox stop: a kernel, a background command, and its files
    _run(http, sid, "1")
    http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 60 & echo $!"})
    pids = _kernel_pids(http, sid)
    bg = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 61 & echo $!"})
    pids.append(_host_pid(int(bg.json()["result"]["stdout"]), _kernel_pids(http, sid, "")))
    assert all(alive(p) for p in pids)
    http.post(f"/sandboxes/{sid}/stop")
    assert still_alive(pids) == []


def test_nothing_left_after_emulator_shutdown() -> None:
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1))
    config = emulator.start()
    with httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        sid = http.post("/sandboxes", json={"templateName": "t"}).json()["data"]["sandboxId"]
        _run(http, sid, "import subprocess; subprocess.Popen(['sleep', '60'])")
        bg = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": "sleep 62 & echo $!"})
        inner = int(bg.json()["result"]["stdout"])
        pids = [*_kernel_pids(http, sid), _host_pid(inner, _kernel_pids(http, sid, ""))]
        root = emulator.core.sandboxes[sid].root if emulator.core else None
    emulator.stop()
    assert still_alive(pids) == []
    assert root is not None
    assert not root.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare -n needs root (or user namespaces)")
def test_no_network_option() -> None:
    probe = (
        'python3 -c "import socket; s = socket.socket(); s.settimeout(2); '
        "print(s.connect_ex(('127.0.0.1', PORT)))\""
    )
    for no_network in (False, True):
        settings = EmulatorSettings(spare_kernels=0, no_network=no_network)
        emulator = LocalEmulator(settings)
        with (
            emulator as config,
            httpx.Client(base_url=str(config.data_endpoint), timeout=30) as http,
        ):
            # the emulator's port (on the host's loopback) is out of reach, unless a PUBLIC
            # sandbox shares the host's network: no uplink here (test_local_network.py)
            assert emulator.core is not None
            connected = not no_network and emulator.core.uplink is None
            port = str(config.data_endpoint).rsplit(":", 1)[1]
            http.post("/2025-09-10/templates", json={"templateName": "n"})
            sid = http.post("/sandboxes", json={"templateName": "n"}).json()["data"]["sandboxId"]
            r = http.post(
                f"/sandboxes/{sid}/processes/cmd", json={"command": probe.replace("PORT", port)}
            ).json()
            assert (r["result"]["stdout"].strip() == "0") is connected, r
            run = http.post(
                f"/sandboxes/{sid}/contexts/execute", json={"code": "print('kernel ok')"}
            ).json()
            assert run["results"][0]["text"] == "kernel ok\n"
