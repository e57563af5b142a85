"""AsyncControlPlane: templates and sandboxes through Alibaba's `alibabacloud-agentrun20250910`.

The sync `ControlPlane` is generated from this file by scripts/unasync.py; edit
this one. The Alibaba package does the ACS3 signing and the ROA plumbing; this
class adds one reused client aimed at `Config.control_url` (HTTP for the local
emulator), timeouts in the package's milliseconds, a retry policy for the calls
that are safe to repeat, polling with backoff, and translation of the package's
Tea exceptions into our error tree (request ids kept).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio

from .. import _telemetry, _wire
from .._config import Config
from .._errors import (
    AgentRunError,
    APIError,
    InvalidArgumentError,
    NotFoundError,
    RateLimitError,
    RequestTimeout,
    TransportError,
    WaitTimeout,
    error_for_status,
)
from .._models import Sandbox, Template
from .._retry import Failure, RetryPolicy
from .retrying import Retryable, with_retries

if TYPE_CHECKING:
    # Imported where used: the Alibaba package takes ~0.25 s to import, which every
    # `import agentrun_ci` (and an MCP server's handshake) would otherwise pay.
    from alibabacloud_agentrun20250910.client import Client
    from darabonba.runtime import RuntimeOptions

__all__ = ["AsyncControlPlane"]

T = TypeVar("T")
log = logging.getLogger("agentrun_ci.control_plane")

#: template states that end a wait badly (SDK utils/model.py Status)
FAILED_STATES = frozenset({"CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED"})
#: the Alibaba client refuses to sign without a key pair; the unsigned local emulator
#: ignores the signature, and the cloud answers 401 to these (named in the error)
PLACEHOLDER_KEY = "agentrun-ci-no-credentials"


def build_client(config: Config) -> Client:
    """One configured Alibaba client for `config.control_url` (scheme → protocol)."""
    from alibabacloud_agentrun20250910.client import Client
    from alibabacloud_tea_openapi import utils_models as oa_util

    url = urlsplit(config.control_url)
    key_id = config.access_key_id or PLACEHOLDER_KEY
    secret = config.access_key_secret or PLACEHOLDER_KEY
    oa_config = oa_util.Config(
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=config.security_token,
        region_id=config.region,
        endpoint=url.netloc,
        protocol="HTTP" if url.scheme == "http" else "HTTPS",
        # darabonba counts milliseconds (agentrun-api.md §7: the SDK's 600 meant 0.6 s)
        connect_timeout=int(config.connect_timeout * 1000),
        read_timeout=int(config.read_timeout * 1000),
        user_agent="agentrun-ci",
    )
    return Client(oa_config)


def _runtime(config: Config) -> RuntimeOptions:
    from darabonba.runtime import RuntimeOptions

    # Retries are ours (only for calls safe to repeat), so the package's are off.
    return RuntimeOptions(
        autoretry=False,
        max_attempts=0,
        connect_timeout=int(config.connect_timeout * 1000),
        read_timeout=int(config.read_timeout * 1000),
    )


def translate_error(exc: Exception, action: str) -> AgentRunError:
    """Map a Tea / darabonba exception onto our tree, keeping status, code and request id."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        data = getattr(exc, "data", None)
        body: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
        if not (body.get("message") or body.get("Message")):
            body["message"] = _tea_message(exc) or f"{action} failed"
        request_id = getattr(exc, "request_id", None)
        known = body.get("requestId") or body.get("RequestId")
        if request_id and request_id != "None" and not known:
            body["requestId"] = request_id
        retry_after = getattr(exc, "retry_after", None)
        error = error_for_status(
            status,
            body,
            {},
            retry_after=float(retry_after) / 1000.0 if retry_after else None,
        )
        error.message = f"{action}: {error.message}"
        error.args = (str(error),)
        return error
    inner = getattr(exc, "inner_exception", None) or exc
    name = type(inner).__name__
    if "timeout" in name.lower() or isinstance(inner, TimeoutError):
        return RequestTimeout(
            f"{action} timed out ({name}); raise Config.read_timeout / connect_timeout or check "
            "AGENTRUN_CONTROL_ENDPOINT and the network"
        )
    return TransportError(
        f"{action} failed in transit ({name}: {inner}); check AGENTRUN_CONTROL_ENDPOINT, the "
        "region and the network"
    )


