"""What the machine allows, tried before `Core` relies on it: the bubblewrap jail
(`_try_jail`), a namespace holder its sandboxes share (`_with_holder`) and the uplink
(`_try_uplink`), each once per process, and not at all where it worked before on this
machine (`_memo.py`); and the warning for a lost guarantee (`_warn_lost`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from ._fs import HOME
from ._jail import Jail
from ._limits import init_argv, kill_group
from ._memo import machine_memo
from ._network import UplinkError, UplinkTool, probe_uplink
from ._tree import remove_tree

log = logging.getLogger("agentrun_ci.local")


def _warn_lost(message: str) -> None:
    """Say what isolation is lost, as a warning, at every emulator start: a lost guarantee
    is never demoted to INFO, however often it has been said."""
    log.warning("%s (docs/local-backend.md)", message)


def _remembered(kind: str, key: object, files: tuple[str, ...], probe: Callable[[], str]) -> str:
    """`probe()`, unless it worked before with everything it depends on unchanged."""
    memo = machine_memo()
    if memo.worked(kind, key, files):
        return ""
    why = probe()
    memo.remember(kind, key, files, why)
    return why


def _files(jail: Jail, python: str) -> tuple[str, ...]:
    """The programs a probe of `jail` runs."""
    return (python, jail.tool, jail.nsenter, jail.sleep, *jail.extra)


_jail_works: dict[Jail, str] = {}


def _try_jail(jail: Jail, scratch: Path, python: str) -> str:
    """Run our init and the kernel's interpreter in a jail once per process: "" if it
    works, else why."""
    key = attrs.evolve(jail, tools="")  # each emulator's own tools dir: not part of the key
    if key not in _jail_works:
        _jail_works[key] = _remembered(
            "jail", key, _files(key, python), lambda: _run_in_jail(key, scratch, python)
        )
    return _jail_works[key]


def _run_in_jail(jail: Jail, scratch: Path, python: str) -> str:
    home, tmp = scratch / "probe-home", scratch / "probe-tmp"
    try:
        for path, mode in ((home, 0o700), (tmp, 0o711)):  # the modes of a sandbox's
            path.mkdir(mode=mode)
            if jail.privileged:
                os.chown(path, jail.uid, jail.uid)
        uid = jail.uid
        check = "import os, sys; sys.exit(os.getcwd() != '/home/user' or os.getuid() == 0)"
        argv = jail.argv(
            [python, "-I", "-S", "-c", check],
            init=init_argv(python, uid=uid, cwd=HOME),
            home=home,
            tmp=tmp,
            own_net=False,
        )
        done = subprocess.run(argv, capture_output=True, timeout=30, check=False, cwd="/")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not run ({exc})"
    finally:
        for path in (home, tmp):
            remove_tree(path)
    if done.returncode == 0:
        return ""
    said = done.stderr.decode("utf-8", "replace").strip()[-300:] or f"exit {done.returncode}"
    return (
        f"bubblewrap is installed but cannot build the jail here ({said}); sandboxes run "
        "with process limits only. Fix: allow user namespaces (sysctl "
        "kernel.unprivileged_userns_clone=1 or user.max_user_namespaces > 0), or run the "
        "emulator as root"
    )


_holder_works: dict[Jail, str] = {}


def _with_holder(jail: Jail, scratch: Path, python: str) -> Jail:
    """`jail`, whose sandboxes share namespaces if a holder works here (probed once per
    process), else one whose kernels and commands keep namespaces of their own."""
    if not jail.shares_namespaces:
        return jail
    key = attrs.evolve(jail, tools="")
    if key not in _holder_works:
        _holder_works[key] = _remembered(
            "holder", key, _files(key, python), lambda: _run_in_holder(key, scratch, python)
        )
    why = _holder_works[key]
    if not why:
        return jail
    _warn_lost(
        f"local sandboxes cannot share one PID namespace ({why}): each kernel and command "
        "gets its own, so a command's background jobs are invisible to the next command"
    )
    return attrs.evolve(jail, nsenter="")


def _run_in_holder(jail: Jail, scratch: Path, python: str) -> str:
    """Start a namespace holder and run the kernel's interpreter in a jail that joins it:
    "" if that interpreter sees the holder as PID 1, else why not."""
    try:
        # with a network namespace of its own, as every sandbox's but a PUBLIC one's
        # where there is no uplink
        with _probe_holder(jail, scratch, python, own_net=True) as (pid, home, tmp):
            check = "import sys; sys.exit(open('/proc/1/cmdline', 'rb').read()[:5] != b'sleep')"
            argv = jail.argv(
                [python, "-I", "-S", "-c", check],
                init=init_argv(python, uid=jail.uid, cwd=HOME),
                home=home,
                tmp=tmp,
                own_net=True,
                holder=pid,
            )
            done = subprocess.run(argv, capture_output=True, timeout=30, check=False, cwd="/")
            if done.returncode != 0:
                said = done.stderr.decode("utf-8", "replace").strip()[-300:]
                return said or f"a jail joining it failed (exit {done.returncode})"
            return ""
    except _NoHolder as exc:
        return str(exc)
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        return f"could not try it: {exc}"


_uplink_works: dict[tuple[Jail, UplinkTool], str] = {}


def _try_uplink(jail: Jail, tool: UplinkTool, scratch: Path, python: str) -> str:
    """Connect a scratch holder's network namespace with `tool`, once per process: "" if
    that works, else why not (e.g. no /dev/net/tun in a container)."""
    key = (attrs.evolve(jail, tools="", resolv=""), tool)
    if key not in _uplink_works:
        files = (*_files(key[0], python), tool.path)
        _uplink_works[key] = _remembered(
            "uplink", key, files, lambda: _run_uplink(key[0], tool, scratch, python)
        )
    return _uplink_works[key]


def _run_uplink(jail: Jail, tool: UplinkTool, scratch: Path, python: str) -> str:
    try:
        with _probe_holder(jail, scratch, python, own_net=True) as (pid, _, _):
            return probe_uplink(tool, pid, userns=not jail.privileged)
    except _NoHolder as exc:
        return str(exc)
    except (OSError, ValueError, KeyError, subprocess.SubprocessError, UplinkError) as exc:
        return f"could not try {tool.kind}: {exc}"


class _NoHolder(Exception):
    """A probe's holder did not start."""


