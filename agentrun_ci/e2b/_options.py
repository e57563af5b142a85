"""E2B's arguments: each one honoured with its AgentRun meaning, or refused by name."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .._errors import ConfigError, InvalidArgumentError

__all__ = [
    "LANGUAGES",
    "MAX_LIFETIME",
    "Lifecycle",
    "check_create",
    "check_lifecycle",
    "check_lifetime",
    "check_metadata",
    "language",
    "refuse_connection_options",
]

#: E2B language name -> what runs it here
LANGUAGES = {
    "python": "python",
    "javascript": "javascript",
    "js": "javascript",
    "bash": "bash",
    "sh": "bash",
}
#: AgentRun sandboxes live at most 6 h
MAX_LIFETIME = 6 * 3600.0

_AGENTRUN_VARS = (
    "AGENTRUN_ACCESS_KEY_ID, AGENTRUN_ACCESS_KEY_SECRET and AGENTRUN_ACCOUNT_ID "
    "(or pass backend='local' to run the code on this machine)"
)


def language(name: str | None) -> str:
    """`python`, `javascript` or `bash` for an E2B language name (None: python)."""
    if name is None:
        return "python"
    key = name.lower() if isinstance(name, str) else name
    if key not in LANGUAGES:
        raise InvalidArgumentError(
            f"language {name!r} is not available on AgentRun: use 'python', 'javascript' "
            "(or 'js'), or 'bash' (or 'sh', run as a shell command); AgentRun has no R, Java "
            "or TypeScript kernels"
        )
    return LANGUAGES[key]


def check_lifetime(timeout: Any, what: str = "timeout", *, allow_zero: bool = False) -> float:
    """A sandbox lifetime in seconds (E2B's `timeout`), within AgentRun's 6 h.

    `allow_zero`: 0 means "now" (E2B's `set_timeout(0)` ends the sandbox's time at once)."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (timeout > 0 or (allow_zero and timeout == 0))
    ):
        wanted = "seconds >= 0" if allow_zero else "positive seconds"
        raise InvalidArgumentError(f"{what} must be {wanted}, got {timeout!r}")
    if math.isinf(timeout) or timeout > MAX_LIFETIME:
        raise InvalidArgumentError(
            f"{what}={timeout:g} s is longer than an AgentRun sandbox may live "
            f"({MAX_LIFETIME:g} s = 6 h); use a shorter timeout"
        )
    return float(timeout)


def check_metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InvalidArgumentError(f"metadata must map strings to strings, got {metadata!r}")
    return dict(metadata)


def refuse_connection_options(where: str, options: Mapping[str, Any]) -> None:
    """E2B's connection options (`ApiParams`): `request_timeout` is honoured by the caller;
    the others address E2B's own service and have no AgentRun meaning."""
    options = dict(options)
    options.pop("request_timeout", None)
    if options.pop("api_key", None) is not None:
        raise ConfigError(
            f"{where}: api_key is an E2B key, which AgentRun does not use; set {_AGENTRUN_VARS}"
        )
    endpoints = ("domain", "api_url", "sandbox_url")
    for name in endpoints:
        if options.pop(name, None) is not None:
            raise InvalidArgumentError(
                f"{where}: {name} points at E2B's service; AgentRun's endpoints come from "
                "AGENTRUN_REGION / AGENTRUN_DATA_ENDPOINT / AGENTRUN_CONTROL_ENDPOINT (or "
                "agentrun_ci.Config)"
            )
    if options.pop("debug", None):
        raise InvalidArgumentError(
            f"{where}: debug=True talks to an E2B sandbox on localhost; for a local sandbox "
            "use backend='local' (the agentrun-ci emulator)"
        )
    for name in ("headers", "api_headers", "proxy"):
        if options.pop(name, None) is not None:
            raise InvalidArgumentError(
                f"{where}: {name} is not supported: agentrun-ci signs and sends its own "
                "requests (httpx reads HTTPS_PROXY from the environment)"
            )
    validate = options.pop("validate_api_key", None)
    if validate is not None:
        raise InvalidArgumentError(
            f"{where}: validate_api_key has no meaning on AgentRun (there is no E2B key); drop it"
        )
    if options:
        raise InvalidArgumentError(
            f"{where} got unknown argument(s) {sorted(options)}: they are not E2B arguments "
            "either; see docs/e2b.md for what the shim accepts"
        )


def check_e2b_key_env(has_agentrun_setup: bool) -> None:
    """E2B_API_KEY without any AgentRun setup means the user expects E2B's cloud: say so."""
    if os.environ.get("E2B_API_KEY") and not has_agentrun_setup:
        raise ConfigError(
            "E2B_API_KEY is set, but agentrun_ci.e2b runs on AgentRun, not E2B: set "
            f"{_AGENTRUN_VARS}; E2B_API_KEY is not used"
        )


