"""How leases get sessions: the four strategies behind one closed seam, and their registry.

Every strategy answers the same calls (`Strategy`); the facade picks one by name
from `STRATEGIES` and never asks which class it got. What differs between them
is said by two class attributes and by the bodies of the calls:

==========  ===========================================  ============  ==============
name        sessions                                     keeps_session  serves_default
==========  ===========================================  ============  ==============
singleton   one shared; leases get their own contexts    yes           yes
pool        min..max warm; one per lease, exclusively    yes           no
dedicated   a fresh one per lease, deleted at release    yes           yes
ephemeral   a fresh one per *call*, deleted right after  no            no
==========  ===========================================  ============  ==============

A third, `shares_session`, is true only for singleton: its leases may not pause the
session they all use (the facade's `pause_session()` may).

A strategy talks to the service only through `Sandboxes` (start, delete, probe,
and the session limit), so it can be tested against a fake (tests/test_strategies.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

import attrs

from . import _telemetry
from ._errors import AgentRunError, InvalidArgumentError, SessionLostError, WaitTimeout

if TYPE_CHECKING:
    from ._options import InterpreterOptions

__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Dedicated",
    "Ephemeral",
    "HeldSession",
    "Pool",
    "PoolExhausted",
    "Sandboxes",
    "Singleton",
    "Strategy",
    "StrategyName",
]

log = logging.getLogger("agentrun_ci.interpreter")

#: the names `strategy=` accepts (the registry below is the source; a test checks both agree)
StrategyName = Literal["singleton", "pool", "ephemeral", "dedicated"]


@attrs.define(eq=False)
class HeldSession:
    """A sandbox in use by the facade."""

    id: str
    owned: bool
    generation: int = 0
    last_used: float = attrs.field(factory=time.monotonic)
    dead: bool = False
    #: paused by `pause_session()`: calls on it are refused until it is resumed
    paused: bool = False


class Sandboxes(Protocol):
    """What a strategy needs from the service: start, delete and probe sandboxes, and
    the semaphore that bounds how many live at once."""

    session_slots: asyncio.Semaphore

    async def start_sandbox(self) -> HeldSession:
        """A new, healthy, owned sandbox (or an exception, leaving nothing behind)."""
        ...

    async def delete_sandbox(self, sandbox_id: str) -> None:
        """Delete a sandbox; one already gone counts as deleted."""
        ...

    async def healthy(self, sandbox_id: str) -> bool:
        """Does the sandbox answer its health check?"""
        ...


class PoolExhausted(WaitTimeout):
    """Every pool session stayed leased for `lease_timeout` seconds (0: at once)."""


class Strategy:
    """How leases get sessions. `lease_key` only names the caller in log lines."""

    name: ClassVar[StrategyName]
    #: a lease keeps the session it took between calls (False: one per call, given back after)
    keeps_session: ClassVar[bool] = True
    #: the facade's own caller holds a session of its own (`start_session` returns it)
    serves_default: ClassVar[bool] = True
    #: every lease uses the same session (a lease may not pause it for the others)
    shares_session: ClassVar[bool] = False

    def __init__(self, rt: Sandboxes) -> None:
        self.rt = rt

    @classmethod
    def from_options(cls, rt: Sandboxes, options: InterpreterOptions) -> Strategy:
        """The strategy as the facade's options configure it."""
        return cls(rt)

    @classmethod
    def min_sessions(cls, options: InterpreterOptions) -> int:
        """The fewest live sessions the strategy needs (the session limit is raised to it)."""
        return 1

    async def start(self) -> None:
        """Warm up (create the sessions the strategy keeps)."""

    async def attach(self, sandbox_id: str) -> HeldSession:
        """Serve an existing sandbox we do not own (and never delete)."""
        raise InvalidArgumentError("attaching to a session needs strategy='singleton'")

    async def take(self, lease_key: str) -> HeldSession:
        """A session for the lease (waiting or creating as the strategy does)."""
        raise NotImplementedError

    async def give(self, lease_key: str, session: HeldSession) -> None:
        """The lease is done with `session` (its contexts are already deleted)."""

    async def replace(self, lease_key: str, session: HeldSession) -> HeldSession:
        """`session` died under the lease: return a working one (`generation` + 1)."""
        raise NotImplementedError

    async def stop_shared(self) -> None:
        """End the session shared by every lease, if the strategy has one."""

    async def close(self) -> None:
        """Delete every session the strategy owns."""


