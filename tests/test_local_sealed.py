"""Attacker tests for what one local sandbox may take from the machine and from the other
sandboxes: its disk is capped at its template's diskSize, and (as root) it runs as a uid
of its own, so nothing per-uid (files, keyrings, process counts, signals) is shared."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator, _jail, _limits

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or (hasattr(os, "geteuid") and os.geteuid() != 0),
    reason="capped disks and a uid per sandbox need Linux and the emulator to run as root",
)
_NO_BWRAP = shutil.which("bwrap") is None

DISK_MB = 64


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    if _NO_BWRAP:
        pytest.skip("the jail needs bubblewrap (apt-get install bubblewrap)")
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
        assert emulator.core is not None
        assert emulator.core.jail is not None
        http.post("/2025-09-10/templates", json={"templateName": "small", "diskSize": DISK_MB})
        yield emulator, http


@pytest.fixture(scope="module")
def http(emu: tuple[LocalEmulator, httpx.Client]) -> httpx.Client:
    return emu[1]


@pytest.fixture
def pair(http: httpx.Client) -> Iterator[tuple[str, str]]:
    made = [_sandbox(http), _sandbox(http)]
    yield made[0], made[1]
    for sid in made:
        http.delete(f"/sandboxes/{sid}")


def _sandbox(http: httpx.Client) -> str:
    r = http.post("/sandboxes", json={"templateName": "small"})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["sandboxId"])


def _cmd(http: httpx.Client, sid: str, command: str) -> dict[str, object]:
    r = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": command, "timeout": 30})
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()["result"]
    return result


def _out(http: httpx.Client, sid: str, command: str) -> str:
    result = _cmd(http, sid, command)
    assert result["exitCode"] == 0, result
    return str(result["stdout"])


def _run(http: httpx.Client, sid: str, code: str) -> str:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code})
    assert r.status_code == 200, r.text
    events = r.json()["results"]
    assert not [e for e in events if e["type"] == "error"], events
    return "".join(e.get("text") or "" for e in events if e["type"] == "stdout")


def test_writing_twice_the_disk_size_stops_with_no_space_left(
    http: httpx.Client, pair: tuple[str, str]
) -> None:
    a, b = pair
    # half in /home/user, then /tmp: one cap for both
    _out(http, a, f"dd if=/dev/zero of=/home/user/half bs=1M count={DISK_MB // 2} 2>&1")
    full = _cmd(http, a, f"dd if=/dev/zero of=/tmp/big bs=1M count={2 * DISK_MB}")
    assert full["exitCode"] != 0, full
    assert "No space left on device" in str(full["stderr"]), full
    # the file API past the cap: 507, as the service answers a full disk
    w = http.post(f"/sandboxes/{a}/files", json={"path": "/tmp/more", "content": "x" * 2**20})
    assert (w.status_code, w.json().get("code")) == (507, "ERR_INSUFFICIENT_STORAGE"), w.text
    # the other sandbox is unaffected meanwhile
    _out(http, b, f"dd if=/dev/zero of=/tmp/mine bs=1M count={DISK_MB // 2} 2>&1")
    # and the full one works again once its file is gone
    _out(http, a, "rm /tmp/big /home/user/half && echo back > /tmp/f && cat /tmp/f")
    assert _run(http, a, "print(open('/tmp/f').read(), end='')") == "back\n"
    w = http.post(f"/sandboxes/{a}/files", json={"path": "/tmp/more", "content": "x"})
    assert w.status_code == 200, w.text


def test_a_sandboxs_disk_is_unmounted_when_it_goes(
    emu: tuple[LocalEmulator, httpx.Client],
) -> None:
    emulator, http = emu
    assert emulator.core is not None
    sid = _sandbox(http)
    _out(http, sid, "echo x > /tmp/f")
    base = emulator.core.sandboxes[sid].base
    assert base is not None
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        assert str(base) in fh.read()
    http.delete(f"/sandboxes/{sid}")
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        assert str(base) not in fh.read()
    assert not base.exists()


def test_a_template_with_no_disk_is_refused(http: httpx.Client) -> None:
    name = f"nodisk-{uuid.uuid4().hex[:6]}"
    r = http.post("/2025-09-10/templates", json={"templateName": name, "diskSize": 0})
    assert r.status_code == 400, r.text
    assert "diskSize" in r.text


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This machine as one without bubblewrap."""
    real = shutil.which
    monkeypatch.setattr(
        "agentrun_ci.local._jail.shutil.which", lambda n: None if n == "bwrap" else real(n)
    )
    _jail.find_jail.cache_clear()
    yield
    _jail.find_jail.cache_clear()