@contextlib.contextmanager
def _probe_holder(
    jail: Jail, scratch: Path, python: str, *, own_net: bool
) -> Iterator[tuple[int, Path, Path]]:
    """A scratch namespace holder: (its PID 1's host pid, its home, its tmp); killed and
    removed after."""
    base = scratch / f"probe-holder-{secrets.token_hex(4)}"
    home, tmp = base / "home", base / "tmp"
    holder: subprocess.Popen[bytes] | None = None
    info_r, info_w = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        base.mkdir(mode=0o711)
        for path, mode in ((home, 0o700), (tmp, 0o711)):
            path.mkdir(mode=mode)
            if jail.privileged:
                os.chown(path, jail.uid, jail.uid)
        argv = jail.holder_argv(
            home, python=python, info_fd=info_w, ready_fd=ready_w, own_net=own_net
        )
        holder = subprocess.Popen(
            argv,
            pass_fds=(info_w, ready_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            cwd="/",
        )
        for fd in (info_w, ready_w):
            os.close(fd)
        info_w = ready_w = -1
        info = _read_until_closed(info_r, timeout=30)
        if not info or not _read_until_closed(ready_r, timeout=30, size=1):
            raise _NoHolder("its holder did not start: " + _said(holder))
        yield int(json.loads(info)["child-pid"]), home, tmp
    finally:
        for fd in (info_w, info_r, ready_w, ready_r):
            _close(fd)
        if holder is not None:
            kill_group(holder.pid)
            with contextlib.suppress(subprocess.SubprocessError):
                holder.communicate(timeout=10)
        remove_tree(base)


def _read_until_closed(fd: int, *, timeout: float, size: int = 0) -> bytes:
    """What is written to a pipe until its writers close it (or, with `size`, its first
    `size` bytes), or b"" after `timeout` s."""
    data = b""
    end = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = end - time.monotonic()
            if left <= 0 or not sel.select(left):
                return b""
            chunk = os.read(fd, 4096)
            if not chunk:
                return data
            data += chunk
            if size and len(data) >= size:
                return data


def _said(proc: subprocess.Popen[bytes]) -> str:
    """The last words of a holder that did not start (it exits at once then)."""
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.SubprocessError:
        return "no answer"
    return (err or b"").decode("utf-8", "replace").strip()[-300:] or f"exit {proc.returncode}"


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
