"""Runs inside the sandbox (as `python3 -c <this file> ...`): file metadata and link targets.

AgentRun's file API has no metadata call and does not say where a symbolic link
points, so the E2B shim sends this script through `/processes/cmd`:

* `info ROOT DEPTH`: a JSON object on stdout, `{path: {"metadata": {...},
  "target": ..., "type": ...}}`, for ROOT itself (DEPTH 0) or for the entries
  below it down to DEPTH levels (as a listing sees them), holding only the
  entries that carry metadata or are symbolic links. Metadata is the file's
  `user.e2b.*` extended attributes (the names E2B's envd uses), prefix
  stripped; a link's `target` is its resolved path and `type` the target's
  (`file`, `dir`, or null when the link is broken).
* `set SPEC`: SPEC is JSON `{"paths": [...], "metadata": {...}}`; every path
  loses its `user.e2b.*` attributes and gets the given ones.

Standard library only, for any python3 the sandbox has.
"""

from __future__ import annotations

import json
import os
import stat
import sys

PREFIX = "user.e2b."


def metadata(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name.startswith(PREFIX):
            try:
                value = os.getxattr(path, name, follow_symlinks=False)
            except OSError:
                continue
            out[name[len(PREFIX) :]] = value.decode("utf-8", "replace")
    return out


def describe(path: str, mode: int) -> dict[str, object] | None:
    found: dict[str, object] = {}
    if stat.S_ISLNK(mode):
        found["target"] = os.path.realpath(path)
        found["type"] = "dir" if os.path.isdir(path) else "file" if os.path.isfile(path) else None
    else:
        meta = metadata(path)
        if meta:
            found["metadata"] = meta
    return found or None


def info(root: str, depth: int) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    if depth == 0:
        found = describe(root, os.lstat(root).st_mode)
        if found:
            out[root] = found
        return out
    todo = [(root, depth)]
    while todo:
        folder, left = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            found = describe(entry.path, mode)
            if found:
                out[entry.path] = found
            if left > 1 and stat.S_ISDIR(mode):
                todo.append((entry.path, left - 1))
    return out


def set_metadata(spec: dict[str, object]) -> None:
    paths = spec["paths"]
    wanted = spec["metadata"]
    if not isinstance(paths, list) or not isinstance(wanted, dict):
        raise SystemExit("set: SPEC needs a list 'paths' and a dict 'metadata'")
    for path in paths:
        for name in os.listxattr(path):
            if name.startswith(PREFIX):
                os.removexattr(path, name)
        for key, value in wanted.items():
            os.setxattr(path, PREFIX + key, value.encode("utf-8"))


def main(argv: list[str]) -> int:
    if argv[1] == "info":
        print(json.dumps(info(argv[2], int(argv[3]))))
    else:
        set_metadata(json.loads(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
