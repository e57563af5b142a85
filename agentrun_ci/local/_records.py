"""Typed requests the routes hand to the core, parsed once with 400s that name the field.

The wire's JSON bodies and query strings are loose; each record's `parse` turns one
into checked Python values, so the core and the file operations never see a raw dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import ApiError, bad_request
from ._fs import HOME

__all__ = [
    "CommandRequest",
    "ExecuteAnswer",
    "ExecuteRequest",
    "MkdirRequest",
    "MoveRequest",
    "WriteFileRequest",
    "check_template_fields",
    "int_query",
    "number_field",
]


def number_field(body: Mapping[str, Any], key: str, default: float) -> float:
    """A finite number (JSON number or numeric string); 400 naming `key` otherwise."""
    value = body.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"{key} must be a number (got {_shown(value)})") from None
    if not math.isfinite(number):
        raise _invalid(f"{key} must be a finite number (got {_shown(value)})")
    return number


#: template fields that are JSON objects, and the one that is a list of them
_TEMPLATE_OBJECTS = (
    "networkConfiguration", "nasConfig", "logConfiguration", "armsConfiguration",
    "containerConfiguration", "credentialConfiguration", "scalingConfig",
    "templateConfiguration", "environmentVariables",
)  # fmt: skip
_TEMPLATE_FLAGS = ("allowAnonymousManage", "enableAgent", "enablePreStop")
_TEMPLATE_TEXTS = ("description", "executionRoleArn", "workspaceId", "templateType")


def check_template_fields(body: Mapping[str, Any]) -> None:
    """400 naming a CreateTemplateInput / UpdateTemplateInput field of the wrong kind.
    Fields the documentation does not list are kept as they come (it is not complete)."""
    for key in ("cpu", "memory", "diskSize"):
        if key in body and number_field(body, key, 0) <= 0:
            raise _invalid(f"{key} must be positive")
    for key in ("sandboxIdleTimeoutInSeconds", "sandboxTTLInSeconds", "preStopTimeoutInSeconds"):
        number_field(body, key, 0)  # a finite number when given
    for key in _TEMPLATE_OBJECTS:
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise _invalid(f"{key} must be an object (got {_shown(body[key])})")
    oss = body.get("ossConfiguration")
    if oss is not None and not (isinstance(oss, list) and all(isinstance(o, dict) for o in oss)):
        raise _invalid(f"ossConfiguration must be a list of objects (got {_shown(oss)})")
    for key in _TEMPLATE_FLAGS:
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise _invalid(f"{key} must be true or false (got {_shown(body[key])})")
    for key in _TEMPLATE_TEXTS:
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _invalid(f"{key} must be a string (got {_shown(body[key])})")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "ERR_VALIDATION_FAILED", message)


def int_query(query: Mapping[str, str], key: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter clamped to [low, high]; 400 naming `key` when not one."""
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{key} must be an integer (got {_shown(raw)})") from None
    return max(low, min(high, value))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _string(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise bad_request(f"{key} is required (a non-empty string)")
    return value


def _mode(body: Mapping[str, Any], default: str) -> int:
    """An octal permission string ('644'); only the 0-777 permission bits, no setuid."""
    raw = body.get("mode") or default
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise bad_request(f"mode must be an octal string such as {default!r}")
    try:
        mode = int(str(raw), 8)
    except ValueError:
        raise bad_request(f"mode must be an octal string such as {default!r}") from None
    if not 0 <= mode <= 0o777:
        raise bad_request(
            f"mode {_shown(raw)} is out of range: permission bits 000-777 only "
            "(no setuid, setgid or sticky bits)"
        )
    return mode


@attrs.frozen
class ExecuteRequest:
    code: str
    timeout: float
    context_id: str | None
    language: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> ExecuteRequest:
        code = body.get("code")
        if not isinstance(code, str):
            raise bad_request("code is required (a string)")
        context_id = body.get("contextId")
        language = body.get("language") or "python"
        return cls(
            code=code,
            timeout=number_field(body, "timeout", 30),
            context_id=str(context_id) if context_id else None,
            language=str(language),
        )


@attrs.frozen
class ExecuteAnswer:
    """What an execute answers: the kernel's events closed by `endOfExecution`."""

    events: list[dict[str, Any]]
    status: str
    execution_count: int | None
    context_id: str
    kernel_restarted: bool = False
    """The code did not stop when interrupted, so its kernel was restarted (same context
    id, empty namespace). Sent as `kernelRestarted: true`, an emulator extension: the
    cloud does not document one, so clients read it tolerantly and never require it."""
    usage: dict[str, Any] | None = None
    """Wall and CPU time, peak memory of the run (ours: the cloud reports no per-execution
    usage that we know of)."""

    def wire(self) -> dict[str, Any]:
        end: dict[str, Any] = {"type": "endOfExecution", "status": self.status}
        if self.execution_count is not None:
            end["executionCount"] = self.execution_count
        out: dict[str, Any] = {"results": [*self.events, end], "contextId": self.context_id}
        if self.kernel_restarted:
            out["kernelRestarted"] = True
        if self.usage is not None:
            out["usage"] = self.usage
        return out


@attrs.frozen
class CommandRequest:
    command: str
    timeout: float
    cwd: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> CommandRequest:
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise bad_request("command is required (a non-empty string)")
        return cls(
            command=command,
            timeout=number_field(body, "timeout", 30),
            cwd=str(body.get("cwd") or HOME),
        )


@attrs.frozen
class WriteFileRequest:
    path: str
    content: str
    encoding: str
    mode: int
    create_dir: bool

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> WriteFileRequest:
        path = body.get("path")
        content = body.get("content", "")
        if not isinstance(path, str) or not path or not isinstance(content, str):
            raise bad_request("path and content (strings) are required")
        encoding = body.get("encoding") or "utf-8"
        if encoding not in ("base64", "utf-8", "utf8", "text"):
            raise bad_request(f"unknown encoding {encoding!r}: use utf-8 or base64")
        return cls(
            path=path,
            content=content,
            encoding=str(encoding),
            mode=_mode(body, "644"),
            create_dir=body.get("createDir", True) is not False,
        )


@attrs.frozen
class MkdirRequest:
    path: str
    parents: bool
    mode: int

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> MkdirRequest:
        path = _string(body, "path")
        assert path is not None
        parents = body.get("parents", True) is not False
        return cls(path=path, parents=parents, mode=_mode(body, "0755"))


@attrs.frozen
class MoveRequest:
    source: str
    destination: str

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> MoveRequest:
        src, dst = body.get("source"), body.get("destination")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise bad_request("source and destination are required")
        return cls(source=src, destination=dst)