class Singleton(Strategy):
    """One shared session; each lease gets its own contexts in it."""

    name: ClassVar[StrategyName] = "singleton"
    shares_session = True

    def __init__(self, rt: Sandboxes) -> None:
        super().__init__(rt)
        self.session: HeldSession | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._ensure()

    async def attach(self, sandbox_id: str) -> HeldSession:
        async with self._lock:
            self.session = HeldSession(id=sandbox_id, owned=False)
            return self.session

    async def _ensure(self) -> HeldSession:
        async with self._lock:
            if self.session is None or self.session.dead:
                async with self.rt.session_slots:
                    self.session = await self.rt.start_sandbox()
            return self.session

    async def take(self, lease_key: str) -> HeldSession:
        return await self._ensure()

    async def replace(self, lease_key: str, session: HeldSession) -> HeldSession:
        async with self._lock:
            current = self.session
            if current is not None and current is not session and not current.dead:
                return current  # someone already replaced it
            if not session.owned:
                raise SessionLostError(
                    f"session {session.id} (attached, not ours) is gone; start a new session"
                )
            session.dead = True
            await self.rt.delete_sandbox(session.id)
            self.session = await self.rt.start_sandbox()
            self.session.generation = session.generation + 1
            log.warning(
                "session %s died; replaced by %s (state reset)", session.id, self.session.id
            )
            return self.session

    async def stop_shared(self) -> None:
        await self.close()

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None and session.owned:
            await self.rt.delete_sandbox(session.id)


