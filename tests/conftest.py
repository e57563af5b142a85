"""Shared fixtures. Each part of the code base adds its own fixtures below its heading."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from agentrun_ci._config import Config


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------- parallel runs (issue #16)

#: Test files whose tests must not overlap one another: they run on one worker, in turn.
#: The leak tests SIGKILL emulators and MCP servers and then scan /proc for what is left
#: (scoped to their own pids and owner tags); the next emulator start *anywhere* sweeps a
#: dead one's leftovers, so two of them at once would check each other's sweeps.
SHARED_GROUPS = {
    "test_mcp_leaks.py": "leaks",
    "test_local_crash.py": "leaks",
}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one worker more than the CPUs we may run on (not the host's count, which
    psutil reports inside a CPU-limited container), at most 8. The extra worker fills the
    time the others spend waiting on processes they started (a kernel getting ready, a
    server's grace period): with one worker per CPU, a third of two cores' time was idle
    (vmstat), and the quiet 2-core suite took 4:08 against 3:43-3:51 with three workers.
    More than 8 would only wait: the longest group (the leak tests) is an eighth of it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    affinity = getattr(os, "sched_getaffinity", None)  # Linux
    cpus = len(affinity(0)) if affinity else os.cpu_count() or 1
    return max(1, min(8, cpus + 1))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test file is one xdist group (module fixtures start once, on one worker),
    unless its tests name a group themselves or it shares one (SHARED_GROUPS)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            name = item.path.name
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(name, name)))


# ---------------------------------------------------------------- local discovery

# Every emulator the tests start would list itself in the user's registry of local
# emulators, and `agentrun-ci run` would then use another test's emulator. The tests' own
# emulators are not registered (`off`); a child whose environment drops every AGENTRUN_
# variable falls back to $XDG_RUNTIME_DIR, which points at this worker's own directory,
# never the user's. Tests of the registry name a directory of their own.
os.environ["AGENTRUN_LOCAL_REGISTRY"] = "off"
_RUNTIME = tempfile.mkdtemp(prefix="agentrun-test-runtime-")
atexit.register(shutil.rmtree, _RUNTIME, True)
os.environ["XDG_RUNTIME_DIR"] = _RUNTIME


# ---------------------------------------------------------------- hypothesis (issue #16)

# Every run draws the same examples: a failure in CI replays on any machine, and a run
# cannot turn red (or green) by luck. `HYPOTHESIS_PROFILE=explore` draws new ones (with
# the example database) to hunt for bugs; pin what it finds with `@example`.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------- local emulator (issue #3)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Config]:
    """A running local emulator for the whole test session, as a `Config` pointing at it.

    Unsigned (no key pair), default limits, one spare kernel; one per xdist worker.
    Tests that need other settings (keys, small limits, a provisioning delay) start
    their own with `support.running_emulator(EmulatorSettings(...))`. Templates and
    sandboxes you create here are shared with the rest of the worker's session: use
    unique names and delete what you create.
    """
    pytest.importorskip("jupyter_client")
    from agentrun_ci.local import LocalEmulator

    with LocalEmulator() as config:
        yield config
