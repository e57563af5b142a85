"""OpenTelemetry instrumentation with the real SDK and its in-memory exporters: HTTP
client spans and metrics on both planes, facade spans and their children, metrics
after a known workload, and no cost (not even an import) when OpenTelemetry is absent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import httpx
import otel_support
import pytest
from otel_support import Captured, attrs_of, parent_of

from agentrun_ci import AsyncCodeInterpreter, Config, ControlPlane, DataPlane, NotFoundError
from agentrun_ci._retry import RetryPolicy
from agentrun_ci._telemetry import url_template

SANDBOX = "01KAWBP6JQD0J3Z34BP4WMX1KG"
EXECUTE_OK = {"results": [{"type": "stdout", "text": "hi\n"}, {"type": "endOfExecution"}]}


@pytest.fixture
def otel() -> Iterator[Captured]:
    yield from otel_support.capture()


def _owner() -> str:
    return "o" + uuid.uuid4().hex[:7]


def test_url_template_names_the_ids_and_keeps_the_routes() -> None:
    assert url_template(f"/sandboxes/{SANDBOX}/contexts/execute") == (
        "/sandboxes/{sandboxId}/contexts/execute"
    )
    assert url_template(f"/sandboxes/{SANDBOX}/contexts/ctx-9") == (
        "/sandboxes/{sandboxId}/contexts/{contextId}"
    )
    assert url_template(f"/sandboxes/{SANDBOX}/processes/42") == (
        "/sandboxes/{sandboxId}/processes/{pid}"
    )
    assert url_template("/sandboxes") == "/sandboxes"


def test_data_plane_span_follows_http_client_conventions(otel: Captured) -> None:
    handled: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        handled.append(time.time_ns())
        return httpx.Response(200, json=EXECUTE_OK)

    config = Config(data_endpoint="http://dp.example:8123")
    with DataPlane(config, transport=httpx.MockTransport(handler)) as plane:
        before = time.time_ns()
        plane.execute(SANDBOX, "print('hi')", context_id="ctx-1")
        after = time.time_ns()
    span = otel.one("POST /sandboxes/{sandboxId}/contexts/execute")
    # the span is made when the request ends, timed from when it began: it spans the send
    assert span.start_time is not None
    assert span.end_time is not None
    assert before <= span.start_time <= handled[0] <= span.end_time <= after
    attributes = attrs_of(span)
    assert span.kind.name == "CLIENT"
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.template"] == "/sandboxes/{sandboxId}/contexts/execute"
    assert attributes["server.address"] == "dp.example"
    assert attributes["server.port"] == 8123
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.full"] == f"http://dp.example:8123/sandboxes/{SANDBOX}/contexts/execute"
    assert "error.type" not in attributes
    assert "http.request.resend_count" not in attributes  # first attempt
    assert span.status.is_ok


def test_each_retry_is_its_own_span_with_resend_count_and_counts_as_a_retry(
    otel: Captured,
) -> None:
    answers = iter([503, 503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, json={"status": "ok"} if status == 200 else {})

    before = otel.value("agentrun_ci.retries", **{"url.template": "/sandboxes/{sandboxId}/health"})
    config = Config(data_endpoint="http://dp.example")
    plane = DataPlane(
        config,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(3, jitter=lambda lo, hi: 0.0),
        sleep=lambda delay: None,
    )
    with plane:
        assert plane.health(SANDBOX).ok
    spans = otel.finished("GET /sandboxes/{sandboxId}/health")
    assert [attrs_of(s).get("http.request.resend_count") for s in spans] == [None, 1, 2]
    assert [attrs_of(s)["http.response.status_code"] for s in spans] == [503, 503, 200]
    assert [attrs_of(s).get("error.type") for s in spans] == ["503", "503", None]
    assert [s.status.status_code.name for s in spans] == ["ERROR", "ERROR", "UNSET"]
    after = otel.value("agentrun_ci.retries", **{"url.template": "/sandboxes/{sandboxId}/health"})
    assert after - before == 2
    # the duration histogram has one point per attempt, the failed ones with error.type
    assert otel.value("http.client.request.duration", **{"error.type": "503"}) >= 2


def test_a_request_that_fails_in_transit_has_the_exception_as_error_type(otel: Captured) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    with (
        DataPlane(
            Config(data_endpoint="http://dp.example"), transport=httpx.MockTransport(handler)
        ) as plane,
        pytest.raises(Exception, match="connection reset"),
    ):
        plane.execute(SANDBOX, "1", context_id="ctx-1")
    span = otel.one("POST /sandboxes/{sandboxId}/contexts/execute")
    assert attrs_of(span)["error.type"] == "httpx.ReadError"
    assert "http.response.status_code" not in attrs_of(span)
    assert any(event.name == "exception" for event in span.events)


def test_control_plane_calls_are_spans_at_our_boundary(emulator: Config, otel: Captured) -> None:
    with ControlPlane(emulator) as cp, pytest.raises(NotFoundError):
        cp.get_template(f"missing-{uuid.uuid4().hex[:6]}")
    span = otel.one("GET /2025-09-10/templates/{templateName}")
    attributes = attrs_of(span)
    assert span.kind.name == "CLIENT"
    assert attributes["rpc.method"] == "GetTemplate"
    assert attributes["http.response.status_code"] == 404
    assert attributes["error.type"] == "404"
    assert attributes["server.address"] == httpx.URL(str(emulator.control_endpoint)).host


@pytest.mark.anyio
async def test_facade_spans_are_parents_of_their_http_requests(
    emulator: Config, otel: Captured
) -> None:
    async with AsyncCodeInterpreter(emulator, owner=_owner()) as ci:
        await ci.execute_code("x = 6 * 7")
        otel.clear()
        execution = await ci.execute_code("print(x)")
        await ci.write_file("/home/user/a.txt", "hello")
        failed = await ci.execute_code("1 / 0")
        session_id = ci.session_id
    assert execution.ok
    assert failed.error is not None
    spans = otel.finished()
    executes = otel.finished("agentrun_ci.execute_code")
    assert len(executes) == 2
    first = attrs_of(executes[0])
    assert first["agentrun_ci.language"] == "python"
    assert first["agentrun_ci.sandbox_id"] == session_id
    assert first["agentrun_ci.context_id"] == execution.context_id
    assert first["agentrun_ci.execution_count"] == execution.execution_count
    assert first["agentrun_ci.outcome"] == "ok"
    assert first["agentrun_ci.state_reset"] is False
    second = attrs_of(executes[1])
    assert second["agentrun_ci.outcome"] == "error"
    assert second["agentrun_ci.error_name"] == "ZeroDivisionError"
    http = [s for s in spans if s.name == "POST /sandboxes/{sandboxId}/contexts/execute"]
    assert len(http) == 2
    for child, parent in zip(http, executes, strict=True):
        assert parent_of(child, spans) is parent
        assert child.context.trace_id == parent.context.trace_id
    write = otel.one("agentrun_ci.write_file")
    write_http = [s for s in spans if parent_of(s, spans) is write]
    assert [s.name for s in write_http] == ["POST /sandboxes/{sandboxId}/files"]


@pytest.mark.anyio
async def test_metrics_after_a_known_workload(emulator: Config, otel: Captured) -> None:
    ok_before = otel.value("agentrun_ci.execution.duration", **{"agentrun_ci.outcome": "ok"})
    err_before = otel.value("agentrun_ci.execution.duration", **{"agentrun_ci.outcome": "error"})
    lost_before = otel.value(
        "agentrun_ci.errors",
        **{"agentrun_ci.operation": "read_file", "error.type": "NotFoundError"},
    )
    async with AsyncCodeInterpreter(
        emulator, owner=_owner(), strategy="pool", pool_size=(2, 3)
    ) as ci:
        async with ci.lease("a") as a:
            for i in range(3):
                assert (await a.execute_code(f"{i}")).ok
            assert not (await a.execute_code("raise ValueError('no')")).ok
            await a.create_context()
            with pytest.raises(NotFoundError):
                await a.read_file("/home/user/missing.txt")
            # one lease holds a session: busy 1 of the 2 warm ones; 2 contexts (default + extra)
            assert otel.value("agentrun_ci.pool.sessions", state="busy") == 1
            assert otel.value("agentrun_ci.pool.sessions", state="idle") == 1
            assert otel.value("agentrun_ci.pool.waiting") == 0
            assert otel.value("agentrun_ci.contexts.active") >= 2
            assert otel.value("agentrun_ci.sessions.active") >= 2
        assert otel.value("agentrun_ci.pool.sessions", state="idle") == 2
    ok = otel.value("agentrun_ci.execution.duration", **{"agentrun_ci.outcome": "ok"})
    err = otel.value("agentrun_ci.execution.duration", **{"agentrun_ci.outcome": "error"})
    lost = otel.value(
        "agentrun_ci.errors",
        **{"agentrun_ci.operation": "read_file", "error.type": "NotFoundError"},
    )
    assert (ok - ok_before, err - err_before, lost - lost_before) == (3, 1, 1)
    assert otel.value("agentrun_ci.pool.sessions", state="idle") == 0  # closed pool's gone


@pytest.mark.anyio
async def test_a_lease_waiting_for_a_full_pool_is_counted(emulator: Config, otel: Captured) -> None:
    import asyncio

    import anyio

    async with AsyncCodeInterpreter(
        emulator, owner=_owner(), strategy="pool", pool_size=(1, 1)
    ) as ci:
        first = await ci.acquire("a")
        assert (await first.execute_code("1")).ok  # the pool's only session is busy

        async def second() -> bool:
            async with ci.lease("b") as lease:
                return (await lease.execute_code("2")).ok

        task = asyncio.get_running_loop().create_task(second())
        with anyio.fail_after(60):
            # the gauge is what is under test: no event says "a lease is now waiting"
            while otel.value("agentrun_ci.pool.waiting") != 1:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert otel.value("agentrun_ci.pool.sessions", state="busy") == 1
        await first.release()  # the waiter gets the session
        assert await task
        assert otel.value("agentrun_ci.pool.waiting") == 0


def _run_isolated(code: str, *, block_otel: bool) -> dict[str, object]:
    """Run `code` in a fresh interpreter (optionally with OpenTelemetry unimportable);
    it prints one JSON line, returned here."""
    blocker = textwrap.dedent(
        """
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(name)
                return None
        sys.meta_path.insert(0, _Block())
        """
    )
    source = (blocker if block_otel else "") + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


PROBE = """
    import json, sys, httpx
    from agentrun_ci import Config, DataPlane, _lease, _telemetry
    from agentrun_ci._lease import AsyncLease
    handler = lambda request: httpx.Response(200, json={"status": "ok"})
    imported_at_import = "opentelemetry.trace" in sys.modules
    with DataPlane(Config(data_endpoint="http://x"), transport=httpx.MockTransport(handler)) as p:
        p.health("s")
        print(json.dumps({
            "available": _telemetry.AVAILABLE,
            "instruments": p._telemetry is not None,
            "imported_at_import": imported_at_import,
            "imported_after": "opentelemetry.trace" in sys.modules,
            "read_file_wrapped": hasattr(AsyncLease.read_file, "__wrapped__"),
        }))
