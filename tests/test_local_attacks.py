"""Attacker tests for the emulator's HTTP surface: races, bounds, signatures, bad values.

Each test here failed on the emulator before the change it guards (issue 13, items
5-8), and the kernel-restart field replaces a stderr text match (issue 16).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from agentrun_ci._auth import signature_headers
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


# ---------------------------------------------------------------- file API races (13.5)

_SWAPPER = """
import os, threading
def _file(t):
    with open(t, 'w') as f:
        f.write('mine')
def _swap(name, to_link, to_real):
    while not os.path.exists('stop'):
        for make in (to_link, to_real):
            try:
                make(name + '.new')
                os.replace(name + '.new', name)
            except OSError:
                pass
for name, link, real in (('target', SECRET, _file), ('d', OUTSIDE, os.mkdir)):
    threading.Thread(
        target=_swap, args=(name, lambda t, link=link: os.symlink(link, t), real), daemon=True
    ).start()
"""


def test_swapping_a_file_for_a_symlink_never_reaches_outside(
    http: httpx.Client, sid: str, tmp_path: Path
) -> None:
    # Sandboxed code flips `target` between a file and a link to a private host file (and
    # `d` between a directory and a link to its directory) while the API writes, chmods
    # and reads them: the checked path must be the one acted on.
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    secret = outside / "secret"
    secret.write_text("SECRET-HOST-DATA")
    secret.chmod(0o600)
    (outside / "target").symlink_to(secret)  # `d/target` through the swapped `d`
    before = secret.stat()
    code = f"SECRET, OUTSIDE = {str(secret)!r}, {str(outside)!r}\n" + _SWAPPER
    _execute(http, sid, code)
    try:
        for i in range(150):
            for path in ("target", "d/target", "d/secret"):
                w = http.post(
                    f"/sandboxes/{sid}/files",
                    json={"path": path, "content": f"api {i}", "mode": "666"},
                )
                assert w.status_code in (200, 400, 404, 409), w.text
                r = http.get(f"/sandboxes/{sid}/files", params={"path": path})
                assert "SECRET-HOST-DATA" not in r.text
                assert str(tmp_path) not in r.text
                assert str(tmp_path) not in w.text
            d = http.get(f"/sandboxes/{sid}/filesystem/download", params={"path": "target"})
            assert b"SECRET-HOST-DATA" not in d.content
    finally:
        http.post(f"/sandboxes/{sid}/files", json={"path": "stop", "content": ""})
    after = secret.stat()
    assert secret.read_text() == "SECRET-HOST-DATA"
    assert (after.st_mode, after.st_uid, after.st_size) == (
        before.st_mode,
        before.st_uid,
        before.st_size,
    )
    assert sorted(p.name for p in outside.iterdir()) == ["secret", "target"]


def test_a_link_anywhere_in_a_path_is_refused_not_followed(
    http: httpx.Client, sid: str, tmp_path: Path
) -> None:
    _execute(
        http, sid, "import os\nos.makedirs('real/sub', exist_ok=True)\nos.symlink('real', 'alias')"
    )
    for path in ("alias/sub/new.txt", "alias"):
        w = http.post(f"/sandboxes/{sid}/files", json={"path": path, "content": "x"})
        assert w.status_code == 400, w.text
        assert "symbolic link" in w.json()["message"]
    assert http.get(f"/sandboxes/{sid}/filesystem", params={"path": "alias"}).status_code == 400
    listing = http.get(f"/sandboxes/{sid}/filesystem", params={"path": ".", "depth": 3}).json()
    kinds = {e["path"]: e["type"] for e in listing["entries"]}
    assert kinds["/home/user/alias"] == "symlink"
    assert "/home/user/alias/sub" not in kinds  # listed, never entered


# ---------------------------------------------------------------- bounds (13.6)


def test_read_file_cannot_amplify_a_big_sparse_file(http: httpx.Client, sid: str) -> None:
    _execute(
        http,
        sid,
        "with open('sparse.bin', 'wb') as f:\n    f.truncate(500 * 2**20)\n"
        "with open('nul.bin', 'wb') as f:\n    f.write(bytes(1000))\n"
        "with open('ctl.txt', 'w') as f:\n    f.write('a\\x01b')",
    )
    try:
        big = http.get(f"/sandboxes/{sid}/files", params={"path": "sparse.bin"})
        assert big.status_code == 413, big.text[:200]
        assert "/filesystem/download" in big.json()["message"]
        # NULs and control characters (six bytes each in JSON text) travel as base64
        for name, raw in (("nul.bin", bytes(1000)), ("ctl.txt", b"a\x01b")):
            body = http.get(f"/sandboxes/{sid}/files", params={"path": name}).json()
            assert body["encoding"] == "base64"
            assert base64.b64decode(body["content"]) == raw
    finally:
        http.post(f"/sandboxes/{sid}/filesystem/remove", json={"path": "sparse.bin"})


def test_kernel_output_is_capped_per_stream_with_a_marker(
    http: httpx.Client, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentrun_ci.local import _kernel_base

    # the real cap (128 Mi characters) is lowered so the test prints 2 MB, not 130
    assert 0 < getattr(_kernel_base, "MAX_STREAM_CHARS", 0) <= 128 * 2**20
    monkeypatch.setattr(_kernel_base, "MAX_STREAM_CHARS", 2**20, raising=False)
    code = (
        "import sys\nsys.stdout.write('x' * (2 * 2**20))\nsys.stdout.flush()\n"
        "sys.stderr.write('e' * 100)\nprint('done')"
    )
    execution = Execution.from_wire(_execute(http, sid, code, timeout=30).json())
    assert execution.status == "ok"
    assert execution.stdout.count("x") == 2**20
    assert "done" not in execution.stdout  # past the cap: dropped, counted
    assert "[output truncated: 1048581 characters of stdout dropped" in execution.stdout
    assert execution.stderr == "e" * 100  # each stream has its own cap
    assert "output lost" not in execution.stderr  # what was dropped is not reported lost


_SERVER = """
import sys
from agentrun_ci.local import EmulatorSettings, LocalEmulator
em = LocalEmulator(EmulatorSettings(spare_kernels=0, max_upload_bytes=1024 * 1024),
                   access_key_id="LTAI-attack", access_key_secret="attack-secret")
