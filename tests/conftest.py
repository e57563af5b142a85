"""Shared fixtures. Each part of the code base adds its own fixtures below its heading."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
