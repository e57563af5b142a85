"""E2B's filesystem records (`EntryInfo`, `WriteInfo`, `FileType`, watch events) and the
pieces the async and sync `sandbox.files` share: metadata checks, the in-sandbox probe
command, and the snapshot diff that stands in for E2B's filesystem events.
"""

from __future__ import annotations

import enum
import io
import json
import posixpath
import re
import shlex
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from importlib import resources
from typing import IO, Any, TypedDict

import attrs

from .._models import FileEntry
from ._common import HOME
from ._errors import InvalidArgumentException

__all__ = [
    "EntryInfo",
    "FileType",
    "FilesystemEvent",
    "FilesystemEventType",
    "Snapshot",
    "WriteEntry",
    "WriteInfo",
    "absolute",
    "check_metadata",
    "diff",
    "entry_info",
    "info_command",
    "payload",
    "set_command",
]


class FileType(enum.Enum):
    """What a filesystem object is (E2B's names and values)."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@attrs.frozen
class WriteInfo:
    """What `files.write` / `write_files` say about a file they wrote."""

    name: str
    type: FileType | None
    path: str
    #: the file's `user.e2b.*` extended attributes (prefix stripped); None when it has none
    metadata: dict[str, str] | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class EntryInfo(WriteInfo):
    """A file or directory as `get_info`, `list` and `rename` describe it (E2B's fields)."""

    size: int
    #: permission bits (0o644)
    mode: int
    #: as `ls -l` shows them (`-rw-r--r--`)
    permissions: str
    owner: str
    group: str
    modified_time: datetime
    #: where a symbolic link points (resolved, absolute); None for anything else
    symlink_target: str | None = None


class WriteEntry(TypedDict):
    """One file for `write_files`: its path and its data (str, bytes or a file object)."""

    path: str
    data: str | bytes | IO[str] | IO[bytes]


class FilesystemEventType(enum.Enum):
    """What happened to a watched entry (E2B's names and values)."""

    CHMOD = "chmod"
    CREATE = "create"
    REMOVE = "remove"
    RENAME = "rename"
    WRITE = "write"


@attrs.frozen
class FilesystemEvent:
    """One change seen by `watch_dir`: the entry's path relative to the watched directory."""

    name: str
    type: FilesystemEventType
    #: the entry after the change (only with `include_entry=True`; None once it is gone)
    entry: EntryInfo | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _file_type(wire: str | None) -> FileType | None:
    # AgentRun says "directory" (E2B: "dir"); "dir" is accepted in case a build says that
    return {
        "file": FileType.FILE,
        "directory": FileType.DIR,
        "dir": FileType.DIR,
        "symlink": FileType.SYMLINK,
    }.get((wire or "").lower())


def absolute(path: str) -> str:
    """`path` as the sandbox sees it: relative paths start at /home/user, as in E2B."""
    return posixpath.normpath(posixpath.join(HOME, path))


def entry_info(entry: FileEntry, extra: Mapping[str, Any] | None = None) -> EntryInfo:
    """An AgentRun entry as E2B's `EntryInfo`; `extra` is what the probe found for it."""
    extra = extra or {}
    kind = _file_type(entry.type)
    target = extra.get("target")
    if kind is FileType.SYMLINK and target:
        kind = _file_type(extra.get("type")) or FileType.SYMLINK
    modified = entry.modified_time or _EPOCH
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    meta = extra.get("metadata")
    return EntryInfo(
        name=entry.name,
        type=kind,
        path=entry.path,
        size=entry.size or 0,
        mode=entry.mode or 0,
        permissions=entry.permissions or "",
        owner=entry.owner or "",
        group=entry.group or "",
        modified_time=modified,
        symlink_target=str(target) if target else None,
        metadata=dict(meta) if meta else None,
    )


# E2B sends metadata as `X-Metadata-<key>` headers, so keys are HTTP tokens and values
# printable ASCII; the same rules here keep code portable between the two.
_KEY = re.compile(r"\A[A-Za-z0-9!#$%&'*+\-.^_`|~]+\Z")
_VALUE = re.compile(r"\A[\x20-\x7e]*\Z")


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """E2B's metadata rules; keys are lowercased, as E2B's sandbox does."""
    if not metadata:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentException(f"metadata must be a dict of strings, got {metadata!r}")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise InvalidArgumentException(
                f"Invalid metadata key {key!r}: keys must be non-empty and use only HTTP "
                "token characters (letters, digits and !#$%&'*+-.^_`|~)"
            )
        if not isinstance(value, str) or not _VALUE.match(value):
            raise InvalidArgumentException(
                f"Invalid metadata value for key {key!r}: values must be printable US-ASCII"
            )
        out[key.lower()] = value
    return out


def payload(data: Any, path: str) -> str | bytes:
    """The data of a write as str or bytes (a file object is read to its end)."""
    if isinstance(data, str | bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if isinstance(data, io.TextIOBase) or (hasattr(data, "read") and "b" not in _mode(data)):
        text = data.read()
        if isinstance(text, str | bytes):
            return text
    elif hasattr(data, "read"):
        raw = data.read()
        if isinstance(raw, bytes | bytearray):
            return bytes(raw)
    raise InvalidArgumentException(
        f"Unsupported data type for file {path}: {type(data).__name__} (use str, bytes or a "
        "file object opened for reading)"
    )


def _mode(handle: Any) -> str:
    mode = getattr(handle, "mode", "b")
    return mode if isinstance(mode, str) else "b"


def _script() -> str:
    return resources.files(__package__).joinpath("_in_sandbox.py").read_text("utf-8")


def info_command(root: str, depth: int) -> str:
    """The shell command that prints metadata and link targets for `root` (see _in_sandbox)."""
    return shlex.join(["python3", "-c", _script(), "info", root, str(depth)])


def set_command(paths: list[str], metadata: Mapping[str, str]) -> str:
    """The shell command that replaces the `user.e2b.*` attributes of `paths`."""
    spec = json.dumps({"paths": paths, "metadata": dict(metadata)})
    return shlex.join(["python3", "-c", _script(), "set", spec])


# ------------------------------------------------------------------ watching by polling

#: path -> (type, size, modified time, mode): what a poll compares
Snapshot = dict[str, tuple[str | None, int | None, datetime | None, int | None]]


def snapshot(entries: list[FileEntry]) -> Snapshot:
    return {e.path: (e.type, e.size, e.modified_time, e.mode) for e in entries}


def diff(
    root: str, old: Snapshot, new: Snapshot, entries: Mapping[str, FileEntry] | None = None
) -> Iterator[FilesystemEvent]:
    """E2B's events for what changed between two listings of `root`.

    A new entry is reported as E2B reports one made through its SDK: CREATE,
    CHMOD (the owner and mode being set), then WRITE for a file with content.
    An entry gone while one with the same type, size and time appeared is a
    RENAME of the old name and a CREATE of the new one. A file's changed size or
    time is a WRITE, any changed mode a CHMOD. Changes undone between two polls are
    not seen.
    """
    prefix = root.rstrip("/") + "/"

    def event(path: str, kind: FilesystemEventType) -> FilesystemEvent:
        found = entries.get(path) if entries is not None else None
        return FilesystemEvent(
            name=path[len(prefix) :] if path.startswith(prefix) else path,
            type=kind,
            entry=entry_info(found) if found is not None else None,
        )

    gone = [p for p in old if p not in new]
    added = [p for p in new if p not in old]
    moved: dict[str, str] = {}
    for path in gone:
        twin = next((a for a in added if a not in moved.values() and new[a] == old[path]), None)
        if twin is not None:
            moved[path] = twin
    for path in sorted(gone):
        if path in moved:
            yield event(path, FilesystemEventType.RENAME)
            yield event(moved[path], FilesystemEventType.CREATE)
        else:
            yield event(path, FilesystemEventType.REMOVE)
    targets = set(moved.values())
    for path in sorted(new):
        if path in targets:
            continue
        kind, size, mtime, mode = new[path]
        if path not in old:
            yield event(path, FilesystemEventType.CREATE)
            yield event(path, FilesystemEventType.CHMOD)
            if _file_type(kind) is FileType.FILE and size:
                yield event(path, FilesystemEventType.WRITE)
            continue
        was_kind, was_size, was_mtime, was_mode = old[path]
        if was_kind != kind:
            yield event(path, FilesystemEventType.REMOVE)
            yield event(path, FilesystemEventType.CREATE)
            continue
        # a directory's own time changes with its children: those are their own events
        if _file_type(kind) is not FileType.DIR and (was_size, was_mtime) != (size, mtime):
            yield event(path, FilesystemEventType.WRITE)
        if was_mode != mode:
            yield event(path, FilesystemEventType.CHMOD)
