"""The sync shim's one way to run the async shim: the sync facade's portal loop."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from . import _hub

__all__ = ["call", "call_any"]

T = TypeVar("T")


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the portal loop and wait for its result."""
    return _hub.portal().call(coro)


def call_any(coro: Coroutine[Any, Any, Any]) -> Any:
    """`call` for coroutines typed `Any` (the dual class/instance methods)."""
    return _hub.portal().call(coro)
