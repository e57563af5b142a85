"""agentrun-ci: run AI-generated code on Alibaba Cloud AgentRun, or on a local emulator."""

from types import FunctionType as _FunctionType

from ._async.control_plane import AsyncControlPlane
from ._async.data_plane import AsyncDataPlane
from ._async.tty import AsyncTty
from ._config import Config
from ._errors import (
    AgentRunError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    ExecutionFailed,
    InsufficientStorageError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeout,
    ServerError,
    SessionLostError,
    SessionPausedError,
    TransportError,
    WaitTimeout,
)
from ._interpreter import AsyncCodeInterpreter, AsyncLease, InterpreterOptions, NetworkMode
from ._jobs import Job, JobInfo
from ._models import (
    CommandResult,
    Context,
    Execution,
    ExecutionError,
    FileContent,
    FileEntry,
    Health,
    Interpreter,
    Logs,
    ProcessInfo,
    Result,
    Sandbox,
    Session,
    Template,
    Usage,
    strip_ansi,
)
from ._ownership import default_owner, reap_orphans
from ._retry import RetryPolicy
from ._strategies import STRATEGY_NAMES, StrategyName
from ._sync.control_plane import ControlPlane
from ._sync.data_plane import DataPlane
from ._sync.tty import Tty
from ._sync_interpreter import CodeInterpreter, Lease
from ._tty import TtyClosing, TtyEvent, TtyExit, TtyOutput, TtyStarted, TtyWarning
from ._version import __version__
from ._wire import DEFAULT_CWD

__all__ = [
    "DEFAULT_CWD",
    "STRATEGY_NAMES",
    "APIError",
    "AgentRunError",
    "AsyncCodeInterpreter",
    "AsyncControlPlane",
    "AsyncDataPlane",
    "AsyncLease",
    "AsyncTty",
    "AuthenticationError",
    "BadRequestError",
    "CodeInterpreter",
    "CommandResult",
    "Config",
    "ConfigError",
    "ConflictError",
    "Context",
    "ControlPlane",
    "DataPlane",
    "Execution",
    "ExecutionError",
    "ExecutionFailed",
    "FileContent",
    "FileEntry",
    "Health",
    "InsufficientStorageError",
    "Interpreter",
    "InterpreterOptions",
    "InvalidArgumentError",
    "Job",
    "JobInfo",
    "Lease",
    "Logs",
    "NetworkMode",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProcessInfo",
    "RateLimitError",
    "RequestTimeout",
    "Result",
    "RetryPolicy",
    "Sandbox",
    "ServerError",
    "Session",
    "SessionLostError",
    "SessionPausedError",
    "StrategyName",
    "Template",
    "TransportError",
    "Tty",
    "TtyClosing",
    "TtyEvent",
    "TtyExit",
    "TtyOutput",
    "TtyStarted",
    "TtyWarning",
    "Usage",
    "WaitTimeout",
    "__version__",
    "default_owner",
    "reap_orphans",
    "strip_ansi",
]

# Public names say they live here (as httpx does): tracebacks print
# `agentrun_ci.NotFoundError`, not `agentrun_ci._errors.NotFoundError`.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, (type, _FunctionType)):  # classes and functions, not aliases
        _value.__module__ = __name__
del _name, _value, _FunctionType
