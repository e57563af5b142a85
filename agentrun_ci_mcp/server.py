"""The MCP server assembled from its parts: `build_server(options)`.

The parts, each in its own module:

* `options` -- `ServerOptions` and shared constants;
* `clients` -- the client registry: who the caller is, and each client's state;
* `state` -- `AppState`: the lazily created interpreter, leases, background
  tasks, cleanup (`close()`), and the lifespan that runs them;
* `tools` -- the tools, at module level;
* `render` -- an Execution as MCP content;
* `__main__` -- the CLI and the transports (stdio, streamable HTTP, signals).
"""

from mcp.server import MCPServer

from .clients import ClientRegistry, ClientState
from .options import (
    ALL_TOOLS,
    EXECUTE_CAP_SECONDS,
    HOME,
    INSTRUCTIONS,
    TOOL_GROUPS,
    ServerOptions,
)
from .state import AppState, lifespan
from .tools import (
    CommandOut,
    EntryOut,
    FileOut,
    ListOut,
    ResetOut,
    RunCodeResult,
    WriteOut,
    make_tools,
)

__all__ = [
    "ALL_TOOLS",
    "EXECUTE_CAP_SECONDS",
    "HOME",
    "TOOL_GROUPS",
    "AppState",
    "ClientRegistry",
    "ClientState",
    "CommandOut",
    "EntryOut",
    "FileOut",
    "ListOut",
    "ResetOut",
    "RunCodeResult",
    "ServerOptions",
    "WriteOut",
    "build_server",
]


def build_server(
    options: ServerOptions | None = None,
    *,
    state: AppState | None = None,
) -> tuple[MCPServer[AppState], AppState]:
    """The MCPServer and its state (the caller owns `state.close()` on signals)."""
    from agentrun_ci_mcp import __version__

    options = options or ServerOptions()
    app_state = state or AppState(options)
    mcp: MCPServer[AppState] = MCPServer(
        "agentrun-ci",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan(app_state),
        log_level="WARNING",
        tools=make_tools(options),
    )
    return mcp, app_state
