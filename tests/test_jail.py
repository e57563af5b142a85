"""Attacker tests for the local sandbox's jail (bubblewrap): what one sandbox's code may
not reach. Each attack is the one that worked before the jail (see docs/local-backend.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator, _jail, _memo, _probe

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("bwrap") is None,
    reason="the jail needs Linux and bubblewrap (apt-get install bubblewrap)",
)

SECRET = "jail-test-secret-4c1d"


# Both ways the jail is built: as root, bwrap privileged with the sandbox uid (its init
# drops every capability); otherwise (and as root with sandbox_uid=None) a user namespace.
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
    os.environ["AGENTRUN_JAIL_TEST_SECRET"] = SECRET
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1, **request.param))
    try:
        config = emulator.start()
        assert emulator.core is not None
        assert emulator.core.jail is not None, "bwrap is installed but the jail did not start"
        assert emulator.core.jail.privileged == ("sandbox_uid" not in request.param)
        with httpx.Client(base_url=str(config.data_endpoint), timeout=60) as client:
            client.post("/2025-09-10/templates", json={"templateName": "jail"})
            yield emulator, client
    finally:
        emulator.stop()
        del os.environ["AGENTRUN_JAIL_TEST_SECRET"]


def _sandbox(http: httpx.Client) -> str:
    r = http.post("/sandboxes", json={"templateName": "jail"})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["sandboxId"])


@pytest.fixture
def pair(emu: tuple[LocalEmulator, httpx.Client]) -> Iterator[tuple[str, str]]:
    _, http = emu
    a, b = _sandbox(http), _sandbox(http)
    yield a, b
    for sid in (a, b):
        http.delete(f"/sandboxes/{sid}")


def _run(http: httpx.Client, sid: str, code: str, **extra: object) -> str:
    """Run code; return its stdout (fails loudly on an error)."""
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code, **extra})
    assert r.status_code == 200, r.text
    events = r.json()["results"]
    errors = [e for e in events if e["type"] == "error"]
    assert not errors, errors
    return "".join(e.get("text") or "" for e in events if e["type"] == "stdout")


def _cmd(http: httpx.Client, sid: str, command: str, **extra: object) -> dict[str, object]:
    r = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": command, **extra})
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()["result"]
    return result


# Sandbox code hunting for every kernel connection file it can reach, then driving each
# kernel it finds: read a secret, plant a variable, kill it.
_HUNT = r"""
import glob, json, os, tempfile
from jupyter_client import BlockingKernelClient
places = [tempfile.gettempdir(), "/tmp", "/run", "/var/tmp", "/dev/shm", "/root", "/home"]
found = set()
for place in places:
    for pattern in ("**/*.json",):
        for path in glob.glob(os.path.join(place, pattern), recursive=True):
            try:
                info = json.load(open(path))
            except Exception:
                continue
            # only this test's emulator: never other emulators on the machine
            ours = os.path.realpath(path).startswith(BASE)
            if ours and isinstance(info, dict) and "shell_port" in info and "key" in info:
                found.add(path)
stolen = []
for path in sorted(found):
    kc = BlockingKernelClient(connection_file=path)
    try:
        kc.load_connection_file()
        kc.start_channels()
        kc.wait_for_ready(timeout=5)
        reply = kc.execute_interactive(
            "planted = 'PWNED'\ntry:\n    print(secret)\nexcept NameError:\n    pass",
            timeout=5, output_hook=lambda m: stolen.append(m["content"].get("text", "")),
        )
    except Exception:
        pass
    finally:
        kc.stop_channels()
