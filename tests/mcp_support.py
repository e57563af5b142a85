"""Moved to `support` (one module of shared test helpers); kept for imports in flight."""

from __future__ import annotations

from support import SCRIPT, base_env, cloud_env, needs_script, owned

__all__ = ["SCRIPT", "base_env", "cloud_env", "needs_script", "owned"]
