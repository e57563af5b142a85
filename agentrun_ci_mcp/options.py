"""What the server is told: `ServerOptions` and the constants the other parts share.

Cheap to import (no `mcp`, no `agentrun_ci`): the CLI validates options before
anything heavy is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

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
    "SESSION_MOUNT_FIELDS",
    "STATELESS_INSTRUCTIONS",
    "STRATEGY_CHOICES",
    "TEMPLATE_CONFIG_FIELDS",
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
#: the CreateTemplateInput fields (wire names) a --template-config file may give: those
#: `InterpreterOptions.template_fields` takes (the rest are create_interpreter's, set by
#: flags or by the server; a test keeps the two equal)
TEMPLATE_CONFIG_FIELDS = (
    "allowAnonymousManage", "armsConfiguration", "containerConfiguration",
    "credentialConfiguration", "enableAgent", "enablePreStop", "executionRoleArn",
    "logConfiguration", "nasConfig", "networkConfiguration", "ossConfiguration",
    "preStopTimeoutInSeconds", "scalingConfig", "templateConfiguration", "workspaceId",
)  # fmt: skip
#: what a --session-mounts file may give (`agentrun_ci._wire.SANDBOX_MOUNT_FIELDS`)
SESSION_MOUNT_FIELDS = ("nasConfig", "ossMountConfig", "polarFsConfig")
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
    #: more CreateTemplateInput fields for the template the server creates, by their wire
    #: names (--network-mode, --vpc-id ... and --template-config)
    template_config: dict[str, Any] = attrs.field(factory=dict)
    #: the storage every sandbox of the server mounts: nasConfig, ossMountConfig,
    #: polarFsConfig (--session-mounts)
    session_mounts: dict[str, Any] = attrs.field(factory=dict)
    stateless: bool = False
    handle_key: HandleKey | None = attrs.field(default=None, repr=False)

    @property
    def template_fields(self) -> dict[str, Any]:
        """`template_config` by the official package's names (`create_template`'s)."""
        from agentrun_ci._wire import TEMPLATE_FIELDS, snake_fields

        return snake_fields(self.template_config, TEMPLATE_FIELDS, "--template-config")

    @property
    def session_mount_fields(self) -> dict[str, Any]:
        """`session_mounts` by the official package's names (`create_sandbox`'s)."""
        from agentrun_ci._wire import SANDBOX_MOUNT_FIELDS, snake_fields

        return snake_fields(self.session_mounts, SANDBOX_MOUNT_FIELDS, "--session-mounts")

    @property
    def render(self) -> RenderOptions:
        from .render import RenderOptions

        return RenderOptions(
            max_output_chars=self.max_output_chars, image_budget_bytes=self.image_budget_bytes
        )
