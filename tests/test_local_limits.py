"""Per-sandbox limits of the local backend, in the jail (bubblewrap) and without it: one
sandbox using up its process budget leaves the others theirs, and `no_network` keeps
sandboxed code off the network, the emulator's own port included.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator

_HAS_JAIL = sys.platform.startswith("linux") and shutil.which("bwrap") is not None
_MAX_PROCESSES = 64


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(True, id="jail", marks=pytest.mark.skipif(not _HAS_JAIL, reason="no bwrap")),
        pytest.param(False, id="no-jail"),
    ],
)
def emu(request: pytest.FixtureRequest) -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    jail: bool = request.param
    settings = EmulatorSettings(
        spare_kernels=0, max_processes=_MAX_PROCESSES, no_network=True, jail=jail
    )
    emulator = LocalEmulator(settings)
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
        assert emulator.core is not None
        assert (emulator.core.jail is not None) == jail
        if emulator.core.refusal:  # as root, where the sandbox uid cannot run the interpreter
            pytest.skip(emulator.core.refusal)
        http.post("/2025-09-10/templates", json={"templateName": "lim"})
        yield emulator, http


@pytest.fixture
def pair(emu: tuple[LocalEmulator, httpx.Client]) -> Iterator[tuple[str, str]]:
    _, http = emu
    made = [http.post("/sandboxes", json={"templateName": "lim"}) for _ in range(2)]
    ids = [str(r.json()["data"]["sandboxId"]) for r in made]
    yield ids[0], ids[1]
    for sid in ids:
        http.delete(f"/sandboxes/{sid}")


def _cmd(http: httpx.Client, sid: str, command: str) -> dict[str, object]:
    r = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": command, "timeout": 30})
    assert r.status_code == 200, r.text
    result: dict[str, object] = r.json()["result"]
    return result


def _run(http: httpx.Client, sid: str, code: str) -> dict[str, object]:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code, "timeout": 30})
    assert r.status_code == 200, r.text
    events = r.json()["results"]
    stdout = "".join(e.get("text") or "" for e in events if e["type"] == "stdout")
    return {"stdout": stdout, "errors": [e for e in events if e["type"] == "error"]}


# Fork until refused; the children stay (sleeping) after the command ends.
_FILL = (
    "python -c 'import os, time\n"
    "n = 0\n"
    "try:\n"
    "    while n < 1000:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(60); os._exit(0)\n"
    "        n += 1\n"
    "except OSError:\n"
    '    print("refused after", n)\n\''
)


def test_one_sandbox_using_up_its_processes_leaves_the_others_theirs(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    emulator, http = emu
    assert emulator.core is not None
    if emulator.core.cgroups is None:
        pytest.skip("no writable pids cgroup (not root): RLIMIT_NPROC is per uid, shared")
    a, b = pair
    out = str(_cmd(http, a, _FILL)["stdout"])
    assert out.startswith("refused after"), out
    assert int(out.split()[-1]) < _MAX_PROCESSES
    # B has its whole budget: a command, a new kernel, and forks of its own
    assert _cmd(http, b, "echo ok")["stdout"] == "ok\n"
    assert _run(http, b, "print(1)") == {"stdout": "1\n", "errors": []}
    more = str(_cmd(http, b, _FILL)["stdout"])
    # (B's kernel and its threads count too: a few less than A got)
    assert int(more.split()[-1]) > _MAX_PROCESSES // 2, (out, more)


def test_no_network_keeps_code_off_the_emulators_port(
    emu: tuple[LocalEmulator, httpx.Client], pair: tuple[str, str]
) -> None:
    emulator, http = emu
    if emulator.core is not None and emulator.core.jail is None and os.geteuid() != 0:
        pytest.skip("no_network without the jail needs root (`unshare -n`)")
    a, _ = pair
    port = urlparse(str(http.base_url)).port
    probe = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
        "    print('reached')\n"
        "except OSError:\n"
        "    print('refused')\n"
    )
    assert _run(http, a, probe) == {"stdout": "refused\n", "errors": []}
    quoted = probe.replace("'", '"')
    assert _cmd(http, a, f"python -c '{quoted}'")["stdout"] == "refused\n"
