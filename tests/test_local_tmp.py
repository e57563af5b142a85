"""The emulator's file API reaches the sandbox's /tmp as well as /home/user, and it is
the same directory its code sees: at /tmp in the jail, at $TMPDIR without one."""

from __future__ import annotations

import base64
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import wait_until

from agentrun_ci._config import Config
from agentrun_ci.local import EmulatorSettings, LocalEmulator
from agentrun_ci.local._fs import SandboxFS

pytest.importorskip("jupyter_client")

_HAS_JAIL = sys.platform.startswith("linux") and shutil.which("bwrap") is not None
# the sandbox's /tmp as a shell word and as python, the same in both modes
_SH_TMP = '"${TMPDIR:-/tmp}"'
_PY_TMP = "__import__('tempfile').gettempdir()"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(True, id="jail", marks=pytest.mark.skipif(not _HAS_JAIL, reason="no bwrap")),
        pytest.param(False, id="no-jail"),
    ],
)
def mode(request: pytest.FixtureRequest) -> Iterator[tuple[httpx.Client, bool]]:
    """(client, jailed): the session's emulator (default settings, jailed), or one without
    a jail whose spare kernel serves the first context (it was started in another
    directory)."""
    jailed: bool = request.param
    if jailed:
        config: Config = request.getfixturevalue("emulator")
        assert config.data_endpoint is not None
        with httpx.Client(base_url=config.data_endpoint, timeout=60) as http:
            yield http, True
        return
    emulator = LocalEmulator(EmulatorSettings(jail=False, spare_kernels=1))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
        assert emulator.core is not None
        assert emulator.core.jail is None
        if emulator.core.refusal:  # as root, where the sandbox uid cannot run the interpreter
            pytest.skip(emulator.core.refusal)
        yield http, False


@pytest.fixture(scope="module")
def http(mode: tuple[httpx.Client, bool]) -> httpx.Client:
    return mode[0]


@pytest.fixture(scope="module")
def jailed(mode: tuple[httpx.Client, bool]) -> bool:
    return mode[1]


@pytest.fixture(scope="module")
def sid(http: httpx.Client) -> Iterator[str]:
    name = f"tmp-{uuid.uuid4().hex[:8]}"
    assert http.post("/2025-09-10/templates", json={"templateName": name}).status_code == 200
    made = http.post("/sandboxes", json={"templateName": name})
    assert made.status_code == 200, made.text
    sandbox_id = str(made.json()["data"]["sandboxId"])
    yield sandbox_id
    http.delete(f"/sandboxes/{sandbox_id}")
    http.delete(f"/2025-09-10/templates/{name}")


def _run(http: httpx.Client, sid: str, code: str) -> str:
    r = http.post(f"/sandboxes/{sid}/contexts/execute", json={"code": code})
    assert r.status_code == 200, r.text
    events = r.json()["results"]
    assert not [e for e in events if e["type"] == "error"], events
    return "".join(e.get("text") or "" for e in events if e["type"] == "stdout")


def _cmd(http: httpx.Client, sid: str, command: str, **extra: object) -> str:
    r = http.post(
        f"/sandboxes/{sid}/processes/cmd", json={"command": command, "timeout": 30, **extra}
    )
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["exitCode"] == 0, result
    return str(result["stdout"])


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_file_written_at_tmp_is_what_commands_and_kernels_read(
    http: httpx.Client, sid: str
) -> None:
    name = _unique("api")
    w = http.post(f"/sandboxes/{sid}/files", json={"path": f"/tmp/{name}", "content": "from api"})
    assert w.status_code == 200, w.text
    assert (w.json()["path"], w.json()["name"]) == (f"/tmp/{name}", name)
    assert _cmd(http, sid, f"cat {_SH_TMP}/{name}") == "from api"
    assert _run(http, sid, f"print(open({_PY_TMP} + '/{name}').read(), end='')") == "from api"


def test_the_jail_sees_it_at_tmp_itself(http: httpx.Client, sid: str, jailed: bool) -> None:
    if not jailed:
        pytest.skip("without a jail the sandbox's /tmp is $TMPDIR (the host's /tmp is shared)")
    name = _unique("lit")
    http.post(f"/sandboxes/{sid}/files", json={"path": f"/tmp/{name}", "content": "x"})
    assert _cmd(http, sid, f"cat /tmp/{name}") == "x"
    assert _run(http, sid, f"print(open('/tmp/{name}').read())") == "x\n"
    _cmd(http, sid, f"echo back > /tmp/{name}.b")
    read = http.get(f"/sandboxes/{sid}/files", params={"path": f"/tmp/{name}.b"})
    assert read.json()["content"] == "back\n"


