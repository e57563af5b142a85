"""agentrun_ci_mcp: an MCP server exposing agentrun-ci's code interpreter as `run_code`."""

from agentrun_ci import __version__

__all__ = ["__version__"]
