"""The strategies against a fake runtime (no service, no kernels): the registry, the seam
every strategy answers, and the pool's bookkeeping (FIFO, deadline, health, trim, close)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import get_args

import pytest

from agentrun_ci import (
    AgentRunError,
    AsyncCodeInterpreter,
    InterpreterOptions,
    InvalidArgumentError,
    ServerError,
    SessionLostError,
    WaitTimeout,
)
from agentrun_ci._strategies import (
    STRATEGIES,
    STRATEGY_NAMES,
    Dedicated,
    Ephemeral,
    HeldSession,
    Pool,
    Singleton,
    Strategy,
    StrategyName,
)

pytestmark = pytest.mark.anyio


class FakeSandboxes:
    """In-memory sandboxes: counts what is started and deleted; health and failures on demand."""

    def __init__(self, max_sessions: int = 8) -> None:
        self.session_slots = asyncio.Semaphore(max_sessions)
        self.live: set[str] = set()
        self.deleted: list[str] = []
        self.unhealthy: set[str] = set()
        self.failures = 0  # the next N starts fail
        self._made = 0

    async def start_sandbox(self) -> HeldSession:
        await asyncio.sleep(0)  # a real start yields to the loop
        if self.failures:
            self.failures -= 1
            raise ServerError("the fake service refused", status_code=503)
        self._made += 1
        sandbox_id = f"s{self._made}"
        self.live.add(sandbox_id)
        return HeldSession(id=sandbox_id, owned=True)

    async def delete_sandbox(self, sandbox_id: str) -> None:
        self.live.discard(sandbox_id)
        self.deleted.append(sandbox_id)

    async def healthy(self, sandbox_id: str) -> bool:
        return sandbox_id in self.live and sandbox_id not in self.unhealthy


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until `condition()` holds; fail loudly at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.001)


def _pool(rt: FakeSandboxes, low: int, high: int, **kw: float) -> Pool:
    options = {"lease_timeout": 5.0, "idle_trim": 0.0, **kw}
    return Pool(rt, low, high, **options)


# ---------------------------------------------------------------- the registry and the seam


def test_the_registry_lists_every_strategy_name_once() -> None:
    assert get_args(StrategyName) == STRATEGY_NAMES
    assert set(STRATEGIES) == {"singleton", "pool", "ephemeral", "dedicated"}
    assert all(cls.name == name for name, cls in STRATEGIES.items())


def test_every_strategy_answers_the_same_calls() -> None:
    seam = {n for n, v in vars(Strategy).items() if callable(v) and not n.startswith("_")}
    assert seam >= {"start", "attach", "take", "give", "replace", "stop_shared", "close"}
    for cls in STRATEGIES.values():
        for name in seam:
            mine = inspect.signature(getattr(cls, name))
            assert list(mine.parameters) == list(
                inspect.signature(getattr(Strategy, name)).parameters
            ), (cls.name, name)


def test_an_unknown_strategy_names_the_four_choices() -> None:
    with pytest.raises(
        InvalidArgumentError, match="'singleton', 'pool', 'ephemeral' or 'dedicated'"
    ):
        InterpreterOptions(strategy="nope")  # type: ignore[arg-type]


def test_options_are_built_from_the_facade_keywords() -> None:
    ci = AsyncCodeInterpreter(strategy="pool", pool_size=3, max_sessions=2, reap_on_start=False)
    assert ci.options == InterpreterOptions(
        strategy="pool", pool_size=(3, 3), max_sessions=2, reap_on_start=False
    )
    assert ci.options.session_limit == 3  # raised to the pool's max
    assert InterpreterOptions(strategy="dedicated", max_sessions=2).session_limit == 2
    same = AsyncCodeInterpreter(options=ci.options)
    assert same.options is ci.options
    with pytest.raises(InvalidArgumentError, match="not both"):
        AsyncCodeInterpreter(options=ci.options, strategy="singleton", max_sessions=1)
    with pytest.raises(InvalidArgumentError, match="pool_size"):
        InterpreterOptions(pool_size=(3, 2))


async def test_ephemeral_take_gives_a_fresh_session_that_give_deletes() -> None:
    rt = FakeSandboxes(max_sessions=1)
    strategy = Ephemeral(rt)
    assert not strategy.keeps_session
    first = await strategy.take("a")
    assert rt.session_slots.locked()  # one live session at most
    await strategy.give("a", first)
    second = await strategy.take("a")
    await strategy.give("a", second)
    assert first.id != second.id
    assert rt.deleted == [first.id, second.id]
    assert rt.live == set()
    assert not rt.session_slots.locked()


async def test_a_failed_start_gives_the_session_slot_back() -> None:
    rt = FakeSandboxes(max_sessions=1)
    rt.failures = 1
    with pytest.raises(ServerError):
        await Dedicated(rt).take("a")
    assert not rt.session_slots.locked()


async def test_only_a_singleton_attaches_and_an_attached_session_is_never_replaced() -> None:
    rt = FakeSandboxes()
    for cls in (Pool, Ephemeral, Dedicated):
        strategy = cls.from_options(rt, InterpreterOptions(strategy=cls.name))
        with pytest.raises(InvalidArgumentError, match="singleton"):
            await strategy.attach("theirs")
    singleton = Singleton(rt)
    attached = await singleton.attach("theirs")
    assert await singleton.take("a") is attached
    with pytest.raises(SessionLostError, match="not ours"):
        await singleton.replace("a", attached)
    await singleton.close()
    assert rt.deleted == []  # never ours to delete


async def test_a_singleton_replaces_a_dead_session_once_for_all_leases() -> None:
    rt = FakeSandboxes()
    singleton = Singleton(rt)
    dead = await singleton.take("a")
    fresh_a, fresh_b = await asyncio.gather(
        singleton.replace("a", dead), singleton.replace("b", dead)
    )
    assert fresh_a is fresh_b
    assert fresh_a.generation == 1
    assert rt.live == {fresh_a.id}
    await singleton.stop_shared()
    assert rt.live == set()


# ---------------------------------------------------------------- the pool


async def test_pool_prewarms_its_minimum_and_grows_to_its_maximum() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 2, 3)
    await pool.start()
    assert len(pool.free) == 2
    taken = [await pool.take(k) for k in "abc"]
    assert len({s.id for s in taken}) == 3
    assert pool.size == 3
    assert len(rt.live) == 3
    await pool.close()


async def test_a_failed_prewarm_leaves_room_to_grow_later() -> None:
    rt = FakeSandboxes()
    rt.failures = 1
    pool = _pool(rt, 2, 2)
    await pool.start()
    assert (pool.size, len(pool.free)) == (1, 1)
    await pool.take("a")
    await pool.take("b")  # grows into the slot the failed start left
    assert pool.size == 2
    await pool.close()


async def test_waiters_are_served_in_arrival_order() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 0, 1)
    held = await pool.take("holder")
    order: list[str] = []

    async def wait_then_use(key: str) -> None:
        session = await pool.take(key)
        order.append(key)
        await pool.give(key, session)

    tasks = []
    for i, key in enumerate(("first", "second", "third")):
        tasks.append(asyncio.ensure_future(wait_then_use(key)))
        await until(lambda n=i + 1: len(pool.waiters) == n)  # type: ignore[misc]
    await pool.give("holder", held)
    await asyncio.gather(*tasks)
    assert order == ["first", "second", "third"]
    assert pool.size == 1
    await pool.close()


async def test_a_waiter_gives_up_at_lease_timeout_with_advice() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 0, 1, lease_timeout=0.05)
    held = await pool.take("holder")
    with pytest.raises(WaitTimeout, match=r"lease_timeout=0.05 s \(pool max 1\)"):
        await pool.take("late")
    await pool.give("holder", held)
    assert list(pool.free) == [held]  # not handed to the waiter that left
    await pool.close()


async def test_a_waiter_cancelled_as_it_is_served_passes_the_session_on() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 0, 1)
    held = await pool.take("holder")
    waiter = asyncio.ensure_future(pool.take("impatient"))
    await until(lambda: len(pool.waiters) == 1)
    await pool.give("holder", held)  # resolves the waiter's future...
    waiter.cancel()  # ...but its task is cancelled before it resumes
    try:
        got = await waiter
    except asyncio.CancelledError:
        assert list(pool.free) == [held]  # passed on, not lost
    else:
        assert got is held  # the cancel came too late: the waiter has it
        assert list(pool.free) == []
    assert pool.size == 1
    await pool.close()


async def test_a_parked_session_that_died_is_replaced_when_taken() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 1, 1)
    await pool.start()
    parked = pool.free[0]
    rt.unhealthy.add(parked.id)
    session = await pool.take("a")
    assert session.id != parked.id
    assert parked.dead
    assert rt.deleted == [parked.id]
    assert pool.size == 1
    await pool.close()


async def test_replace_discards_the_dead_session_and_counts_a_generation() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 0, 2)
    session = await pool.take("a")
    fresh = await pool.replace("a", session)
    assert (fresh.generation, session.dead, pool.size) == (1, True, 1)
    assert rt.live == {fresh.id}
    await pool.give("a", session)  # a dead session given back is not parked
    assert list(pool.free) == []
    await pool.give("a", fresh)
    assert list(pool.free) == [fresh]
    await pool.close()


async def test_idle_sessions_above_the_minimum_are_trimmed_not_below() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 1, 3, idle_trim=0.05)
    await pool.start()
    taken = [await pool.take(k) for k in "abc"]
    for key, session in zip("abc", taken, strict=True):
        await pool.give(key, session)
    await until(lambda: pool.size == 1)
    assert len(rt.live) == 1
    assert len(pool.free) == 1
    await pool.close()


async def test_close_cancels_waiters_and_refuses_new_takes() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 1, 1)
    await pool.start()
    held = await pool.take("a")
    blocked = asyncio.ensure_future(pool.take("b"))
    await until(lambda: len(pool.waiters) == 1)
    await pool.close()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    await pool.give("a", held)  # given back after close: deleted, not parked
    assert rt.live == set()
    assert list(pool.free) == []
    with pytest.raises(AgentRunError, match="closed"):
        await pool.take("c")


async def test_close_deletes_the_free_sessions() -> None:
    rt = FakeSandboxes()
    pool = _pool(rt, 3, 3)
    await pool.start()
    assert len(rt.live) == 3
    await pool.close()
    assert rt.live == set()
    assert pool.size == 0
