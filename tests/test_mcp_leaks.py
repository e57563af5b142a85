"""Leak tests: stop the MCP server at a random point, then look for what it left (issue #7).

The `agentrun-ci-mcp` console script runs as a real subprocess, spoken to over raw
JSON-RPC on its stdio, and is stopped with SIGTERM, SIGINT or stdin EOF at one of
three points: *mid-create* (during its first call, while the template, sandbox and
kernel are being made), *mid-execute* (during a `time.sleep` in run_code) and
*idle* (after completed calls). The offset inside each window is random; the seed
is in every failure message, and `AGENTRUN_LEAK_SEED=<seed>` replays it.

Two backends:

* cloud -- the server talks to a separately running emulator (a provisioning delay
  makes "mid-create" a real window). Afterwards the emulator holds no sandbox or
  template with the owner prefix, and no process (kernel or command) of those
  sandboxes is alive.
* local -- the server hosts the emulator itself (kernels are its children, in
  their own sessions). Afterwards no process it started is alive (tracked by
  ancestry while it ran, by its session, and by mentions of its
  `agentrun-local-<pid>-` directory), and neither that directory nor its cgroup
  remains.

SIGKILL cannot be cleaned up after, so the *next* server start must reap what the
killed one left.

By default one case per stop method and per point runs for each backend; the full
3 x 3 x 2 matrix is marked slow (`pytest -m slow tests/test_mcp_leaks.py`).
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")
pytest.importorskip("jupyter_client")

from support import (
    SCRIPT,
    Server,
    alive,
    base_env,
    cloud_env,
    cloud_leaks,
    describe,
    live_in_session,
    live_mentioning,
    pids,
    proc_stat,
    remaining,
    running_emulator,
)

from agentrun_ci import Config
from agentrun_ci.local import EmulatorSettings, LocalEmulator

pytestmark = [
    pytest.mark.skipif(not SCRIPT, reason="agentrun-ci-mcp console script not installed"),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]

#: one seed per run; every test derives its own random stream from it and its id
SEED = int(os.environ.get("AGENTRUN_LEAK_SEED") or secrets.randbits(32))
#: the cloud-shaped emulator's provisioning delay: templates and sandboxes stay
#: CREATING this long, so a stop during the first call lands mid-create
PROVISIONING_DELAY = 0.8

STOPS = ("sigterm", "sigint", "eof")
POINTS = ("mid_create", "mid_execute", "idle")
EXIT_CODES = {"sigterm": 128 + signal.SIGTERM, "sigint": 128 + signal.SIGINT, "eof": 0}
#: the default run: each stop method once and each point once, per backend
DEFAULT_CASES = {
    "cloud": {("sigterm", "mid_create"), ("sigint", "mid_execute"), ("eof", "idle")},
    "local": {("sigterm", "mid_execute"), ("sigint", "idle"), ("eof", "mid_create")},
}
DEFAULT_KILL_POINTS = {"cloud": "mid_create", "local": "mid_execute"}
SLEEP_CODE = "import time; time.sleep(25)"
BACKGROUND = "nohup sleep 300 > /dev/null 2>&1 &"


def _matrix(backend: str) -> list[Any]:
    return [
        pytest.param(
            stop,
            point,
            id=f"{stop}-{point}",
            marks=() if (stop, point) in DEFAULT_CASES[backend] else pytest.mark.slow,
        )
        for stop in STOPS
        for point in POINTS
    ]


def _kill_matrix(backend: str) -> list[Any]:
    return [
        pytest.param(
            point,
            id=f"sigkill-{point}",
            marks=() if point == DEFAULT_KILL_POINTS[backend] else pytest.mark.slow,
        )
        for point in POINTS
    ]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{SEED}:{request.node.nodeid}")


def _replay(request: pytest.FixtureRequest) -> str:
    replay = f"AGENTRUN_LEAK_SEED={SEED} pytest -m '' '{request.node.nodeid}'"
    return f"seed={SEED} (replay: {replay})"


# ---------------------------------------------------------------- /proc


class Descendants:
    """Records every process below `root` (pid and start time) while it runs."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[tuple[int, str], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="descendants", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.02)

    def sample(self) -> None:
        children: dict[int, list[tuple[int, str]]] = {}
        for pid in pids():
            fields = proc_stat(pid)
            if fields is not None:
                children.setdefault(int(fields[1]), []).append((pid, fields[19]))
        todo = [self.root]
        while todo:
            for pid, start in children.get(todo.pop(), []):
                if (pid, start) not in self.seen:
                    self.seen[(pid, start)] = describe(pid)
                todo.append(pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def alive(self) -> list[str]:
        return [desc for (pid, start), desc in self.seen.items() if alive(pid, start)]


def _emulator_tags(pid: int) -> tuple[str, str]:
    """How the names of the emulator hosted by process `pid` start: temp dirs and
    cgroups are `agentrun-local-<pid>-...` or `agentrun-local-<pid>.<start time>-...`."""
    return f"agentrun-local-{pid}-", f"agentrun-local-{pid}."


def _emulator_dirs(pid: int) -> list[str]:
    """Temp and cgroup directories of the emulator hosted by process `pid`."""
    tags = _emulator_tags(pid)
    found = []
    for place in (tempfile.gettempdir(), "/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        try:
            names = os.listdir(place)
        except OSError:
            continue
        found += [os.path.join(place, n) for n in names if n.startswith(tags)]
    return found


def _env(config: Config, owner: str) -> dict[str, str]:
    """The emulator as the server's cloud; INFO logs, which the checks read."""
    return cloud_env(config, owner, AGENTRUN_MCP_LOG_LEVEL="INFO")


def _owner() -> str:
    return "leak" + secrets.token_hex(3)


def _drive(server: Server, point: str, rng: random.Random, window: float) -> str:
    """Bring the server to `point` and wait a random offset in its window; what was done."""
    server.initialize()
    if point == "mid_create":
        offset = rng.uniform(0.0, window)
        server.tool("run_code", code="x = 1")
        time.sleep(offset)
        return f"stopped {offset:.3f}s into the first call"
    server.tool_ok("run_code", code="x = 1")
    server.tool_ok("run_command", command=BACKGROUND)  # a child that outlives its command
    if point == "mid_execute":
        offset = rng.uniform(0.1, 1.5)
        server.tool("run_code", code=SLEEP_CODE)
        time.sleep(offset)
        return f"stopped {offset:.3f}s into a sleeping run_code"
    offset = rng.uniform(0.0, 0.5)
    time.sleep(offset)
    return f"stopped {offset:.3f}s after the last completed call"


def _probes_saw_it(point: str, found: list[str], context: str) -> None:
    """Past its first call a running server has things to find: else the probes are blind."""
    if point != "mid_create":
        assert found, f"the leak probes found nothing of a running server; {context}"


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.close()


# ---------------------------------------------------------------- cloud-shaped backend


@pytest.fixture(scope="module")
def cloud() -> Iterator[tuple[LocalEmulator, Config]]:
    with running_emulator(EmulatorSettings(provisioning_delay=PROVISIONING_DELAY)) as running:
        yield running


@pytest.mark.parametrize(("stop", "point"), _matrix("cloud"))
def test_cloud_stop_leaves_nothing(
    cloud: tuple[LocalEmulator, Config],
    servers: list[Server],
    tmp_path: Path,
    rng: random.Random,
    request: pytest.FixtureRequest,
    stop: str,
    point: str,
) -> None:
    emulator, config = cloud
    owner = _owner()
    server = Server(_env(config, owner), tmp_path / "server.log")
    servers.append(server)
    # the first call waits for the template, then for the sandbox, each CREATING this long
    what = _drive(server, point, rng, window=2 * PROVISIONING_DELAY)
    before = cloud_leaks(emulator, config, owner, wait=0)
    code = server.stop(stop)
    context = f"{_replay(request)}; {what}; before the stop: {before}\n{server.log_tail()}"
    _probes_saw_it(point, before, context)
    assert code == EXIT_CODES[stop], context
    assert cloud_leaks(emulator, config, owner) == [], context
    assert remaining(lambda: live_in_session(server.pid)) == [], context


@pytest.mark.parametrize("point", _kill_matrix("cloud"))
def test_cloud_sigkill_orphans_are_reaped_by_the_next_start(
    cloud: tuple[LocalEmulator, Config],
    servers: list[Server],
    tmp_path: Path,
    rng: random.Random,
    request: pytest.FixtureRequest,
    point: str,
) -> None:
    emulator, config = cloud
    owner = _owner()
    killed = Server(_env(config, owner), tmp_path / "killed.log")
    servers.append(killed)
    what = _drive(killed, point, rng, window=2 * PROVISIONING_DELAY)
    killed.stop("sigkill")
    left = cloud_leaks(emulator, config, owner, wait=0)
    context = f"{_replay(request)}; {what}; left by the killed server: {left}"
    _probes_saw_it(point, left, context)

    successor = Server(_env(config, owner), tmp_path / "next.log")
    servers.append(successor)
    successor.initialize()  # no tool call: the sweep runs in the background at start
    leaks = remaining(lambda: cloud_leaks(emulator, config, owner), timeout=20)
    assert leaks == [], f"{context}\n{successor.log_tail()}"
    assert successor.stop("eof") == 0, context


# ---------------------------------------------------------------- local (embedded) backend


def _local_env(owner: str) -> dict[str, str]:
    return base_env(owner, log_level="INFO") | {"AGENTRUN_MCP_BACKEND": "local"}


def _local_leaks(server: Server, tree: Descendants, *, wait: float = 10.0) -> list[str]:
    def processes() -> list[str]:
        found = [f"descendant: {d}" for d in tree.alive()]
        found += [f"in its session: {d}" for d in live_in_session(server.pid)]
        for tag in _emulator_tags(server.pid):
            found += [f"mentions {tag}: {d}" for d in live_mentioning(tag)]
        return sorted(set(found))

    return remaining(processes, wait) + [f"directory: {d}" for d in _emulator_dirs(server.pid)]


def _local_window(rng: random.Random) -> float:
    # The first call starts the emulator (in a thread, the first few hundred ms), then
    # a template, a sandbox and a kernel (a second or two in all). Half the stops land
    # while the emulator starts, where a cancelled start once leaked it.
    return rng.choice((0.3, 2.0))


@pytest.mark.parametrize(("stop", "point"), _matrix("local"))
def test_local_stop_leaves_nothing(
    servers: list[Server],
    tmp_path: Path,
    rng: random.Random,
    request: pytest.FixtureRequest,
    stop: str,
    point: str,
) -> None:
    server = Server(_local_env(_owner()), tmp_path / "server.log")
    servers.append(server)
    tree = Descendants(server.pid)
    try:
        what = _drive(server, point, rng, window=_local_window(rng))
        tree.sample()
        before = _local_leaks(server, tree, wait=0)
        code = server.stop(stop)
    finally:
        tree.stop()
    context = f"{_replay(request)}; {what}; before the stop: {before}\n{server.log_tail()}"
    _probes_saw_it(point, before, context)
    assert code == EXIT_CODES[stop], context
    assert _local_leaks(server, tree) == [], context


@pytest.mark.parametrize("point", _kill_matrix("local"))
def test_local_sigkill_leftovers_are_reaped_by_the_next_start(
    servers: list[Server],
    tmp_path: Path,
    rng: random.Random,
    request: pytest.FixtureRequest,
    point: str,
) -> None:
    owner = _owner()
    killed = Server(_local_env(owner), tmp_path / "killed.log")
    servers.append(killed)
    tree = Descendants(killed.pid)
    try:
        what = _drive(killed, point, rng, window=_local_window(rng))
        tree.sample()
        killed.stop("sigkill")
    finally:
        tree.stop()
    left = _local_leaks(killed, tree, wait=0)
    context = f"{_replay(request)}; {what}; left by the killed server: {left}"
    _probes_saw_it(point, left, context)

    successor = Server(_local_env(owner), tmp_path / "next.log")
    servers.append(successor)
    successor.initialize()
    # the emulator starts with the first call, and sweeps dead emulators' leftovers then
    successor.tool_ok("run_code", code="1")
    leaks = _local_leaks(killed, tree)
    assert leaks == [], f"{context}\n{successor.log_tail()}"
    assert successor.stop("eof") == 0, context


# ---------------------------------------------------------------- regressions found here


@pytest.mark.anyio
async def test_close_stops_a_local_emulator_whose_start_was_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The MCP server, stopped while its first call was starting the local emulator,
    # cancelled that start; the thread went on starting it, nothing knew of it, and
    # its temp dir and cgroup outlived the server. Held here at the exact moment.
    from agentrun_ci import AsyncCodeInterpreter

    started: list[LocalEmulator] = []
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    real_start = LocalEmulator.start

    def held_start(self: LocalEmulator) -> Config:
        started.append(self)
        entered.set()
        release.wait(30)
        try:
            return real_start(self)
        finally:
            done.set()

    monkeypatch.setattr(LocalEmulator, "start", held_start)
    ci = AsyncCodeInterpreter(backend="local", owner=_owner(), reap_on_start=False)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ci.create_interpreter)
            assert await anyio.to_thread.run_sync(entered.wait, 30)
            tg.cancel_scope.cancel()
    finally:
        release.set()
        await ci.close()
    (emulator,) = started
    try:
        assert await anyio.to_thread.run_sync(done.wait, 30)
        assert emulator.core is not None
        assert not emulator.core.runtime.parent.exists(), "close() left the emulator running"
    finally:
        emulator.stop()
