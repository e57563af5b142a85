"""What the server is told: `ServerOptions` and the constants the other parts share.

Cheap to import (no `mcp`, no `agentrun_ci`): the CLI validates options before
anything heavy is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from agentrun_ci import Config, StrategyName

    from .render import RenderOptions
    from .stateless import HandleKey

__all__ = [
    "ALL_TOOLS",
    "EXECUTE_CAP_SECONDS",
    "HOME",
    "INSTRUCTIONS",
    "STATELESS_INSTRUCTIONS",
    "STRATEGY_CHOICES",
    "TOOL_GROUPS",
    "ServerOptions",
]

#: the service's cap on one execute call
EXECUTE_CAP_SECONDS = 30.0
TOOL_GROUPS: dict[str, tuple[str, ...]] = {
    "run_code": ("run_code", "reset_context"),
    "files": ("read_file", "write_file", "list_files"),
    "commands": ("run_command", "read_job", "kill_job"),
}
ALL_TOOLS = tuple(t for group in TOOL_GROUPS.values() for t in group)
#: `agentrun_ci.STRATEGY_NAMES`, spelled out so that the CLI can validate
#: `--strategy` before `agentrun_ci` is imported (a test keeps the two equal)
STRATEGY_CHOICES = ("singleton", "pool", "ephemeral", "dedicated")
#: the working directory of a sandbox's contexts and commands
HOME = "/home/user"  # agentrun_ci.DEFAULT_CWD, kept import-free (a test keeps them equal)

INSTRUCTIONS = (
    "Runs code in an isolated AgentRun sandbox (or a local emulator). Variables, imports and "
    "files persist between calls of the same client; `state_reset: true` in a result means "
    "they were lost. One run may take at most 30 s: split longer work, or start it with "
    "run_command(background=true) (pip install, training, servers) and poll it with read_job. "
    "Plots are returned as images."
)


STATELESS_INSTRUCTIONS = (
    " This server keeps no state between calls: pass the `session` value of each result "
    "with your next call, or your state is not found."
)


@attrs.frozen
class ServerOptions:
    """Everything the server needs, already validated (see __main__ for the CLI/env)."""

    backend: Literal["auto", "cloud", "local"] = "auto"
    strategy: StrategyName = "singleton"
    pool_size: int | tuple[int, int] = (1, 4)
    interpreter: str | None = None
    cpu: float = 2.0
    memory: int = 4096
    timeout: float = EXECUTE_CAP_SECONDS
    max_output_chars: int = 20_000
    image_budget_bytes: int = 400_000
    tools: frozenset[str] = frozenset(ALL_TOOLS)
    idle_timeout: float = 1800.0
    #: most client states kept at once; beyond it the least recently used idle one goes
    max_clients: int = 64
    #: delete a crashed earlier server's sandboxes and templates at start (cloud only)
    reap_orphans: bool = True
    progress_interval: float = 1.0
    config: Config | None = None
    owner: str | None = None
    #: --stateless: no client state in the process; handles signed with `handle_key`
    stateless: bool = False
    handle_key: HandleKey | None = attrs.field(default=None, repr=False)

    @property
    def render(self) -> RenderOptions:
        from .render import RenderOptions

        return RenderOptions(
            max_output_chars=self.max_output_chars, image_budget_bytes=self.image_budget_bytes
        )