em.start()
print(em.url, flush=True)
sys.stdin.read()
em.stop()
"""


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _send_chunked(host: str, port: int, path: str, total: int) -> bytes:
    """POST `total` bytes chunked with a made-up ACS3 header; the status line answered."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
        "authorization: ACS3-HMAC-SHA256 Credential=LTAI-attack,SignedHeaders=host,Signature=0\r\n"
        "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(head.encode())
        try:
            for _ in range(total >> 20):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed while we were still sending
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in answer and (got := sock.recv(4096)):
                answer += got
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_an_oversized_unsigned_body_is_refused_before_it_is_buffered() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = httpx.URL(proc.stdout.readline().strip())
        assert url.host, "the emulator did not start"
        host, port = url.host, url.port or 80
        before = _peak_rss_kib(proc.pid)
        status = _send_chunked(host, port, "/2025-09-10/templates", 256 * 2**20)
        assert b" 413 " in status, status
        # the data plane's signature covers no body: refused before it is read at all
        status = _send_chunked(host, port, "/sandboxes/x/files", 256 * 2**20)
        assert b" 403 " in status or b" 413 " in status, status
        grown_mib = (_peak_rss_kib(proc.pid) - before) / 1024
        assert grown_mib < 64, f"the server's peak RSS grew {grown_mib:.0f} MiB"
    finally:
        with proc:  # closes its pipes
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)


# ---------------------------------------------------------------- signatures (13.7)

_AK, _SK = "LTAI-attack-key", "attack-secret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def signed() -> Iterator[Config]:
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

    emulator = LocalEmulator(
        EmulatorSettings(spare_kernels=0), access_key_id=_AK, access_key_secret=_SK
    )
    try:
        yield emulator.start()
    finally:
        emulator.stop()