def check_create(
    *,
    allow_internet_access: Any,
    network: Any,
    mcp: Any,
    iam: Any,
    volume_mounts: Any,
) -> None:
    """Refuse the `create()` options AgentRun cannot honour, each by name."""
    if allow_internet_access is not True:
        raise InvalidArgumentError(
            "allow_internet_access=False: AgentRun sets network access per interpreter, not "
            "per sandbox; create an interpreter with network_mode='PRIVATE' "
            "(agentrun_ci.CodeInterpreter.create_interpreter) and pass its name as template"
        )
    if network is not None:
        if not isinstance(network, Mapping):
            raise InvalidArgumentError(f"network must be a dict, got {network!r}")
        rest = dict(network)
        public = rest.pop("allow_public_traffic", False)
        if public:
            raise InvalidArgumentError(
                "network={'allow_public_traffic': True}: AgentRun sandboxes are never "
                "reachable without signed requests; drop it (False is what AgentRun does)"
            )
        if rest:
            raise InvalidArgumentError(
                f"network options {sorted(rest)} are not available per sandbox on AgentRun: "
                "egress rules belong to the interpreter's network configuration"
            )
    for name, value, why in (
        ("mcp", mcp, "AgentRun has no MCP gateway inside sandboxes; see agentrun_ci_mcp"),
        ("iam", iam, "AgentRun sandboxes have no workload identity tokens"),
        (
            "volume_mounts",
            volume_mounts,
            "mount storage through the interpreter's NAS/OSS configuration",
        ),
    ):
        if value is not None:
            raise InvalidArgumentError(f"{name} is not available on AgentRun: {why}")


@attrs.frozen
class Lifecycle:
    """What happens at the end of a sandbox's `timeout` (E2B's `lifecycle=`), checked."""

    #: "kill" (E2B's default) or "pause"
    on_timeout: Literal["kill", "pause"] = "kill"
    #: a call through a handle to a sandbox the shim paused resumes it first
    auto_resume: bool = False

    def info(self) -> dict[str, Any]:
        """E2B's `SandboxInfo.lifecycle` shape."""
        return {"on_timeout": self.on_timeout, "auto_resume": self.auto_resume}


def check_lifecycle(lifecycle: Any) -> Lifecycle:
    """E2B's `lifecycle={"on_timeout": ..., "auto_resume": ...}` with E2B's defaults and checks.

    `on_timeout` is "kill", "pause", None (kill), or `{"action": ..., "keep_memory": ...}`.
    AgentRun's pause keeps the sandbox's memory (its processes are held, not stopped), so
    `keep_memory=False` (a filesystem-only snapshot, cold-booted at resume) is refused.
    """
    if lifecycle is None:
        return Lifecycle()
    if not isinstance(lifecycle, Mapping):
        raise InvalidArgumentError(f"lifecycle must be a dict, got {lifecycle!r}")
    rest = dict(lifecycle)
    raw = rest.pop("on_timeout", None)
    auto_resume = rest.pop("auto_resume", None)
    if rest:
        raise InvalidArgumentError(
            f"lifecycle options {sorted(rest)} are not E2B options: use on_timeout and auto_resume"
        )
    keep_memory: Any = None
    has_keep_memory = False
    if isinstance(raw, Mapping):
        extra = sorted(set(raw) - {"action", "keep_memory"})
        if extra:
            raise InvalidArgumentError(
                f"lifecycle on_timeout options {extra} are unknown: use action and keep_memory"
            )
        action = raw.get("action", "kill")
        has_keep_memory = "keep_memory" in raw
        keep_memory = raw.get("keep_memory")
    else:
        action = "kill" if raw is None else raw
    if action not in ("kill", "pause"):
        raise InvalidArgumentError(
            f"lifecycle on_timeout={action!r}: use 'kill' (the default) or 'pause'"
        )
    if has_keep_memory and action != "pause":
        raise InvalidArgumentError("keep_memory is only allowed when on_timeout action is 'pause'.")
    if auto_resume is not None and not isinstance(auto_resume, bool):
        raise InvalidArgumentError(
            f"lifecycle auto_resume must be True or False, got {auto_resume!r}"
        )
    if auto_resume and action != "pause":
        raise InvalidArgumentError(
            "auto_resume can only be True when on_timeout action is 'pause'."
        )
    if keep_memory is not None and not isinstance(keep_memory, bool):
        raise InvalidArgumentError(f"keep_memory must be True or False, got {keep_memory!r}")
    if keep_memory is False:
        if auto_resume:
            raise InvalidArgumentError(
                "auto_resume: True is not a valid value when keep_memory: False - a "
                "filesystem-only snapshot cannot be auto-resumed and must be resumed "
                "explicitly using Sandbox.connect()."
            )
        raise InvalidArgumentError(
            "lifecycle keep_memory=False (a filesystem-only pause, cold-booted at resume) is "
            "not available on AgentRun: its pause keeps the sandbox's memory and processes; "
            "drop keep_memory (or pass True)"
        )
    return Lifecycle(on_timeout=action, auto_resume=bool(auto_resume))
