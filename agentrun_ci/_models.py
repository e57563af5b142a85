"""Records for what the service returns. Each has `from_wire(dict)` and keeps `raw`.

Parsers are tolerant by design: the wire reference marks several shapes as
inferred or unknown, so a missing field becomes None, an unknown field stays in
`raw`, and an unknown execute event stays in `Execution.events`. Nothing here
raises on an unexpected shape.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from ._errors import ExecutionFailed

__all__ = [
    "CommandResult",
    "Context",
    "Execution",
    "ExecutionError",
    "FileContent",
    "FileEntry",
    "Health",
    "Interpreter",
    "Logs",
    "ProcessInfo",
    "Result",
    "Sandbox",
    "Session",
    "Template",
    "Usage",
]

Raw = dict[str, Any]


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    # JSON parsers accept Infinity and NaN: int(inf) overflows, int(nan) is a ValueError
    except (TypeError, ValueError, OverflowError):
        return None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    # an integer beyond a float's range (JSON allows any number of digits) overflows
    except (TypeError, ValueError, OverflowError):
        return None


def _mode(value: Any) -> int | None:
    # Mode arrives as an int (420) or an octal string ("0644", "644") (inferred).
    if isinstance(value, str):
        try:
            return int(value, 8)
        except ValueError:
            return None
    return _int(value)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _dict(value: Any) -> Raw:
    return dict(value) if isinstance(value, Mapping) else {}


def _first(raw: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if raw.get(key) is not None:
            return raw[key]
    return None


# ------------------------------------------------------------------ control plane


@attrs.frozen
class Template:
    """An AgentRun template; the facade calls a CodeInterpreter template an interpreter."""

    name: str
    template_id: str | None = None
    status: str | None = None
    status_reason: str | None = None
    template_type: str | None = None
    cpu: float | None = None
    memory: int | None = None
    disk_size: int | None = None
    network_mode: str | None = None
    idle_timeout: int | None = None
    ttl: int | None = None
    environment: dict[str, str] = attrs.field(factory=dict)
    description: str | None = None
    created_at: datetime | None = None
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Template:
        network = _dict(raw.get("networkConfiguration"))
        env = _dict(raw.get("environmentVariables"))
        return cls(
            name=str(raw.get("templateName") or ""),
            template_id=_str(raw.get("templateId")),
            status=_str(raw.get("status")),
            status_reason=_str(raw.get("statusReason")),
            template_type=_str(raw.get("templateType")),
            cpu=_float(raw.get("cpu")),
            memory=_int(raw.get("memory")),
            disk_size=_int(raw.get("diskSize")),
            network_mode=_str(network.get("networkMode")),
            # typed as strings in the response model (OA _template.py quirk)
            idle_timeout=_int(raw.get("sandboxIdleTimeoutInSeconds")),
            ttl=_int(raw.get("sandboxTTLInSeconds")),
            environment={str(k): str(v) for k, v in env.items()},
            description=_str(raw.get("description")),
            created_at=_time(raw.get("createdAt")),
            raw=dict(raw),
        )


Interpreter = Template


@attrs.frozen
class Sandbox:
    """An AgentRun sandbox; the facade calls it a session."""

    sandbox_id: str
    template_name: str | None = None
    status: str | None = None
    created_at: datetime | None = None
    ended_at: datetime | None = None
    idle_timeout: int | None = None
    metadata: Raw = attrs.field(factory=dict)
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Sandbox:
        return cls(
            sandbox_id=str(raw.get("sandboxId") or ""),
            template_name=_str(raw.get("templateName")),
            status=_str(raw.get("status")),
            created_at=_time(raw.get("createdAt")),
            ended_at=_time(raw.get("endedAt")),
            idle_timeout=_int(
                _first(raw, "sandboxIdleTimeoutSeconds", "sandboxIdleTimeoutInSeconds")
            ),
            metadata=_dict(raw.get("metadata")),
            raw=dict(raw),
        )

    @property
    def id(self) -> str:
        return self.sandbox_id


Session = Sandbox


@attrs.frozen
class Health:
    """The sandbox's `/health` answer; only `status == "ok"` is documented."""

    status: str | None
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Health:
        return cls(status=_str(raw.get("status")), raw=dict(raw))


# ------------------------------------------------------------------ data plane


@attrs.frozen
class Context:
    """A kernel inside a sandbox (python or javascript) that keeps state between executes."""

    id: str
    language: str | None = None
    cwd: str | None = None
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Context:
        return cls(
            id=str(_first(raw, "id", "contextId") or ""),
            language=_str(raw.get("language")),
            cwd=_str(raw.get("cwd")),
            raw=dict(raw),
        )


