"""Wire dicts in, records out: the emulator's rich events and the cloud's poorer variant."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

import pytest

from agentrun_ci import (
    CommandResult,
    Context,
    Execution,
    ExecutionFailed,
    FileContent,
    FileEntry,
    Health,
    ProcessInfo,
    Sandbox,
    Template,
)

RICH: dict[str, Any] = {
    "results": [
        {"type": "stdout", "text": "hello\n"},
        {"type": "stdout", "text": "world\n"},
        {"type": "stderr", "text": "warn\n"},
        {
            "type": "result",
            "text": "<Figure>",
            "data": {"text/plain": "<Figure>", "image/png": "iVBORw0K"},
            "isMainResult": False,
            "executionCount": 3,
        },
        {
            "type": "result",
            "text": "42",
            "data": {"text/plain": "42", "text/html": "<b>42</b>"},
            "isMainResult": True,
            "executionCount": 3,
        },
        {"type": "endOfExecution", "status": "ok", "executionCount": 3},
    ],
    "contextId": "ctx-1",
}


def test_rich_execution() -> None:
    execution = Execution.from_wire(RICH)
    assert execution.logs.stdout == ["hello\n", "world\n"]
    assert execution.logs.stderr == ["warn\n"]
    assert execution.stdout == "hello\nworld\n"
    assert execution.stderr == "warn\n"
    assert execution.text == "42"
    assert execution.results[0].png == "iVBORw0K"
    assert execution.results[0].formats() == ["image/png"]
    assert execution.results[1].html == "<b>42</b>"
    assert execution.execution_count == 3
    assert execution.context_id == "ctx-1"
    assert execution.ok
    assert execution.error is None
    execution.raise_for_error()


def test_cloud_documented_example() -> None:
    body = {
        "results": [
            {"type": "stdout", "text": "hello"},
            {"type": "result", "text": "None"},
            {"type": "endOfExecution", "status": "ok"},
        ],
        "contextId": "kernel-12345-67890",
    }
    execution = Execution.from_wire(body)
    assert execution.stdout == "hello"
    assert execution.text == "None"  # no isMainResult flag: the result is the main one
    assert execution.results[0].data == {"text/plain": "None"}
    assert execution.execution_count is None
    assert execution.ok


def test_structured_error_event() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "<cell>", line 1\n'
        "ZeroDivisionError: division by zero"
    )
    body = {
        "results": [
            {
                "type": "error",
                "name": "ZeroDivisionError",
                "value": "division by zero",
                "traceback": tb,
                "text": tb,
            },
            {"type": "endOfExecution", "status": "error", "executionCount": 1},
        ]
    }
    execution = Execution.from_wire(body)
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == (
        "ZeroDivisionError",
        "division by zero",
    )
    assert execution.error.traceback == tb
    assert not execution.ok
    assert execution.status == "error"
    with pytest.raises(ExecutionFailed, match="ZeroDivisionError: division by zero") as info:
        execution.raise_for_error()
    assert info.value.execution is execution


def test_error_with_only_text_is_parsed_from_the_last_line() -> None:
    text = (
        "\x1b[0;31mTraceback (most recent call last)\x1b[0m:\n"
        '  File "<stdin>", line 1, in <module>\n'
        "ZeroDivisionError: division by zero\n"
    )
    execution = Execution.from_wire(
        {
            "results": [
                {"type": "error", "text": text},
                {"type": "endOfExecution", "status": "error"},
            ]
        }
    )
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "\x1b" not in execution.error.traceback


def test_error_name_without_value() -> None:
    execution = Execution.from_wire({"results": [{"type": "error", "text": "KeyboardInterrupt"}]})
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == ("KeyboardInterrupt", "")
    assert execution.status == "error"


def test_javascript_style_error_text() -> None:
    text = "ReferenceError: x is not defined\n    at evalmachine.<anonymous>:1:1\n    at Script.run"
    execution = Execution.from_wire({"results": [{"type": "error", "text": text}]})
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == ("ReferenceError", "x is not defined")


def test_error_status_without_error_event_reads_stderr() -> None:
    body = {
        "results": [
            {"type": "stderr", "text": "Traceback (most recent call last):\n"},
            {"type": "stderr", "text": "ValueError: bad\n"},
            {"type": "endOfExecution", "status": "error"},
        ]
    }
    execution = Execution.from_wire(body)
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == ("ValueError", "bad")


def test_timeout_status() -> None:
    execution = Execution.from_wire({"results": [{"type": "endOfExecution", "status": "timeout"}]})
    assert execution.status == "timeout"
    assert not execution.ok
    with pytest.raises(ExecutionFailed, match="timed out"):
        execution.raise_for_error()


def test_unknown_events_and_fields_are_kept() -> None:
    body = {
        "results": [
            {"type": "display_data_v2", "payload": {"x": 1}},
            "not-a-dict",
            {"type": "stdout", "text": "a", "extra": True},
            {"type": "endOfExecution", "status": "ok"},
        ],
        "contextId": "c",
        "newTopLevel": 1,
    }
    execution = Execution.from_wire(body)
    assert execution.events[0] == {"type": "display_data_v2", "payload": {"x": 1}}
    assert execution.events[1] == {"type": "unknown", "value": "not-a-dict"}
    assert execution.events[2]["extra"] is True
    assert execution.stdout == "a"
    assert execution.ok


@pytest.mark.parametrize("body", [{}, {"results": None}, {"results": "x"}, []])
def test_degenerate_bodies_do_not_crash(body: Any) -> None:
    execution = Execution.from_wire(body)
    assert execution.results == []
    assert execution.ok


def test_result_json_and_mime_properties() -> None:
    execution = Execution.from_wire(
        {
            "results": [
                {
                    "type": "result",
                    "data": {
                        "application/json": {"a": 1},
                        "image/svg+xml": "<svg/>",
                        "text/plain": "{'a': 1}",
                    },
                }
            ]
        }
    )
    result = execution.results[0]
    assert result.json == {"a": 1}
    assert result.svg == "<svg/>"
    assert result.text == "{'a': 1}"
    assert result.jpeg is None
    assert sorted(result.formats()) == ["application/json", "image/svg+xml"]


def test_sandbox_from_wire() -> None:
    raw = {
        "sandboxId": "01KAWBP6JQD0J3Z34BP4WMX1KG",
        "templateName": "t1",
        "status": "READY",
        "createdAt": "2025-11-20T10:00:00Z",
        "sandboxIdleTimeoutSeconds": 600,
        "metadata": {"fcSessionDetails": {"sessionId": "s"}},
        "future": "kept",
    }
    sandbox = Sandbox.from_wire(raw)
    assert sandbox.sandbox_id == sandbox.id == "01KAWBP6JQD0J3Z34BP4WMX1KG"
    assert sandbox.created_at == datetime(2025, 11, 20, 10, tzinfo=timezone.utc)
    assert sandbox.idle_timeout == 600
    assert sandbox.metadata["fcSessionDetails"]["sessionId"] == "s"
    assert sandbox.raw["future"] == "kept"


def test_template_string_typed_timeouts() -> None:
    template = Template.from_wire(
        {
            "templateName": "t",
            "sandboxIdleTimeoutInSeconds": "1800",
            "sandboxTTLInSeconds": "21600",
            "networkConfiguration": {"networkMode": "PUBLIC"},
            "cpu": 2,
            "memory": 4096,
        }
    )
    assert (template.idle_timeout, template.ttl, template.network_mode) == (1800, 21600, "PUBLIC")
    assert template.cpu == 2.0


def test_health_context_process() -> None:
    assert Health.from_wire({"status": "ok", "uptime": 1}).ok
    assert not Health.from_wire({"status": "starting"}).ok
    context = Context.from_wire({"id": "c1", "language": "python", "cwd": "/home/user"})
    assert (context.id, context.language, context.cwd) == ("c1", "python", "/home/user")
    process = ProcessInfo.from_wire({"processId": "12", "status": "running", "command": "sleep 9"})
    assert (process.pid, process.status, process.command) == ("12", "running", "sleep 9")


def test_file_entry_modes() -> None:
    assert FileEntry.from_wire({"path": "/a/b.txt", "mode": 420}).mode == 0o644
    entry = FileEntry.from_wire({"path": "/a/dir/", "mode": "0755", "type": "directory"})
    assert (entry.mode, entry.name, entry.is_dir) == (0o755, "dir", True)


def test_file_content_utf8_and_base64() -> None:
    text = FileContent.from_wire({"path": "/a", "content": "héllo", "encoding": "utf-8"})
    assert text.content == "héllo".encode()
    assert text.text == "héllo"
    blob = FileContent.from_wire(
        {
            "path": "/b",
            "content": base64.b64encode(b"\x00\xff").decode(),
            "encoding": "base64",
            "name": "b",
            "type": "file",
            "size": 2,
        }
    )
    assert blob.content == b"\x00\xff"
    assert blob.entry is not None
    assert blob.entry.size == 2


def test_command_result_nested_and_flat() -> None:
    nested = CommandResult.from_wire(
        {
            "executionId": "e1",
            "status": "completed",
            "result": {
                "exitCode": 2,
                "stdout": "o",
                "stderr": "e",
                "cwd": "/w",
                "executionTimeMs": 1500,
            },
        }
    )
    assert (nested.exit_code, nested.stdout, nested.stderr, nested.cwd) == (2, "o", "e", "/w")
    assert nested.duration == 1.5
    assert not nested.ok
    assert nested.execution_id == "e1"
    flat = CommandResult.from_wire({"exitCode": 0, "stdout": "x"})
    assert flat.ok
    assert flat.stdout == "x"


@pytest.mark.parametrize("count", [float("inf"), float("-inf"), float("nan"), "inf", "1e999"])
def test_an_execution_count_that_is_not_a_finite_number_is_dropped(count: Any) -> None:
    # Python's json module reads Infinity and NaN; int(inf) raised OverflowError here
    # (found by test_properties on one random run).
    body = {
        "results": [
            {"type": "stdout", "text": "x"},
            {"type": "result", "text": "1", "executionCount": count},
            {"type": "endOfExecution", "status": "ok", "execution_count": count},
        ]
    }
    execution = Execution.from_wire(body)
    assert execution.execution_count is None
    assert execution.stdout == "x"
    assert execution.text == "1"
    assert execution.ok


def test_numbers_beyond_a_float_or_an_int_become_none() -> None:
    huge = 10**400  # JSON allows any number of digits; float() of it overflows
    template = Template.from_wire({"templateName": "t", "cpu": huge, "memory": float("inf")})
    assert (template.cpu, template.memory) == (None, None)
    command = CommandResult.from_wire(
        {"result": {"exitCode": float("nan")}, "executionTimeMs": huge}
    )
    assert (command.exit_code, command.duration) == (None, None)
    sandbox = Sandbox.from_wire({"sandboxId": "s", "sandboxIdleTimeoutSeconds": float("-inf")})
    assert sandbox.idle_timeout is None
