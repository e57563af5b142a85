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
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import pytest

from agentrun_ci import Config, ControlPlane
from agentrun_ci._procfs import is_running, stat_fields

if TYPE_CHECKING:
    from agentrun_ci import DataPlane
    from agentrun_ci.local import EmulatorSettings, LocalEmulator

T = TypeVar("T")

# ---------------------------------------------------------------- waiting


def wait_until(
    check: Callable[[], T],
    what: str | Callable[[], str],
    *,
    timeout: float = 120.0,
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
    timeout: float = 120.0,
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
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AGENTRUN_CI_OWNER": owner,
        "AGENTRUN_MCP_LOG_LEVEL": log_level,
    }
    if os.environ.get("PYTHONPATH"):  # the code under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    for name in ("AGENTRUN_LOCAL_REGISTRY", "XDG_RUNTIME_DIR"):  # not the user's (conftest)
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


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


# ---------------------------------------------------------------- the MCP server as a process


#: generous hang guards (not timing asserts): a server that never exits is a failure
def initialize_request(
    client: str, *, request_id: int = 1, protocol: str = "2025-11-25"
) -> dict[str, Any]:
    """The JSON-RPC `initialize` request an MCP client sends first."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": protocol,
            "capabilities": {},
            "clientInfo": {"name": client, "version": "0"},
        },
    }


EXIT_WAIT = 40.0
REPLY_WAIT = 90.0
#: what the SDK hosts (Python and TypeScript `stdio_client`) give a server between
#: closing its stdin and SIGTERM, and between SIGTERM and SIGKILL
HOST_GRACE = 2.0


def describe(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmdline = "?"
    fields = proc_stat(pid) or ["?"] * 4
    return f"pid {pid} (state {fields[0]}, ppid {fields[1]}, sid {fields[3]}): {cmdline[:200]}"


def mentions(pid: int, needle: bytes) -> bool:
    """Does the process's command line, environment or working directory contain `needle`?"""
    for name in ("cmdline", "environ"):
        try:
            if needle in Path(f"/proc/{pid}/{name}").read_bytes():
                return True
        except OSError:
            pass
    try:
        return needle in os.fsencode(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False


def live_mentioning(needle: str) -> list[str]:
    me = os.getpid()
    found = []
    for pid in pids():
        fields = proc_stat(pid)
        if pid == me or fields is None or fields[0] in ("Z", "X"):
            continue
        if mentions(pid, needle.encode()):
            found.append(describe(pid))
    return found


def live_in_session(sid: int) -> list[str]:
    """Live processes whose session or process group is `sid`."""
    found = []
    for pid in pids():
        fields = proc_stat(pid)
        if fields is not None and fields[0] not in ("Z", "X") and str(sid) in fields[2:4]:
            found.append(describe(pid))
    return found


class Server:
    """The console script over raw newline-delimited JSON-RPC; replies read by a thread."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file: IO[bytes] = open(log, "ab")  # noqa: SIM115 -- closed in close()
        # A new session, as MCP hosts start servers: so its session id is its pid.
        self.proc = subprocess.Popen(
            [SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=env,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.replies: dict[int, dict[str, Any]] = {}
        #: notifications the server sent, in order (e.g. notifications/message)
        self.notifications: list[dict[str, Any]] = []
        self._arrived: queue.Queue[int] = queue.Queue()
        self._id = 0
        self._reader = threading.Thread(target=self._read, name="mcp-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)  # anything but JSON-RPC on stdout fails the reader
            if "id" in message and ("result" in message or "error" in message):
                self.replies[message["id"]] = message
                self._arrived.put(message["id"])
            elif "method" in message and "id" not in message:
                self.notifications.append(message)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method: str, params: dict[str, Any]) -> int:
        """Send a request; returns its id without waiting."""
        self._id += 1
        self.send({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        return self._id

    def wait_reply(self, request_id: int) -> dict[str, Any]:
        deadline = time.monotonic() + REPLY_WAIT
        while request_id not in self.replies:
            assert self.proc.poll() is None, f"server exited early:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no reply to {request_id}:\n{self.log_tail()}"
            with contextlib.suppress(queue.Empty):
                self._arrived.get(timeout=0.1)
        return self.replies[request_id]

    def initialize(self) -> None:
        self.wait_reply(
            self.call(
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "tests", "version": "0"},
                },
            )
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def tool(self, name: str, **arguments: Any) -> int:
        return self.call("tools/call", {"name": name, "arguments": arguments})

    def tool_ok(self, name: str, **arguments: Any) -> dict[str, Any]:
        reply = self.wait_reply(self.tool(name, **arguments))
        result: dict[str, Any] = reply.get("result") or {}
        assert result, f"{name} failed: {reply}"
        assert not result.get("isError"), f"{name} failed: {reply}"
        return result

    def stop(self, how: str) -> int:
        """Stop as a host would (signal or EOF); the exit code, or fails if it hangs."""
        if how == "sigkill":
            self.proc.kill()
        elif how == "eof":
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        else:
            self.proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        try:
            return self.proc.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit after {how}:\n{self.log_tail()}")

    def close_like_a_host(self, signal_after: float = HOST_GRACE) -> tuple[int, float, bool]:
        """Stop the server as the SDK hosts do: close stdin; SIGTERM to its process group
        `signal_after` s later if it is still running; SIGKILL 2 s after that (which fails
        the test: the cleanup was cut off). Returns the exit status, the seconds from EOF
        to exit, and whether the SIGTERM was sent."""
        assert self.proc.stdin is not None
        started = time.monotonic()
        self.proc.stdin.close()
        signalled = False
        try:
            status = self.proc.wait(signal_after)
        except subprocess.TimeoutExpired:
            signalled = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                status = self.proc.wait(HOST_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
                pytest.fail(f"the host had to SIGKILL the server:\n{self.log_tail()}")
        return status, time.monotonic() - started, signalled

    def log_tail(self, lines: int = 40) -> str:
        self._log_file.flush()
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        self._log_file.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def http_server_process(owner: str, log: Path, *args: str) -> Iterator[tuple[str, str, Path]]:
    """The console script over streamable HTTP on the local backend, logging at INFO to
    `log`: yields (url, bearer token, log); SIGTERM at exit (status 143 expected)."""
    port = free_port()
    token = secrets.token_urlsafe(16)
    env = base_env(owner, log_level="INFO") | {
        "AGENTRUN_MCP_BACKEND": "local",
        "AGENTRUN_MCP_AUTH_TOKEN": token,
    }
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [SCRIPT, "--transport", "streamable-http", "--port", str(port), *args],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=env,
        )

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    try:
        # a hang guard: a loaded 2-CPU machine took over 20 s to start it
        wait_until(listening, f"the server to listen on port {port}", timeout=REPLY_WAIT)
        yield f"http://127.0.0.1:{port}/mcp", token, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(EXIT_WAIT) == 128 + signal.SIGTERM, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def in_core(emulator: LocalEmulator, owner: str) -> list[str]:
    """The owner's templates and sandboxes (and their contexts) in the emulator's state."""
    core = emulator.core
    assert core is not None
    prefix = f"arci-{owner}-"
    for _ in range(100):  # the emulator's thread may change the dicts while we read
        try:
            found = [f"template {n}" for n in list(core.templates) if n.startswith(prefix)]
            for sandbox in list(core.sandboxes.values()):
                if sandbox.id.startswith(prefix):
                    found.append(
                        f"sandbox {sandbox.id} {sandbox.status} with "
                        f"{len(sandbox.contexts)} contexts, {len(sandbox.processes)} processes"
                    )
            return found
        except RuntimeError:
            time.sleep(0.001)
    raise AssertionError("could not read the emulator's state")


def cloud_leaks(
    emulator: LocalEmulator, config: Config, owner: str, *, wait: float = 10.0
) -> list[str]:
    core = emulator.core
    assert core is not None
    sandboxes = str(core.runtime.parent / "sandboxes" / f"arci-{owner}-")
    leaks = [f"listed: {n}" for n in owned(config, owner)]
    leaks += [f"in the emulator: {n}" for n in in_core(emulator, owner)]
    # kernels and commands run in (and with HOME in) their sandbox's directory
    leaks += [f"process: {p}" for p in remaining(lambda: live_mentioning(sandboxes), wait)]
    leaks += [f"directory: {d}" for d in Path(sandboxes).parent.glob(f"arci-{owner}-*")]
    return leaks


@contextlib.contextmanager
def sandbox_on(config: Config) -> Iterator[tuple[DataPlane, str]]:
    """A fresh template and sandbox on the emulator at `config`, as (data plane, sandbox id);
    both deleted at exit."""
    import httpx

    from agentrun_ci import DataPlane

    name = f"t-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=str(config.control_endpoint)) as http, DataPlane(config) as plane:
        assert http.post("/2025-09-10/templates", json={"templateName": name}).status_code == 200
        try:
            sandbox = plane.create_sandbox(name, idle_timeout=600)
            try:
                yield plane, sandbox.sandbox_id
            finally:
                plane.delete_sandbox(sandbox.sandbox_id)
        finally:
            http.delete(f"/2025-09-10/templates/{name}")
