"""The E2B shim's sandbox lifecycle on the local emulator: pause and resume, `lifecycle=`,
listing with queries, order and pages, metrics, and the refusals of what AgentRun lacks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from support import running_emulator

from agentrun_ci import Config, e2b
from agentrun_ci.e2b import (
    AsyncSandbox,
    InvalidArgumentException,
    Sandbox,
    SandboxException,
    SandboxMetrics,
    SandboxQuery,
    SandboxState,
)
from agentrun_ci.e2b._options import Lifecycle, check_lifecycle


@pytest.fixture(scope="module")
def shared(emulator: Config) -> Iterator[None]:
    # What other modules of this worker left open goes first: calls that name no backend
    # (`connect(id)`, `kill(id)`) use the one the process already uses, which must be ours.
    e2b.close_shared()
    yield
    e2b.close_shared()


@pytest.fixture
def fresh(emulator: Config, shared: None) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        sandbox = Sandbox.create(config=emulator, **kwargs)
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.kill()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(0.05)


def _tag() -> dict[str, str]:
    return {"lifecycle_test": uuid.uuid4().hex}


# ---------------------------------------------------------------- pause and resume


def test_pause_holds_the_sandbox_and_connect_resumes_it_with_its_state(
    fresh: Callable[..., Sandbox],
) -> None:
    sbx = fresh()
    sbx.run_code("x = 41")
    assert sbx.pause() is True
    assert sbx.get_info().state == SandboxState.PAUSED
    assert Sandbox.get_info(sbx.sandbox_id).status == "PAUSED"
    assert sbx.is_running() is False
    with pytest.raises(SandboxException, match=r"paused: connect\(\) resumes it"):
        sbx.run_code("x")
    assert sbx.pause() is False  # already paused
    assert Sandbox.pause(sbx.sandbox_id) is False

    same = Sandbox.connect(sbx.sandbox_id)
    assert same.get_info().state == SandboxState.RUNNING
    assert sbx.is_running()
    assert sbx.run_code("x + 1").text == "42"  # memory kept: the same kernel


def test_instance_connect_resumes_and_starts_a_new_lifetime(
    fresh: Callable[..., Sandbox],
) -> None:
    sbx = fresh(timeout=60)
    assert Sandbox.beta_pause(sbx.sandbox_id) is True  # E2B's former name, by id
    assert sbx.connect(timeout=3000) is sbx
    info = sbx.get_info()
    assert info.state == SandboxState.RUNNING
    assert info.end_at is not None
    assert info.end_at > datetime.now(timezone.utc) + timedelta(seconds=2000)


def test_pause_keep_memory_false_is_refused_by_name(fresh: Callable[..., Sandbox]) -> None:
    sbx = fresh()
    with pytest.raises(InvalidArgumentException, match="keep_memory"):
        sbx.pause(keep_memory=False)
    assert sbx.is_running()


def test_kill_of_a_paused_sandbox(fresh: Callable[..., Sandbox]) -> None:
    sbx = fresh()
    sbx.pause()
    assert sbx.kill() is True
    assert not sbx.is_running()


# ---------------------------------------------------------------- lifecycle=


@pytest.mark.parametrize(
    ("lifecycle", "expected"),
    [
        (None, Lifecycle("kill", False)),
        ({}, Lifecycle("kill", False)),
        ({"on_timeout": None}, Lifecycle("kill", False)),
        ({"on_timeout": "kill"}, Lifecycle("kill", False)),
        ({"on_timeout": {"action": "kill"}}, Lifecycle("kill", False)),
        ({"on_timeout": "pause"}, Lifecycle("pause", False)),
        ({"on_timeout": "pause", "auto_resume": False}, Lifecycle("pause", False)),
        ({"on_timeout": "pause", "auto_resume": True}, Lifecycle("pause", True)),
        ({"on_timeout": {"action": "pause", "keep_memory": None}}, Lifecycle("pause", False)),
        ({"on_timeout": {"action": "pause", "keep_memory": True}}, Lifecycle("pause", False)),
    ],
)
def test_lifecycle_defaults_as_e2b(lifecycle: object, expected: Lifecycle) -> None:
    assert check_lifecycle(lifecycle) == expected


@pytest.mark.parametrize(
    ("lifecycle", "match"),
    [
        ({"on_timeout": {"action": "kill", "keep_memory": False}}, "keep_memory is only allowed"),
        ({"on_timeout": "kill", "auto_resume": True}, "auto_resume can only be True"),
        ({"auto_resume": True}, "auto_resume can only be True"),
        (
            {"on_timeout": {"action": "pause", "keep_memory": False}, "auto_resume": True},
            "filesystem-only",
        ),
        ({"on_timeout": {"action": "pause", "keep_memory": False}}, "keep_memory=False"),
        ({"on_timeout": "hibernate"}, "'kill'"),
        ({"on_timeout": "pause", "auto_resume": "yes"}, "auto_resume"),
        ({"on_timeout": "pause", "keep": 1}, "keep"),
        ("pause", "dict"),
    ],
)
def test_lifecycle_checks_as_e2b(lifecycle: object, match: str) -> None:
    with pytest.raises(InvalidArgumentException, match=match):
        check_lifecycle(lifecycle)


def test_on_timeout_pause_pauses_at_the_end_of_the_lifetime(
    fresh: Callable[..., Sandbox],
) -> None:
    sbx = fresh(lifecycle={"on_timeout": "pause"})
    assert sbx.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": False}
    sbx.run_code("kept = 41")
    sbx.set_timeout(0)  # the lifetime ends now
    wait_until(lambda: sbx.get_info().state == SandboxState.PAUSED, "the timeout's pause")
    assert not sbx.is_running()
    with pytest.raises(SandboxException, match="paused"):
        sbx.files.read("/home/user/anything.txt")
    sbx.connect()
    assert sbx.get_info().state == SandboxState.RUNNING
    assert sbx.run_code("kept + 1").text == "42"


def test_auto_resume_resumes_on_the_next_call(fresh: Callable[..., Sandbox]) -> None:
    sbx = fresh(lifecycle={"on_timeout": "pause", "auto_resume": True})
    sbx.run_code("n = 1")
    sbx.set_timeout(0)
    wait_until(lambda: sbx.get_info().state == SandboxState.PAUSED, "the timeout's pause")
    assert sbx.run_code("n + 1").text == "2"
    assert sbx.get_info().state == SandboxState.RUNNING


def test_on_timeout_kill_is_the_default(fresh: Callable[..., Sandbox]) -> None:
    sbx = fresh()
    assert sbx.get_info().lifecycle == {"on_timeout": "kill", "auto_resume": False}
    sbx.set_timeout(0)
    wait_until(lambda: not sbx.is_running(), "the timeout's kill")
    with pytest.raises(SandboxException, match="killed"):
        sbx.run_code("1")


def test_create_refuses_a_bad_lifecycle_before_making_a_sandbox(
    emulator: Config, shared: None
) -> None:
    with pytest.raises(InvalidArgumentException, match="keep_memory"):
        Sandbox.create(
            config=emulator, lifecycle={"on_timeout": {"action": "kill", "keep_memory": False}}
        )


# ---------------------------------------------------------------- list


def test_list_filters_by_state_template_and_start(fresh: Callable[..., Sandbox]) -> None:
    tag = _tag()
    running, paused = fresh(metadata=tag), fresh(metadata=tag)
    paused.pause()

    def ids(**query: Any) -> list[str]:
        return [
            i.sandbox_id for i in Sandbox.list(SandboxQuery(metadata=tag, **query)).next_items()
        ]

    assert sorted(ids()) == sorted([running.sandbox_id, paused.sandbox_id])
    assert ids(state=[SandboxState.RUNNING]) == [running.sandbox_id]
    assert ids(state=["paused"]) == [paused.sandbox_id]
    info = running.get_info()
    assert info.started_at is not None
    assert running.sandbox_id in ids(template=info.template_id)
    assert ids(template="no-such-template") == []
    assert running.sandbox_id in ids(started_after=info.started_at)
    assert running.sandbox_id not in ids(started_after=info.started_at + timedelta(seconds=1))


def test_list_orders_and_pages(fresh: Callable[..., Sandbox]) -> None:
    tag = _tag()
    made = [fresh(metadata=tag).sandbox_id for _ in range(3)]
    query = SandboxQuery(metadata=tag)
    assert [i.sandbox_id for i in Sandbox.list(query).next_items()] == made[::-1]
    assert [i.sandbox_id for i in Sandbox.list(query, order="asc").next_items()] == made

    pages = Sandbox.list(query, limit=2)
    first = pages.next_items()
    assert [i.sandbox_id for i in first] == made[:0:-1]
    assert pages.has_next
    token = pages.next_token
    assert token is not None
    second = pages.next_items()
    assert [i.sandbox_id for i in second] == made[:1]
    assert (pages.has_next, pages.next_token) == (False, None)
    with pytest.raises(SandboxException, match="has_next"):
        pages.next_items()
    # a token goes on where its page ended, also in a new paginator
    assert [i.sandbox_id for i in Sandbox.list(query, next_token=token).next_items()] == made[:1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"order": "newest"}, "order"), ({"limit": 0}, "limit"), ({"next_token": "x"}, "next_token")],
)
def test_list_refuses_bad_arguments(
    emulator: Config, shared: None, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidArgumentException, match=match):
        Sandbox.list(**kwargs).next_items()


# ---------------------------------------------------------------- metrics


def test_get_metrics_is_one_sample_of_now(fresh: Callable[..., Sandbox]) -> None:
    sbx = fresh()
    sbx.files.write("/home/user/blob.bin", b"x" * 200_000)
    before = datetime.now(timezone.utc)
    (sample,) = sbx.get_metrics()
    assert isinstance(sample, SandboxMetrics)
    assert sample.cpu_count >= 1
    assert 0 <= sample.cpu_used_pct <= 100
    assert sample.mem_used > 0
    assert sample.mem_total == 4096 * 1024 * 1024  # the default interpreter's memory
    assert sample.disk_used >= 200_000
    assert sample.disk_total > 0
    assert sample.mem_cache is None
    assert sample.timestamp.timestamp() >= int(before.timestamp())  # whole seconds, as E2B's
    assert len(Sandbox.get_metrics(sbx.sandbox_id, start=before)) == 1
    past = before - timedelta(hours=1)
    assert sbx.get_metrics(start=past, end=past + timedelta(minutes=30)) == []


# ---------------------------------------------------------------- what AgentRun has not


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("create_snapshot", "no sandbox snapshots"),
        ("list_snapshots", "no sandbox snapshots"),
        ("fork", "cannot copy a running sandbox"),
        ("update_network", "per interpreter"),
    ],
)
def test_missing_features_are_refused_by_name(
    fresh: Callable[..., Sandbox], name: str, match: str
) -> None:
    sbx = fresh()
    for target in (getattr(sbx, name), getattr(Sandbox, name), getattr(AsyncSandbox, name)):
        with pytest.raises(InvalidArgumentException, match=rf"{name}\(\).*{match}"):
            target()
    with pytest.raises(InvalidArgumentException, match="delete_snapshot"):
        Sandbox.delete_snapshot("snap")


def test_sandbox_state_is_e2b_s() -> None:
    assert [s.value for s in SandboxState] == ["running", "paused"]
    assert isinstance(SandboxState.PAUSED, str)
    assert str(SandboxState.PAUSED) == "paused"


# ---------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_pause_connect_and_an_overdue_lifetime(emulator: Config, shared: None) -> None:
    sbx = await AsyncSandbox.create(config=emulator)
    try:
        await sbx.run_code("v = 7")
        assert await AsyncSandbox.pause(sbx.sandbox_id) is True
        assert not await sbx.is_running()
        other = await AsyncSandbox.connect(sbx.sandbox_id)
        assert (await other.run_code("v")).text == "7"
        assert (await sbx.get_info()).state == SandboxState.RUNNING
        # a lifetime that ended while the loop was blocked (no timer ran) ends when asked
        await sbx.set_timeout(0)
        assert await sbx.is_running() is False
    finally:
        await sbx.kill()


@pytest.mark.anyio
async def test_pause_waits_through_pausing_and_refuses_other_states() -> None:
    from types import SimpleNamespace

    from agentrun_ci import Sandbox as Wire
    from agentrun_ci.e2b._async_sandbox import _pause

    def fake(before: list[str], answer: str) -> Any:
        seen = iter(before)

        async def get_sandbox(sandbox_id: str) -> Wire:
            return Wire(sandbox_id=sandbox_id, status=next(seen))

        async def pause_sandbox(sandbox_id: str) -> Wire:
            return Wire(sandbox_id=sandbox_id, status=answer)

        return seen, SimpleNamespace(
            data_plane=SimpleNamespace(get_sandbox=get_sandbox),
            control_plane=SimpleNamespace(pause_sandbox=pause_sandbox),
        )

    seen, ci = fake(["READY", "PAUSING", "PAUSED"], "PAUSING")
    assert await _pause(ci, "s1", 10) is True
    assert next(seen, None) is None  # it asked until PAUSED
    _, ci = fake(["READY"], "FAILED")
    with pytest.raises(SandboxException, match="FAILED, not PAUSED"):
        await _pause(ci, "s1", 10)
    _, ci = fake(["PAUSED"], "unused")
    assert await _pause(ci, "s1", 10) is False  # already paused


@pytest.mark.anyio
async def test_a_run_refused_on_a_killed_sandbox_leaves_no_coroutine_unawaited(
    emulator: Config, shared: None
) -> None:
    import gc
    import warnings

    sbx = await AsyncSandbox.create(config=emulator)
    await sbx.kill()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(Exception, match="killed"):
            await sbx.run_code("1")
        gc.collect()
    assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []


@pytest.mark.anyio
async def test_calls_by_id_find_the_backend_that_has_the_sandbox(
    emulator: Config, shared: None
) -> None:
    """A process with sandboxes on two backends (`config=` each): `connect(id)`,
    `get_info(id)`, `pause(id)` and `kill(id)`, which name none, reach the one that has
    the sandbox, whichever backend the process opened first."""
    with running_emulator() as (_, other):
        first = await AsyncSandbox.create(config=emulator)
        second = await AsyncSandbox.create(config=other)
        try:
            for sbx, value in ((first, 1), (second, 2)):
                await sbx.run_code(f"v = {value}")
                again = await AsyncSandbox.connect(sbx.sandbox_id)
                assert (await again.run_code("v")).text == str(value)
                info = await AsyncSandbox.get_info(sbx.sandbox_id)
                assert info.sandbox_id == sbx.sandbox_id
            # by id, with no handle of this process on it: its backend is asked
            third = await AsyncSandbox.create(config=other)
            third_id = third.sandbox_id
            await third.kill()
            assert await AsyncSandbox.kill(third_id) is False  # gone from every backend
            assert await AsyncSandbox.pause(second.sandbox_id) is True
            assert await AsyncSandbox.kill(second.sandbox_id) is True
            assert not await second.is_running()
            with pytest.raises(e2b.NotFoundException):
                await AsyncSandbox.connect("no-such-sandbox")
        finally:
            await first.kill()
            await second.kill()
            # both backends' facades, before the second's emulator stops
            await e2b.aclose_shared()
            await asyncio.to_thread(e2b.close_shared)
