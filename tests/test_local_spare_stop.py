"""Stopping the emulator while a spare kernel is still starting (issue #14).

The MCP server on the local backend stops its embedded emulator at exit, right after
a context took the spare kernel and a new spare began to start. Waiting for that
start (seconds on a busy machine) pushed the exit past the 2 s hosts allow before
SIGTERM; the start is cancelled instead, and must leave no kernel and no cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")

from support import live_mentioning, remaining

from agentrun_ci.local import EmulatorSettings, LocalEmulator


def test_a_spare_still_starting_is_cancelled_and_leaves_nothing() -> None:
    emulator = LocalEmulator(EmulatorSettings(spare_kernels=2))
    emulator.start()
    core = emulator.core
    assert core is not None
    base = str(core.runtime.parent)
    cgroup = core.cgroups.path if core.cgroups is not None else None
    starting = len(core.pool._starting)
    emulator.stop()
    assert starting, "no spare was starting: the case is not exercised"
    assert remaining(lambda: live_mentioning(base)) == []
    assert not Path(base).exists()
    if cgroup is not None:
        assert not os.path.exists(cgroup)