def test_without_bubblewrap_code_never_runs_as_root_and_each_start_warns(
    no_bwrap: None, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="agentrun_ci.local"):
            emulator = LocalEmulator(EmulatorSettings(spare_kernels=0))
            with (
                emulator as config,
                httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http,
            ):
                assert emulator.core is not None
                assert emulator.core.jail is None
                http.post("/2025-09-10/templates", json={"templateName": "t"})
                made = http.post("/sandboxes", json={"templateName": "t"})
                if emulator.core.refusal:  # the sandbox uid cannot run this interpreter
                    assert made.status_code == 500, made.text
                    assert "Fix: install bubblewrap" in made.json()["message"]
                    continue
                assert made.status_code == 200, made.text
                sid = str(made.json()["data"]["sandboxId"])
                uid = _out(http, sid, "id -u").strip()
                assert uid != "0"
                assert _run(http, sid, "import os; print(os.getuid())").strip() == uid
        lost = [r for r in caplog.records if "no jail for local sandboxes" in r.getMessage()]
        assert [r.levelno for r in lost] == [logging.WARNING], caplog.records


def test_without_bubblewrap_a_uid_that_cannot_run_the_interpreter_is_refused_with_the_fix(
    no_bwrap: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as with a virtualenv under /root, which the sandbox uid cannot read
    monkeypatch.setattr(_limits, "_probe_uid", lambda uid, executable: None)
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
        http.post("/2025-09-10/templates", json={"templateName": "t"})
        made = http.post("/sandboxes", json={"templateName": "t"})
        assert made.status_code == 500, made.text
        said = made.json()["message"]
        assert "would run as root" in said
        assert "python_executable" in said
        assert "apt-get install bubblewrap" in said
        assert emulator.core is not None
        assert emulator.core.pool.ready == 0  # no spare kernel started as root either


# A key put in the user keyring (add_key), then searched for there (keyctl
# KEYCTL_SEARCH, 10, in KEY_SPEC_USER_KEYRING, -4): the syscalls by number, as sandboxed
# code without `keyctl` would.
_KEYS = {"x86_64": (248, 250), "aarch64": (217, 219)}
_ADD_KEY = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall({add}, b"user", b"arci-key", b"secret", 6, ctypes.c_int(-4)) > 0)
"""
_FIND_KEY = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall({keyctl}, 10, ctypes.c_int(-4), b"user", b"arci-key", 0) > 0)
"""


def test_each_sandbox_runs_as_a_uid_of_its_own(http: httpx.Client, pair: tuple[str, str]) -> None:
    a, b = pair
    uid_a, uid_b = (int(_out(http, s, "id -u")) for s in pair)
    assert uid_a != uid_b
    assert 0 not in (uid_a, uid_b)
    assert _run(http, a, "print(open('/proc/self/status').read())").count(f"\t{uid_a}\t") >= 1
    # what its code makes and what the file API makes are the sandbox's own
    assert http.post(f"/sandboxes/{a}/files", json={"path": "api", "content": "x"}).is_success
    owners = _out(http, a, "touch mine && stat -c %u mine api /home/user /tmp").split()
    assert owners == [str(uid_a)] * 4
    # a 0600 file B makes is B's alone
    _out(http, b, "echo b-secret > /tmp/b && chmod 600 /tmp/b")
    assert _out(http, b, "cat /tmp/b") == "b-secret\n"


@pytest.mark.skipif(os.uname().machine not in _KEYS, reason="syscall numbers for x86-64/arm64")
def test_a_key_one_sandbox_puts_in_its_user_keyring_is_not_anothers(
    http: httpx.Client, pair: tuple[str, str]
) -> None:
    a, b = pair
    add, keyctl = _KEYS[os.uname().machine]
    assert _run(http, a, _ADD_KEY.format(add=add)) == "True\n"
    assert _run(http, a, _FIND_KEY.format(keyctl=keyctl)) == "True\n"  # A's own: found
    assert _run(http, b, _FIND_KEY.format(keyctl=keyctl)) == "False\n"


def test_two_emulators_give_their_sandboxes_disjoint_uids(http: httpx.Client) -> None:
    ours = [_sandbox(http) for _ in range(2)]
    other = LocalEmulator(EmulatorSettings(spare_kernels=0))
    try:
        with other as config, httpx.Client(base_url=str(config.data_endpoint), timeout=60) as h2:
            h2.post("/2025-09-10/templates", json={"templateName": "small"})
            theirs = [_sandbox(h2) for _ in range(2)]
            mine = {int(_out(http, s, "id -u")) for s in ours}
            their = {int(_out(h2, s, "id -u")) for s in theirs}
            assert len(mine) == len(their) == 2
            assert not mine & their
    finally:
        for sid in ours:
            http.delete(f"/sandboxes/{sid}")