print(json.dumps({"files": sorted(found), "stolen": stolen}))
"""


def test_a_cannot_read_run_in_or_plant_in_another_sandboxs_kernel(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    a, b = pair
    emulator, http = emu
    assert emulator.core is not None
    base = os.path.realpath(emulator.core.runtime.parent) + "/"
    _run(http, b, f"secret = {SECRET!r}")
    report = json.loads(_run(http, a, _HUNT.replace("BASE", repr(base))))
    assert not any(SECRET in text for text in report["stolen"]), report
    # B's kernel is untouched, and so is the spare kernel a new sandbox gets
    assert _run(http, b, "print(secret, globals().get('planted'))") == f"{SECRET} None\n"
    c = _sandbox(http)
    try:
        assert _run(http, c, "print(globals().get('planted'))") == "None\n"
    finally:
        http.delete(f"/sandboxes/{c}")


def test_a_cannot_see_or_kill_another_sandboxs_processes(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    a, b = pair
    _run(http, b, "x = 1")
    code = (
        "import os, signal\n"
        "def parent(pid):\n"
        "    return int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "mine, pid = {os.getpid(), 1}, os.getpid()\n"
        "while pid > 1:\n"
        "    pid = parent(pid)\n"
        "    mine.add(pid)\n"
        "others = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in mine]\n"
        "for pid in others:\n"
        "    try: os.kill(pid, signal.SIGKILL)\n"
        "    except OSError: pass\n"
        "print(sorted(others))"
    )
    # only its own sandbox's processes are visible: the kernel and its launchers up to the
    # sandbox's PID 1 (`_holder.py`), none here besides
    assert _run(http, a, code) == "[]\n"
    assert _run(http, b, "print(x)") == "1\n"


def test_a_cannot_read_or_write_another_sandboxs_files(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    a, b = pair
    w = http.post(f"/sandboxes/{b}/files", json={"path": "/home/user/b.txt", "content": SECRET})
    assert w.status_code == 200, w.text
    # and in B's private /tmp, which A's /tmp is not
    assert _cmd(http, b, f"echo {SECRET} > /tmp/b.txt; cat /tmp/b.txt")["stdout"] == f"{SECRET}\n"
    # before the jail every sandbox lived under one temp dir that all of them could reach
    hunt = (
        "import glob, os, tempfile\n"
        "hits = []\n"
        "for base in {tempfile.gettempdir(), '/tmp', '/home', '/root'}:\n"
        "    for path in glob.glob(base + '/**/b.txt', recursive=True):\n"
        "        hits.append(open(path).read())\n"
        "    for d in glob.glob(base + '/agentrun-local-*/sandboxes/*/'):\n"
        "        try: open(os.path.join(d, 'pwned.txt'), 'w').write('x')\n"
        "        except OSError: pass\n"
        "print(SECRET in ''.join(hits))"
    ).replace("SECRET", repr(SECRET))
    assert _run(http, a, hunt) == "False\n"
    listing = http.get(f"/sandboxes/{b}/filesystem", params={"path": "/home/user"}).json()
    names = [e["name"] for e in listing["entries"]]
    assert names == ["b.txt"], names


def test_code_cannot_read_the_servers_environment(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    a, _ = pair
    code = (
        "import glob\n"
        f"paths = glob.glob('/proc/*/environ') + ['/proc/{os.getpid()}/environ']\n"
        "data = b''\n"
        "for p in paths:\n"
        "    try: data += open(p, 'rb').read()\n"
        "    except OSError: pass\n"
        f"print({SECRET!r}.encode() in data)"
    )
    assert _run(http, a, code) == "False\n"
    out = _cmd(http, a, f"cat /proc/*/environ /proc/{os.getpid()}/environ 2>/dev/null; env")
    assert SECRET not in str(out["stdout"])


def test_code_commands_and_the_file_api_agree_on_home_user(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    sid, _ = pair
    assert _run(http, sid, "import os; print(os.getcwd(), os.environ['HOME'])") == (
        "/home/user /home/user\n"
    )
    _run(http, sid, "open('/home/user/from_code.txt', 'w').write('code')")
    up = http.post(f"/sandboxes/{sid}/files", json={"path": "from_api.txt", "content": "api"})
    assert up.status_code == 200, up.text
    _cmd(http, sid, "mkdir -p sub && echo cmd > /home/user/sub/from_cmd.txt")
    api = http.get(f"/sandboxes/{sid}/files", params={"path": "/home/user/from_code.txt"})
    assert api.json()["content"] == "code"
    assert _run(http, sid, "print(open('/home/user/from_api.txt').read())") == "api\n"
    listed = _cmd(http, sid, "pwd; ls /home/user")["stdout"]
    assert listed == "/home/user\nfrom_api.txt\nfrom_code.txt\nsub\n"
    entries = http.get(f"/sandboxes/{sid}/filesystem", params={"path": "/home/user"}).json()
    assert sorted(e["name"] for e in entries["entries"]) == ["from_api.txt", "from_code.txt", "sub"]
    # a context may start in any existing directory, as the sandbox sees it
    for cwd in ("/home/user/sub", "sub", "/tmp", "/root", "/usr"):
        ctx = http.post(f"/sandboxes/{sid}/contexts", json={"cwd": cwd})
        assert ctx.status_code == 200, (cwd, ctx.text)
        want = cwd if cwd.startswith("/") else f"/home/user/{cwd}"
        got = _run(http, sid, "import os; print(os.getcwd())", contextId=ctx.json()["id"])
        assert got == f"{want}\n"
        http.delete(f"/sandboxes/{sid}/contexts/{ctx.json()['id']}")
    assert _cmd(http, sid, "pwd", cwd="/tmp")["stdout"] == "/tmp\n"
    bad = http.post(f"/sandboxes/{sid}/contexts", json={"cwd": "/no/such/dir"})
    assert bad.status_code == 400
    assert "not an existing directory" in bad.text


def test_writes_outside_home_and_tmp_fail(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    sid, _ = pair
    code = (
        "import os\n"
        "ok = []\n"
        "for d in ('/', '/etc', '/usr', '/usr/local/bin', '/root', '/home', '/opt/agentrun',\n"
        "          os.path.dirname(os.__file__), '/home/user', '/tmp'):\n"
        "    try:\n"
        "        open(os.path.join(d, 'jail-probe'), 'w').close()\n"
        "        os.unlink(os.path.join(d, 'jail-probe'))\n"
        "        ok.append(d)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(ok)"
    )
    assert _run(http, sid, code) == "['/home/user', '/tmp']\n"
    # and what the host keeps secret is not there to read: /root holds only the way to
    # the kernel's interpreter when it lives there (read-only), /home only the workspace
    emulator, _ = emu
    assert emulator.core is not None
    assert emulator.core.jail is not None
    needed = {p.split("/")[2] for p in emulator.core.jail.extra if p.startswith("/root/")}
    out = _cmd(http, sid, "cat /etc/shadow /etc/gshadow; ls -A /root; echo --; ls -A /home")
    root, home = str(out["stdout"]).split("--\n")
    assert set(root.split()) == needed
    assert home == "user\n"
    assert "root:" not in str(out["stdout"])


def test_proc_sys_and_cgroups_are_not_writable(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    sid, _ = pair
    # Each write puts back the value it read: harmless where it (wrongly) succeeds.
    code = r"""