@attrs.define
class Logs:
    """Output streams as lists of chunks, in E2B's shape."""

    stdout: list[str] = attrs.field(factory=list)
    stderr: list[str] = attrs.field(factory=list)


_MIME_KEYS = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "svg": "image/svg+xml",
    "html": "text/html",
    "markdown": "text/markdown",
    "json": "application/json",
    "latex": "text/latex",
    "javascript": "application/javascript",
    "pdf": "application/pdf",
}


@attrs.frozen
class Result:
    """One rich output: the value of the last expression or a display() call."""

    text: str | None = None
    data: dict[str, Any] = attrs.field(factory=dict)
    is_main_result: bool = False
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    def _mime(self, key: str) -> Any:
        return self.data.get(_MIME_KEYS[key])

    @property
    def png(self) -> str | None:
        """Base64-encoded PNG, as E2B gives it."""
        return self._mime("png")  # type: ignore[no-any-return]

    @property
    def jpeg(self) -> str | None:
        return self._mime("jpeg")  # type: ignore[no-any-return]

    @property
    def svg(self) -> str | None:
        return self._mime("svg")  # type: ignore[no-any-return]

    @property
    def html(self) -> str | None:
        return self._mime("html")  # type: ignore[no-any-return]

    @property
    def markdown(self) -> str | None:
        return self._mime("markdown")  # type: ignore[no-any-return]

    @property
    def json(self) -> Any:
        return self._mime("json")

    @property
    def latex(self) -> str | None:
        return self._mime("latex")  # type: ignore[no-any-return]

    @property
    def javascript(self) -> str | None:
        return self._mime("javascript")  # type: ignore[no-any-return]

    @property
    def pdf(self) -> str | None:
        return self._mime("pdf")  # type: ignore[no-any-return]

    def formats(self) -> list[str]:
        """The MIME types present besides plain text."""
        return [mime for mime in self.data if mime != "text/plain"]

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Result:
        data = _dict(event.get("data"))
        text = _str(event.get("text"))
        if text is None and isinstance(data.get("text/plain"), str):
            text = data["text/plain"]
        if text is not None and "text/plain" not in data:
            data["text/plain"] = text
        return cls(
            text=text,
            data=data,
            is_main_result=bool(_first(event, "isMainResult", "is_main_result")),
            raw=dict(event),
        )


# CSI sequences (colours, cursor moves) and OSC sequences (titles, hyperlinks; ended by BEL
# or ST): what IPython's tracebacks and terminal programs put in the text
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# "ZeroDivisionError: division by zero", "KeyboardInterrupt", "mod.CustomError: boom"
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
# a name that reads as an exception class, for scanning JS-style "Name: msg\n    at …" text
_EXCEPTION_NAME = re.compile(r"(Error|Exception|Exit|Interrupt|Warning|Fault)$")


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences (colours, cursor moves, titles, hyperlinks)."""
    return _ANSI.sub("", text)


@attrs.frozen
class ExecutionError:
    """An exception raised by the user's code (data, not a Python exception here)."""

    name: str
    value: str
    traceback: str

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ExecutionError:
        tb = _first(event, "traceback", "text")
        if isinstance(tb, Sequence) and not isinstance(tb, str):
            tb = "\n".join(str(line) for line in tb)
        traceback = strip_ansi(str(tb)) if tb is not None else ""
        name = _str(_first(event, "name", "ename"))
        value = _str(_first(event, "value", "evalue"))
        if name is None:
            # The cloud documents only `text` (inferred): parse the last line of the traceback.
            name, parsed_value = _parse_error_line(traceback)
            value = value if value is not None else parsed_value
        return cls(name=name, value=value or "", traceback=traceback)


def _parse_error_line(traceback: str) -> tuple[str, str]:
    """(name, value) from traceback text (inferred: the cloud documents only `text`).

    Python puts "Name: value" on the last line; Node puts it on the first line,
    followed by "    at …" frames. Anything else becomes ("Error", last line).
    """
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    if not lines:
        return "Error", ""
    match = _ERROR_LINE.match(lines[-1])
    if match:
        return match.group(1), (match.group(2) or "").strip()
    for line in lines:
        match = _ERROR_LINE.match(line)
        if match and _EXCEPTION_NAME.search(match.group(1)):
            return match.group(1), (match.group(2) or "").strip()
    return "Error", lines[-1]


