"""Remove directory trees that sandboxed code built: any depth, any shape, never raising.

`shutil.rmtree` recurses once per level (Python < 3.13), so a tree some 1,000 levels
deep raises `RecursionError` even with `ignore_errors=True`, and a path longer than
PATH_MAX cannot be named at all. Sandboxed code can build both with one `mkdir -p`.
`remove_tree` walks with directory descriptors (`*at` calls, never a full path), holds
at most `_MAX_OPEN` of them, and moves directories found deeper than that up to the
top of the tree, to be emptied in a later pass: depth, open files and path length all
stay bounded, and links are never followed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from itertools import count

from ._disk import unmount_below

__all__ = ["remove_tree"]

log = logging.getLogger("agentrun_ci.local")

_MAX_OPEN = 32
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def remove_tree(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> bool:
    """Remove `path` and all below it; never raises. True when nothing is left.

    With `dir_fd`, `path` is a name in that open directory (no link on the way to it is
    followed). What cannot be removed (another owner's files, an immutable file) is
    left in place and reported by the return value, so a caller can log it and go on.
    A sandbox's disk mounted below `path` (`_disk.py`) is unmounted first (not with
    `dir_fd`: a name relative to a descriptor is not ours to find in the mount table).
    """
    try:
        if dir_fd is None:
            unmount_below(path)
        return _remove(os.fspath(path), dir_fd)
    except Exception:  # a cleanup must never take its caller down
        log.warning("could not remove %s", path, exc_info=True)
        return not _lexists(os.fspath(path), dir_fd)


def _lexists(path: str, dir_fd: int | None) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _remove(path: str, dir_fd: int | None) -> bool:
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path, dir_fd=dir_fd)
        return True
    top = _open_dir(path, dir_fd)
    if top is None:
        return False
    try:
        names = count()
        # Each pass empties what it can reach within _MAX_OPEN levels and lifts deeper
        # directories to the top; passes go on while they make progress.
        while _empty(top, names):
            pass
    finally:
        os.close(top)
    with contextlib.suppress(OSError):
        os.rmdir(path, dir_fd=dir_fd)
    return not _lexists(path, dir_fd)


def _open_dir(name: str, parent: int | None) -> int | None:
    """Open a directory without following a link; make it ours to read if it was closed."""
    for attempt in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except PermissionError:
            if attempt:
                return None
            with contextlib.suppress(OSError):
                os.chmod(name, 0o700, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return None
    return None


def _empty(top: int, names: count[int]) -> bool:
    """One pass over the tree open as `top`. True when the pass removed or lifted anything."""
    progress = False
    stack: list[tuple[int, os._ScandirIterator[str], str]] = []
    fd = os.dup(top)
    entries = os.scandir(fd)
    try:
        while True:
            descended = False
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if not is_dir:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.name, dir_fd=fd)
                        progress = True
                    continue
                if len(stack) + 1 >= _MAX_OPEN:
                    # Too deep to hold another descriptor: lift it to the top for a later pass.
                    with contextlib.suppress(OSError):
                        os.rename(entry.name, f".rm-{next(names)}", src_dir_fd=fd, dst_dir_fd=top)
                        progress = True
                    continue
                child = _open_dir(entry.name, fd)
                if child is None:
                    continue
                try:
                    listing = os.scandir(child)
                except OSError:
                    os.close(child)
                    continue
                stack.append((fd, entries, entry.name))
                fd, entries = child, listing
                descended = True
                break
            if descended:
                continue
            entries.close()
            os.close(fd)
            if not stack:
                return progress
            fd, entries, name = stack.pop()
            try:
                os.rmdir(name, dir_fd=fd)
                progress = True
            except OSError:
                pass
    except BaseException:
        # not the tree's doing (an interrupt, a bug): nothing stays open
        for open_fd, open_entries in [(fd, entries)] + [(f, e) for f, e, _ in stack]:
            open_entries.close()
            with contextlib.suppress(OSError):
                os.close(open_fd)
        raise
