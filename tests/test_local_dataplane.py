"""Our DataPlane (sync and async) against the emulator, route by route, over loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import attrs
import httpx
import pytest

pytest.importorskip("jupyter_client")

from agentrun_ci._async.data_plane import AsyncDataPlane
from agentrun_ci._config import Config
from agentrun_ci._errors import BadRequestError, NotFoundError, PermissionDeniedError
from agentrun_ci._sync.control_plane import ControlPlane
from agentrun_ci._sync.data_plane import DataPlane
from agentrun_ci.local import EmulatorSettings, LocalEmulator


@pytest.fixture(scope="module")
def template(emulator: Config) -> Iterator[str]:
    name = f"dp-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=str(emulator.control_endpoint)) as http:
        assert http.post("/2025-09-10/templates", json={"templateName": name}).status_code == 200
        yield name
        http.delete(f"/2025-09-10/templates/{name}")


@pytest.fixture(scope="module")
def dp(emulator: Config) -> Iterator[DataPlane]:
    with DataPlane(emulator) as plane:
        yield plane


@pytest.fixture(scope="module")
def sid(dp: DataPlane, template: str) -> Iterator[str]:
    sandbox = dp.create_sandbox(
        template, idle_timeout=600, sandbox_id=f"own-{uuid.uuid4().hex[:6]}"
    )
    assert sandbox.status == "READY"
    yield sandbox.sandbox_id
    dp.delete_sandbox(sandbox.sandbox_id)


def test_sandbox_lifecycle(dp: DataPlane, template: str) -> None:
    sandbox = dp.create_sandbox(template)
    assert len(sandbox.sandbox_id) == 26  # a ULID
    assert dp.get_sandbox(sandbox.sandbox_id).template_name == template
    assert dp.wait_until_healthy(sandbox.sandbox_id, timeout=10).ok
    assert dp.stop_sandbox(sandbox.sandbox_id).status == "TERMINATED"
    dp.delete_sandbox(sandbox.sandbox_id)
    with pytest.raises(NotFoundError):
        dp.get_sandbox(sandbox.sandbox_id)


def test_contexts_and_execute(dp: DataPlane, sid: str) -> None:
    ctx = dp.create_context(sid, language="python", cwd="/home/user")
    assert (ctx.language, ctx.cwd) == ("python", "/home/user")
    assert ctx.id in [c.id for c in dp.list_contexts(sid)]
    assert dp.get_context(sid, ctx.id).id == ctx.id
    run = dp.execute(sid, "print('hi')\n6 * 7", context_id=ctx.id)
    assert (run.stdout, run.text, run.status, run.context_id) == ("hi\n", "42", "ok", ctx.id)
    assert run.execution_count == 1
    failed = dp.execute(sid, "raise ValueError('bad')", context_id=ctx.id)
    assert failed.error is not None
    assert (failed.error.name, failed.error.value, failed.status) == ("ValueError", "bad", "error")
    plot = dp.execute(
        sid, "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()", context_id=ctx.id
    )
    assert any(r.png for r in plot.results)
    slow = dp.execute(sid, "import time\ntime.sleep(5)", context_id=ctx.id, timeout=0.5)
    assert slow.status == "timeout"
    default = dp.execute(sid, "1 + 1")
    assert default.text == "2"
    assert default.context_id
    assert default.context_id != ctx.id
    dp.delete_context(sid, ctx.id)
    with pytest.raises(NotFoundError):
        dp.get_context(sid, ctx.id)


def test_execute_timeout_above_cap_is_refused(dp: DataPlane, sid: str) -> None:
    from agentrun_ci._errors import InvalidArgumentError

    with pytest.raises((BadRequestError, InvalidArgumentError)):
        dp.execute(sid, "1", timeout=31)


def test_files(dp: DataPlane, sid: str, tmp_path: Path) -> None:
    written = dp.write_file(sid, "/home/user/dp/note.txt", "héllo")
    assert written.path == "/home/user/dp/note.txt"
    content = dp.read_file(sid, "/home/user/dp/note.txt")
    assert content.text == "héllo"
    dp.write_file(sid, "dp/raw.bin", b"\x00\xff\x10")
    assert dp.read_file(sid, "dp/raw.bin").content == b"\x00\xff\x10"
    assert {e.name for e in dp.list_files(sid, "/home/user/dp")} == {"note.txt", "raw.bin"}
    assert dp.stat(sid, "dp/note.txt").size == len("héllo".encode())
    assert dp.mkdir(sid, "/home/user/dp/sub/deeper").type == "directory"
    deep = dp.list_files(sid, "/home/user/dp", depth=3)
    assert "/home/user/dp/sub/deeper" in {e.path for e in deep}
    assert dp.move(sid, "dp/note.txt", "dp/sub/moved.txt").path == "/home/user/dp/sub/moved.txt"
    local = tmp_path / "up.bin"
    local.write_bytes(base64.b64decode(base64.b64encode(bytes(range(256)) * 50)))
    assert dp.upload(sid, local, "/home/user/dp/up.bin").size == local.stat().st_size
    back = dp.download(sid, "/home/user/dp/up.bin", tmp_path / "down.bin")
    assert back.read_bytes() == local.read_bytes()
    dp.remove(sid, "/home/user/dp")
    dp.remove(sid, "/home/user/dp")  # idempotent
    with pytest.raises(NotFoundError):
        dp.stat(sid, "dp")
    with pytest.raises(BadRequestError):
        dp.read_file(sid, "/etc/passwd")


def test_commands_and_processes(dp: DataPlane, sid: str) -> None:
    result = dp.run_command(sid, "echo out; echo err >&2; exit 2", cwd="/home/user")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "out\n", "err\n")
    dp.run_command(sid, "sleep 30 &")
    procs = dp.list_processes(sid)
    target = next(p for p in procs if p.command == "sleep 30 &")
    assert dp.get_process(sid, str(target.pid)).pid == target.pid
    dp.kill_process(sid, str(target.pid))
    with pytest.raises(NotFoundError):
        dp.get_process(sid, "1")


@pytest.mark.anyio
async def test_async_data_plane(emulator: Config, template: str) -> None:
    async with AsyncDataPlane(emulator) as adp:
        sandbox = await adp.create_sandbox(template)
        try:
            ctx = await adp.create_context(sandbox.sandbox_id)
            run = await adp.execute(sandbox.sandbox_id, "x = 5\nx * 2", context_id=ctx.id)
            assert run.text == "10"
            await adp.write_file(sandbox.sandbox_id, "a.txt", "A")
            assert (await adp.read_file(sandbox.sandbox_id, "/home/user/a.txt")).text == "A"
            cmd = await adp.run_command(sandbox.sandbox_id, "cat a.txt")
            assert cmd.stdout == "A"
        finally:
            await adp.delete_sandbox(sandbox.sandbox_id)


def test_signed_data_plane() -> None:
    settings = EmulatorSettings(spare_kernels=0)
    with LocalEmulator(settings, access_key_id="AKlocal", access_key_secret="SKlocal") as config:
        with httpx.Client(base_url=str(config.control_endpoint)) as http:
            assert http.post("/2025-09-10/templates", json={"templateName": "s"}).status_code == 403
        with DataPlane(config) as signed, pytest.raises(NotFoundError):
            signed.get_sandbox("missing")  # signed, so it reaches the route
        unsigned = Config(data_endpoint=config.data_endpoint, account_id="local")
        with DataPlane(unsigned) as anonymous, pytest.raises(PermissionDeniedError):
            anonymous.get_sandbox("missing")


def _sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def test_big_files_stream_both_ways_without_being_held(
    dp: DataPlane, sid: str, tmp_path: Path
) -> None:
    """24 MiB up (from a file object, and from a generator) and down (to a file, and as an
    iterator): the content arrives whole, and neither side of this process (client and the
    in-process emulator) ever held more than a fraction of it."""
    size = 24 * 1024 * 1024
    local = tmp_path / "big.bin"
    with local.open("wb") as out:
        for _ in range(24):
            out.write(os.urandom(1 << 20))
    digest = _sha256(_file_chunks(local))
    peaks: dict[str, int] = {}
    tracemalloc.start()
    try:
        with local.open("rb") as handle:
            assert dp.upload(sid, handle, "/home/user/big/one.bin").size == size
        peaks["upload from a file object"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        assert dp.upload(sid, _file_chunks(local), "/home/user/big/two.bin").size == size
        peaks["upload from a generator"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        back = dp.download(sid, "/home/user/big/one.bin", tmp_path / "back.bin")
        peaks["download to a file"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        streamed = _sha256(dp.iter_download(sid, "/home/user/big/two.bin"))
        peaks["iter_download"] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _sha256(_file_chunks(back)) == digest
    assert streamed == digest
    held = {what: peak for what, peak in peaks.items() if peak > size // 4}
    assert not held, f"peak traced memory over a quarter of the {size} bytes moved: {held}"
    dp.remove(sid, "/home/user/big")


@pytest.mark.anyio
async def test_signed_upload_streams_from_an_async_iterable() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (b"signed, ", b"and ", b"streamed"):
            yield piece

    settings = EmulatorSettings(spare_kernels=0)
    emulator = LocalEmulator(settings, access_key_id="AKlocal", access_key_secret="SKlocal")
    async with emulator as config:
        with ControlPlane(config) as cp:
            cp.create_template("up")
            cp.wait_template_ready("up")
        async with AsyncDataPlane(config) as adp:
            sandbox = await adp.create_sandbox("up")
            entry = await adp.upload(sandbox.sandbox_id, chunks(), "/home/user/s.txt")
            assert (entry.path, entry.size) == ("/home/user/s.txt", 20)
            read = await adp.read_file(sandbox.sandbox_id, "/home/user/s.txt")
            assert read.content == b"signed, and streamed"
        forged = attrs.evolve(config, access_key_secret="not-the-secret")
        async with AsyncDataPlane(forged) as bad:
            with pytest.raises(PermissionDeniedError):
                await bad.upload(sandbox.sandbox_id, b"forged", "/home/user/s.txt")
        async with AsyncDataPlane(config) as adp:
            read = await adp.read_file(sandbox.sandbox_id, "/home/user/s.txt")
            assert read.content == b"signed, and streamed"
            await adp.delete_sandbox(sandbox.sandbox_id)
