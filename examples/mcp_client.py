"""Drive the agentrun-ci MCP server over stdio with the official `mcp` client.

    python -m venv .venv && .venv/bin/pip install -e '.[local,mcp,data]'   # in a clone, once
    .venv/bin/python examples/mcp_client.py

This is what an MCP host (Claude Desktop, an agent framework) does: start
`python -m agentrun_ci_mcp` as a subprocess, list its tools, call `run_code`. The
server runs on AgentRun when AGENTRUN_* credentials are set in the environment it is
given (hosts pass only what their config's `env` says), else on the local emulator.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from typing import Any


def _missing() -> str | None:
    for module, install in (
        ("mcp", "-e '.[mcp]' (in your clone)"),
        ("agentrun_ci_mcp.server", "-e '.[mcp]' (in your clone)"),
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{module} is not importable (pip install '{install}')"
    return None


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def main() -> int:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    # stdio_client passes only a few variables (PATH, HOME, ...) to the server: hand it
    # the AgentRun ones explicitly, as a host's config "env" would.
    env = {k: v for k, v in os.environ.items() if k.startswith(("AGENTRUN_", "ALIBABA_CLOUD_"))}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agentrun_ci_mcp", "--log-level", "WARNING"], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        print("server:", init.server_info.name, init.server_info.version)
        tools = await session.list_tools()
        print("tools:", ", ".join(sorted(tool.name for tool in tools.tools)))

        await session.call_tool("run_code", {"code": "x = 6"})
        result = await session.call_tool("run_code", {"code": "print(x * 7)"})
        structured = result.structured_content or json.loads(_text(result))
        print("stdout:", structured["stdout"].strip())

        result = await session.call_tool("run_code", {"code": "1 / 0"})
        structured = result.structured_content or {}
        error = structured.get("error") or {}
        print("error:", error.get("name") if isinstance(error, dict) else error)
    return 0


if __name__ == "__main__":
    reason = _missing()
    if reason is not None:
        print(f"skipped: {reason}")
        sys.exit(0)
    sys.exit(asyncio.run(main()))