def _tea_message(exc: Exception) -> str | None:
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message:
        return None
    # Tea formats "code: 404, <message> request id: <id>"; keep only <message>.
    if message.startswith("code: ") and ", " in message:
        message = message.split(", ", 1)[1]
    return message.rsplit(" request id: ", 1)[0]


def _status_of(exc: Exception) -> int | None:
    """The HTTP status a package exception carries (None: no answer came)."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and status >= 400 else None


def _is_connect_failure(exc: Exception) -> bool:
    # requests wraps a refused connect in RetryError/ConnectionError; aiohttp raises
    # ClientConnectorError. Either way no byte of the request reached the server.
    inner = getattr(exc, "inner_exception", None)
    if inner is None:
        return False
    text = f"{type(inner).__name__} {inner}"
    return any(m in text for m in ("NewConnectionError", "ClientConnectorError", "Cannot connect"))


def _body(wire: dict[str, Any]) -> Any:
    """A request body for the official client that is `wire` as given: its model classes
    drop the keys they do not know (and nested dicts), where we pass them through."""
    return _wire_body_class()(wire)


@functools.cache
def _wire_body_class() -> type:
    from darabonba.model import DaraModel

    class WireBody(DaraModel):  # type: ignore[misc]
        """A JSON object the official client sends as it is (it calls `to_map()`)."""

        def __init__(self, wire: dict[str, Any]) -> None:
            self.wire = wire

        def to_map(self) -> dict[str, Any]:
            return copy.deepcopy(self.wire)

    return WireBody


def _data(response: Any) -> dict[str, Any]:
    body = response.body.to_map() if response.body is not None else {}
    data = body.get("data")
    return data if isinstance(data, dict) else {}


class AsyncControlPlane:
    """Templates ("interpreters") and sandboxes ("sessions") in the AgentRun control API.

    One instance holds one configured Alibaba client; share it and close it.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        client: Client | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config if config is not None else Config.from_env()
        # Seams for tests, as on the data plane: a pinned jitter, a sleep that records.
        self.retry = retry if retry is not None else RetryPolicy(self.config.max_retries)
        self._sleep = sleep if sleep is not None else anyio.sleep
        self._client = client if client is not None else build_client(self.config)
        self._runtime = _runtime(self.config)
        self._closed = False
        self._telemetry = _telemetry.get()
        control = urlsplit(self.config.control_url)
        self._server = (control.hostname, control.port)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.config.control_url!r})"

    async def close(self) -> None:
        """Release the client. Safe to call more than once."""
        self._closed = True

    async def __aenter__(self) -> AsyncControlPlane:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, action: str, send: Callable[[], Any], *, idempotent: bool) -> Any:
        """Run one package call with our retry policy; return its response object."""

        async def attempt(resends: int) -> Any:
            try:
                if self._telemetry is None or not self._telemetry.active():
                    return await send()
                # The package sends the request: one span per attempt at this boundary.
                with self._telemetry.control(action, *self._server, resends) as span:
                    try:
                        return await send()
                    except Exception as exc:
                        span.status = _status_of(exc)
                        raise
            except AgentRunError:
                raise
            except Exception as exc:
                error = translate_error(exc, action)
                failure = Failure(
                    status_code=error.status_code if isinstance(error, APIError) else None,
                    connect_failed=_is_connect_failure(exc),
                    retry_after=error.retry_after if isinstance(error, RateLimitError) else None,
                )
                raise Retryable(failure, error, exc) from exc

        return await with_retries(
            attempt, policy=self.retry, sleep=self._sleep, idempotent=idempotent, what=action
        )

    # ------------------------------------------------------------ templates

    async def create_template(
        self,
        name: str,
        *,
        cpu: float = 2.0,
        memory: int = 4096,
        disk_size: int = 512,
        network_mode: str | None = None,
        idle_timeout: float = 1800,
        ttl: float = 21600,
        environment: dict[str, str] | None = None,
        description: str | None = None,
        template_type: str = "CodeInterpreter",
        network_configuration: Any = None,
        oss_configuration: Any = None,
        nas_config: Any = None,
        log_configuration: Any = None,
        arms_configuration: Any = None,
        container_configuration: Any = None,
        credential_configuration: Any = None,
        scaling_config: Any = None,
        template_configuration: Any = None,
        execution_role_arn: str | None = None,
        workspace_id: str | None = None,
        allow_anonymous_manage: bool | None = None,
        enable_agent: bool | None = None,
        enable_pre_stop: bool | None = None,
        pre_stop_timeout_in_seconds: int | None = None,
        environment_variables: dict[str, str] | None = None,
        sandbox_idle_timeout_in_seconds: int | None = None,
        sandbox_ttlin_seconds: int | None = None,
    ) -> Template:
        """Create a template (it starts CREATING: see wait_template_ready).

        Every field of the official `CreateTemplateInput` is a keyword of the same name;
        a configuration (`network_configuration`, `nas_config`, each item of
        `oss_configuration`, ...) is its `alibabacloud_agentrun20250910` model object or
        a dict with the wire's field names (`{"vpcId": ..., "vswitchIds": [...]}`).
        `network_mode` (default PUBLIC) fills `networkMode` when `network_configuration`
        leaves it out. `environment_variables`, `sandbox_idle_timeout_in_seconds` and
        `sandbox_ttlin_seconds`, when given, win over `environment`, `idle_timeout`, `ttl`.
        """
        body = _wire.wire_fields(
            {
                "template_name": name,
                "template_type": template_type,
                "cpu": float(cpu),
                "memory": int(memory),
                "disk_size": int(disk_size),
                "sandbox_idle_timeout_in_seconds": sandbox_idle_timeout_in_seconds
                if sandbox_idle_timeout_in_seconds is not None
                else int(idle_timeout),
                "sandbox_ttlin_seconds": sandbox_ttlin_seconds
                if sandbox_ttlin_seconds is not None
                else int(ttl),
                "environment_variables": environment_variables
                if environment_variables is not None
                else (dict(environment) if environment else None),
                "description": description,
                "oss_configuration": oss_configuration,
                "nas_config": nas_config,
                "log_configuration": log_configuration,
                "arms_configuration": arms_configuration,
                "container_configuration": container_configuration,
                "credential_configuration": credential_configuration,
                "scaling_config": scaling_config,
                "template_configuration": template_configuration,
                "execution_role_arn": execution_role_arn,
                "workspace_id": workspace_id,
                "allow_anonymous_manage": allow_anonymous_manage,
                "enable_agent": enable_agent,
                "enable_pre_stop": enable_pre_stop,
                "pre_stop_timeout_in_seconds": pre_stop_timeout_in_seconds,
            },
            _wire.TEMPLATE_FIELDS,
            "CreateTemplateInput",
        )
        body["networkConfiguration"] = _wire.network_configuration(
            network_configuration, network_mode
        )
        # What the official package sends when no OSS is configured (agentrun-api.md §2.3)
        body.setdefault("ossConfiguration", [])
        from alibabacloud_agentrun20250910 import models as oa

        request = oa.CreateTemplateRequest(body=_body(body))
        # Not retried on an answer: a lost 200 followed by a retry would read as 409.
        response = await self._call(
            "CreateTemplate",
            lambda: self._client.create_template_with_options_async(request, {}, self._runtime),
            idempotent=False,
        )
        return Template.from_wire(_data(response))

    async def update_template(
        self,
        name: str,
        *,
        cpu: float | None = None,
        memory: int | None = None,
        description: str | None = None,
        network_configuration: Any = None,
        oss_configuration: Any = None,
        nas_config: Any = None,
        log_configuration: Any = None,
        arms_configuration: Any = None,
        container_configuration: Any = None,
        credential_configuration: Any = None,
        scaling_config: Any = None,
        template_configuration: Any = None,
        execution_role_arn: str | None = None,
        workspace_id: str | None = None,
        allow_anonymous_manage: bool | None = None,
        enable_agent: bool | None = None,
        enable_pre_stop: bool | None = None,
        pre_stop_timeout_in_seconds: int | None = None,
        environment_variables: dict[str, str] | None = None,
        sandbox_idle_timeout_in_seconds: int | None = None,
        sandbox_ttlin_seconds: int | None = None,
    ) -> Template:
        """Change a template's fields (UpdateTemplate); sandboxes started afterwards get them.

        Only the fields given are sent (an update of `cpu` leaves the mounts alone);
        each takes what `create_template` takes. The template is UPDATING until the
        service has applied them: see wait_template_ready.
        """
        body = _wire.wire_fields(
            {
                "cpu": None if cpu is None else float(cpu),
                "memory": memory,
                "description": description,
                "network_configuration": network_configuration,
                "oss_configuration": oss_configuration,
                "nas_config": nas_config,
                "log_configuration": log_configuration,
                "arms_configuration": arms_configuration,
                "container_configuration": container_configuration,
                "credential_configuration": credential_configuration,
                "scaling_config": scaling_config,
                "template_configuration": template_configuration,
                "execution_role_arn": execution_role_arn,
                "workspace_id": workspace_id,
                "allow_anonymous_manage": allow_anonymous_manage,
                "enable_agent": enable_agent,
                "enable_pre_stop": enable_pre_stop,
                "pre_stop_timeout_in_seconds": pre_stop_timeout_in_seconds,
                "environment_variables": environment_variables,
                "sandbox_idle_timeout_in_seconds": sandbox_idle_timeout_in_seconds,
                "sandbox_ttlin_seconds": sandbox_ttlin_seconds,
            },
            _wire.UPDATE_TEMPLATE_FIELDS,
            "UpdateTemplateInput",
        )
        if not body:
            raise InvalidArgumentError(
                f"update_template({name!r}) was given no field to change: pass at least one "
                "(cpu=..., nas_config=..., ...)"
            )
        from alibabacloud_agentrun20250910 import models as oa

        request = oa.UpdateTemplateRequest(body=_body(body))
        # The same PUT twice leaves the same template: safe to repeat.
        response = await self._call(
            "UpdateTemplate",
            lambda: self._client.update_template_with_options_async(
                name, request, {}, self._runtime
            ),
            idempotent=True,
        )
        return Template.from_wire(_data(response))

    async def get_template(self, name: str) -> Template:
        response = await self._call(
            "GetTemplate",
            lambda: self._client.get_template_with_options_async(name, {}, self._runtime),
            idempotent=True,
        )
        return Template.from_wire(_data(response))

    async def list_templates(
        self,
        *,
        name: str | None = None,
        status: str | None = None,
        template_type: str | None = None,
    ) -> list[Template]:
        """Every matching template (all pages). `name` matches as the service does."""
        from alibabacloud_agentrun20250910 import models as oa

        out: list[Template] = []
        page = 1
        while True:
            request = oa.ListTemplatesRequest(
                page_number=page,
                page_size=100,
                template_name=name,
                status=status,
                template_type=template_type,
            )
            response = await self._call(
                "ListTemplates",
                lambda r=request: self._client.list_templates_with_options_async(  # type: ignore[misc]
                    r, {}, self._runtime
                ),
                idempotent=True,
            )
            data = _data(response)
            items = [Template.from_wire(i) for i in data.get("items") or [] if isinstance(i, dict)]
            out.extend(items)
            total = data.get("total")
            if not items or (isinstance(total, int) and len(out) >= total) or len(items) < 100:
                return out
            page += 1

    async def delete_template(self, name: str) -> None:
        """Delete a template; one that is already gone counts as deleted."""
        try:
            await self._call(
                "DeleteTemplate",
                lambda: self._client.delete_template_with_options_async(name, {}, self._runtime),
                idempotent=True,
            )
        except NotFoundError:
            return

    async def wait_template_ready(
        self, name: str, *, timeout: float = 300.0, interval: float = 0.5
    ) -> Template:
        """Poll until READY (backoff to 5 s); APIError on *_FAILED, WaitTimeout at the deadline."""
        deadline = time.monotonic() + timeout
        delay = interval
        while True:
            template = await self.get_template(name)
            if template.status == "READY":
                return template
            if template.status in FAILED_STATES:
                raise APIError(
                    f"template {name!r} is {template.status}: "
                    f"{template.status_reason or 'no reason given'}",
                    status_code=200,
                    code=template.status,
                    body=template.raw,
                )
            if time.monotonic() + delay > deadline:
                raise WaitTimeout(
                    f"template {name!r} was not READY after {timeout:g} s (status "
                    f"{template.status!r}); raise the timeout or check the console"
                )
            await anyio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    # ------------------------------------------------------------ sandboxes

    async def create_sandbox(
        self,
        template_name: str,
        *,
        idle_timeout: float | None = None,
        sandbox_id: str | None = None,
        nas_config: Any = None,
        oss_mount_config: Any = None,
        polar_fs_config: Any = None,
    ) -> Sandbox:
        """Start a sandbox from a template; the mounts are as on `AsyncDataPlane.create_sandbox`."""
        from alibabacloud_agentrun20250910 import models as oa

        body = _wire.sandbox_body(
            template_name,
            idle_timeout=idle_timeout,
            sandbox_id=sandbox_id,
            nas_config=nas_config,
            oss_mount_config=oss_mount_config,
            polar_fs_config=polar_fs_config,
        )
        request = oa.CreateSandboxRequest(body=_body(body))
        response = await self._call(
            "CreateSandbox",
            lambda: self._client.create_sandbox_with_options_async(request, {}, self._runtime),
            idempotent=False,
        )
        return Sandbox.from_wire(_data(response))

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        response = await self._call(
            "GetSandbox",
            lambda: self._client.get_sandbox_with_options_async(sandbox_id, {}, self._runtime),
            idempotent=True,
        )
        return Sandbox.from_wire(_data(response))

    async def list_sandboxes(
        self,
        *,
        template_name: str | None = None,
        status: str | None = None,
        template_type: str | None = None,
    ) -> list[Sandbox]:
        """Every matching sandbox (follows nextToken)."""
        from alibabacloud_agentrun20250910 import models as oa

        out: list[Sandbox] = []
        token: str | None = None
        while True:
            request = oa.ListSandboxesRequest(
                max_results=100,
                next_token=token,
                template_name=template_name,
                status=status,
                template_type=template_type,
            )
            response = await self._call(
                "ListSandboxes",
                lambda r=request: self._client.list_sandboxes_with_options_async(  # type: ignore[misc]
                    r, {}, self._runtime
                ),
                idempotent=True,
            )
            data = _data(response)
            out.extend(Sandbox.from_wire(i) for i in data.get("items") or [] if isinstance(i, dict))
            token = data.get("nextToken") or None
            if not token:
                return out

    async def stop_sandbox(self, sandbox_id: str) -> Sandbox:
        response = await self._call(
            "StopSandbox",
            lambda: self._client.stop_sandbox_with_options_async(sandbox_id, {}, self._runtime),
            idempotent=True,
        )
        return Sandbox.from_wire(_data(response))

    async def delete_sandbox(self, sandbox_id: str) -> Sandbox | None:
        """Delete a sandbox (stopping it first); already gone counts as deleted (None)."""
        try:
            response = await self._call(
                "DeleteSandbox",
                lambda: self._client.delete_sandbox_with_options_async(
                    sandbox_id, {}, self._runtime
                ),
                idempotent=True,
            )
        except NotFoundError:
            return None
        data = _data(response)
        return Sandbox.from_wire(data) if data.get("sandboxId") else None

    async def pause_sandbox(self, sandbox_id: str) -> Sandbox:
        response = await self._call(
            "PauseSandbox",
            lambda: self._client.pause_sandbox_with_options_async(sandbox_id, {}, self._runtime),
            idempotent=True,
        )
        return Sandbox.from_wire(_data(response))

    async def resume_sandbox(self, sandbox_id: str) -> Sandbox:
        response = await self._call(
            "ResumeSandbox",
            lambda: self._client.resume_sandbox_with_options_async(sandbox_id, {}, self._runtime),
            idempotent=True,
        )
        return Sandbox.from_wire(_data(response))
