"""Checked by mypy in tests/test_e2b_files.py, never run: `files.read`'s return type
follows its `format` argument."""

from __future__ import annotations

from typing_extensions import assert_type

from agentrun_ci.e2b import (
    AsyncFileStreamReader,
    AsyncSandbox,
    EntryInfo,
    FileStreamReader,
    Sandbox,
    WriteInfo,
)


def sync_reads(sbx: Sandbox) -> None:
    assert_type(sbx.files.read("a"), str)
    assert_type(sbx.files.read("a", format="text"), str)
    assert_type(sbx.files.read("a", format="bytes"), bytearray)
    assert_type(sbx.files.read("a", format="stream"), FileStreamReader)
    assert_type(sbx.files.write("a", b"x"), WriteInfo)
    assert_type(sbx.files.get_info("a"), EntryInfo)


async def async_reads(sbx: AsyncSandbox) -> None:
    assert_type(await sbx.files.read("a"), str)
    assert_type(await sbx.files.read("a", format="bytes"), bytearray)
    assert_type(await sbx.files.read("a", format="stream"), AsyncFileStreamReader)
    assert_type(await sbx.files.list("."), list[EntryInfo])
