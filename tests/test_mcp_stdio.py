"""The thread-free stdio transport (agentrun_ci_mcp._stdio) and the compact output schema."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import jsonschema
from support import SCRIPT, cloud_env, initialize_request, needs_script, owned, spawned

from agentrun_ci import Config
from agentrun_ci_mcp import _stdio
from agentrun_ci_mcp._stdio import PipeLines
from agentrun_ci_mcp.render import RunCodeOutput, compact_schema
from agentrun_ci_mcp.server import FileOut, ListOut

pytestmark = pytest.mark.anyio


async def _lines(data: list[bytes]) -> list[str]:
    reader = asyncio.StreamReader()
    for chunk in data:
        reader.feed_data(chunk)
    reader.feed_eof()
    return [line async for line in PipeLines(reader)]


async def test_lines_are_split_across_chunks_and_long_lines_survive() -> None:
    big = "x" * 3_000_000  # far beyond asyncio's 64 KiB readline limit
    data = f'{{"a": "{big}"}}\n{{"b": 1}}\n'.encode()
    chunks = [data[i : i + 70_000] for i in range(0, len(data), 70_000)]
    lines = await _lines(chunks)
    assert [len(line) for line in lines] == [len(big) + 10, 9]
    assert json.loads(lines[1]) == {"b": 1}


async def test_a_last_line_without_newline_and_bad_utf8() -> None:
    assert await _lines([b'{"a": 1}\n{"b": "\xff"}']) == ['{"a": 1}\n', '{"b": "\ufffd"}']
    assert await _lines([]) == []


async def test_an_oversized_line_is_dropped_up_to_its_newline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_stdio, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(_stdio, "_CHUNK", 100)
    lines = await _lines([b"1\n", b"y" * 5000, b"y" * 5000 + b"\n", b"2\n"])
    assert lines == ["1\n", "2\n"]


def _initialize(i: int) -> str:
    return json.dumps(initialize_request("t", request_id=i, protocol="2025-06-18"))


@needs_script
def test_stdin_from_a_regular_file_falls_back_to_the_sdk_reader(tmp_path: Path) -> None:
    """A file is not a pipe: the SDK's threaded reader serves it, to EOF, then exit 0."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        _initialize(1)
        + "\n"
        + json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        + "\n"
        + json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        + "\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "AGENTRUN_MCP_BACKEND": "local"}
    with requests.open("rb") as stdin:
        done = subprocess.run(
            [SCRIPT], stdin=stdin, capture_output=True, env=env, timeout=60, check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    answers = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [a["id"] for a in answers] == [1, 2]
    assert "run_code" in {t["name"] for t in answers[1]["result"]["tools"]}


def _batch(*requests: dict[str, Any]) -> bytes:
    lines = [_initialize(1), json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})]
    lines += [json.dumps({"jsonrpc": "2.0", **r}) for r in requests]
    return ("\n".join(lines) + "\n").encode()


def _run_code(i: int, code: str, timeout: float = 10) -> dict[str, Any]:
    args = {"code": code, "timeout": timeout}
    return {"id": i, "method": "tools/call", "params": {"name": "run_code", "arguments": args}}