def _acs3(url: str, *, when: datetime, signed_names: tuple[str, ...]) -> dict[str, str]:
    """ACS3-HMAC-SHA256 headers for a bodiless GET (agentrun-api.md §4.3)."""
    parts = httpx.URL(url)
    headers = {
        "host": parts.netloc.decode(),
        "x-acs-date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-content-sha256": hashlib.sha256(b"").hexdigest(),
    }
    names = sorted(signed_names)
    canonical = "\n".join(
        [
            "GET",
            parts.raw_path.decode().partition("?")[0],
            parts.query.decode(),
            "".join(f"{n}:{headers[n]}\n" for n in names),
            ";".join(names),
            headers["x-acs-content-sha256"],
        ]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    signature = hmac.new(_SK.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={_AK},SignedHeaders={';'.join(names)},Signature={signature}"
    )
    del headers["host"]
    return headers


def _agentrun4(url: str, when: datetime | None = None) -> dict[str, str]:
    return signature_headers(
        "GET", url, access_key_id=_AK, access_key_secret=_SK, region="cn-hangzhou", now=when
    )


def test_signatures_old_future_tampered_and_cross_plane_are_refused(signed: Config) -> None:
    base = signed.data_endpoint
    assert base is not None
    now = datetime.now(timezone.utc)
    control = f"{base}/2025-09-10/templates"
    full = ("host", "x-acs-content-sha256", "x-acs-date")
    data = f"{base}/sandboxes/none/health"
    # the controls: fresh, right scheme, everything signed
    assert httpx.get(control, headers=_acs3(control, when=now, signed_names=full)).is_success
    assert httpx.get(data, headers=_agentrun4(data)).status_code == 404
    refused = {
        "old data": (data, _agentrun4(data, now - timedelta(minutes=16))),
        "future data": (data, _agentrun4(data, now + timedelta(minutes=16))),
        "dated 2020": (data, _agentrun4(data, datetime(2020, 1, 1, tzinfo=timezone.utc))),
        "old control": (control, _acs3(control, when=now - timedelta(hours=1), signed_names=full)),
        "future control": (
            control,
            _acs3(control, when=now + timedelta(days=1), signed_names=full),
        ),
        "host unsigned": (control, _acs3(control, when=now, signed_names=full[1:])),
        "AGENTRUN4 on control": (control, _agentrun4(control)),
        "ACS3 on data": (data, _acs3(data, when=now, signed_names=full)),
        "unsigned pair": (data + "?x", _agentrun4(data)),
        "tampered path": (f"{base}/sandboxes/other/health", _agentrun4(data)),
    }
    for case, (url, headers) in refused.items():
        assert httpx.get(url, headers=headers).status_code == 403, case


def test_the_sdks_own_signing_still_passes(signed: Config) -> None:
    from agentrun_ci import ControlPlane, DataPlane, NotFoundError

    with ControlPlane(signed) as cp:
        cp.list_templates()
    with DataPlane(signed) as dp, pytest.raises(NotFoundError):
        dp.health("none")


# ---------------------------------------------------------------- bad values (13.8)


def test_bad_values_are_400s_that_name_the_field(http: httpx.Client, sid: str) -> None:
    template = http.get(f"/sandboxes/{sid}").json()["data"]["templateName"]
    body = {"templateName": template, "sandboxIdleTimeoutSeconds": "nan"}
    r = http.post("/sandboxes", json=body)
    assert r.status_code == 400, r.text
    assert "sandboxIdleTimeoutSeconds" in r.json()["message"]
    r = http.get("/2025-09-10/templates", params={"pageNumber": "abc"})
    assert r.status_code == 400, r.text
    assert "pageNumber" in r.json()["message"]
    for mode in (-1, "-1", "4755", "7777"):
        r = http.post(
            f"/sandboxes/{sid}/files", json={"path": "m.txt", "content": "", "mode": mode}
        )
        assert r.status_code == 400, (mode, r.text)
        assert "mode" in r.json()["message"]
    _execute(http, sid, "import os\nos.symlink('loop', 'loop')")
    long_name = "n" * 300
    cases = [
        ("GET", "/files", {"path": "loop/x"}),
        ("GET", "/files", {"path": "loop"}),
        ("GET", "/filesystem", {"path": "loop"}),
        ("GET", "/filesystem/stat", {"path": f"{long_name}/x"}),
        ("GET", "/files", {"path": long_name}),
    ]
    for method, route, params in cases:
        r = http.request(method, f"/sandboxes/{sid}{route}", params=params)
        assert r.status_code == 400, (route, params, r.text)
        assert "path" in r.json()["message"]
        assert "/tmp" not in r.text
        assert "agentrun-local" not in r.text
    w = http.post(f"/sandboxes/{sid}/files", json={"path": f"loop/{long_name}", "content": ""})
    assert w.status_code == 400, w.text
    for route, body in (
        ("/processes/cmd", {"command": "pwd", "cwd": "loop/x"}),
        ("/contexts", {"language": "python", "cwd": "loop"}),
    ):
        r = http.post(f"/sandboxes/{sid}{route}", json=body)
        assert r.status_code == 400, (route, r.text)
        assert "/tmp" not in r.text


# ---------------------------------------------------------------- bad bodies


@pytest.mark.parametrize(
    ("route", "body", "named"),
    [
        ("contexts/execute", b'{"code": "print(\\"\\ud800\\")", "timeout": 5}', "field 'code'"),
        ("files", b'{"path": "/home/user/\\udc80.txt", "content": "x"}', "field 'path'"),
        ("processes/cmd", b'{"command": "echo", "cwd": ["\\udfff"]}', "field 'cwd'"),
        ("contexts/execute", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        ("contexts/execute", b'{"code": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested deeper"),
    ],
)
def test_a_bad_body_is_a_400_that_names_it_and_the_connection_stays_usable(
    http: httpx.Client, sid: str, route: str, body: bytes, named: str
) -> None:
    r = http.post(
        f"/sandboxes/{sid}/{route}", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert named in r.json()["message"]
    assert http.get(f"/sandboxes/{sid}/health").status_code == 200  # same keep-alive connection
