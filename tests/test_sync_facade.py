"""The sync facade declares its async twin's signatures, documents every public name, and
runs on anyio's blocking portal; `execute_code` takes keywords only after `code`."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest

from agentrun_ci import (
    AsyncCodeInterpreter,
    AsyncLease,
    CodeInterpreter,
    Config,
    InterpreterOptions,
    Lease,
)

#: async-only: the planes are async objects; sync-only: the seed's control client
ASYNC_ONLY = {"control_plane", "data_plane"}
SYNC_ONLY = {"control_client"}


def _public(cls: type) -> dict[str, Any]:
    names = {n for n in dir(cls) if not n.startswith("_")}
    return {n: inspect.getattr_static(cls, n) for n in names}


def _params(member: Any) -> list[tuple[str, Any, Any]]:
    func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


@pytest.mark.parametrize(
    ("async_cls", "sync_cls"), [(AsyncCodeInterpreter, CodeInterpreter), (AsyncLease, Lease)]
)
def test_sync_twins_have_the_async_names_and_parameters(async_cls: type, sync_cls: type) -> None:
    mine, theirs = _public(sync_cls), _public(async_cls)
    assert set(theirs) - ASYNC_ONLY <= set(mine)
    assert set(mine) - set(theirs) <= SYNC_ONLY
    for name, member in theirs.items():
        if name in ASYNC_ONLY or isinstance(member, property) or not callable(member):
            continue
        assert _params(mine[name]) == _params(member), name
    assert _params(CodeInterpreter.__init__) == _params(AsyncCodeInterpreter.__init__)


@pytest.mark.parametrize("cls", [CodeInterpreter, Lease, AsyncCodeInterpreter, AsyncLease])
def test_every_public_name_is_documented_and_none_takes_bare_kwargs(cls: type) -> None:
    for name, member in _public(cls).items():
        target = member.fget if isinstance(member, property) else member
        assert inspect.getdoc(target), f"{cls.__name__}.{name} has no docstring"
        if callable(target):
            kinds = {kind for _, kind, _ in _params(target)}
            assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{cls.__name__}.{name}"


def test_execute_code_takes_only_code_by_position_on_facade_and_lease() -> None:
    for cls in (CodeInterpreter, Lease, AsyncCodeInterpreter, AsyncLease):
        params = inspect.signature(cls.execute_code).parameters.values()
        positional = [p.name for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
        assert positional == ["self", "code"], cls.__name__
    assert _params(Lease.execute_code) == _params(CodeInterpreter.execute_code)
    assert CodeInterpreter.run_code is CodeInterpreter.execute_code
    assert Lease.run_code is Lease.execute_code


def test_from_env_takes_the_option_keywords() -> None:
    init = _params(CodeInterpreter.__init__)[2:]  # past self and config
    assert _params(CodeInterpreter.from_env) == init  # bound: no cls
    assert _params(AsyncCodeInterpreter.from_env) == init
    fields = {f.name for f in InterpreterOptions.__attrs_attrs__}  # type: ignore[attr-defined]
    assert fields <= {name for name, _, _ in init}


def test_the_portal_is_a_daemon_thread_gone_after_close() -> None:
    def portals() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "agentrun-ci-portal"]

    before = len(portals())
    ci = CodeInterpreter(Config(), reap_on_start=False)
    assert len(portals()) == before + 1
    assert all(t.daemon for t in portals())  # a script that never closes still exits
    ci.close()
    assert len(portals()) == before
    with pytest.raises(RuntimeError, match="closed"):
        ci.execute_code("1")


def test_a_callback_that_calls_back_in_gets_a_clear_error(emulator: Config) -> None:
    with CodeInterpreter(emulator, reap_on_start=False) as ci:
        with pytest.raises(RuntimeError, match="must not call back"):
            ci.execute_code("print(1)", on_stdout=lambda _: ci.execute_code("2"))
        assert ci.execute_code("3").text == "3"  # still usable