def test_a_file_made_in_a_command_is_read_listed_stated_and_downloaded_at_tmp(
    http: httpx.Client, sid: str
) -> None:
    d = _unique("cmd")
    _cmd(http, sid, f"mkdir -p {_SH_TMP}/{d}/sub && printf 'made\\001' > {_SH_TMP}/{d}/f.bin")
    read = http.get(f"/sandboxes/{sid}/files", params={"path": f"/tmp/{d}/f.bin"}).json()
    assert (read["path"], read["encoding"]) == (f"/tmp/{d}/f.bin", "base64")
    assert base64.b64decode(read["content"]) == b"made\x01"
    listed = http.get(f"/sandboxes/{sid}/filesystem", params={"path": f"/tmp/{d}"}).json()
    assert listed["path"] == f"/tmp/{d}"
    assert [(e["path"], e["type"]) for e in listed["entries"]] == [
        (f"/tmp/{d}/f.bin", "file"),
        (f"/tmp/{d}/sub", "directory"),
    ]
    entry = http.get(f"/sandboxes/{sid}/filesystem/stat", params={"path": f"/tmp/{d}/f.bin"})
    assert (entry.json()["entry"]["size"], entry.json()["entry"]["name"]) == (5, "f.bin")
    got = http.get(f"/sandboxes/{sid}/filesystem/download", params={"path": f"/tmp/{d}/f.bin"})
    assert (got.status_code, got.content) == (200, b"made\x01")


def test_tmp_itself_is_stated_and_listed(http: httpx.Client, sid: str) -> None:
    name = _unique("top")
    _cmd(http, sid, f"touch {_SH_TMP}/{name}")
    entry = http.get(f"/sandboxes/{sid}/filesystem/stat", params={"path": "/tmp"}).json()["entry"]
    assert (entry["path"], entry["name"], entry["type"]) == ("/tmp", "tmp", "directory")
    listed = http.get(f"/sandboxes/{sid}/filesystem", params={"path": "/tmp/"}).json()
    assert listed["path"] == "/tmp"
    assert f"/tmp/{name}" in [e["path"] for e in listed["entries"]]
    # the file API cannot remove, move or replace /tmp itself
    for route, body in (
        ("remove", {"path": "/tmp"}),
        ("move", {"source": "/tmp", "destination": "/home/user/t"}),
    ):
        r = http.post(f"/sandboxes/{sid}/filesystem/{route}", json=body)
        assert r.status_code == 400, r.text
        assert "/tmp itself" in r.json()["message"]


def test_mkdir_upload_move_and_remove_under_tmp(http: httpx.Client, sid: str) -> None:
    base = f"/sandboxes/{sid}/filesystem"
    d = f"/tmp/{_unique('tree')}"
    made = http.post(f"{base}/mkdir", json={"path": f"{d}/x/y", "parents": True})
    assert made.status_code == 200, made.text
    assert (made.json()["entry"]["path"], made.json()["entry"]["type"]) == (f"{d}/x/y", "directory")
    up = http.post(
        f"{base}/upload", files={"file": ("u.txt", b"uploaded")}, data={"path": f"{d}/x"}
    )
    assert up.json()["path"] == f"{d}/x/u.txt", up.text
    moved = http.post(f"{base}/move", json={"source": f"{d}/x/u.txt", "destination": f"{d}/v.txt"})
    assert moved.json()["entry"]["path"] == f"{d}/v.txt", moved.text
    assert _cmd(http, sid, f"cat {_SH_TMP}/{d.removeprefix('/tmp/')}/v.txt") == "uploaded"
    removed = http.post(f"{base}/remove", json={"path": d})
    assert removed.json()["removed"] is True, removed.text
    assert _cmd(http, sid, f"test -e {_SH_TMP}/{d.removeprefix('/tmp/')} || echo gone") == "gone\n"


def test_move_between_home_and_tmp_both_ways(http: httpx.Client, sid: str) -> None:
    base = f"/sandboxes/{sid}/filesystem"
    name = _unique("mv")
    http.post(f"/sandboxes/{sid}/files", json={"path": f"/home/user/{name}/f", "content": "1"})
    there = http.post(f"{base}/move", json={"source": f"/home/user/{name}", "destination": "/tmp"})
    assert there.json()["entry"]["path"] == f"/tmp/{name}", there.text  # into the directory
    assert _cmd(http, sid, f"cat {_SH_TMP}/{name}/f; test -e {name} || echo ' left'") == "1 left\n"
    back = http.post(
        f"{base}/move", json={"source": f"/tmp/{name}/f", "destination": f"/home/user/{name}.f"}
    )
    assert back.json()["entry"]["path"] == f"/home/user/{name}.f", back.text
    assert _run(http, sid, f"print(open('{name}.f').read())") == "1\n"
    again = http.post(  # moved already: the same answer, as for a move within one root
        f"{base}/move", json={"source": f"/tmp/{name}/f", "destination": f"/home/user/{name}.f"}
    )
    assert again.json()["entry"]["path"] == f"/home/user/{name}.f", again.text


