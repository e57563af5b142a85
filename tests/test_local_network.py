"""Attacker tests for a local sandbox's network (`agentrun_ci/local/_network.py`): each
sandbox has a network namespace of its own; a PRIVATE template's has loopback only, a
PUBLIC one's gets out through user-mode networking (slirp4netns or pasta), but nothing
run in any sandbox reaches the host's loopback (a listener there, the emulator's own API,
through 127.0.0.1 or the uplink's alias for the host), another sandbox's loopback
services, its abstract Unix sockets, or its kernels' sockets. The uplink is reaped with
its sandbox."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci.local import EmulatorSettings, LocalEmulator, _jail, _network
from tests.support import alive, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="network namespaces are Linux's"
)
_NO_BWRAP = shutil.which("bwrap") is None

# Run in a sandbox (kernel or `python -c`): argv-free, prints one JSON object naming, for
# each target, "reached" or the error that refused it.
_PROBE = """
import json, socket
out = {}
for name, family, address in TARGETS:
    s = socket.socket(getattr(socket, family), socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(address if family == "AF_UNIX" else tuple(address))
        out[name] = "reached"
    except OSError as exc:
        out[name] = type(exc).__name__ + ": " + str(exc)
    finally:
        s.close()
print(json.dumps(out))
"""

# The sandbox's default gateway (pasta's host alias; slirp4netns's is 10.0.2.2), or "".
_GATEWAY = """
import socket, struct
gw = ""
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(struct.pack("<L", int(f[2], 16)))
print(gw)
"""


def _probe(targets: list[tuple[str, str, object]]) -> str:
    return f"TARGETS = {targets!r}\n{_PROBE}"


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[LocalEmulator, httpx.Client]]:
    if _NO_BWRAP:
        pytest.skip("the jail needs bubblewrap (apt-get install bubblewrap)")
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=120) as http:
        core = emulator.core
        assert core is not None
        if core.jail is None or not core.jail.shares_namespaces:
            pytest.skip("a sandbox's network namespace needs the jail and its holder")
        if core.uplink is None:
            pytest.skip(f"no uplink for PUBLIC sandboxes: {_network.INSTALL_FIX}")
        for name, mode in (("pub", "PUBLIC"), ("priv", "PRIVATE")):
            r = http.post(
                "/2025-09-10/templates",
                json={"templateName": name, "networkConfiguration": {"networkMode": mode}},
            )
            assert r.status_code == 200, r.text
        yield emulator, http


@pytest.fixture(scope="module")
def http(emu: tuple[LocalEmulator, httpx.Client]) -> httpx.Client:
    return emu[1]


@pytest.fixture
def made(http: httpx.Client) -> Iterator[list[str]]:
    """Sandboxes a test makes (`_sandbox(http, made, template)`), deleted after it."""
    sandboxes: list[str] = []
    yield sandboxes
    for sid in sandboxes:
        http.delete(f"/sandboxes/{sid}")


def _sandbox(http: httpx.Client, made: list[str], template: str) -> str:
    r = http.post("/sandboxes", json={"templateName": template})
    assert r.status_code == 200, r.text
    sid = str(r.json()["data"]["sandboxId"])
    made.append(sid)
    return sid


def _cmd(http: httpx.Client, sid: str, command: str) -> str:
    r = http.post(f"/sandboxes/{sid}/processes/cmd", json={"command": command, "timeout": 30})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["exitCode"] == 0, result
    return str(result["stdout"])


def _run(http: httpx.Client, sid: str, code: str) -> str:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code, "timeout": 30})
    assert r.status_code == 200, r.text
    events = r.json()["results"]
    assert not [e for e in events if e["type"] == "error"], events
    return "".join(e.get("text") or "" for e in events if e["type"] == "stdout")


def _reach(http: httpx.Client, sid: str, targets: list[tuple[str, str, object]]) -> dict[str, str]:
    """What each target answers, from the sandbox's kernel and from a command (both must
    agree: they share the sandbox's namespace)."""
    code = _probe(targets)
    from_kernel: dict[str, str] = json.loads(_run(http, sid, code))
    quoted = code.replace("'", "'\"'\"'")
    from_command: dict[str, str] = json.loads(_cmd(http, sid, f"python -c '{quoted}'"))
    assert from_kernel.keys() == from_command.keys()
    for name, said in from_kernel.items():
        assert (said == "reached") == (from_command[name] == "reached"), (name, said)
    return from_kernel


def _interfaces(http: httpx.Client, sid: str) -> list[str]:
    dev = _cmd(http, sid, "cat /proc/net/dev").splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in dev)


