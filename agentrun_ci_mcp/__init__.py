"""agentrun_ci_mcp: an MCP server exposing agentrun-ci's code interpreter as `run_code`."""

from importlib.metadata import PackageNotFoundError, version

# Read from the distribution, not from `agentrun_ci`: importing the SDK here would
# delay the server's handshake (see __main__).
try:
    __version__ = version("agentrun-ci")
except PackageNotFoundError:  # pragma: no cover - a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
