"""Shared fixtures. Each part of the code base adds its own fixtures below its heading."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from agentrun_ci._config import Config


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------- hypothesis (issue #16)

# Every run draws the same examples: a failure in CI replays on any machine, and a run
# cannot turn red (or green) by luck. `HYPOTHESIS_PROFILE=explore` draws new ones (with
# the example database) to hunt for bugs; pin what it finds with `@example`.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------- local emulator (issue #3)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Config]:
    """A running local emulator for the whole test session, as a `Config` pointing at it.

    Unsigned (no key pair), default limits, one spare kernel. Tests that need other
    settings (keys, small limits, a provisioning delay) start their own
    `LocalEmulator(EmulatorSettings(...))`. Templates and sandboxes you create here
    are shared with the rest of the session: use unique names and delete what you
    create.
    """
    pytest.importorskip("jupyter_client")
    from agentrun_ci.local import LocalEmulator

    with LocalEmulator() as config:
        yield config