def _looks_like_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text or any(
        (m := _ERROR_LINE.match(line.strip())) is not None
        and _EXCEPTION_NAME.search(m.group(1)) is not None
        for line in text.splitlines()
    )


@attrs.frozen
class Usage:
    """Resources a run (or a process) used, where the backend says; None where it does not.

    `wall_time` and `cpu_time` are seconds, the memory fields MiB. For an execution,
    `cpu_time` is user + system time of the context's processes during the run and
    `peak_memory_mb` their peak resident memory during it; for a process, `memory_mb`
    and `cpu_percent` are its current use. The emulator measures every run; the cloud
    reports `resourceUsage{cpuPercent, memoryMb}` for processes, and nothing per
    execution that we know of (the execute keys below are inferred, read if present).
    """

    wall_time: float | None = None
    cpu_time: float | None = None
    peak_memory_mb: float | None = None
    memory_mb: float | None = None
    cpu_percent: float | None = None

    @classmethod
    def from_wire(cls, raw: Any) -> Usage:
        """Tolerant: camelCase or snake_case keys; anything else (or not a dict) is no data."""
        if not isinstance(raw, Mapping):
            return cls()
        return cls(
            wall_time=_float(_first(raw, "wallTime", "wall_time")),
            cpu_time=_float(_first(raw, "cpuTime", "cpu_time")),
            peak_memory_mb=_float(_first(raw, "peakMemoryMb", "peak_memory_mb")),
            memory_mb=_float(_first(raw, "memoryMb", "memory_mb")),
            cpu_percent=_float(_first(raw, "cpuPercent", "cpu_percent")),
        )

    @property
    def known(self) -> bool:
        """Whether the backend reported anything."""
        return any(v is not None for v in attrs.astuple(self))

    def as_dict(self) -> dict[str, float]:
        """The reported fields only (for JSON output and log lines)."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.define
class Execution:
    """What one `execute` returned: output chunks, rich results, and the error if any."""

    results: list[Result] = attrs.field(factory=list)
    logs: Logs = attrs.field(factory=Logs)
    error: ExecutionError | None = None
    execution_count: int | None = None
    status: str = "ok"
    context_id: str | None = None
    duration: float | None = None
    events: list[Raw] = attrs.field(factory=list, repr=False)
    state_reset: bool = False
    kernel_restarted: bool = False
    """The code did not stop when interrupted and its kernel was restarted: same context,
    empty namespace. From the local emulator's `kernelRestarted` (an extension: the cloud
    sends no such field, so this stays False there)."""
    #: where it ran: wall and CPU time, peak memory (fields None where the backend is silent)
    usage: Usage = attrs.field(factory=Usage)
    #: the data plane's id for the execute request (quote it to support)
    request_id: str | None = None

    @property
    def stdout(self) -> str:
        return "".join(self.logs.stdout)

    @property
    def stderr(self) -> str:
        return "".join(self.logs.stderr)

    @property
    def text(self) -> str | None:
        """The main result's text (the value of the last expression), as in E2B."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == "ok"

    def raise_for_error(self) -> None:
        """Raise `ExecutionFailed` if the code raised or timed out."""
        if not self.ok:
            raise ExecutionFailed(self)

    @classmethod
    def from_wire(cls, body: Mapping[str, Any] | Sequence[Any]) -> Execution:
        """Fold the execute response's ordered event list into an Execution."""
        restarted = False
        if isinstance(body, Mapping):
            events_in = body.get("results")
            context_id = _str(body.get("contextId"))
            # emulator extension, read tolerantly: only a JSON `true` counts
            restarted = body.get("kernelRestarted") is True
        else:
            events_in, context_id = body, None
        execution = cls(context_id=context_id, kernel_restarted=restarted)
        if isinstance(body, Mapping):
            execution.usage = _usage_of(body)
        status: str | None = None
        for item in events_in if isinstance(events_in, Sequence) else []:
            if not isinstance(item, Mapping):
                execution.events.append({"type": "unknown", "value": item})
                continue
            event = dict(item)
            execution.events.append(event)
            kind = event.get("type")
            text = event.get("text")
            if kind == "stdout":
                execution.logs.stdout.append("" if text is None else str(text))
            elif kind == "stderr":
                execution.logs.stderr.append("" if text is None else str(text))
            elif kind == "result":
                result = Result.from_event(event)
                # Without the flag (cloud, inferred) an execute_result is the main result.
                if "isMainResult" not in event and "is_main_result" not in event:
                    result = attrs.evolve(result, is_main_result=True)
                execution.results.append(result)
            elif kind == "error":
                execution.error = ExecutionError.from_event(event)
            elif kind == "endOfExecution":
                status = _str(event.get("status"))
                if not execution.usage.known:
                    execution.usage = _usage_of(event)
            count = _int(_first(event, "executionCount", "execution_count"))
            if count is not None:
                execution.execution_count = count
        if status is None:
            status = "error" if execution.error is not None else "ok"
        execution.status = status
        if status == "error" and execution.error is None:
            # (inferred) The cloud may report the traceback only on stderr, with no error event.
            stderr = strip_ansi(execution.stderr)
            if _looks_like_traceback(stderr):
                execution.error = ExecutionError.from_event({"text": stderr})
            else:
                execution.error = ExecutionError(
                    name="ExecutionError",
                    value="the execution ended with status 'error'",
                    traceback=stderr,
                )
        return execution


