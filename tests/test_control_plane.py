"""ControlPlane / AsyncControlPlane: the Alibaba package aimed at the emulator over real HTTP,
plus the translation of the package's exceptions and the READY wait (with a stub client)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from alibabacloud_tea_openapi import exceptions as tea

from agentrun_ci import AsyncControlPlane, Config, ControlPlane, RetryPolicy
from agentrun_ci._async.control_plane import build_client, translate_error
from agentrun_ci._errors import (
    APIError,
    ConflictError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
    WaitTimeout,
)


def _name(prefix: str = "cp") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- against the emulator


def test_template_lifecycle_over_http(emulator: Config) -> None:
    name = _name()
    with ControlPlane(emulator) as cp:
        created = cp.create_template(
            name, cpu=1.0, memory=1024, environment={"A": "1"}, description='{"x":1}'
        )
        assert created.name == name
        assert created.template_type == "CodeInterpreter"
        ready = cp.wait_template_ready(name, timeout=30)
        assert ready.status == "READY"
        assert (ready.cpu, ready.memory, ready.environment) == (1.0, 1024, {"A": "1"})
        assert ready.description == '{"x":1}'
        assert name in {t.name for t in cp.list_templates()}
        with pytest.raises(ConflictError):
            cp.create_template(name)
        cp.delete_template(name)
        cp.delete_template(name)  # already gone counts as done
        with pytest.raises(NotFoundError) as info:
            cp.get_template(name)
    assert info.value.request_id  # the emulator's request id survives the translation
    assert "GetTemplate" in str(info.value)


def test_sandbox_lifecycle_with_custom_id(emulator: Config) -> None:
    name, sandbox_id = _name(), _name("arci-sbx")
    with ControlPlane(emulator) as cp:
        cp.create_template(name)
        cp.wait_template_ready(name, timeout=30)
        try:
            sandbox = cp.create_sandbox(name, sandbox_id=sandbox_id, idle_timeout=120)
            assert sandbox.sandbox_id == sandbox_id
            assert sandbox.template_name == name
            listed = cp.list_sandboxes(template_name=name)
            assert [s.sandbox_id for s in listed] == [sandbox_id]
            assert cp.pause_sandbox(sandbox_id).status == "PAUSED"
            assert cp.resume_sandbox(sandbox_id).status == "READY"
            assert cp.stop_sandbox(sandbox_id).status == "TERMINATED"
            assert cp.delete_sandbox(sandbox_id) is not None
            assert cp.delete_sandbox(sandbox_id) is None  # already gone
            with pytest.raises(NotFoundError):
                cp.get_sandbox(sandbox_id)
        finally:
            cp.delete_template(name)


@pytest.mark.anyio
async def test_async_twin_over_http(emulator: Config) -> None:
    name = _name()
    async with AsyncControlPlane(emulator) as cp:
        await cp.create_template(name)
        template = await cp.wait_template_ready(name, timeout=30)
        assert template.status == "READY"
        sandbox = await cp.create_sandbox(name)
        assert sandbox.sandbox_id
        assert await cp.delete_sandbox(sandbox.sandbox_id) is not None
        await cp.delete_template(name)
        assert name not in {t.name for t in await cp.list_templates()}


def test_unreachable_endpoint_is_a_transport_error() -> None:
    config = Config(control_endpoint="http://127.0.0.1:9", max_retries=0, connect_timeout=1.0)
    with pytest.raises(TransportError, match="AGENTRUN_CONTROL_ENDPOINT"):
        ControlPlane(config).get_template("x")


# ---------------------------------------------------------------- client configuration


def test_client_targets_control_url_with_millisecond_timeouts() -> None:
    config = Config(
        control_endpoint="http://127.0.0.1:8123", connect_timeout=2.5, read_timeout=40.0
    )
    client = build_client(config)
    assert client._endpoint == "127.0.0.1:8123"
    assert client._protocol == "HTTP"
    # darabonba counts milliseconds
    assert (client._connect_timeout, client._read_timeout) == (2500, 40000)
    cloud = build_client(Config(region="cn-shanghai"))
    assert (cloud._endpoint, cloud._protocol) == ("agentrun.cn-shanghai.aliyuncs.com", "HTTPS")


# ---------------------------------------------------------------- exception translation


def test_tea_client_exception_keeps_status_code_and_request_id() -> None:
    exc = tea.ClientException(
        status_code=404,
        code="ERR_NOT_FOUND",
        message="code: 404, template 't' does not exist request id: rid-1",
        request_id="rid-1",
        data={"code": "ERR_NOT_FOUND", "message": "template 't' does not exist"},
    )
    error = translate_error(exc, "GetTemplate")
    assert isinstance(error, NotFoundError)
    assert (error.status_code, error.code, error.request_id) == (404, "ERR_NOT_FOUND", "rid-1")
    assert error.message == "GetTemplate: template 't' does not exist"


def test_tea_throttling_becomes_rate_limit_with_retry_after_in_seconds() -> None:
    exc = tea.ThrottlingException(
        status_code=429, code="Throttling", message="slow down", retry_after=2000, data={}
    )
    error = translate_error(exc, "ListSandboxes")
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 2.0


def test_tea_server_exception_without_body_uses_the_tea_message() -> None:
    exc = tea.ServerException(
        status_code=503, code="None", message="code: 503, busy request id: None", request_id="None"
    )
    error = translate_error(exc, "CreateSandbox")
    assert isinstance(error, ServerError)
    assert error.request_id is None
    assert "busy" in error.message


# ---------------------------------------------------------------- READY wait (stub client)


class _Body:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_map(self) -> dict[str, Any]:
        return {"code": "SUCCESS", "requestId": "r", "data": self._data}


class _Response:
    def __init__(self, data: dict[str, Any]) -> None:
        self.body = _Body(data)


class _StubClient:
    """Answers GetTemplate with a scripted sequence of statuses; records deletes."""

    def __init__(self, statuses: list[str], reason: str = "") -> None:
        self.statuses = statuses
        self.reason = reason
        self.calls: list[str] = []

    def get_template_with_options(self, name: str, headers: Any, runtime: Any) -> _Response:
        self.calls.append("get")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return _Response({"templateName": name, "status": status, "statusReason": self.reason})


def test_wait_ready_polls_until_ready() -> None:
    stub = _StubClient(["CREATING", "CREATING", "READY"])
    cp = ControlPlane(Config(), client=stub)  # type: ignore[arg-type]
    assert cp.wait_template_ready("t", timeout=10, interval=0.01).status == "READY"
    assert stub.calls == ["get", "get", "get"]


def test_wait_ready_fails_with_the_status_reason() -> None:
    stub = _StubClient(["CREATING", "CREATE_FAILED"], reason="image pull failed")
    cp = ControlPlane(Config(), client=stub)  # type: ignore[arg-type]
    with pytest.raises(APIError, match="image pull failed") as info:
        cp.wait_template_ready("t", timeout=10, interval=0.01)
    assert info.value.code == "CREATE_FAILED"


def test_wait_ready_gives_up_at_the_deadline() -> None:
    stub = _StubClient(["CREATING"])
    cp = ControlPlane(Config(), client=stub)  # type: ignore[arg-type]
    with pytest.raises(WaitTimeout, match="not READY"):
        cp.wait_template_ready("t", timeout=0.05, interval=0.01)


class _FlakyClient(_StubClient):
    """Throttles the first GetTemplate, then answers; CreateTemplate always fails with 503."""

    def __init__(self) -> None:
        super().__init__(["READY"])
        self.throttled = False

    def get_template_with_options(self, name: str, headers: Any, runtime: Any) -> _Response:
        if not self.throttled:
            self.throttled = True
            raise tea.ThrottlingException(
                status_code=429, code="Throttling", message="slow", retry_after=10, data={}
            )
        return super().get_template_with_options(name, headers, runtime)

    def create_template_with_options(self, request: Any, headers: Any, runtime: Any) -> Any:
        self.calls.append("create")
        raise tea.ServerException(status_code=503, code="Busy", message="busy", data={})


def test_idempotent_calls_are_retried_but_creates_are_not() -> None:
    stub = _FlakyClient()
    cp = ControlPlane(Config(max_retries=2), client=stub)  # type: ignore[arg-type]
    assert cp.get_template("t").status == "READY"  # 429 (retry-after 10 ms), then 200
    assert stub.calls == ["get"]
    with pytest.raises(ServerError):
        cp.create_template("t")
    assert stub.calls.count("create") == 1  # never re-sent: it may have been created


class _BusyClient(_StubClient):
    """GetTemplate answers 503 `busy` times, then READY; the async twin does the same."""

    def __init__(self, busy: int) -> None:
        super().__init__(["READY"])
        self.busy = busy

    def get_template_with_options(self, name: str, headers: Any, runtime: Any) -> _Response:
        if self.busy:
            self.busy -= 1
            self.calls.append("busy")
            raise tea.ServerException(status_code=503, code="Busy", message="busy", data={})
        return super().get_template_with_options(name, headers, runtime)

    async def get_template_with_options_async(
        self, name: str, headers: Any, runtime: Any
    ) -> _Response:
        return self.get_template_with_options(name, headers, runtime)


def test_the_control_plane_retries_through_the_data_planes_seams() -> None:
    delays: list[float] = []
    policy = RetryPolicy(max_retries=3, jitter=lambda lo, hi: hi)
    stub = _FlakyClient()
    cp = ControlPlane(Config(), client=stub, retry=policy, sleep=delays.append)  # type: ignore[arg-type]
    assert cp.get_template("t").status == "READY"
    assert delays == [0.01]  # the service's Retry-After (10 ms), recorded instead of slept
    busy = _BusyClient(busy=3)
    cp = ControlPlane(Config(), client=busy, retry=policy, sleep=delays.append)  # type: ignore[arg-type]
    assert cp.get_template("t").status == "READY"
    assert delays == [0.01, 0.25, 0.5, 1.0]  # capped exponential backoff, as on the data plane
    with pytest.raises(ServerError):
        ControlPlane(
            Config(),
            client=_BusyClient(busy=5),  # type: ignore[arg-type]
            retry=RetryPolicy(max_retries=1),
            sleep=delays.append,
        ).get_template("t")


@pytest.mark.anyio
async def test_the_async_control_plane_takes_the_same_seams() -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    stub = _BusyClient(busy=2)
    policy = RetryPolicy(max_retries=2, jitter=lambda lo, hi: lo)
    cp = AsyncControlPlane(Config(), client=stub, retry=policy, sleep=record)  # type: ignore[arg-type]
    assert (await cp.get_template("t")).status == "READY"
    assert delays == [0.125, 0.25]
    assert stub.calls == ["busy", "busy", "get"]
