"""InterpreterOptions: every setting of a CodeInterpreter, as one typed, frozen record.

The facades' keyword arguments build it (`CodeInterpreter(strategy="pool")` is
`CodeInterpreter(options=InterpreterOptions(strategy="pool"))`); credentials and
endpoints are not here but in `Config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from . import _wire
from ._errors import InvalidArgumentError
from ._strategies import STRATEGIES, STRATEGY_NAMES, StrategyName

if TYPE_CHECKING:
    from .local import EmulatorSettings

__all__ = ["BACKENDS", "BackendName", "InterpreterOptions"]

BackendName = Literal["auto", "cloud", "local"]
BACKENDS: tuple[str, ...] = ("auto", "cloud", "local")


def _quoted(names: tuple[str, ...]) -> str:
    quoted = [repr(n) for n in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def pool_bounds(pool_size: int | tuple[int, int]) -> tuple[int, int]:
    """`N` or `(min, max)` as `(min, max)`; InvalidArgumentError when it makes no pool."""
    if isinstance(pool_size, int):
        low, high = pool_size, pool_size
    else:
        low, high = pool_size
    if low < 0 or high < 1 or low > high:
        raise InvalidArgumentError(
            f"pool_size must be N >= 1 or (min, max) with 0 <= min <= max >= 1, got {pool_size!r}"
        )
    return low, high


#: the template's fields that `create_interpreter` sets from its own arguments
_INTERPRETER_ARGUMENTS = {
    "template_name": "name",
    "template_type": "(always CodeInterpreter)",
    "cpu": "cpu",
    "memory": "memory",
    "disk_size": "disk",
    "description": "(the owner tag)",
    "environment_variables": "env",
    "sandbox_idle_timeout_in_seconds": "idle_timeout",
    "sandbox_ttlin_seconds": "ttl",
}


def _template_fields(value: Mapping[str, Any] | None) -> dict[str, Any]:
    fields = dict(value or {})
    for name in fields:
        if name in _INTERPRETER_ARGUMENTS:
            raise InvalidArgumentError(
                f"template_fields: {name!r} is create_interpreter's to set: pass "
                f"{_INTERPRETER_ARGUMENTS[name]} there"
            )
    _wire.wire_fields(fields, _wire.TEMPLATE_FIELDS, "template_fields")  # checks each
    return {k: v for k, v in fields.items() if v is not None}


def _session_mounts(value: Mapping[str, Any] | None) -> dict[str, Any]:
    fields = dict(value or {})
    _wire.wire_fields(fields, _wire.SANDBOX_MOUNT_FIELDS, "session_mounts")  # checks each
    return {k: v for k, v in fields.items() if v is not None}


def _check_strategy(_: object, __: object, value: str) -> None:
    if value not in STRATEGIES:
        raise InvalidArgumentError(f"unknown strategy {value!r}: use {_quoted(STRATEGY_NAMES)}")


def _check_backend(_: object, __: object, value: str) -> None:
    if value not in BACKENDS:
        raise InvalidArgumentError(f"unknown backend {value!r}: use {_quoted(BACKENDS)}")


@attrs.frozen(kw_only=True)
class InterpreterOptions:
    """How a CodeInterpreter chooses its backend, manages sessions and bounds its load.

    Attributes:
        backend: "cloud" (AgentRun), "local" (the emulator on this machine), or "auto"
            (the cloud when credentials or endpoints are configured, else local).
        strategy: how callers share sessions: "singleton", "pool", "ephemeral" or
            "dedicated" (see `agentrun_ci._strategies`).
        pool_size: N or (min, max) warm sessions for strategy="pool".
        interpreter_name: attach to this existing interpreter instead of creating one.
        keep_interpreter: the interpreter created outlives this object (its name is used
            as given).
        owner: the owner tag in resource names (default: user and host); a crashed
            process's resources are reaped by the next one with the same owner.
        max_sessions: live sessions at most (raised to the pool's max for a pool).
        max_concurrent_requests: data-plane requests in flight at most.
        lease_timeout: seconds a pool lease waits for a free session.
        pool_idle_timeout: seconds a free pool session above the minimum lives.
        session_idle_timeout: the service deletes a session idle this long (None: its
            default).
        ready_timeout: seconds to wait for an interpreter to become READY.
        health_timeout: seconds to wait for a new session to become healthy.
        reap_on_start: delete this owner's orphans (from crashed processes) at start.
        emulator_settings: `agentrun_ci.local.EmulatorSettings` for the local backend.
        template_fields: more CreateTemplateInput fields for the interpreter this object
            creates, by the official package's names (`network_configuration`,
            `nas_config`, `oss_configuration`, `log_configuration`, `execution_role_arn`,
            ...): each its model object or a dict with the wire's field names.
        session_mounts: `nas_config`, `oss_mount_config` and/or `polar_fs_config` for
            every session this object starts (as `create_sandbox` takes them).
    """

    backend: BackendName = attrs.field(default="auto", validator=_check_backend)
    strategy: StrategyName = attrs.field(default="singleton", validator=_check_strategy)
    pool_size: tuple[int, int] = attrs.field(default=(1, 4), converter=pool_bounds)
    interpreter_name: str | None = None
    keep_interpreter: bool = False
    owner: str | None = None
    max_sessions: int = 8
    max_concurrent_requests: int = 32
    lease_timeout: float = 60.0
    pool_idle_timeout: float = 300.0
    session_idle_timeout: float | None = 600.0
    ready_timeout: float = 300.0
    health_timeout: float = 60.0
    reap_on_start: bool = True
    emulator_settings: EmulatorSettings | Any = None
    template_fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_template_fields)
    session_mounts: Mapping[str, Any] = attrs.field(factory=dict, converter=_session_mounts)

    @property
    def session_limit(self) -> int:
        """Live sessions at most: `max_sessions`, raised to what the strategy needs."""
        return max(self.max_sessions, STRATEGIES[self.strategy].min_sessions(self))
