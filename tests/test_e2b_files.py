"""`sandbox.files` of the E2B shim against the local emulator, from E2B's documented API."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agentrun_ci import Config, e2b
from agentrun_ci._models import FileEntry
from agentrun_ci.e2b import (
    AsyncSandbox,
    EntryInfo,
    FileNotFoundException,
    FileStreamReader,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    Sandbox,
    SandboxException,
    WriteEntry,
    WriteInfo,
)
from agentrun_ci.e2b import _filesystem as fs

ROOT = Path(__file__).resolve().parents[1]
E = FilesystemEventType


@pytest.fixture(scope="module")
def sbx(emulator: Config) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(config=emulator)
    yield sandbox
    sandbox.kill()
    e2b.close_shared()


@pytest.fixture
def folder(sbx: Sandbox) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    sbx.files.make_dir(name)
    yield name
    sbx.files.remove(name)


# ---------------------------------------------------------------- reading


def test_read_formats_give_str_bytearray_and_a_stream(sbx: Sandbox, folder: str) -> None:
    data = bytes(range(256)) * 8  # not UTF-8
    sbx.files.write(f"{folder}/b.bin", data)
    assert sbx.files.read(f"{folder}/b.bin", format="bytes") == bytearray(data)
    assert isinstance(sbx.files.read(f"{folder}/b.bin", format="bytes"), bytearray)
    stream = sbx.files.read(f"{folder}/b.bin", format="stream")
    assert isinstance(stream, FileStreamReader)
    assert b"".join(stream) == data
    sbx.files.write(f"{folder}/t.txt", "héllo")
    assert sbx.files.read(f"{folder}/t.txt") == "héllo"


def test_stream_read_partly_then_closed_ends_the_download(sbx: Sandbox, folder: str) -> None:
    sbx.files.write(f"{folder}/big.txt", "x" * 300_000)
    stream = sbx.files.read(f"{folder}/big.txt", format="stream")
    assert len(next(stream)) > 0
    stream.close()
    stream.close()  # twice: no error
    assert list(stream) == []  # nothing more comes after close
    with sbx.files.read(f"{folder}/big.txt", format="stream") as inside:
        assert b"".join(inside) == b"x" * 300_000


def test_stream_of_an_empty_file_is_empty(sbx: Sandbox, folder: str) -> None:
    sbx.files.write(f"{folder}/empty.txt", "")
    assert list(sbx.files.read(f"{folder}/empty.txt", format="stream")) == []


def test_reading_a_missing_file_raises_file_not_found(sbx: Sandbox) -> None:
    for format in ("text", "bytes", "stream"):
        with pytest.raises(FileNotFoundException) as caught:
            sbx.files.read("no-such-file.txt", format=format)  # type: ignore[call-overload]
        assert isinstance(caught.value, NotFoundException)


def test_read_refuses_an_unknown_format_and_another_user(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="format"):
        sbx.files.read("a.txt", format="lines")  # type: ignore[call-overload]
    with pytest.raises(InvalidArgumentException, match="only user"):
        sbx.files.read("a.txt", user="root")


# ---------------------------------------------------------------- writing


def test_write_takes_str_bytes_and_file_objects(sbx: Sandbox, folder: str) -> None:
    for name, data, text in (
        ("s.txt", "text", "text"),
        ("b.bin", b"bytes", "bytes"),
        ("bio.bin", io.BytesIO(b"bytes io"), "bytes io"),
        ("sio.txt", io.StringIO("string io"), "string io"),
    ):
        info = sbx.files.write(f"{folder}/{name}", data)
        assert info == WriteInfo(name=name, type=FileType.FILE, path=f"/home/user/{folder}/{name}")
        assert sbx.files.read(f"{folder}/{name}") == text


def test_write_refuses_what_is_not_data(sbx: Sandbox, folder: str) -> None:
    with pytest.raises(InvalidArgumentException, match="Unsupported data type"):
        sbx.files.write(f"{folder}/x.txt", 42)  # type: ignore[arg-type]


def test_write_files_writes_each_entry_and_nothing_for_none(sbx: Sandbox, folder: str) -> None:
    assert sbx.files.write_files([]) == []
    infos = sbx.files.write_files(
        [WriteEntry(path=f"{folder}/deep/{i}.txt", data=f"file {i}") for i in range(3)]
    )
    assert [i.path for i in infos] == [f"/home/user/{folder}/deep/{i}.txt" for i in range(3)]
    assert [sbx.files.read(i.path) for i in infos] == ["file 0", "file 1", "file 2"]


def test_gzip_and_octet_stream_round_trip_the_data(sbx: Sandbox, folder: str) -> None:
    text = "compressible " * 10_000
    sbx.files.write(f"{folder}/g.txt", io.BytesIO(text.encode()), gzip=True, use_octet_stream=True)
    assert sbx.files.read(f"{folder}/g.txt", gzip=True) == text
    assert b"".join(sbx.files.read(f"{folder}/g.txt", format="stream", gzip=True)) == text.encode()
    with pytest.raises(InvalidArgumentException, match="gzip"):
        sbx.files.write(f"{folder}/g.txt", "x", gzip="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- metadata


def test_metadata_is_kept_listed_renamed_and_cleared(sbx: Sandbox, folder: str) -> None:
    meta = {"author": "me", "Stage": "one"}
    info = sbx.files.write(f"{folder}/m.txt", "x", metadata=meta)
    assert info.metadata == {"author": "me", "stage": "one"}  # keys lowercased, as in E2B
    assert sbx.files.get_info(f"{folder}/m.txt").metadata == info.metadata
    listed = {e.name: e for e in sbx.files.list(folder)}
    assert listed["m.txt"].metadata == info.metadata
    moved = sbx.files.rename(f"{folder}/m.txt", f"{folder}/n.txt")
    assert moved.metadata == info.metadata
    again = sbx.files.write(f"{folder}/n.txt", "y")
    assert again.metadata is None
    assert sbx.files.get_info(f"{folder}/n.txt").metadata is None


def test_metadata_set_inside_the_sandbox_shows_in_get_info(sbx: Sandbox, folder: str) -> None:
    sbx.files.write(f"{folder}/x.txt", "x")
    script = f"import os; os.setxattr('/home/user/{folder}/x.txt', 'user.e2b.k', b'v')"
    assert sbx.commands.run(f'python3 -c "{script}"').exit_code == 0
    assert sbx.files.get_info(f"{folder}/x.txt").metadata == {"k": "v"}


def test_invalid_metadata_is_refused_before_writing(sbx: Sandbox, folder: str) -> None:
    for bad in ({"bad key": "v"}, {"": "v"}, {"k": "line\n"}, {"k": "é"}):
        with pytest.raises(InvalidArgumentException, match="metadata"):
            sbx.files.write(f"{folder}/never.txt", "x", metadata=bad)
    assert not sbx.files.exists(f"{folder}/never.txt")


# ---------------------------------------------------------------- describing


def test_list_goes_depth_levels_down_in_name_order(sbx: Sandbox, folder: str) -> None:
    sbx.files.make_dir(f"{folder}/a/a1")
    sbx.files.write(f"{folder}/b.txt", "b")
    assert [e.name for e in sbx.files.list(folder)] == ["a", "b.txt"]
    assert [e.name for e in sbx.files.list(folder, depth=None)] == ["a", "b.txt"]
    deep = sbx.files.list(folder, depth=2)
    assert [(e.name, e.type) for e in deep] == [
        ("a", FileType.DIR),
        ("a1", FileType.DIR),
        ("b.txt", FileType.FILE),
    ]
    for depth in (0, -1):
        with pytest.raises(InvalidArgumentException, match="depth should be at least 1"):
            sbx.files.list(folder, depth=depth)


def test_get_info_has_e2b_fields(sbx: Sandbox, folder: str) -> None:
    sbx.files.write(f"{folder}/f.txt", "four")
    info = sbx.files.get_info(f"{folder}/f.txt")
    assert isinstance(info, EntryInfo)
    assert (info.name, info.type, info.size, info.mode) == ("f.txt", FileType.FILE, 4, 0o644)
    assert info.path == f"/home/user/{folder}/f.txt"
    assert info.permissions == "-rw-r--r--"
    assert info.owner
    assert info.group
    assert info.modified_time.tzinfo is not None
    assert info.symlink_target is None
    assert info.metadata is None
    assert sbx.files.get_info(folder).type is FileType.DIR
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info(f"{folder}/none")


def test_a_link_has_its_targets_type_and_path(sbx: Sandbox, folder: str) -> None:
    sbx.files.write(f"{folder}/target.txt", "t")
    sbx.commands.run("ln -s target.txt link.txt", cwd=f"/home/user/{folder}")
    info = sbx.files.get_info(f"{folder}/link.txt")
    assert info.type is FileType.FILE
    assert info.symlink_target == f"/home/user/{folder}/target.txt"
    listed = {e.name: e for e in sbx.files.list(folder)}
    assert listed["link.txt"].symlink_target == info.symlink_target


def test_make_dir_exists_remove_and_rename(sbx: Sandbox, folder: str) -> None:
    assert sbx.files.make_dir(f"{folder}/d/e") is True
    assert sbx.files.make_dir(f"{folder}/d/e") is False
    assert sbx.files.exists(f"{folder}/d/e")
    moved = sbx.files.rename(f"{folder}/d", f"{folder}/dd")
    assert (moved.path, moved.type) == (f"/home/user/{folder}/dd", FileType.DIR)
    assert not sbx.files.exists(f"{folder}/d")
    sbx.files.remove(f"{folder}/dd")
    sbx.files.remove(f"{folder}/dd")  # gone already: no error
    assert not sbx.files.exists(f"{folder}/dd")
    with pytest.raises(FileNotFoundException):
        sbx.files.rename(f"{folder}/none", f"{folder}/other")


# ---------------------------------------------------------------- watching


def _kinds(events: list[FilesystemEvent]) -> list[tuple[str, FilesystemEventType]]:
    return [(e.name, e.type) for e in events]


def test_sync_watch_reports_each_kind_of_change(sbx: Sandbox, folder: str) -> None:
    handle = sbx.files.watch_dir(folder)
    sbx.files.write(f"{folder}/w.txt", "one")
    assert _kinds(handle.get_new_events()) == [
        ("w.txt", E.CREATE),
        ("w.txt", E.CHMOD),
        ("w.txt", E.WRITE),
    ]
    sbx.files.write(f"{folder}/w.txt", "two, longer")
    assert _kinds(handle.get_new_events()) == [("w.txt", E.WRITE)]
    sbx.commands.run(f"chmod 600 /home/user/{folder}/w.txt")
    assert _kinds(handle.get_new_events()) == [("w.txt", E.CHMOD)]
    sbx.files.rename(f"{folder}/w.txt", f"{folder}/v.txt")
    assert _kinds(handle.get_new_events()) == [("w.txt", E.RENAME), ("v.txt", E.CREATE)]
    sbx.files.remove(f"{folder}/v.txt")
    assert _kinds(handle.get_new_events()) == [("v.txt", E.REMOVE)]
    assert handle.get_new_events() == []
    handle.stop()
    with pytest.raises(SandboxException, match="already stopped"):
        handle.get_new_events()


def test_recursive_watch_names_nested_entries(sbx: Sandbox, folder: str) -> None:
    sbx.files.make_dir(f"{folder}/in")
    flat = sbx.files.watch_dir(folder)
    deep = sbx.files.watch_dir(folder, recursive=True, include_entry=True)
    sbx.files.write(f"{folder}/in/f.txt", "x")
    assert flat.get_new_events() == []  # the directory's own time is not an event
    events = deep.get_new_events()
    assert _kinds(events) == [("in/f.txt", E.CREATE), ("in/f.txt", E.CHMOD), ("in/f.txt", E.WRITE)]
    assert events[0].entry is not None
    assert events[0].entry.type is FileType.FILE


def test_watching_a_missing_directory_or_a_file_is_refused(sbx: Sandbox, folder: str) -> None:
    with pytest.raises(FileNotFoundException):
        sbx.files.watch_dir(f"{folder}/none")
    sbx.files.write(f"{folder}/f.txt", "x")
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        sbx.files.watch_dir(f"{folder}/f.txt")


def test_diff_of_listings_without_a_sandbox() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    t1 = datetime(2025, 1, 2, tzinfo=timezone.utc)
    old = fs.snapshot(
        [
            FileEntry(name="a", path="/w/a", type="file", size=1, mode=0o644, modified_time=t0),
            FileEntry(name="d", path="/w/d", type="directory", size=4096, mode=0o755),
        ]
    )
    new = fs.snapshot(
        [
            FileEntry(name="b", path="/w/b", type="file", size=1, mode=0o644, modified_time=t0),
            FileEntry(name="d", path="/w/d", type="directory", size=8192, mode=0o700),
            FileEntry(name="e", path="/w/e", type="file", size=0, mode=0o644, modified_time=t1),
        ]
    )
    assert _kinds(list(fs.diff("/w", old, new))) == [
        ("a", E.RENAME),
        ("b", E.CREATE),
        ("d", E.CHMOD),  # a directory's size is no WRITE; its mode is a CHMOD
        ("e", E.CREATE),
        ("e", E.CHMOD),  # empty: no WRITE
    ]


@pytest.mark.anyio
async def test_async_watch_calls_back_and_stops(emulator: Config) -> None:
    sbx = await AsyncSandbox.create(config=emulator)
    try:
        await sbx.files.make_dir("aw")
        seen: list[FilesystemEvent] = []
        exits: list[Exception | None] = []
        written = asyncio.Event()

        async def on_event(event: FilesystemEvent) -> None:
            seen.append(event)
            if event.type is E.WRITE:
                written.set()

        handle = await sbx.files.watch_dir("aw", on_event, on_exit=exits.append, poll_interval=0.05)
        await sbx.files.write("aw/f.txt", "x")
        await asyncio.wait_for(written.wait(), 30)
        assert _kinds(seen) == [("f.txt", E.CREATE), ("f.txt", E.CHMOD), ("f.txt", E.WRITE)]
        await handle.stop()
        assert handle._task.done()
        assert exits == [None]
        assert not sbx.files._watches
    finally:
        await sbx.kill()


@pytest.mark.anyio
async def test_kill_ends_the_async_watch(emulator: Config) -> None:
    sbx = await AsyncSandbox.create(config=emulator)
    exited = asyncio.Event()
    handle = await sbx.files.watch_dir(
        "/home/user", lambda e: None, on_exit=lambda err: exited.set(), timeout=0
    )
    await sbx.kill()
    await asyncio.wait_for(exited.wait(), 30)
    await asyncio.wait_for(asyncio.wait([handle._task]), 30)
    assert handle._task.done()


@pytest.mark.anyio
async def test_async_stream_reads_partly_then_closes(emulator: Config) -> None:
    sbx = await AsyncSandbox.create(config=emulator)
    try:
        await sbx.files.write("s.txt", "y" * 300_000)
        stream = await sbx.files.read("s.txt", format="stream")
        assert len(await stream.__anext__()) > 0
        await stream.aclose()
        assert [c async for c in stream] == []
        async with await sbx.files.read("s.txt", format="stream") as whole:
            assert b"".join([c async for c in whole]) == b"y" * 300_000
        with pytest.raises(FileNotFoundException):
            await sbx.files.read("none.txt", format="stream")
    finally:
        await sbx.kill()
