"""The client registry: who "the client" is, and each client's state.

Who is "the client" (each gets its own lease, hence its own state):

* stdio -- the process is the client (one host spawns one server): key `stdio`;
* streamable HTTP with an ``mcp-session-id`` header -- that session: `http:<id>`;
* anything else (2026-07-28 clients, stateless HTTP) -- an unguessable
  `session` handle returned by the first call, passed back by later calls:
  `handle:<random>`.

A tool never accepts another client's handle, and never takes a sandbox or
context id from the model: a lease is reached only through its owner's key.
The registry only bookkeeps; leases are opened and released by `AppState`.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import TYPE_CHECKING

import anyio
import attrs

if TYPE_CHECKING:
    from agentrun_ci import AsyncLease

__all__ = ["ClientRegistry", "ClientState", "UnknownHandle"]


class UnknownHandle(Exception):
    """A `session` handle that is not the caller's (its message says what to do)."""


@attrs.define(eq=False)
class ClientState:
    """One client's lease and what the server remembers about its calls."""

    key: str
    handle: str
    lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    lease: AsyncLease | None = None
    last_used: float = attrs.field(factory=time.monotonic)
    busy: int = 0
    #: set when we had to restart the context (cancellation); reported on the next run
    reset_pending: bool = False
    #: a release callback is registered on the HTTP connection
    hooked: bool = False
    #: cancel scopes of this client's calls in flight (cancelled at shutdown)
    scopes: set[anyio.CancelScope] = attrs.field(factory=set)
    #: the caller has this state's `session` handle (a result carried it, or they sent it)
    delivered: bool = False
    #: this state has held something of the client's (a run, a file, a command)
    had_state: bool = False
    #: why this client's earlier state is gone (released while idle, evicted, ...);
    #: reported with `state_reset: true` on its next run, then cleared
    lost: str | None = None

    @property
    def stable(self) -> bool:
        """Identified by its transport (stdio, HTTP session), not by a handle it must send."""
        return not self.key.startswith("handle:")


class ClientRegistry:
    """Client states by key, and the `session` handles that reach them."""

    #: released states remembered, so that a returning client is told its state is gone
    MAX_TOMBSTONES = 1024

    def __init__(self) -> None:
        self.clients: dict[str, ClientState] = {}
        self.handles: dict[str, str] = {}
        #: why the state of a key or handle that held state was released
        self.tombstones: dict[str, str] = {}

    def get(self, key: str) -> ClientState:
        """The state of `key`, created on first use."""
        found = self.clients.get(key)
        if found is None:
            handle = secrets.token_urlsafe(18)
            found = self.clients[key] = ClientState(key=key, handle=handle)
            self.handles[handle] = key
            found.lost = self.tombstones.pop(key, None)
        return found

    def resolve(self, key: str | None, session: str | None) -> ClientState:
        """The caller's own state; a `session` handle is accepted only if it is theirs.

        `key` is the transport's identity (None when there is none).
        """
        if key is not None:
            client = self.get(key)
            if session is not None and not hmac.compare_digest(session, client.handle):
                raise UnknownHandle(
                    "unknown `session` handle: it does not belong to this client; omit it"
                )
            return client
        if session is None:
            # No stable identity: a fresh handle, returned in the result.
            return self.get(f"handle:{secrets.token_hex(8)}")
        owner_key = self.handles.get(session)
        if owner_key is None and session in self.tombstones:
            # a handle whose state was released: a new state, told that the old one is gone
            client = self.get(f"handle:{secrets.token_hex(8)}")
            client.lost = self.tombstones.pop(session)
            return client
        if owner_key is None or not owner_key.startswith("handle:"):
            raise UnknownHandle(
                "unknown or expired `session` handle; omit `session` to start a new state"
            )
        client = self.clients[owner_key]
        client.delivered = True
        return client

    def pop(self, key: str, why: str | None = None) -> ClientState | None:
        """Forget `key` and its handle; the caller releases its lease.

        With `why`, a client that had state and comes back (same transport identity,
        or its `session` handle) is told its earlier state is gone, and why.
        """
        client = self.clients.pop(key, None)
        if client is None:
            return None
        self.handles.pop(client.handle, None)
        if why is not None and (client.had_state or client.lost):
            self.tombstones[key if client.stable else client.handle] = why
            while len(self.tombstones) > self.MAX_TOMBSTONES:
                del self.tombstones[next(iter(self.tombstones))]
        return client

    def oldest_idle(self, keep: ClientState) -> ClientState | None:
        idle = [c for c in self.clients.values() if c.busy == 0 and c is not keep]
        return min(idle, key=lambda c: c.last_used) if idle else None

    def idle_since(self, seconds: float) -> list[str]:
        """Keys of clients without a call in flight for `seconds` or more."""
        now = time.monotonic()
        return [k for k, c in self.clients.items() if c.busy == 0 and now - c.last_used >= seconds]

    def busy(self) -> bool:
        return any(c.busy for c in self.clients.values())

    def cancel_calls(self) -> None:
        """Cancel every call in flight (each holds its client's lock for up to 30 s)."""
        for client in list(self.clients.values()):
            for scope in list(client.scopes):
                scope.cancel()
