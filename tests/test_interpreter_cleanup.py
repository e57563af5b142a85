"""Crash-safe cleanup with real processes: a SIGKILLed process's orphans are reaped by the
next start (a live process's resources are not), and SIGTERM cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest
from test_interpreter import owned

from agentrun_ci import CodeInterpreter, Config
from agentrun_ci._ownership import OwnerTag

CHILD = textwrap.dedent(
    """
    import sys, time
    from agentrun_ci import CodeInterpreter, Config

    url, owner = sys.argv[1], sys.argv[2]
    config = Config(control_endpoint=url, data_endpoint=url, account_id="local")
    ci = CodeInterpreter(config, owner=owner, reap_on_start=False)
    ci.execute_code("x = 1")
    print(ci.code_interpreter_id, ci.session_id, flush=True)
    time.sleep(120)
    """
)


def _spawn(config: Config, owner: str) -> tuple[subprocess.Popen[str], str, str]:
    assert config.control_endpoint is not None
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, config.control_endpoint, owner],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    proc.stdout.close()  # the child prints nothing more
    if len(line) != 2:
        proc.kill()
        proc.wait()
        pytest.fail(f"child did not start (exit {proc.poll()})")
    return proc, line[0], line[1]


def test_sigkilled_orphans_are_reaped_at_start_but_a_live_process_is_spared(
    emulator: Config,
) -> None:
    owner = "k" + uuid.uuid4().hex[:7]
    killed, dead_template, dead_session = _spawn(emulator, owner)
    alive, live_template, live_session = _spawn(emulator, owner)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        templates, sandboxes = owned(emulator, owner)
        assert {dead_template, live_template} <= set(templates)
        assert {dead_session, live_session} <= set(sandboxes)

        with CodeInterpreter(emulator, owner=owner, reap_on_start=False) as patient:
            assert patient.reap(older_than=3600) == 0  # the orphans are younger than that
        assert dead_template in owned(emulator, owner)[0]

        with CodeInterpreter(emulator, owner=owner) as ci:
            assert ci.execute_code("1 + 1").text == "2"  # opening reaps first
            templates, sandboxes = owned(emulator, owner)
            assert dead_template not in templates
            assert dead_session not in sandboxes
            assert live_template in templates  # its process still runs
            assert live_session in sandboxes
            assert ci.reap() == 0  # nothing else is orphaned
    finally:
        alive.terminate()
        alive.wait(timeout=30)
        if killed.poll() is None:
            killed.kill()
            killed.wait()
    assert owned(emulator, owner) == ([], [])


def test_sigterm_deletes_what_the_process_created(emulator: Config) -> None:
    owner = "s" + uuid.uuid4().hex[:7]
    proc, template, session = _spawn(emulator, owner)
    assert owned(emulator, owner) == ([template], [session])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert owned(emulator, owner) == ([], [])


def test_owner_tag_round_trips_and_knows_who_is_alive() -> None:
    tag = OwnerTag.current("Team-A")
    assert tag.owner == "teama"
    name = tag.new_name("my interpreter!")
    assert name.startswith(tag.prefix)
    assert name.endswith("my-interpreter")
    assert OwnerTag.parse(name) == tag
    assert tag.alive()
    gone = OwnerTag(tag.owner, pid=2**22 + 12345, start=1)
    assert not gone.alive()
    recycled = OwnerTag(tag.owner, pid=os.getpid(), start=tag.start + 1)
    assert not recycled.alive() or tag.start == 0
    assert OwnerTag.parse("not-ours") is None


@pytest.mark.parametrize(("pid", "start"), [(1, 0), (18006, 556894), (33, 33), (2**22, 10**9)])
def test_owner_tag_parses_back_whatever_the_digits(pid: int, start: int) -> None:
    # Regression: in base 36 the separator "x" was also a digit, so a start time such as
    # 556894 ("bxpa") was split in the wrong place and a live process looked dead.
    tag = OwnerTag("team", pid, start)
    assert OwnerTag.parse(tag.prefix + "abc123-name") == tag