def test_a_context_and_a_command_may_work_in_tmp(http: httpx.Client, sid: str) -> None:
    d = _unique("cwd")
    http.post(f"/sandboxes/{sid}/filesystem/mkdir", json={"path": f"/tmp/{d}"})
    assert _cmd(http, sid, "ls", cwd=f"/tmp/{d}") == ""
    _cmd(http, sid, "echo here > f", cwd=f"/tmp/{d}")
    assert (
        http.get(f"/sandboxes/{sid}/files", params={"path": f"/tmp/{d}/f"}).json()["content"]
        == "here\n"
    )
    ctx = http.post(f"/sandboxes/{sid}/contexts", json={"language": "python", "cwd": f"/tmp/{d}"})
    assert ctx.status_code == 200, ctx.text
    ran = http.post(
        f"/sandboxes/{sid}/contexts/execute",
        json={"code": "print(open('f').read(), end='')", "contextId": ctx.json()["id"]},
    )
    assert [e["text"] for e in ran.json()["results"] if e["type"] == "stdout"] == ["here\n"]
    http.delete(f"/sandboxes/{sid}/contexts/{ctx.json()['id']}")


def test_a_symlink_under_tmp_is_never_followed_out(http: httpx.Client, sid: str) -> None:
    d = _unique("link")
    _cmd(http, sid, f"mkdir {_SH_TMP}/{d} && ln -s /etc {_SH_TMP}/{d}/etc")
    _cmd(http, sid, f"ln -s /etc/passwd {_SH_TMP}/{d}/passwd")
    for path in (f"/tmp/{d}/etc/passwd", f"/tmp/{d}/passwd"):
        r = http.get(f"/sandboxes/{sid}/files", params={"path": path})
        assert r.status_code == 400, r.text
        assert "symbolic link" in r.json()["message"]
        w = http.post(f"/sandboxes/{sid}/files", json={"path": path, "content": "pwned"})
        assert w.status_code == 400, w.text
    listed = http.get(f"/sandboxes/{sid}/filesystem", params={"path": f"/tmp/{d}", "depth": 3})
    assert {e["path"]: e["type"] for e in listed.json()["entries"]} == {
        f"/tmp/{d}/etc": "symlink",
        f"/tmp/{d}/passwd": "symlink",
    }
    cwd = http.post(
        f"/sandboxes/{sid}/processes/cmd", json={"command": "pwd", "cwd": f"/tmp/{d}/etc"}
    )
    assert cwd.status_code == 400 or cwd.json()["result"]["stdout"] == "/etc\n", cwd.text


@pytest.mark.parametrize("path", ["/etc/passwd", "/tmpx/a", "/var/tmp/a", "/tmp/../etc/passwd"])
def test_other_absolute_paths_are_still_refused(http: httpx.Client, sid: str, path: str) -> None:
    r = http.get(f"/sandboxes/{sid}/files", params={"path": path})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert repr(path) in message
    if ".." not in path:
        assert "outside /home/user and /tmp" in message


def test_background_jobs_keep_their_files_in_the_sandboxs_tmp(http: httpx.Client, sid: str) -> None:
    from agentrun_ci._jobs import start_script, started_pid

    pid = started_pid(_cmd(http, sid, start_script("echo job-out")))
    listed = http.get(f"/sandboxes/{sid}/filesystem", params={"path": "/tmp/.agentrun-jobs"})
    assert str(pid) in [e["name"] for e in listed.json()["entries"]], listed.text


def test_api_paths_map_back_from_both_roots(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    fs = SandboxFS(tmp_path / "home", tmp_path / "tmp")
    assert fs.api_path(tmp_path / "home") == "/home/user"
    assert fs.api_path(tmp_path / "tmp" / "a" / "b") == "/tmp/a/b"
    assert fs.locate("x/y").api == "/home/user/x/y"
    assert fs.locate("/tmp").is_root
    assert fs.resolve("/tmp/a") == (tmp_path / "tmp" / "a").resolve()
    with pytest.raises(ValueError, match="neither"):
        fs.api_path(tmp_path)


def test_without_a_jail_a_spare_kernel_takes_its_sandboxs_tmpdir() -> None:
    """A spare kernel starts in a directory of its own, renamed when a sandbox takes it:
    its TMPDIR must follow, or tempfile would fall back to the host's shared /tmp."""
    emulator = LocalEmulator(EmulatorSettings(jail=False, spare_kernels=1))
    with emulator as config, httpx.Client(base_url=str(config.data_endpoint), timeout=60) as http:
        core = emulator.core
        assert core is not None
        if core.refusal:  # as root, where the sandbox uid cannot run the interpreter
            pytest.skip(core.refusal)
        wait_until(lambda: core.pool.ready, "a spare kernel")
        http.post("/2025-09-10/templates", json={"templateName": "spare"})
        sid = str(
            http.post("/sandboxes", json={"templateName": "spare"}).json()["data"]["sandboxId"]
        )
        assert core.sandboxes[sid].spares  # the first context gets the slot's
        http.post(f"/sandboxes/{sid}/files", json={"path": "/tmp/seen", "content": "same dir"})
        assert _run(http, sid, f"print(open({_PY_TMP} + '/seen').read())") == "same dir\n"
        assert core.sandboxes[sid].spares == []
