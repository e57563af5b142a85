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
from .mcplog import install_set_level
from .options import (
    ALL_TOOLS,
    EXECUTE_CAP_SECONDS,
    HOME,
    INSTRUCTIONS,
    STATELESS_INSTRUCTIONS,
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
        instructions=INSTRUCTIONS + (STATELESS_INSTRUCTIONS if options.stateless else ""),
        lifespan=lifespan(app_state),
        log_level="WARNING",
        tools=make_tools(options),
        subscriptions=False,  # the tool list never changes: nothing to listen for
    )
    _serve_only_tools(mcp)
    install_set_level(mcp, app_state.logs)
    return mcp, app_state


#: what MCPServer always registers; this server has no prompts or resources
_UNSERVED = (
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
)


def _serve_only_tools(mcp: MCPServer[AppState]) -> None:
    """Advertise (and answer) only what is served: the SDK derives the capabilities
    from the registered handlers, and empty prompt/resource lists would be advertised.
    A client that asks anyway gets "method not found"."""
    handlers = mcp._lowlevel_server._request_handlers  # no public way to unregister (mcp 2.3)
    for method in _UNSERVED:
        handlers.pop(method, None)
