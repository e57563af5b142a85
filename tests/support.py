"""What the tests share: waiting on a condition, processes, emulators, the MCP script.

Waiting: `wait_until` polls a condition and fails loudly, naming what it waited for,
when the time is up; `remaining` polls a list of leftovers until it is empty and hands
back what is still there for the caller's assertion. No test sleeps to order events:
it waits for the event itself.

Processes: the `/proc` readers that tell a live process from a dead, reaped or
recycled one, and `spawned`, which always kills, reaps and closes what it started.

Emulators: `running_emulator` starts a `LocalEmulator` with its own settings and
yields the emulator (for its `core`) and its `Config`; it is stopped whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from agentrun_ci import Config, ControlPlane
from agentrun_ci._procfs import is_running, stat_fields

if TYPE_CHECKING:
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

T = TypeVar("T")

# ---------------------------------------------------------------- waiting


def wait_until(
    check: Callable[[], T],
    what: str | Callable[[], str],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
) -> T:
    """Poll `check()` until it returns something true, and return that.

    Fails the test after `timeout` seconds, saying what never happened (`what`, or
    what `what()` says then: e.g. a server's log tail). The timeout is a hang guard,
    not a timing assertion: make it generous.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout:g} s waiting for {detail}")
        time.sleep(interval)


async def await_until(
    check: Callable[[], Awaitable[T]],
    what: str,
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
) -> T:
    """`wait_until` for an async check, on the test's event loop."""
    import anyio

    with anyio.move_on_after(timeout):
        while not (value := await check()):  # noqa: ASYNC110 -- polling, no event
            await anyio.sleep(interval)
        return value
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def remaining(check: Callable[[], list[T]], timeout: float = 10.0) -> list[T]:
    """`check()` once it is empty, or what it still reports after `timeout` seconds.

    For leftovers (processes being reaped, sandboxes being deleted): the caller
    asserts the result is `[]`, so a failure lists exactly what was left.
    """
    deadline = time.monotonic() + timeout
    found = check()
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = check()
    return found


# ---------------------------------------------------------------- processes


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, session, ...;
    `[19]` is the start time), or None when there is no such process."""
    return stat_fields(pid)


def alive(pid: int, start: str | None = None) -> bool:
    """Is `pid` running (zombies count as gone)? With `start`, is it still that process
    and not a later one that reused the pid?"""
    if not is_running(pid):
        return False
    fields = stat_fields(pid)
    return start is None or (fields is not None and fields[19] == start)


def pids() -> list[int]:
    """Every pid on the machine (callers scope it: by owner tag, session, directory)."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def still_alive(pids_: Iterable[int], timeout: float = 10.0) -> list[int]:
    """Those of `pids_` still alive after up to `timeout` seconds (assert it is `[]`)."""
    watched = list(pids_)
    return remaining(lambda: [p for p in watched if alive(p)], timeout)


def stop(proc: subprocess.Popen[Any], timeout: float = 20.0) -> int:
    """Kill `proc` if it still runs, reap it, close its pipes; its exit code."""
    try:
        if proc.poll() is None:
            proc.kill()
        return proc.wait(timeout)
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()


@contextlib.contextmanager
def spawned(argv: list[str], **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """`subprocess.Popen(argv, **popen)`, killed, reaped and closed at exit whatever
    the test did (a test that stops it itself checks the exit code on the way)."""
    proc = subprocess.Popen(argv, **popen)
    try:
        yield proc
    finally:
        stop(proc)


# ---------------------------------------------------------------- emulators


@contextlib.contextmanager
def running_emulator(
    settings: EmulatorSettings | None = None,
    *,
    access_key_id: str | None = None,
    access_key_secret: str | None = None,
) -> Iterator[tuple[LocalEmulator, Config]]:
    """A `LocalEmulator` with these settings (and `access_key_id=`/`access_key_secret=`),
    as (emulator, config); stopped at exit. The session's shared one is the `emulator`
    fixture: start your own only for settings it does not have."""
    from agentrun_ci.local import LocalEmulator

    emulator = LocalEmulator(
        settings, access_key_id=access_key_id, access_key_secret=access_key_secret
    )
    config = emulator.start()
    try:
        yield emulator, config
    finally:
        emulator.stop()


# ---------------------------------------------------------------- the MCP console script

#: the console script of this environment ("" when the package is not installed)
SCRIPT = shutil.which("agentrun-ci-mcp", path=str(Path(sys.executable).parent)) or ""
needs_script = pytest.mark.skipif(not SCRIPT, reason="agentrun-ci-mcp console script not installed")


def base_env(owner: str, *, log_level: str = "WARNING") -> dict[str, str]:
    """A clean environment (no credentials from ours) with the owner tag of its resources."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AGENTRUN_CI_OWNER": owner,
        "AGENTRUN_MCP_LOG_LEVEL": log_level,
    }


def cloud_env(config: Config, owner: str, **extra: str) -> dict[str, str]:
    """The environment of a server that uses `config` (an emulator) as its cloud."""
    return base_env(owner) | {
        "AGENTRUN_CONTROL_ENDPOINT": config.control_endpoint or "",
        "AGENTRUN_DATA_ENDPOINT": config.data_endpoint or "",
        "AGENTRUN_ACCOUNT_ID": config.account_id or "local",
        "AGENTRUN_MCP_BACKEND": "cloud",
        **extra,
    }


def owned(config: Config, owner: str) -> list[str]:
    """Sandboxes and templates with the owner's prefix, as the control plane lists them."""
    prefix = f"arci-{owner}-"
    with ControlPlane(config) as control:
        names = [s.sandbox_id for s in control.list_sandboxes()]
        names += [t.name for t in control.list_templates()]
    return [n for n in names if n.startswith(prefix)]
