"""What the tests that start `agentrun-ci-mcp` as a real process share."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from agentrun_ci import Config, ControlPlane

#: the console script of this environment ("" when the package is not installed)
SCRIPT = shutil.which("agentrun-ci-mcp", path=str(Path(sys.executable).parent)) or ""
needs_script = pytest.mark.skipif(not SCRIPT, reason="agentrun-ci-mcp console script not installed")


def base_env(owner: str, *, log_level: str = "WARNING") -> dict[str, str]:
    """A clean environment (no credentials from ours) with the owner tag of its resources."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AGENTRUN_CI_OWNER": owner,
        "AGENTRUN_MCP_LOG_LEVEL": log_level,
    }


def cloud_env(config: Config, owner: str, **extra: str) -> dict[str, str]:
    """The environment of a server that uses `config` (an emulator) as its cloud."""
    return base_env(owner) | {
        "AGENTRUN_CONTROL_ENDPOINT": config.control_endpoint or "",
        "AGENTRUN_DATA_ENDPOINT": config.data_endpoint or "",
        "AGENTRUN_ACCOUNT_ID": config.account_id or "local",
        "AGENTRUN_MCP_BACKEND": "cloud",
        **extra,
    }


def owned(config: Config, owner: str) -> list[str]:
    """Sandboxes and templates with the owner's prefix, as the control plane lists them."""
    prefix = f"arci-{owner}-"
    with ControlPlane(config) as control:
        names = [s.sandbox_id for s in control.list_sandboxes()]
        names += [t.name for t in control.list_templates()]
    return [n for n in names if n.startswith(prefix)]
