"""Small pieces every part of the E2B shim uses."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from .._wire import DEFAULT_CWD

__all__ = ["HOME", "_Dual", "maybe_await"]

PC = ParamSpec("PC")
PI = ParamSpec("PI")
RC = TypeVar("RC")
RI = TypeVar("RI")

#: the sandbox user's home, where E2B's relative paths and commands start
HOME = DEFAULT_CWD


class _Dual(Generic[PC, RC, PI, RI]):
    """A method usable on the class (`Sandbox.kill(sandbox_id)`) and on an instance
    (`sbx.kill()`), typed as each: mypy sees the by-id signature on the class and the
    instance signature on an instance.

    `on_class` takes the class first (a classmethod, or a plain function taking `cls`);
    `on_instance` takes the instance first.
    """

    def __init__(
        self,
        on_class: Callable[Concatenate[Any, PC], RC],
        on_instance: Callable[Concatenate[Any, PI], RI],
    ) -> None:
        func = on_class.__func__ if isinstance(on_class, classmethod) else on_class
        self._on_class: Callable[..., RC] = func
        self._on_instance = on_instance
        functools.update_wrapper(self, on_instance)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: None, owner: type) -> Callable[PC, RC]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> Callable[PI, RI]: ...

    def __get__(self, obj: object, owner: type) -> Callable[PC, RC] | Callable[PI, RI]:
        if obj is None:
            return functools.partial(self._on_class, owner)
        return functools.partial(self._on_instance, obj)


async def maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value