@contextlib.contextmanager
def _listener(host: str, greeting: bytes = b"hello\n") -> Iterator[int]:
    """A TCP listener on the host at `host`, greeting whoever connects; its port."""
    server = socket.create_server((host, 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(greeting)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        done.set()
        thread.join(10)
        server.close()


def _host_address() -> str | None:
    """A non-loopback IPv4 address of this machine, or None."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        shown = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        for line in shown.splitlines():
            fields = line.split()
            if "inet" in fields:
                return fields[fields.index("inet") + 1].split("/")[0]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
        address = str(s.getsockname()[0])
        if not address.startswith("127."):
            return address
    return None


def _uplink_children() -> list[int]:
    """slirp4netns and pasta processes whose parent is this test process (the emulator
    runs in a thread of it)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        mine = comm in ("slirp4netns", "pasta") and int(fields[1]) == os.getpid()
        if mine and fields[0] not in ("Z", "X"):
            found.append(int(name))
    return found


# ---------------------------------------------------------------- units


def test_the_template_mode_decides() -> None:
    def mode(value: object) -> bool:
        return _network.is_public({"networkConfiguration": {"networkMode": value}})

    assert _network.is_public({})  # the service's default: PUBLIC
    assert mode("PUBLIC")
    assert mode("PUBLIC_AND_PRIVATE")  # no VPC here: the public part
    assert not mode("PRIVATE")
    assert not mode("private")


def test_resolv_conf_is_bound_where_the_hosts_leads(tmp_path: Path) -> None:
    """systemd-resolved's /etc/resolv.conf is a link into /run (the jail's own tmpfs): the
    file is bound at the link's target, its directories made; a plain file in place."""
    link = tmp_path / "resolv.conf"
    target = "/run/systemd/resolve/stub-resolv.conf"
    link.symlink_to(target)
    assert _jail._resolv_bind("/x/resolv.conf", {"/run"}, str(link)) == [
        *("--perms", "0755", "--dir", "/run/systemd"),
        *("--perms", "0755", "--dir", "/run/systemd/resolve"),
        *("--ro-bind", "/x/resolv.conf", target),
    ]
    host = "/etc/resolv.conf"
    if os.path.isfile(host) and not os.path.islink(host):
        assert _jail._resolv_bind("/x/resolv.conf", set()) == ["--ro-bind", "/x/resolv.conf", host]


# ---------------------------------------------------------------- the host's loopback


def test_no_sandbox_reaches_the_hosts_loopback(http: httpx.Client, made: list[str]) -> None:
    api = urlparse(str(http.base_url)).port
    assert api is not None
    pub, priv = _sandbox(http, made, "pub"), _sandbox(http, made, "priv")
    gateway = _run(http, pub, _GATEWAY).strip()
    assert gateway, "a PUBLIC sandbox has a default route"
    with _listener("127.0.0.1") as port:
        # the listener and the API answer on the host
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        socket.create_connection(("127.0.0.1", api), timeout=10).close()
        targets: list[tuple[str, str, object]] = [
            ("listener", "AF_INET", ("127.0.0.1", port)),
            ("api", "AF_INET", ("127.0.0.1", api)),
            ("listener via 10.0.2.2", "AF_INET", ("10.0.2.2", port)),
            ("api via 10.0.2.2", "AF_INET", ("10.0.2.2", api)),
            ("listener via gateway", "AF_INET", (gateway, port)),
            ("api via gateway", "AF_INET", (gateway, api)),
        ]
        for sid in (pub, priv):
            said = _reach(http, sid, targets)
            assert [n for n, s in said.items() if s == "reached"] == [], (sid, said)


# ---------------------------------------------------------------- PRIVATE and PUBLIC


def test_a_private_sandbox_has_loopback_only(http: httpx.Client, made: list[str]) -> None:
    priv = _sandbox(http, made, "priv")
    assert _interfaces(http, priv) == ["lo"]
    address = _host_address()
    if address is not None:
        with _listener(address) as port:
            said = _reach(http, priv, [("host", "AF_INET", (address, port))])
            assert said["host"] != "reached", said
    # its own loopback works: a server a command starts, from its kernel
    port = 20000 + secrets.randbelow(20000)
    serve = f"nohup setsid python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &"
    _cmd(http, priv, serve)
    fetch = (
        "import time, urllib.request\n"
        "end = time.monotonic() + 25\n"
        "while True:\n"
        "    try:\n"
        f"        print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).status)\n"
        "        break\n"
        "    except OSError:\n"
        "        if time.monotonic() > end: raise\n"
        "        time.sleep(0.1)\n"
    )
    assert _run(http, priv, fetch).strip() == "200"


def test_a_public_sandbox_gets_out(http: httpx.Client, made: list[str]) -> None:
    pub = _sandbox(http, made, "pub")
    assert len(_interfaces(http, pub)) == 2  # lo and the uplink's tap device
    address = _host_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    with _listener(address, b"hello from the host\n") as port:
        code = (
            "import socket\n"
            f"with socket.create_connection(({address!r}, {port}), timeout=10) as s:\n"
            "    print(s.makefile().readline().strip())\n"
        )
        assert _run(http, pub, code).strip() == "hello from the host"


def test_a_public_sandbox_resolves_names_through_its_uplink(
    http: httpx.Client, made: list[str]
) -> None:
    try:
        socket.getaddrinfo("pypi.org", 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        pytest.skip(f"this machine resolves no names ({exc})")
    pub = _sandbox(http, made, "pub")
    assert f"nameserver {_network.DNS_ADDRESS}" in _cmd(http, pub, "cat /etc/resolv.conf")
    code = "import socket; print(bool(socket.getaddrinfo('pypi.org', 443)))"
    assert _run(http, pub, code).strip() == "True"
    priv = _sandbox(http, made, "priv")
    fails = (
        "import socket\ntry:\n    socket.getaddrinfo('pypi.org', 443)\n    print('resolved')\n"
        "except OSError:\n    print('no')\n"
    )
    assert _run(http, priv, fails).strip() == "no"


# ---------------------------------------------------------------- one sandbox, another

_SERVE = """
import os, socket, sys, time
tcp = socket.create_server(("127.0.0.1", int(sys.argv[1])))
abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
abstract.bind("\\0" + sys.argv[2])
abstract.listen()
time.sleep(600)
"""


def test_sandboxes_do_not_reach_each_others_sockets(
    emu: tuple[LocalEmulator, httpx.Client], made: list[str]
) -> None:
    emulator, http = emu
    a = _sandbox(http, made, "pub")
    port = 20000 + secrets.randbelow(20000)
    name = f"agentrun-test-{secrets.token_hex(4)}"
    quoted = _SERVE.replace("'", "'\"'\"'")
    _cmd(http, a, f"nohup setsid python3 -c '{quoted}' {port} {name} >/dev/null 2>&1 &")
    _run(http, a, "print('kernel up')")  # its kernel's sockets exist
    assert emulator.core is not None
    holder = emulator.core.sandboxes[a].launch.holder  # type: ignore[union-attr]
    assert holder is not None
    assert holder.pid is not None
    pid = holder.pid

    def listening() -> list[tuple[str, str, object]]:
        """What listens in A's namespace, seen from the host: TCP ports and abstract Unix
        sockets (path sockets are reached by path: its kernels' below)."""
        found: list[tuple[str, str, object]] = []
        with open(f"/proc/{pid}/net/tcp", encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":  # LISTEN
                    found.append((f"tcp {local}", "AF_INET", ("127.0.0.1", int(local[-4:], 16))))
        with open(f"/proc/{pid}/net/unix", encoding="utf-8") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                listens = len(fields) >= 8 and fields[3] == "00010000"  # __SO_ACCEPTCON
                if listens and fields[7].startswith("@"):
                    found.append((f"unix {fields[7]}", "AF_UNIX", "\0" + fields[7][1:]))
        return found

    def servers_up() -> list[tuple[str, str, object]]:
        found = listening()
        tcp = any(t == ("127.0.0.1", port) for _, _, t in found)
        return found if tcp and any(n == f"unix @{name}" for n, _, _ in found) else []

    targets = wait_until(servers_up, "A's servers to listen", timeout=60)
    # A's kernel's sockets, by their paths on the host (inside A's jail they are its
    # /run/agentrun/k-<n>, a name every kernel's own private directory has)
    (ctx,) = emulator.core.sandboxes[a].contexts.values()
    with open(ctx.kernel._km.connection_file, encoding="utf-8") as fh:  # type: ignore[attr-defined]
        info = json.load(fh)
    for key in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        path = f"{info['ip']}-{info[key]}"
        assert os.path.exists(path), path
        targets.append((f"kernel {key}", "AF_UNIX", path))
    # A reaches its own loopback server and abstract socket
    own = _reach(http, a, [t for t in targets if not t[0].startswith("kernel")])
    assert set(own.values()) == {"reached"}, own
    # B (PUBLIC) and C (PRIVATE) reach none of A's sockets
    for other in (_sandbox(http, made, "pub"), _sandbox(http, made, "priv")):
        said = _reach(http, other, targets)
        assert [n for n, s in said.items() if s == "reached"] == [], said


# ---------------------------------------------------------------- the uplink's life


def test_the_uplink_is_reaped_with_its_sandbox() -> None:
    if _NO_BWRAP:
        pytest.skip("the jail needs bubblewrap (apt-get install bubblewrap)")
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=120) as http:
        core = emulator.core
        assert core is not None
        if core.uplink is None:
            pytest.skip(f"no uplink for PUBLIC sandboxes: {_network.INSTALL_FIX}")
        http.post("/2025-09-10/templates", json={"templateName": "pub"})  # PUBLIC: default
        made: list[str] = []
        a, b = _sandbox(http, made, "pub"), _sandbox(http, made, "pub")
        uplinks = {}
        for sid in (a, b):
            _cmd(http, sid, "true")
            holder = core.sandboxes[sid].launch.holder  # type: ignore[union-attr]
            assert holder is not None
            assert holder.uplink_pid is not None
            uplinks[sid] = holder.uplink_pid
        assert sorted(_uplink_children()) == sorted(uplinks.values())
        assert http.delete(f"/sandboxes/{a}").status_code == 200
        # gone, and reaped (no zombie left: the emulator waited for it)
        assert not alive(uplinks[a])
        assert not os.path.exists(f"/proc/{uplinks[a]}")
        assert _uplink_children() == [uplinks[b]]
    # the emulator stopped: b's went with its sandbox
    assert _uplink_children() == []
    assert not os.path.exists(f"/proc/{uplinks[b]}")


# ---------------------------------------------------------------- without an uplink


def test_without_an_uplink_public_sandboxes_share_the_host_network_and_are_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if _NO_BWRAP:
        pytest.skip("the jail needs bubblewrap (apt-get install bubblewrap)")
    monkeypatch.setattr(_network, "_TOOLS", ("agentrun-no-such-uplink",))
    caplog.set_level(logging.WARNING, logger="agentrun_ci.local")
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1))
    with (
        _listener("127.0.0.1") as port,
        emulator as config,
        httpx.Client(base_url=str(config.data_endpoint), timeout=120) as http,
    ):
        assert emulator.core is not None
        assert emulator.core.uplink is None
        warned = [r.getMessage() for r in caplog.records if "slirp4netns" in r.getMessage()]
        assert warned, caplog.text
        assert "PUBLIC sandboxes share this machine's network" in warned[0]
        assert "apt-get install slirp4netns" in warned[0]
        for name, mode in (("pub", "PUBLIC"), ("priv", "PRIVATE")):
            http.post(
                "/2025-09-10/templates",
                json={"templateName": name, "networkConfiguration": {"networkMode": mode}},
            )
        made: list[str] = []
        # a spare kernel waits (host network): the PRIVATE sandbox must not take it
        wait_until(lambda: emulator.core is not None and emulator.core.pool.ready, "a spare")
        priv = _sandbox(http, made, "priv")
        assert _interfaces(http, priv) == ["lo"]
        said = _reach(http, priv, [("listener", "AF_INET", ("127.0.0.1", port))])
        assert said["listener"] != "reached", said
        pub = _sandbox(http, made, "pub")
        said = _reach(http, pub, [("listener", "AF_INET", ("127.0.0.1", port))])
        assert said["listener"] == "reached", said


def test_no_network_gives_every_sandbox_loopback_only() -> None:
    if _NO_BWRAP:
        pytest.skip("the jail needs bubblewrap (apt-get install bubblewrap)")
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=1, no_network=True))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=120) as http:
        assert emulator.core is not None
        assert emulator.core.uplink is None
        http.post("/2025-09-10/templates", json={"templateName": "pub"})
        made: list[str] = []
        pub = _sandbox(http, made, "pub")
        assert _interfaces(http, pub) == ["lo"]
        assert _run(http, pub, "print('kernel ok')") == "kernel ok\n"
        assert _uplink_children() == []