import glob, os
written = []
targets = ["/proc/sys/vm/overcommit_ratio", "/proc/sys/kernel/pid_max"]
for line in open("/proc/self/cgroup"):
    path = line.strip().split(":", 2)[2]
    for base in glob.glob("/sys/fs/cgroup/*") + ["/sys/fs/cgroup"]:
        targets += [base + path + "/pids.max", base + path + "/memory.limit_in_bytes",
                    base + path + "/cgroup.procs", base + "/cgroup.procs"]
for target in targets:
    try:
        value = open(target).read()
        with open(target, "w") as fh:
            fh.write(value.split()[0] if value.strip() else value)
        written.append(target)
    except (OSError, IndexError):
        pass
print(written)
"""
    assert _run(http, sid, code) == "[]\n"
    caps = _cmd(http, sid, "grep -E '^Cap(Eff|Prm|Bnd|Amb|Inh)' /proc/self/status")["stdout"]
    assert all(line.endswith("0000000000000000") for line in str(caps).splitlines()), caps


def test_code_cannot_make_a_user_namespace_of_its_own(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    """`unshare -Urm` made sandboxed code root in a namespace of its own, with mounts."""
    _, http = emu
    sid, _ = pair
    for command in ("unshare -U true", "unshare -Urm true", "unshare -Urm mount -t tmpfs t /mnt"):
        result = _cmd(http, sid, command)
        assert result["exitCode"] != 0, (command, result)
        assert "Operation not permitted" in str(result["stderr"]), result
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "said = []\n"
        "for flags in (0x10000000, 0x10000000 | 0x00020000):\n"
        "    said.append((libc.unshare(flags), ctypes.get_errno()))\n"
        "print(said, os.getuid() != 0)"
    )
    eperm = 1
    assert _run(http, sid, code) == f"[(-1, {eperm}), (-1, {eperm})] True\n"
    # ordinary process creation is unaffected (clone3 falls back to clone)
    spawn = "python -c 'import os; os.wait() if os.fork() else os._exit(0)'"
    assert _cmd(http, sid, f"sh -c 'true & wait' && {spawn} && echo ok")["stdout"] == "ok\n"


def test_missing_bubblewrap_is_said_at_every_start_with_its_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _jail.find_jail.cache_clear()
    real = shutil.which
    monkeypatch.setattr(
        "agentrun_ci.local._jail.shutil.which", lambda n: None if n == "bwrap" else real(n)
    )
    try:
        jail, why = _jail.find_jail(sys.executable, None)
    finally:
        _jail.find_jail.cache_clear()
    assert jail is None
    assert "NOT isolated" in why
    assert "apt-get install bubblewrap" in why
    with caplog.at_level(logging.INFO, logger="agentrun_ci.local"):
        _probe._warn_lost(why)
        _probe._warn_lost(why)  # the next start, in this process or another: said again
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [(logging.WARNING, f"{why} (docs/local-backend.md)")] * 2


@pytest.mark.skipif(os.geteuid() != 0, reason="memory cgroups need root")
def test_a_sandbox_is_capped_at_its_templates_memory_in_total(
    emu: tuple[LocalEmulator, httpx.Client],
) -> None:
    emulator, http = emu
    http.post("/2025-09-10/templates", json={"templateName": "small", "memory": 300})
    sid = str(http.post("/sandboxes", json={"templateName": "small"}).json()["data"]["sandboxId"])
    try:
        sandbox = emulator.core.sandboxes[sid] if emulator.core else None
        assert sandbox is not None
        cgroup = sandbox.launch.cgroup if sandbox.launch else None
        if cgroup is None or cgroup.memory is None:
            pytest.skip("no writable memory cgroup here")
        # each process stays well under RLIMIT_AS (2048 MB); together they pass 300 MB
        hog = "python -c 'import time; b = bytearray(200 * 2**20); time.sleep(3)'"
        # each waited for by its pid: `wait -n` says 127 (no job) when both ended before it
        # was called, which a loaded machine makes likely
        both = f"{hog} & a=$!; {hog} & b=$!; wait $a; echo $?; wait $b; echo $?"
        assert "137" in str(_cmd(http, sid, both, timeout=20)["stdout"]).split()
        # the same in a sandbox of the default template (4096 MB) runs to the end
        other = _sandbox(http)
        try:
            assert str(_cmd(http, other, both, timeout=20)["stdout"]).split() == ["0", "0"]
        finally:
            http.delete(f"/sandboxes/{other}")
    finally:
        http.delete(f"/sandboxes/{sid}")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs bwrap privileged")
def test_a_sandbox_uid_that_cannot_run_the_interpreter_gets_a_user_namespace(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = _probe._run_in_jail

    def refuse_privileged(jail: _jail.Jail, scratch: Path, python: str) -> str:
        return "permission denied" if jail.privileged else real(jail, scratch, python)

    monkeypatch.setattr(_probe, "_run_in_jail", refuse_privileged)
    monkeypatch.setattr(_probe, "_jail_works", {})
    monkeypatch.setattr(_memo, "_machine", _memo.ProbeMemo(None))  # what worked before: not
    with caplog.at_level(logging.WARNING, logger="agentrun_ci.local"):
        emulator = LocalEmulator(EmulatorSettings(spare_kernels=0))
        with emulator:
            assert emulator.core is not None
            assert emulator.core.jail is not None
            assert not emulator.core.jail.privileged
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "cannot run" in said
    assert "user namespace" in said


@pytest.mark.parametrize(
    "privileged",
    [
        pytest.param(
            True, marks=pytest.mark.skipif(os.geteuid() != 0, reason="bwrap privileged as root")
        ),
        False,
    ],
    ids=["sandbox-uid", "user-namespace"],
)
def test_an_interpreter_in_a_venv_below_tmp_runs_in_the_jail(
    privileged: bool, tmp_path: Path
) -> None:
    """A clone (and its venv) under /tmp: the jail's private /tmp must not hide the
    interpreter, and the jail's capability-less root must be able to reach it."""
    import subprocess
    import tempfile

    below_tmp = Path(tempfile.mkdtemp(prefix="arci-venv-", dir="/tmp"))  # below /tmp: the case
    try:
        venv = below_tmp / "venv"
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
        )
        python = str(venv / "bin" / "python")
        uid = EmulatorSettings().sandbox_uid if privileged else None
        jail, why = _jail.find_jail(python, uid)
        assert jail is not None, why
        assert jail.privileged == privileged
        assert str(venv) in jail.extra
        scratch = tmp_path / "scratch"
        scratch.mkdir(mode=0o711)
        os.chmod(tmp_path, 0o711)  # the sandbox uid traverses it, as the base
        assert _probe._run_in_jail(jail, scratch, python) == ""
    finally:
        shutil.rmtree(below_tmp, ignore_errors=True)