@needs_script
def test_requests_piped_in_before_eof_are_all_answered(emulator: Config, tmp_path: Path) -> None:
    """`... | agentrun-ci-mcp`: stdin ends right after the requests (a batch); every one
    is answered, a run that outlasts the end of input included."""
    owner = "stdio" + secrets.token_hex(3)
    stdin = _batch(
        {"id": 2, "method": "tools/list"},
        _run_code(3, "import time; time.sleep(0.5); print('late')"),
    )
    log = tmp_path / "stderr.log"
    with (
        log.open("wb") as stderr,
        spawned(
            [SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=cloud_env(emulator, owner),
        ) as proc,
    ):
        out, _ = proc.communicate(stdin, timeout=120)
    assert proc.returncode == 0, log.read_text()
    answers = {a["id"]: a for a in map(json.loads, out.splitlines())}
    assert sorted(answers) == [1, 2, 3]
    assert answers[3]["result"]["structuredContent"]["stdout"] == "late\n"
    assert owned(emulator, owner) == []


def _contexts(config: Config, owner: str) -> int:
    from agentrun_ci import DataPlane, NotFoundError

    with DataPlane(config) as data:
        total = 0
        for sandbox_id in owned(config, owner):
            try:
                total += len(data.list_contexts(sandbox_id))
            except NotFoundError:
                continue
        return total


@needs_script
def test_eof_waits_for_a_batch_only_so_long(emulator: Config, tmp_path: Path) -> None:
    """A batch's run still going when the grace is over is cancelled; cleanup, exit 0.

    The grace is measured from the end of input, so two runs of 25 s in one context
    (the second waits for the first) outlast it; the test does not time anything itself.
    """
    from agentrun_ci_mcp.__main__ import EOF_ANSWER_GRACE

    owner = "stdio" + secrets.token_hex(3)
    log = tmp_path / "stderr.log"
    runs = [_run_code(n, "import time; time.sleep(25)", timeout=29) for n in (2, 3)]
    with (
        log.open("wb") as stderr,
        spawned(
            [SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=cloud_env(emulator, owner, AGENTRUN_MCP_LOG_LEVEL="INFO"),
        ) as proc,
    ):
        out, _ = proc.communicate(_batch(*runs), timeout=EOF_ANSWER_GRACE + 120)
    assert proc.returncode == 0, log.read_text()
    answers = {a["id"]: a for a in map(json.loads, out.decode().splitlines())}
    assert "result" in answers[1]
    # the calls of one client take turns: the second cannot end within the grace (nor
    # perhaps the first, on a loaded machine); the SDK answers a request it cancelled at
    # end of input with an error, if at all
    assert [n for n in (2, 3) if "result" in answers.get(n, {})] in ([], [2], [3]), answers
    assert f"unanswered after {EOF_ANSWER_GRACE:g} s" in log.read_text()
    assert owned(emulator, owner) == []


# ---------------------------------------------------------------- compact_schema


SAMPLES: list[dict[str, Any]] = [
    {"stdout": "", "stderr": ""},
    {
        "stdout": "1\n",
        "stderr": "",
        "results": [{"mime_types": ["text/plain"], "text": "2", "is_main_result": True}],
        "error": None,
        "execution_count": 3,
        "duration_ms": 1.5,
        "truncated": False,
        "state_reset": True,
        "notes": ["n"],
    },
    {"stdout": "", "stderr": "", "error": {"name": "E", "value": "v", "traceback": "t"}},
    {"stdout": "", "stderr": "", "results": [{"mime_types": [], "summary": None, "text": None}]},
    # invalid ones
    {"stdout": 1, "stderr": ""},
    {"stderr": ""},
    {"stdout": "", "stderr": "", "error": {"name": "E"}},
    {"stdout": "", "stderr": "", "error": "boom"},
    {"stdout": "", "stderr": "", "execution_count": "3"},
    {"stdout": "", "stderr": "", "results": [{"text": "no mime types"}]},
    {"stdout": "", "stderr": "", "results": [{"mime_types": ["a"], "text": 5}]},
    {"stdout": "", "stderr": "", "duration_ms": None, "notes": [1]},
]


@pytest.mark.parametrize("model", [RunCodeOutput, FileOut, ListOut])
def test_the_compact_schema_accepts_and_rejects_what_the_original_does(model: Any) -> None:
    original = model.model_json_schema()
    compact = compact_schema(original)
    assert "$defs" not in json.dumps(compact)
    assert "anyOf" not in json.dumps(compact)
    jsonschema.Draft202012Validator.check_schema(compact)
    full, small = (
        jsonschema.Draft202012Validator(original),
        jsonschema.Draft202012Validator(compact),
    )
    samples = SAMPLES if model is RunCodeOutput else [{}, {"path": 1}, {"path": "p", "size": 1}]
    verdicts = [(full.is_valid(doc), small.is_valid(doc)) for doc in samples]
    assert all(a == b for a, b in verdicts), verdicts
    if model is RunCodeOutput:
        assert [v for v, _ in verdicts] == [True] * 4 + [False] * 8


def test_a_property_named_title_is_kept() -> None:
    schema = {
        "type": "object",
        "title": "T",
        "properties": {"title": {"type": "string", "title": "Title"}},
    }
    assert compact_schema(schema) == {"type": "object", "properties": {"title": {"type": "string"}}}
