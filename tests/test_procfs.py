"""/proc/<pid>/stat read in one place: fields after the command name, liveness, start time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentrun_ci._procfs import is_running, start_time, stat_fields

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def test_fields_start_after_the_command_name_even_when_it_holds_parentheses() -> None:
    code = "import sys; open('/proc/self/comm', 'w').write('a) b (c'); print(); sys.stdin.read()"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            child.stdout.readline()  # the name is set
            assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "a) b (c"
            fields = stat_fields(child.pid)
            assert fields is not None
            assert fields[1] == str(os.getpid())  # ppid
            assert is_running(child.pid)
            assert start_time(child.pid) == int(fields[19])
        finally:
            child.kill()


def test_a_zombie_is_not_running_and_a_gone_process_has_no_fields() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while (stat_fields(child.pid) or ["?"])[0] != "Z":  # exited, not yet waited for
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    assert not is_running(child.pid)
    child.wait()
    assert stat_fields(child.pid) is None
    assert start_time(child.pid) is None
    assert not is_running(child.pid)


def test_this_process() -> None:
    fields = stat_fields(os.getpid())
    assert fields is not None
    assert fields[0] in "RS"
    assert is_running(str(os.getpid()))
    started = start_time(os.getpid())
    assert started is not None
    assert started > 0
