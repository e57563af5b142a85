"""Attacker tests for the local sandbox's jail (bubblewrap): what one sandbox's code may
not reach. Each attack is the one that worked before the jail (see docs/local-backend.md).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci import CodeInterpreter
from agentrun_ci.local import EmulatorSettings, LocalEmulator, _core, _jail

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("bwrap") is None,
    reason="the jail needs Linux and bubblewrap (apt-get install bubblewrap)",
)

SECRET = "jail-test-secret-4c1d"


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    os.environ["AGENTRUN_JAIL_TEST_SECRET"] = SECRET
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1))
    try:
        config = emulator.start()
        assert emulator.core is not None
        assert emulator.core.jail is not None, "bwrap is installed but the jail did not start"
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
        "mine = {os.getpid(), 1}\n"
        "others = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) not in mine]\n"
        "for pid in others:\n"
        "    try: os.kill(pid, signal.SIGKILL)\n"
        "    except OSError: pass\n"
        "print(sorted(others))"
    )
    # only its own helpers (the kernel's children) are visible: none here
    assert _run(http, a, code) == "[]\n"
    assert _run(http, b, "print(x)") == "1\n"


def test_a_cannot_read_or_write_another_sandboxs_files(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    a, b = pair
    w = http.post(f"/sandboxes/{b}/files", json={"path": "/home/user/b.txt", "content": SECRET})
    assert w.status_code == 200, w.text
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


def _wheel() -> bytes:
    """A minimal pure-python wheel (no network, no build backend needed)."""
    files = {
        "jailprobe/__init__.py": "VALUE = 42\n",
        "jailprobe-1.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\nName: jailprobe\nVersion: 1.0\n"
        ),
        "jailprobe-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "jailprobe-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name, text in {**files, "jailprobe-1.0.dist-info/RECORD": record}.items():
            wheel.writestr(name, text)
    return buffer.getvalue()


def test_python_and_pip_in_commands_are_the_kernels_interpreter(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    _, http = emu
    sid, _ = pair
    kernel_python = _run(http, sid, "import sys; print(sys.executable)")
    assert _cmd(http, sid, "python -c 'import sys; print(sys.executable)'")["stdout"] == (
        kernel_python
    )
    wheel = base64.b64encode(_wheel()).decode()
    _run(
        http,
        sid,
        f"import base64; open('jailprobe-1.0-py3-none-any.whl', 'wb')"
        f".write(base64.b64decode({wheel!r}))",
    )
    out = _cmd(http, sid, "pip install --no-index jailprobe-1.0-py3-none-any.whl", timeout=30)
    assert out["exitCode"] == 0, out
    # the running kernel imports what `pip install` just put in place
    assert _run(http, sid, "import jailprobe; print(jailprobe.VALUE)") == "42\n"


def test_the_in_process_emulator_refuses_sandboxed_code() -> None:
    with CodeInterpreter(backend="local", reap_on_start=False) as ci:
        first = ci.run_code("x = 'mine'")
        assert first.error is None
        config = ci._async.config
        assert config is not None
        assert config.access_key_secret  # a key pair only this process holds
        url = str(config.data_endpoint).rstrip("/")
        code = (
            "import json, urllib.request, urllib.error\n"
            "codes = []\n"
            "for method, path, body in [\n"
            "    ('GET', '/2025-09-10/sandboxes', None),\n"
            "    ('GET', '/2025-09-10/templates', None),\n"
            "    ('POST', '/_admin/faults', b'{\"rates\": {}}'),\n"
            "]:\n"
            f"    req = urllib.request.Request({url!r} + path, data=body, method=method)\n"
            "    try:\n"
            "        codes.append(urllib.request.urlopen(req, timeout=5).status)\n"
            "    except urllib.error.HTTPError as exc:\n"
            "        codes.append(exc.code)\n"
            "    except OSError:\n"
            "        codes.append(0)\n"
            "print(codes)"
        )
        run = ci.run_code(code)
        codes = json.loads(run.stdout)
        assert all(c in (0, 401, 403, 404) for c in codes), codes


def test_missing_bubblewrap_is_said_once_with_its_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
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
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_core, "_warned", set())
    with caplog.at_level(logging.INFO, logger="agentrun_ci.local"):
        _core._warn_once(why)
        _core._warn_once(why)  # the same process: nothing more
        monkeypatch.setattr(_core, "_warned", set())  # as in the next process
        _core._warn_once(why)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [
        (logging.WARNING, why),
        (logging.INFO, f"{why} (said before; docs/local-backend.md)"),
    ]


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
        both = f"{hog} & {hog} & wait -n; echo $?; wait -n; echo $?"
        assert "137" in str(_cmd(http, sid, both, timeout=20)["stdout"]).split()
        # the same in a sandbox of the default template (4096 MB) runs to the end
        other = _sandbox(http)
        try:
            assert str(_cmd(http, other, both, timeout=20)["stdout"]).split() == ["0", "0"]
        finally:
            http.delete(f"/sandboxes/{other}")
    finally:
        http.delete(f"/sandboxes/{sid}")
