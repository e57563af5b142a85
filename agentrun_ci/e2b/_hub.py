"""Where every `Sandbox` of the process comes from: one backend, one facade per event loop.

The first sandbox opens the *root*: an `AsyncCodeInterpreter` on the shim's
portal loop (the same event-loop thread the sync facade uses) that chooses the
backend (cloud, or the local emulator it starts) and makes the default
interpreter. Every event loop that uses `AsyncSandbox` then gets its own
`AsyncCodeInterpreter` (httpx clients belong to one loop) over the root's
configuration and interpreter, so all sandboxes of the process live in the same
place: `connect()` and `list()` see each other's sandboxes, sync or async.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from .._config import Config
from .._errors import NotFoundError
from .._interpreter import AsyncCodeInterpreter
from .._sync_interpreter import _Portal

__all__ = [
    "DEFAULT_TEMPLATES",
    "SANDBOX_IDLE",
    "aclose_shared",
    "acquire",
    "acquire_holding",
    "close_shared",
    "holding",
    "hub",
    "portal",
    "release",
    "using",
]

#: E2B's code-interpreter template names: they all mean "the default interpreter"
DEFAULT_TEMPLATES = frozenset(
    {"code-interpreter-v1", "code-interpreter", "code-interpreter-beta", "base"}
)
#: the service's idle timeout for our sandboxes: the longest AgentRun allows, because the
#: E2B `timeout` (a lifetime) is enforced by the shim itself
SANDBOX_IDLE = 6 * 3600.0

_lock = threading.Lock()
_portal: _Portal | None = None
_roots: dict[tuple[Config | None, str], AsyncCodeInterpreter] = {}
_hubs: dict[tuple[int, Config | None, str, str | None], AsyncCodeInterpreter] = {}


_portal_loop: asyncio.AbstractEventLoop | None = None


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def portal() -> _Portal:
    """The shim's event-loop thread (sync `Sandbox` objects live on it)."""
    global _portal, _portal_loop
    with _lock:
        if _portal is None:
            made = _Portal()
            _portal_loop = made.call(_running_loop())
            _portal = made
        return _portal


def on_portal() -> bool:
    """Is the running event loop the portal's?"""
    portal()
    return asyncio.get_running_loop() is _portal_loop


_RootKey = tuple[Config | None, str]
_root_lock: asyncio.Lock | None = None


async def _root_here(config: Config | None, backend: str) -> AsyncCodeInterpreter:
    """The root facade for (config, backend), opened on the portal loop (this one), once."""
    global _root_lock
    if _root_lock is None:
        _root_lock = asyncio.Lock()
    async with _root_lock:
        root = _roots.get((config, backend))
        if root is None and config is None and backend == "auto" and _roots:
            # no backend named: the one this process already uses (Sandbox.list(), kill(id))
            root = next(iter(_roots.values()))
        if root is None:
            root = AsyncCodeInterpreter(
                config,
                backend=backend,  # type: ignore[arg-type]
                strategy="dedicated",
                session_idle_timeout=SANDBOX_IDLE,
            )
            try:
                await root.create_interpreter()
            except BaseException:
                await root.close()
                raise
            _roots[(config, backend)] = root
        return root


_HubKey = tuple[int, Config | None, str, str | None]
_users: dict[_HubKey, int] = {}


async def acquire(
    config: Config | None, backend: str, template: str | None
) -> tuple[AsyncCodeInterpreter, _HubKey | None]:
    """`hub()`, counted: the facade of a loop other than the portal's is closed (by
    `release`) when its last user is done, so no HTTP client outlives its loop."""
    ci = await hub(config, backend, template)
    loop = asyncio.get_running_loop()
    if on_portal() and template is None:
        return ci, None  # the root lives as long as the process
    key = (id(loop), config, backend, template)
    _users[key] = _users.get(key, 0) + 1
    return ci, key


async def release(key: _HubKey | None) -> None:
    if key is None:
        return
    left = _users[key] = _users.get(key, 1) - 1
    if left <= 0:
        _users.pop(key, None)
        made = _hubs.pop(key, None)
        if made is not None:
            await made.close()


async def acquire_holding(sandbox_id: str) -> tuple[AsyncCodeInterpreter, _HubKey | None]:
    """`acquire()` for a call by sandbox id that names no backend: the backend this process
    uses, or, where it uses several (a `config=` per sandbox), the one that has the
    sandbox. Each is asked in turn (GetSandbox); when none knows the id, the first answers
    (and says it is not found)."""
    keys = list(_roots)
    if len(keys) <= 1:
        return await acquire(None, "auto", None)
    for config, backend in keys:
        ci, key = await acquire(config, backend, None)
        try:
            await ci.data_plane.get_sandbox(sandbox_id)
        except NotFoundError:
            await release(key)
            continue
        except BaseException:
            await release(key)
            raise
        return ci, key
    config, backend = keys[0]
    return await acquire(config, backend, None)


@contextlib.asynccontextmanager
async def holding(sandbox_id: str) -> AsyncIterator[AsyncCodeInterpreter]:
    """The facade for one call by sandbox id with no backend named (`acquire_holding`)."""
    ci, key = await acquire_holding(sandbox_id)
    try:
        yield ci
    finally:
        await release(key)


@contextlib.asynccontextmanager
async def using(
    config: Config | None, backend: str, template: str | None = None
) -> AsyncIterator[AsyncCodeInterpreter]:
    """The facade for one call (`Sandbox.kill(id)`, `list()`, ...)."""
    ci, key = await acquire(config, backend, template)
    try:
        yield ci
    finally:
        await release(key)


async def hub(config: Config | None, backend: str, template: str | None) -> AsyncCodeInterpreter:
    """The facade for the running event loop and `template` (`None`: the default interpreter)."""
    loop = asyncio.get_running_loop()
    here = on_portal()
    if here:
        root = await _root_here(config, backend)
    else:
        root = await asyncio.to_thread(portal().call, _root_here(config, backend))
    if template is None and here:
        return root
    key = (id(loop), config, backend, template)
    found = _hubs.get(key)
    if found is not None:
        return found
    assert root.config is not None
    assert root.template is not None
    name = template or root.template.name
    made = AsyncCodeInterpreter(
        root.config,
        strategy="dedicated",
        interpreter_name=name,
        session_idle_timeout=SANDBOX_IDLE,
        reap_on_start=False,
        owner=root.owner,
    )
    try:
        await made.attach_interpreter(name)  # a template that does not exist fails here
    except BaseException:
        await made.close()
        raise
    found = _hubs.setdefault(key, made)
    if found is not made:
        await made.close()
    return found


async def aclose_shared() -> None:
    """Close the facades of the running event loop (their sandboxes are deleted)."""
    loop_id = id(asyncio.get_running_loop())
    keys = [k for k in _hubs if k[0] == loop_id]
    hubs = [_hubs.pop(k) for k in keys]
    for key in keys:
        _users.pop(key, None)
    for made in hubs:
        with contextlib.suppress(Exception):
            await made.close()


def close_shared() -> None:
    """Delete every sandbox this process made through the shim and stop its backend."""
    global _root_lock
    with _lock:
        hubs = list(_hubs.values())
        _hubs.clear()
        _users.clear()
        roots = list(_roots.values())
        _roots.clear()
        port = _portal
    _root_lock = None
    # Facades of other event loops: their sandboxes are deleted by their tracker at exit
    # (their HTTP clients belong to loops we cannot run here); the roots own the backend.
    del hubs
    for root in roots:
        with contextlib.suppress(Exception):
            if port is not None:
                port.call(root.close())