"""


def test_without_opentelemetry_nothing_is_imported_or_wrapped() -> None:
    seen = _run_isolated(PROBE, block_otel=True)
    assert seen == {
        "available": False,
        "instruments": False,
        "imported_at_import": False,
        "imported_after": False,
        "read_file_wrapped": False,
    }


def test_with_opentelemetry_it_is_imported_only_when_a_plane_is_made() -> None:
    seen = _run_isolated(PROBE, block_otel=False)
    assert seen == {
        "available": True,
        "instruments": True,
        "imported_at_import": False,
        "imported_after": True,
        "read_file_wrapped": True,
    }


UNCONFIGURED = """
    import json, httpx
    from agentrun_ci import Config, DataPlane, _telemetry
    made = []
    real = _telemetry.Telemetry.http
    _telemetry.Telemetry.http = lambda self, *a: made.append(1) or real(self, *a)
    handler = lambda request: httpx.Response(200, json={"status": "ok"})
    with DataPlane(Config(data_endpoint="http://x"), transport=httpx.MockTransport(handler)) as p:
        p.health("s")
        before = (p._telemetry.active(), len(made))
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())  # the application configures it late
        p.health("s")
        print(json.dumps({"before": before, "after": (p._telemetry.active(), len(made))}))
"""


def test_installed_but_unconfigured_makes_no_spans_until_a_provider_is_set() -> None:
    seen = _run_isolated(UNCONFIGURED, block_otel=False)
    assert seen == {"before": [False, 0], "after": [True, 1]}


@pytest.mark.anyio
async def test_mcp_tool_call_continues_the_clients_trace_down_to_http(
    emulator: Config, otel: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("mcp")
    from mcp import Client

    from agentrun_ci_mcp.server import ServerOptions, build_server

    options = ServerOptions(config=emulator, backend="cloud", owner="otel" + uuid.uuid4().hex[:4])
    mcp, _state = build_server(options)
    # the caller's trace, as an upstream service hands it over in the request's _meta
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    meta = {"traceparent": f"00-{trace_id}-{parent_id}-01", "tracestate": "vendor=value"}
    caplog.set_level("INFO", logger="agentrun_ci_mcp")
    async with Client(mcp) as client:
        result = await client.call_tool("run_code", {"code": "print(6 * 7)"}, meta=meta)
    assert not result.is_error, result.content
    spans = otel.finished()
    tool = otel.one("tools/call run_code")
    assert tool.kind.name == "SERVER"
    assert f"{tool.context.trace_id:032x}" == trace_id
    assert tool.parent is not None
    assert f"{tool.parent.span_id:016x}" == parent_id
    assert tool.parent.is_remote
    assert tool.context.trace_state.get("vendor") == "value"
    assert attrs_of(tool)["agentrun_ci.outcome"] == "ok"
    assert attrs_of(tool)["gen_ai.tool.name"] == "run_code"
    execute = otel.one("agentrun_ci.execute_code")
    assert parent_of(execute, spans) is tool
    http = otel.one("POST /sandboxes/{sandboxId}/contexts/execute")
    assert parent_of(http, spans) is execute
    assert {f"{s.context.trace_id:032x}" for s in (tool, execute, http)} == {trace_id}
    lines = [r for r in caplog.records if getattr(r, "event", None) == "tool_call"]
    assert len(lines) == 1
    assert lines[0].levelname == "INFO"
    assert lines[0].tool == "run_code"  # type: ignore[attr-defined]
    assert lines[0].outcome == "ok"  # type: ignore[attr-defined]
    assert "6 * 7" not in lines[0].getMessage()  # the code is never logged


def test_json_log_lines_carry_the_structured_fields_and_the_current_trace(
    otel: Captured,
) -> None:
    import io
    import logging

    from opentelemetry import trace

    from agentrun_ci._logs import JsonFormatter, use_log_format

    stream = io.StringIO()
    logger = logging.getLogger(f"agentrun_ci.test_json_{uuid.uuid4().hex[:6]}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(stream))
    use_log_format("json", logger)
    assert isinstance(logger.handlers[0].formatter, JsonFormatter)
    with trace.get_tracer("test").start_as_current_span("outer") as span:
        logger.info("execute %s ok", "python", extra={"event": "execute", "duration": 0.25})
    line = json.loads(stream.getvalue())
    assert line["message"] == "execute python ok"
    assert (line["level"], line["logger"]) == ("INFO", logger.name)
    assert (line["event"], line["duration"]) == ("execute", 0.25)
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        use_log_format("xml", logger)


def test_cli_and_mcp_server_take_log_format_json() -> None:
    from agentrun_ci import cli
    from agentrun_ci_mcp.__main__ import build_parser

    assert cli._parser().parse_args(["--log-format", "json", "sessions", "list"]).log_format == (
        "json"
    )
    assert build_parser({}).parse_args(["--log-format", "json"]).log_format == "json"
    assert build_parser({"AGENTRUN_MCP_LOG_FORMAT": "json"}).parse_args([]).log_format == "json"


def test_the_cli_logs_one_json_object_per_line_with_an_execute_line(emulator: Config) -> None:
    import os

    assert emulator.control_endpoint
    assert emulator.data_endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTRUN_", "ALIBABA_"))}
    env.update(
        AGENTRUN_CONTROL_ENDPOINT=emulator.control_endpoint,
        AGENTRUN_DATA_ENDPOINT=emulator.data_endpoint,
        AGENTRUN_ACCOUNT_ID="local",
    )
    cli = [sys.executable, "-c", "from agentrun_ci.cli import run; run()"]
    done = subprocess.run(
        [*cli, "--log-level", "INFO", "--log-format", "json", "run", "print(6 * 7)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    (execute,) = [line for line in lines if line.get("event") == "execute"]
    assert execute["level"] == "INFO"
    assert execute["outcome"] == "ok"
    assert execute["request_id"]
    assert execute["usage"]["peak_memory_mb"] > 0
    assert "6 * 7" not in done.stderr  # the code is never logged