class Pool(Strategy):
    """min..max warm sessions; a lease holds one exclusively, health-checked when taken;
    FIFO waiting with a deadline; idle sessions above the minimum are trimmed."""

    name: ClassVar[StrategyName] = "pool"
    # a pool's sessions are for leases: pinning one to the facade's own caller would
    # shrink the pool until close()
    serves_default = False

    def __init__(
        self, rt: Sandboxes, low: int, high: int, *, lease_timeout: float, idle_trim: float
    ) -> None:
        super().__init__(rt)
        self.low, self.high = low, high
        self.lease_timeout = lease_timeout
        self.idle_trim = idle_trim
        self.free: collections.deque[HeldSession] = collections.deque()
        self.size = 0  # sessions in existence or being created
        self.waiters: collections.deque[asyncio.Future[HeldSession]] = collections.deque()
        self._trimmer: asyncio.Task[None] | None = None
        self._closed = False
        _telemetry.watch("pool", self)

    @classmethod
    def from_options(cls, rt: Sandboxes, options: InterpreterOptions) -> Pool:
        low, high = options.pool_size
        return cls(
            rt,
            low,
            high,
            lease_timeout=options.lease_timeout,
            idle_trim=options.pool_idle_timeout,
        )

    @classmethod
    def min_sessions(cls, options: InterpreterOptions) -> int:
        return options.pool_size[1]

    async def start(self) -> None:
        need = max(0, self.low - self.size)
        self.size += need
        results = await asyncio.gather(
            *(self.rt.start_sandbox() for _ in range(need)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                self.size -= 1
                log.warning("could not pre-warm a pool session: %s", result)
            else:
                self._put(result)
        if self._trimmer is None and self.idle_trim > 0:
            self._trimmer = asyncio.get_running_loop().create_task(self._trim_forever())

    def _put(self, session: HeldSession) -> None:
        """Hand a free session to the first waiter (FIFO), else park it."""
        session.last_used = time.monotonic()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(session)
                return
        self.free.append(session)

    async def _grow(self) -> HeldSession:
        try:
            return await self.rt.start_sandbox()
        except BaseException:
            self.size -= 1
            raise

    async def _acquire_raw(self) -> tuple[HeldSession, bool]:
        """A session and whether it was parked before (and so needs a health check)."""
        if self.free:
            return self.free.popleft(), True
        if self.size < self.high:
            self.size += 1
            return await self._grow(), False
        waiter: asyncio.Future[HeldSession] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self.lease_timeout), False
        except asyncio.TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._put(waiter.result())  # won the race at the deadline: pass it on
            waiter.cancel()
            raise PoolExhausted(
                f"no pool session became free within lease_timeout={self.lease_timeout:g} s "
                f"(pool max {self.high}); raise pool_size or lease_timeout, or release leases "
                "sooner"
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._put(waiter.result())
            waiter.cancel()
            raise

    async def take(self, lease_key: str) -> HeldSession:
        if self._closed:
            raise AgentRunError("the interpreter is closed")
        session, parked = await self._acquire_raw()
        # Health check on lease: a session that died while parked is replaced now. (One
        # handed over by a releasing lease was in use a moment ago.)
        if parked and not await self.rt.healthy(session.id):
            log.warning("pool session %s is not healthy; replacing it", session.id)
            await self._discard(session)
            self.size += 1
            session = await self._grow()
        return session

    async def _discard(self, session: HeldSession) -> None:
        session.dead = True
        self.size -= 1
        with contextlib.suppress(AgentRunError):
            await self.rt.delete_sandbox(session.id)

    async def give(self, lease_key: str, session: HeldSession) -> None:
        if self._closed or session.dead:
            if not session.dead:
                await self._discard(session)
            return
        self._put(session)

    async def replace(self, lease_key: str, session: HeldSession) -> HeldSession:
        log.warning(
            "pool session %s died under lease %r; replacing it (state reset)", session.id, lease_key
        )
        await self._discard(session)
        self.size += 1
        fresh = await self._grow()
        fresh.generation = session.generation + 1
        return fresh

    async def _trim_forever(self) -> None:
        interval = max(0.05, min(self.idle_trim / 2, 5.0))
        while not self._closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            while (
                self.size > self.low
                and self.free
                and now - self.free[0].last_used >= self.idle_trim
            ):
                session = self.free.popleft()
                log.debug("trimming idle pool session %s", session.id)
                await self._discard(session)

    async def close(self) -> None:
        self._closed = True
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer
        for waiter in self.waiters:
            waiter.cancel()
        sessions = list(self.free)
        self.free.clear()
        await asyncio.gather(*(self._discard(s) for s in sessions), return_exceptions=True)


class Dedicated(Strategy):
    """A fresh session per lease, deleted when the lease is released (E2B's model)."""

    name: ClassVar[StrategyName] = "dedicated"

    async def take(self, lease_key: str) -> HeldSession:
        await self.rt.session_slots.acquire()
        try:
            return await self.rt.start_sandbox()
        except BaseException:
            self.rt.session_slots.release()
            raise

    async def give(self, lease_key: str, session: HeldSession) -> None:
        try:
            with contextlib.suppress(AgentRunError):
                await self.rt.delete_sandbox(session.id)
        finally:
            self.rt.session_slots.release()

    async def replace(self, lease_key: str, session: HeldSession) -> HeldSession:
        session.dead = True
        await self.give(lease_key, session)
        fresh = await self.take(lease_key)
        fresh.generation = session.generation + 1
        return fresh


class Ephemeral(Dedicated):
    """A fresh session per call, deleted right after: a lease takes one for each call
    and gives it back when the call ends, so nothing outlives one execute."""

    name: ClassVar[StrategyName] = "ephemeral"
    keeps_session = False
    serves_default = False


#: name → strategy class: the one list of strategies
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Singleton, Pool, Ephemeral, Dedicated)
}
#: the names `strategy=` accepts, in the order error messages list them
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)
