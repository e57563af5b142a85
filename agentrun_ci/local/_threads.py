"""Blocking work off the event loop, even while the interpreter exits."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` in the loop's default thread pool; inline once that pool is closed.

    ``asyncio.to_thread`` raises "cannot schedule new futures after interpreter shutdown"
    from atexit handlers -- exactly where an emulator nobody closed is stopped. Its
    cleanup (killing process groups, removing cgroups and temp dirs) must still run, so
    then it runs on the loop's own thread.
    """
    call = functools.partial(fn, *args, **kwargs)
    try:
        future = asyncio.get_running_loop().run_in_executor(None, call)
    except RuntimeError:  # the executor refused: the interpreter is shutting down
        return call()
    return await future
