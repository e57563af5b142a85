"""The E2B shim's sync classes are twins of its async ones: the same public names, each with
the same parameters (names, kinds, defaults), so that code moves between `Sandbox` and
`AsyncSandbox` by adding or removing `await`. The few differences are E2B's own, listed."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from agentrun_ci import e2b
from agentrun_ci.e2b import _async_git, _async_pty, _sync_git, _sync_pty
from agentrun_ci.e2b._common import _Dual

PAIRS = [
    (e2b.AsyncSandbox, e2b.Sandbox),
    (e2b.AsyncFilesystem, e2b.Filesystem),
    (e2b.AsyncCommandHandle, e2b.CommandHandle),
    (e2b.AsyncSandboxPaginator, e2b.SandboxPaginator),
    (e2b.AsyncFileStreamReader, e2b.FileStreamReader),
    (_async_git.AsyncGit, _sync_git.Git),
    (_async_pty.AsyncPty, _sync_pty.Pty),
]
COMMANDS = (e2b.AsyncSandbox, e2b.Sandbox)

#: (class pair, name) -> why the twins differ, as E2B's do
DIFFERENT: dict[tuple[str, str], str] = {
    # E2B's sync handle delivers output to callbacks given to wait(); the async one calls
    # those given at start, from a background task
    ("CommandHandle", "wait"): "callbacks",
    # E2B's sync watch has no callback: events are pulled with get_new_events()
    ("Filesystem", "watch_dir"): "no on_event",
    # E2B's sync terminals take no on_data: output is read from the handle
    ("Pty", "create"): "no on_data",
    ("Pty", "connect"): "no on_data",
    # `Sandbox(...)` connects or creates; `AsyncSandbox(...)` refuses (use create/connect)
    ("Sandbox", "__init__"): "constructor",
}
SYNC_ONLY = {("Sandbox", "close")}
#: async name -> sync name (Python's own convention for closing)
RENAMED = {"aclose": "close"}


def _public(cls: type) -> dict[str, Any]:
    return {
        n: inspect.getattr_static(cls, n)
        for n in dir(cls)
        if not n.startswith("_") and not isinstance(inspect.getattr_static(cls, n), type)
    }


def _params(member: Any) -> list[tuple[str, Any, Any]]:
    func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
    if isinstance(func, property):
        return []
    if isinstance(member, _Dual):  # the instance side; the class side is checked below
        func = member._on_instance
    params = list(inspect.signature(func).parameters.values())
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_sync_twins_have_the_async_names_and_parameters(async_cls: type, sync_cls: type) -> None:
    mine, theirs = _public(sync_cls), _public(async_cls)
    theirs = {RENAMED.get(n, n): m for n, m in theirs.items()}
    name = sync_cls.__name__
    assert set(theirs) - set(mine) == set(), f"{name} lacks {set(theirs) - set(mine)}"
    extra = {n for n in set(mine) - set(theirs) if (name, n) not in SYNC_ONLY}
    assert extra == set(), f"{name} has more than its twin: {extra}"
    for attr, member in theirs.items():
        if (name, attr) in DIFFERENT or (not callable(member) and not isinstance(member, _Dual)):
            continue
        assert _params(mine[attr]) == _params(member), f"{name}.{attr}"


def test_class_and_instance_methods_keep_their_parameters() -> None:
    for attr in ("kill", "get_info", "set_timeout", "connect", "pause", "get_metrics"):
        on_class = inspect.signature(getattr(e2b.Sandbox, attr))
        on_async_class = inspect.signature(getattr(e2b.AsyncSandbox, attr))
        assert list(on_class.parameters) == list(on_async_class.parameters), attr
