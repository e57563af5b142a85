"""`pause_session()` / `resume_session()` on the facade and on leases, against the emulator:
state survives a pause, a paused session refuses calls with a clear error, and only a
session of the caller's own can be paused by a lease."""

from __future__ import annotations

import uuid

import pytest
from support import owned

from agentrun_ci import (
    AsyncCodeInterpreter,
    CodeInterpreter,
    Config,
    DataPlane,
    InvalidArgumentError,
    SessionPausedError,
)

pytest.importorskip("jupyter_client")


def _owner() -> str:
    return "p" + uuid.uuid4().hex[:7]


def _status(config: Config, sandbox_id: str) -> str | None:
    with DataPlane(config) as data:
        return data.get_sandbox(sandbox_id).status


def test_state_files_and_jobs_survive_a_pause(emulator: Config) -> None:
    owner = _owner()
    with CodeInterpreter(emulator, owner=owner) as ci:
        assert ci.execute_code("x = 41").ok
        ci.write_file("/home/user/kept.txt", "still here")
        job = ci.acquire("jobs").start_job("read line; echo got $line", stdin=True)
        sid = ci.session_id
        assert sid is not None

        paused = ci.pause_session()
        assert paused.status == "PAUSED"
        assert _status(emulator, sid) == "PAUSED"
        assert ci.pause_session().status == "PAUSED"  # twice is no error
        with pytest.raises(SessionPausedError, match="resume_session"):
            ci.execute_code("x")
        with pytest.raises(SessionPausedError, match="resume_session"):
            ci.read_file("/home/user/kept.txt")

        assert ci.resume_session().status == "READY"
        assert ci.resume_session().status == "READY"  # twice is no error
        assert ci.execute_code("x + 1").text == "42"
        assert ci.read_file("/home/user/kept.txt").text == "still here"
        # the job that waited through the pause is still there and goes on
        with DataPlane(emulator) as data:
            data.send_job_stdin(sid, job.pid, b"hello\n")
            done = data.read_job(sid, job.pid, wait=20)
            while done.running:
                done = data.read_job(sid, job.pid, stdout_offset=done.stdout_offset, wait=20)
        assert done.exit_code == 0
    assert owned(emulator, owner) == []


@pytest.mark.anyio
async def test_a_dedicated_lease_pauses_its_own_session_and_not_the_others(
    emulator: Config,
) -> None:
    owner = _owner()
    async with AsyncCodeInterpreter(emulator, owner=owner, strategy="dedicated") as ci:
        a, b = await ci.acquire("a"), await ci.acquire("b")
        await a.execute_code("v = 'a'")
        await b.execute_code("v = 'b'")
        await a.pause_session()
        with pytest.raises(SessionPausedError):
            await a.execute_code("v")
        assert (await b.execute_code("v")).text == "'b'"  # b's session runs on
        await a.resume_session()
        assert (await a.execute_code("v")).text == "'a'"
    assert owned(emulator, owner) == []


@pytest.mark.anyio
async def test_a_pool_lease_released_while_paused_gives_back_a_running_session(
    emulator: Config,
) -> None:
    owner = _owner()
    async with AsyncCodeInterpreter(emulator, owner=owner, strategy="pool", pool_size=(1, 1)) as ci:
        first = await ci.acquire("first")
        await first.execute_code("secret = 1")
        sid = first.session_id
        await first.pause_session()
        await first.release()
        second = await ci.acquire("second")
        execution = await second.execute_code("'secret' in globals()")
        assert second.session_id == sid  # the same sandbox, resumed and reused
        assert execution.text == "False"  # without the first lease's variables
        await second.release()
    assert owned(emulator, owner) == []


@pytest.mark.anyio
async def test_a_singleton_lease_may_not_pause_the_shared_session_but_the_facade_may(
    emulator: Config,
) -> None:
    owner = _owner()
    async with AsyncCodeInterpreter(emulator, owner=owner, strategy="singleton") as ci:
        other = await ci.acquire("other")
        await other.execute_code("n = 1")
        with pytest.raises(InvalidArgumentError, match="shares one session"):
            await other.pause_session()
        await ci.pause_session()  # the facade's own: every lease of the session is paused
        with pytest.raises(SessionPausedError):
            await other.execute_code("n")
        await other.resume_session()
        assert (await other.execute_code("n")).text == "1"
    assert owned(emulator, owner) == []


def test_the_ephemeral_strategy_has_no_session_to_pause(emulator: Config) -> None:
    with (
        CodeInterpreter(emulator, owner=_owner(), strategy="ephemeral") as ci,
        pytest.raises(InvalidArgumentError, match="nothing to pause"),
    ):
        ci.pause_session()