@pytest.mark.skipif(shutil.which("pasta") is None, reason="passt's pasta is not installed")
def test_pasta_uplink(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback where only passt is installed: out, but not to the host's loopback
    nor its gateway alias."""
    if _NO_BWRAP:
        pytest.skip("the jail needs bubblewrap (apt-get install bubblewrap)")
    monkeypatch.setattr(_network, "_TOOLS", ("pasta",))
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0))
    with (
        _listener("127.0.0.1") as port,
        emulator as config,
        httpx.Client(base_url=str(config.data_endpoint), timeout=120) as http,
    ):
        assert emulator.core is not None
        if emulator.core.uplink is None:
            pytest.skip("pasta cannot connect a sandbox here (see the log)")
        assert emulator.core.uplink.kind == "pasta"
        http.post("/2025-09-10/templates", json={"templateName": "pub"})
        made: list[str] = []
        pub = _sandbox(http, made, "pub")
        gateway = _run(http, pub, _GATEWAY).strip()
        targets: list[tuple[str, str, object]] = [
            ("listener", "AF_INET", ("127.0.0.1", port)),
            ("listener via gateway", "AF_INET", (gateway, port)),
        ]
        said = _reach(http, pub, targets)
        assert [n for n, s in said.items() if s == "reached"] == [], said
        with contextlib.suppress(OSError):
            socket.getaddrinfo("pypi.org", 443)  # where this machine resolves names, so
            code = "import socket; print(bool(socket.getaddrinfo('pypi.org', 443)))"
            assert _run(http, pub, code).strip() == "True"  # does the sandbox (--dns-forward)
        uplink = emulator.core.sandboxes[pub].launch.holder.uplink_pid  # type: ignore[union-attr]
        assert uplink is not None
        http.delete(f"/sandboxes/{pub}")
        assert not os.path.exists(f"/proc/{uplink}")
    assert _uplink_children() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="unprivileged, every jail is in a user namespace")
def test_a_jail_in_a_user_namespace_gets_its_uplink_too() -> None:
    """sandbox_uid=None: bwrap makes the user namespaces (two, nested), and the uplink
    joins the one owning the sandbox's network namespace."""
    if _NO_BWRAP:
        pytest.skip("the jail needs bubblewrap (apt-get install bubblewrap)")
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=0, sandbox_uid=None))
    with (
        _listener("127.0.0.1") as port,
        emulator as config,
        httpx.Client(base_url=str(config.data_endpoint), timeout=120) as http,
    ):
        assert emulator.core is not None
        assert emulator.core.jail is not None
        assert not emulator.core.jail.privileged
        if emulator.core.uplink is None:
            pytest.skip(f"no uplink for PUBLIC sandboxes: {_network.INSTALL_FIX}")
        http.post("/2025-09-10/templates", json={"templateName": "pub"})
        made: list[str] = []
        pub = _sandbox(http, made, "pub")
        assert len(_interfaces(http, pub)) == 2
        targets: list[tuple[str, str, object]] = [
            ("listener", "AF_INET", ("127.0.0.1", port)),
            ("listener via 10.0.2.2", "AF_INET", ("10.0.2.2", port)),
        ]
        said = _reach(http, pub, targets)
        assert [n for n, s in said.items() if s == "reached"] == [], said
        address = _host_address()
        if address is not None:
            with _listener(address) as out:
                code = (
                    "import socket\n"
                    f"with socket.create_connection(({address!r}, {out}), timeout=10) as s:\n"
                    "    print(s.makefile().readline().strip())\n"
                )
                assert _run(http, pub, code).strip() == "hello"
        http.delete(f"/sandboxes/{pub}")
    assert _uplink_children() == []
