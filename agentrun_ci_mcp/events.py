"""SSE resumability over streamable HTTP: a bounded in-memory event store.

With an event store, the SDK gives every SSE event an id and opens each stream
with a priming event (an id, empty data and `retry:`, for clients of protocol
2025-11-25 and later). A client whose stream drops, e.g. during a long
`run_code`, reconnects with `GET` and `Last-Event-ID` and gets what it missed,
then the rest (the result included).

Bounded: per stream at most `max_events` events and `max_bytes` bytes (the
oldest go first; a resume from before them is refused, as from an unknown id),
at most `max_streams` streams and `max_total_bytes` in all (the least recently
written go first), and a stream nothing was written to for `ttl` seconds is
forgotten.

Per client: the SDK hands one store to every session and names streams by the
request id, which every session numbers from 1. So each session gets a view of
its own (`SessionEvents`, keyed by its session id), and an event id resumes only
within the session it was sent to. Event ids are random: knowing one does not
tell another.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import attrs
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage

__all__ = ["SSE_RETRY_MS", "EventStoreLimits", "MemoryEventStore", "SessionEvents", "per_session"]

log = logging.getLogger("agentrun_ci_mcp")

#: the `retry:` (ms) of priming events: how long a client waits before reconnecting
SSE_RETRY_MS = 1000


@attrs.frozen
class EventStoreLimits:
    max_events: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    max_streams: int = 4096
    max_total_bytes: int = 64 * 1024 * 1024
    #: seconds a stream is kept after its last event
    ttl: float = 600.0


@attrs.define(eq=False)
class _Stream:
    key: tuple[str, str]
    #: (sequence number, event id, message or None for a priming event, size)
    events: collections.deque[tuple[int, str, JSONRPCMessage | None, int]] = attrs.field(
        factory=collections.deque
    )
    next_seq: int = 0
    size: int = 0
    last: float = attrs.field(factory=time.monotonic)


class MemoryEventStore:
    """Events of every session, bounded (see the module docs). Not an `EventStore`
    itself: each session uses it through its own `SessionEvents` view."""

    def __init__(
        self,
        limits: EventStoreLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or EventStoreLimits()
        self._clock = clock
        #: streams by (session, stream id), least recently written first
        self._streams: collections.OrderedDict[tuple[str, str], _Stream] = collections.OrderedDict()
        #: event id -> (stream key, sequence number)
        self._index: dict[str, tuple[tuple[str, str], int]] = {}
        self.total_bytes = 0

    def __repr__(self) -> str:
        return f"MemoryEventStore({len(self._streams)} streams, {self.total_bytes} bytes)"

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def store(self, session: str, stream_id: str, message: JSONRPCMessage | None) -> str:
        now = self._clock()
        self._expire(now)
        key = (session, stream_id)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(key)
        else:
            self._streams.move_to_end(key)
        stream.last = now
        size = 0 if message is None else len(message.model_dump_json(by_alias=True))
        event_id = secrets.token_urlsafe(12)
        stream.events.append((stream.next_seq, event_id, message, size))
        self._index[event_id] = (key, stream.next_seq)
        stream.next_seq += 1
        stream.size += size
        self.total_bytes += size
        limits = self.limits
        while len(stream.events) > limits.max_events or (
            stream.size > limits.max_bytes and len(stream.events) > 1
        ):
            self._drop_oldest(stream)
        while len(self._streams) > limits.max_streams or (
            self.total_bytes > limits.max_total_bytes and len(self._streams) > 1
        ):
            self._forget(next(iter(self._streams.values())))
        return event_id

    async def replay(self, session: str, last_event_id: str, send: EventCallback) -> str | None:
        """Send what came after `last_event_id` in its stream; that stream's id, or None
        when the id is unknown, expired, too old to resume from, or another session's."""
        self._expire(self._clock())
        found = self._index.get(last_event_id)
        if found is None or found[0][0] != session:
            return None
        key, seq = found
        stream = self._streams.get(key)
        if stream is None:
            return None
        for event_seq, event_id, message, _ in list(stream.events):
            if event_seq > seq and message is not None:  # priming events carry nothing
                await send(EventMessage(message, event_id))
        return key[1]

    def forget_session(self, session: str) -> None:
        for stream in [s for k, s in self._streams.items() if k[0] == session]:
            self._forget(stream)

    def _drop_oldest(self, stream: _Stream) -> None:
        _, event_id, _, size = stream.events.popleft()
        self._index.pop(event_id, None)
        stream.size -= size
        self.total_bytes -= size

    def _forget(self, stream: _Stream) -> None:
        while stream.events:
            self._drop_oldest(stream)
        self._streams.pop(stream.key, None)

    def _expire(self, now: float) -> None:
        ttl = self.limits.ttl
        while self._streams:
            oldest = next(iter(self._streams.values()))
            if now - oldest.last < ttl:
                return
            self._forget(oldest)


class SessionEvents(EventStore):
    """One session's view of a `MemoryEventStore`: the `EventStore` the SDK uses."""

    def __init__(self, store: MemoryEventStore, session: str) -> None:
        self._store = store
        self._session = session

    def __repr__(self) -> str:  # the session id is a credential of sorts: not shown
        return f"SessionEvents({self._store!r})"

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._store.store(self._session, str(stream_id), message)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        return await self._store.replay(self._session, last_event_id, send_callback)


def per_session(manager: Any, store: MemoryEventStore) -> bool:
    """Give each new session of the SDK's `StreamableHTTPSessionManager` its own view of
    `store`. False (resumability off) if this SDK version has no place to do it.

    The SDK passes its one `event_store` to every session's transport: a view per
    session is set on the transport as the session is admitted (private in mcp 2.3).
    """
    admit = getattr(manager, "_admit_session", None)
    if admit is None or getattr(manager, "event_store", None) is None:
        return False

    def admit_with_events(requestor: Any) -> Any:
        transport = admit(requestor)
        session = getattr(transport, "mcp_session_id", None)
        if transport is not None:
            if session and hasattr(transport, "_event_store"):
                transport._event_store = SessionEvents(store, session)
            else:  # never share one session's events with another
                with contextlib.suppress(AttributeError):
                    transport._event_store = None
        return transport

    manager._admit_session = admit_with_events
    return True
