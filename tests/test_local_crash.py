"""A SIGKILLed emulator leaves nothing behind (issue #7).

Its kernels and commands die with it (parent-death signal, `unshare --kill-child`);
whatever survives anyway, and its temporary directory and pids cgroup, the next
emulator start sweeps, judging "dead" by pid *and* process start time.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

pytest.importorskip("jupyter_client")

from support import alive, remaining, wait_until

from agentrun_ci.local import EmulatorSettings, LocalEmulator
from agentrun_ci.local._limits import instance_name, pid_namespace_works, sweep_stale

_SERVER = """
import sys
from agentrun_ci.local import EmulatorSettings, LocalEmulator
emulator = LocalEmulator(EmulatorSettings(spare_kernels=1, pid_namespace=NAMESPACE))
emulator.start()
print(emulator.url, flush=True)
sys.stdin.read()
"""


def _running(marker: str) -> list[int]:
    """Live pids whose command line holds `marker` (a unique sleep duration)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv and alive(int(name)):
            found.append(int(name))
    return found


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _under(base: str) -> list[int]:
    """Live pids with a HOME or working directory inside `base` (every sandboxed child)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if (cwd.startswith(base) or b"HOME=" + base.encode() in env) and alive(int(name)):
            found.append(int(name))
    return found


@pytest.mark.parametrize("namespace", [True, False], ids=["pid-namespace", "no-namespace"])
def test_a_sigkilled_emulator_leaves_no_process_directory_or_cgroup(namespace: bool) -> None:
    tag = f"{1000 + secrets.randbelow(10**6) / 1000:.3f}"  # sleep 1xxx.yyy: unique here
    marks = [tag + suffix for suffix in ("1", "2", "3")]
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER.replace("NAMESPACE", str(namespace))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), url
        with httpx.Client(base_url=url, timeout=60) as http:
            http.post("/2025-09-10/templates", json={"templateName": "crash"})
            made = http.post("/sandboxes", json={"templateName": "crash"})
            if made.status_code == 500 and "would run as root" in made.text:
                pytest.skip(made.json()["message"])  # no jail, and no uid to run as here
            sid = made.json()["data"]["sandboxId"]
            code = f"import subprocess; subprocess.Popen(['sleep', '{marks[0]}'])"
            run = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code})
            assert run.json()["results"][-1]["status"] == "ok", run.text
            # a background job, and one that leaves the process group with setsid
            command = f"sleep {marks[1]} & setsid sleep {marks[2]} & echo started"
            cmd = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": command})
            assert cmd.json()["result"]["stdout"] == "started\n", cmd.text
        wait_until(lambda: all(_running(m) for m in marks), "the three sleeps to run")
        bases = glob.glob(os.path.join(tempfile.gettempdir(), f"agentrun-local-{server.pid}.*"))
        cgroups = glob.glob(f"/sys/fs/cgroup/pids/agentrun-local-{server.pid}.*") + glob.glob(
            f"/sys/fs/cgroup/agentrun-local-{server.pid}.*"
        )
        assert len(bases) == 1, bases
        assert _under(bases[0])  # the kernels (spare and adopted) and commands
        # and, jailed with an uplink tool, the PUBLIC sandbox's uplink (`_network.py`)
        uplinks = [p for p in _under(bases[0]) if _comm(p) in ("slirp4netns", "pasta")]
        if namespace and shutil.which("bwrap") and shutil.which("slirp4netns"):
            assert uplinks
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
        for pipe in (server.stdin, server.stdout):
            if pipe is not None:
                pipe.close()

    if namespace and pid_namespace_works(sys.executable):
        # every child sits under an `unshare --kill-child` with a parent-death signal:
        # they die with the server, before any sweep
        assert remaining(lambda: [p for m in marks for p in _running(m)]) == []
        assert remaining(lambda: _under(bases[0])) == []
    # the next emulator start, in any process, removes the rest
    with LocalEmulator(EmulatorSettings(spare_kernels=0)):
        pass
    assert [_running(m) for m in marks] == [[], [], []]
    assert _under(bases[0]) == []
    assert not os.path.exists(bases[0])
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:  # its sandboxes' disks too
        assert bases[0] not in fh.read()
    assert [c for c in cgroups if os.path.exists(c)] == []


def test_the_sweep_judges_death_by_pid_and_start_time(tmp_path: Path) -> None:
    """A reused pid does not keep a dead emulator's leftovers; a live emulator's stay."""
    ours = tmp_path / f"{instance_name()}-live"
    reused = tmp_path / f"agentrun-local-{os.getpid()}.1-dead"  # our pid, another start
    legacy = tmp_path / "agentrun-local-999999999-old"  # the old name: pid only
    for path in (ours, reused, legacy):
        (path / "sandboxes" / "s").mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(reused / "sandboxes" / "s")}
    orphan = subprocess.Popen(["sleep", "1000"], env=env, cwd=reused / "sandboxes" / "s")
    try:
        removed = sweep_stale(str(tmp_path))
        orphan.wait(timeout=10)  # killed by the sweep
        assert orphan.returncode == -signal.SIGKILL
        assert ours.exists()
        assert not reused.exists()
        assert not legacy.exists()
        assert {str(reused), str(legacy)} <= set(removed)
    finally:
        if orphan.returncode is None:
            orphan.kill()
            orphan.wait()


_FORGOTTEN = """
from agentrun_ci import CodeInterpreter
ci = CodeInterpreter.from_env()  # no credentials: the embedded local emulator
ci.create_interpreter(name="forgotten")
ci.start_session()
run = ci.execute_code("import subprocess; subprocess.Popen(['sleep', 'MARK']); print('ok')")
print(run.stdout.strip(), flush=True)
# no close(), no `with`: the script just ends, as scripts and notebooks do
"""


def test_a_script_that_never_closes_leaves_nothing_at_exit(tmp_path: Path) -> None:
    """Cleanup that runs from atexit cannot use worker threads any more; it must still run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENTRUN_", "ALIBABA_CLOUD_", "FC_"))
    }
    env["TMPDIR"] = str(tmp_path)  # too deep for a Unix socket path: sockets go to /tmp
    mark = f"{2000 + secrets.randbelow(10**6) / 1000:.3f}"
    script = subprocess.Popen(
        [sys.executable, "-c", _FORGOTTEN.replace("MARK", mark)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = script.communicate(timeout=120)
    assert script.returncode == 0, err
    assert out.strip() == "ok", err
    assert "Traceback" not in err, err
    assert "cleanup step failed" not in err, err
    assert "loopback TCP" not in err, err
    assert _under(str(tmp_path)) == []  # kernels, spare kernels
    assert _running(mark) == []  # what the code started
    assert os.listdir(tmp_path) == []  # the emulator's temp dir, sandbox homes, spare kernels
    assert glob.glob(f"/tmp/agentrun-local-{script.pid}.*") == []  # its socket dir
    cgroups = glob.glob(f"/sys/fs/cgroup/pids/agentrun-local-{script.pid}.*") + glob.glob(
        f"/sys/fs/cgroup/agentrun-local-{script.pid}.*"
    )
    assert cgroups == []