def _usage_of(raw: Mapping[str, Any]) -> Usage:
    # The emulator sends `usage`; `resourceUsage` is the cloud's name for process usage,
    # read here too in case the execute response carries it (inferred).
    return Usage.from_wire(_first(raw, "usage", "resourceUsage"))


@attrs.frozen
class FileEntry:
    """A file or directory in a sandbox."""

    name: str
    path: str
    type: str | None = None
    size: int | None = None
    mode: int | None = None
    permissions: str | None = None
    owner: str | None = None
    group: str | None = None
    modified_time: datetime | None = None
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def is_dir(self) -> bool:
        return self.type == "directory"

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> FileEntry:
        path = str(raw.get("path") or "")
        return cls(
            name=str(raw.get("name") or path.rstrip("/").rsplit("/", 1)[-1]),
            path=path,
            type=_str(raw.get("type")),
            size=_int(raw.get("size")),
            mode=_mode(raw.get("mode")),
            permissions=_str(raw.get("permissions")),
            owner=_str(raw.get("owner")),
            group=_str(raw.get("group")),
            modified_time=_time(_first(raw, "modifiedTime", "modified_time")),
            raw=dict(raw),
        )


@attrs.frozen
class FileContent:
    """A file read from a sandbox; `content` is always bytes, `text` decodes it."""

    path: str
    content: bytes
    encoding: str = "utf-8"
    entry: FileEntry | None = None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> FileContent:
        encoding = str(raw.get("encoding") or "utf-8").lower()
        content = raw.get("content") or ""
        if encoding == "base64":
            data = base64.b64decode(str(content))
        else:
            data = str(content).encode("utf-8")
        return cls(
            path=str(raw.get("path") or ""),
            content=data,
            encoding=encoding,
            entry=FileEntry.from_wire(raw) if raw.get("name") or raw.get("type") else None,
        )


@attrs.frozen
class CommandResult:
    """A finished shell command. A non-zero exit code is data, not an exception."""

    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    cwd: str | None = None
    duration: float | None = None
    execution_id: str | None = None
    status: str | None = None
    #: why the command ended abnormally, in words (e.g. "signal: killed"; E2B's field)
    error: str | None = None
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> CommandResult:
        # DOC-CI nests the output under `result`; one SDK tool reads it at the top level.
        inner = _dict(raw.get("result")) or dict(raw)
        millis = _float(_first(inner, "executionTimeMs")) or _float(raw.get("executionTimeMs"))
        return cls(
            exit_code=_int(_first(inner, "exitCode", "exit_code")),
            stdout=str(inner.get("stdout") or ""),
            stderr=str(inner.get("stderr") or ""),
            cwd=_str(inner.get("cwd")),
            duration=None if millis is None else millis / 1000.0,
            execution_id=_str(raw.get("executionId")),
            status=_str(raw.get("status")),
            raw=dict(raw),
        )


@attrs.frozen
class ProcessInfo:
    """A process running in a sandbox."""

    pid: str
    status: str | None = None
    command: str | None = None
    tag: str | None = None
    created_at: datetime | None = None
    #: current CPU and memory use (`get_process` only: listings carry none)
    usage: Usage = attrs.field(factory=Usage)
    raw: Raw = attrs.field(factory=dict, repr=False, eq=False)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> ProcessInfo:
        return cls(
            pid=str(_first(raw, "processId", "pid") or ""),
            status=_str(raw.get("status")),
            command=_str(raw.get("command")),
            tag=_str(raw.get("tag")),
            created_at=_time(raw.get("createdAt")),
            usage=Usage.from_wire(_first(raw, "resourceUsage", "resource_usage")),
            raw=dict(raw),
        )
