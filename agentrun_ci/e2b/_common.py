"""Small pieces every part of the E2B shim uses."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from .._wire import DEFAULT_CWD

__all__ = ["HOME", "_Dual", "dual", "maybe_await"]

#: the sandbox user's home, where E2B's relative paths and commands start
HOME = DEFAULT_CWD


class _Dual:
    """A method usable on the class (`Sandbox.kill(sandbox_id)`) and on an instance."""

    def __init__(self, on_class: Callable[..., Any], on_instance: Callable[..., Any]) -> None:
        self._on_class = on_class
        self._on_instance = on_instance
        functools.update_wrapper(self, on_instance)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type) -> Callable[..., Any]:
        if obj is None:
            return functools.partial(self._on_class, owner)
        return functools.partial(self._on_instance, obj)


def dual(on_class: Callable[..., Any]) -> Callable[[Callable[..., Any]], _Dual]:
    def wrap(on_instance: Callable[..., Any]) -> _Dual:
        return _Dual(on_class, on_instance)

    return wrap


async def maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
