"""Sans-I/O core of the data plane: one builder per endpoint, one parser per answer.

A builder returns a `Call`: what to send (method, path, query, JSON body,
timeout), whether it is idempotent (the retry policy needs to know), and how to
turn the answer into a model. `AsyncDataPlane` and the generated `DataPlane`
only send calls; nothing here does I/O, so both twins share every line of it.

Wire facts are from agentrun-api.md §3 (paths have no version prefix; sandbox
lifecycle answers carry the `{code: "SUCCESS", data}` envelope; in-sandbox
routes answer bare JSON).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import attrs
import httpx

from ._errors import APIError, InvalidArgumentError, error_for_status, request_id_from
from ._models import (
    CommandResult,
    Context,
    Execution,
    FileContent,
    FileEntry,
    Health,
    ProcessInfo,
    Sandbox,
)
from ._retry import parse_retry_after

__all__ = ["EXECUTE_TIMEOUT_CAP", "LANGUAGES", "Call"]

T = TypeVar("T")

#: the service caps one execute (and one command) at 30 s (agentrun-api.md §3.3, §3.4)
EXECUTE_TIMEOUT_CAP = 30.0
#: extra read time on top of an execute's own timeout, for the round trip
READ_MARGIN = 15.0
#: how long creating a context may take to answer: it starts a kernel. The local
#: emulator gives a start up to 120 s once its turn comes (kernel_start_timeout) and
#: queues starts on a loaded machine; the service's own bound is not documented
#: (inferred: seconds). A read timeout below this would turn a slow start that succeeds
#: into a RequestTimeout, and leave its context running unknown to the caller.
CONTEXT_START_WAIT = 180.0
LANGUAGES = ("python", "javascript")
DEFAULT_CWD = "/home/user"


@attrs.frozen
class Call(Generic[T]):
    """One request to make and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    idempotent: bool = True
    #: read timeout override in seconds (execute/command wait for the code to finish)
    read_timeout: float | None = None


# ------------------------------------------------------------------ answers


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(
            f"the service answered {response.status_code} with a body that is not JSON",
            status_code=response.status_code,
            code="INVALID_RESPONSE",
            request_id=request_id_from(response.headers),
        ) from exc


def error_from_response(response: httpx.Response) -> APIError:
    """The typed APIError for an error response (body must have been read)."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = response.text
    return error_for_status(
        response.status_code,
        body,
        response.headers,
        reason=response.reason_phrase,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def raise_for_status(response: httpx.Response) -> None:
    """Raise the typed APIError for an error response (body must have been read)."""
    if response.status_code >= 400:
        raise error_from_response(response)


def _envelope(response: httpx.Response) -> dict[str, Any]:
    """Unwrap `{code: "SUCCESS", requestId, data}`; DOC-CI also shows the flat object."""
    body = _json(response)
    if not isinstance(body, dict):
        return {}
    if "data" in body and "code" in body:
        if body["code"] != "SUCCESS":
            raise APIError(
                str(body.get("message") or f"the service answered code {body['code']!r}"),
                status_code=response.status_code,
                code=str(body["code"]),
                request_id=body.get("requestId"),
                body=body,
            )
        data = body["data"]
        return data if isinstance(data, dict) else {}
    return body


def _sandbox(response: httpx.Response) -> Sandbox:
    return Sandbox.from_wire(_envelope(response))


def _maybe_sandbox(response: httpx.Response) -> Sandbox | None:
    data = _envelope(response)
    return Sandbox.from_wire(data) if data.get("sandboxId") else None


def _entry(response: httpx.Response) -> FileEntry:
    body = _json(response)
    entry = body.get("entry", body) if isinstance(body, dict) else {}
    return FileEntry.from_wire(entry if isinstance(entry, dict) else {})


def _none(response: httpx.Response) -> None:
    return None


def _list(key: str, model: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], list[T]]:
    def parse(response: httpx.Response) -> list[T]:
        body = _json(response)
        items = body.get(key, []) if isinstance(body, dict) else body
        return [model(item) for item in items or [] if isinstance(item, Mapping)]

    return parse


def _model(model: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], T]:
    def parse(response: httpx.Response) -> T:
        body = _json(response)
        return model(body if isinstance(body, Mapping) else {})

    return parse


# ------------------------------------------------------------------ validation


def check_timeout(timeout: float, *, what: str = "execution") -> float:
    # `not timeout > 0` also refuses NaN, whose deadline would never come
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidArgumentError(f"{what} timeout must be positive seconds, got {timeout!r}")
    if timeout > EXECUTE_TIMEOUT_CAP:
        raise InvalidArgumentError(
            f"{what} timeout={timeout:g} s exceeds the service cap of {EXECUTE_TIMEOUT_CAP:g} s "
            "per call; split the work into shorter calls, or start a long job in the background "
            "with run_command('nohup … &') and poll its output file"
        )
    return float(timeout)


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise InvalidArgumentError(
            f"unknown language {language!r}: AgentRun contexts support {', '.join(LANGUAGES)}"
        )
    return language


def _sandbox_path(sandbox_id: str, suffix: str = "") -> str:
    if not sandbox_id:
        raise InvalidArgumentError("sandbox_id is empty: start a session first")
    return f"/sandboxes/{quote(sandbox_id, safe='')}{suffix}"


# ------------------------------------------------------------------ sandboxes


def create_sandbox(
    template_name: str,
    *,
    idle_timeout: float | None = None,
    sandbox_id: str | None = None,
    nas_config: Any = None,
    oss_mount_config: Any = None,
    polar_fs_config: Any = None,
) -> Call[Sandbox]:
    body = sandbox_body(
        template_name,
        idle_timeout=idle_timeout,
        sandbox_id=sandbox_id,
        nas_config=nas_config,
        oss_mount_config=oss_mount_config,
        polar_fs_config=polar_fs_config,
    )
    # A retried create could make two sandboxes; only connect failures are retried.
    return Call("POST", "/sandboxes", _sandbox, json=body, idempotent=False)


def get_sandbox(sandbox_id: str) -> Call[Sandbox]:
    return Call("GET", _sandbox_path(sandbox_id), _sandbox)


def stop_sandbox(sandbox_id: str) -> Call[Sandbox]:
    # Stop is idempotent on the service (stopping a TERMINATED sandbox is a no-op).
    return Call("POST", _sandbox_path(sandbox_id, "/stop"), _sandbox, idempotent=True)


def delete_sandbox(sandbox_id: str) -> Call[Sandbox | None]:
    return Call("DELETE", _sandbox_path(sandbox_id), _maybe_sandbox)


def health(sandbox_id: str) -> Call[Health]:
    return Call("GET", _sandbox_path(sandbox_id, "/health"), _model(Health.from_wire))


# ------------------------------------------------------------------ contexts


def create_context(sandbox_id: str, *, language: str, cwd: str) -> Call[Context]:
    body = {"language": check_language(language), "cwd": cwd}
    return Call(
        "POST",
        _sandbox_path(sandbox_id, "/contexts"),
        _model(Context.from_wire),
        json=body,
        idempotent=False,
        read_timeout=CONTEXT_START_WAIT,
    )


def list_contexts(sandbox_id: str) -> Call[list[Context]]:
    return Call("GET", _sandbox_path(sandbox_id, "/contexts"), _list("items", Context.from_wire))


def get_context(sandbox_id: str, context_id: str) -> Call[Context]:
    path = _sandbox_path(sandbox_id, f"/contexts/{quote(context_id, safe='')}")
    return Call("GET", path, _model(Context.from_wire))


def delete_context(sandbox_id: str, context_id: str) -> Call[None]:
    path = _sandbox_path(sandbox_id, f"/contexts/{quote(context_id, safe='')}")
    return Call("DELETE", path, _none)


def execute(
    sandbox_id: str,
    code: str,
    *,
    context_id: str | None,
    language: str | None,
    timeout: float,
) -> Call[Execution]:
    if not isinstance(code, str):
        raise InvalidArgumentError(f"code must be a string, got {type(code).__name__}")
    body: dict[str, Any] = {"code": code, "timeout": check_timeout(timeout)}
    if context_id is not None:
        body["contextId"] = context_id
    if language is not None or context_id is None:
        # Without a context the service needs a language; the SDK defaults to python.
        body["language"] = check_language(language or "python")
    return Call(
        "POST",
        _sandbox_path(sandbox_id, "/contexts/execute"),
        _model(Execution.from_wire),
        json=body,
        idempotent=False,
        # without a context the service makes the language's default one first
        read_timeout=timeout + READ_MARGIN + (CONTEXT_START_WAIT if context_id is None else 0),
    )


# ------------------------------------------------------------------ files


def read_file(sandbox_id: str, path: str) -> Call[FileContent]:
    return Call(
        "GET",
        _sandbox_path(sandbox_id, "/files"),
        _model(FileContent.from_wire),
        params={"path": path},
    )


def write_file(
    sandbox_id: str, path: str, content: str | bytes, *, mode: str, create_dir: bool
) -> Call[FileEntry]:
    import base64

    if isinstance(content, bytes):
        try:
            text, encoding = content.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(content).decode("ascii"), "base64"
    else:
        text, encoding = content, "utf-8"
    body = {
        "path": path,
        "content": text,
        "mode": mode,
        "encoding": encoding,
        "createDir": create_dir,
    }
    # Not documented as idempotent (only mkdir/move/remove are), so it is never re-sent.
    return Call("POST", _sandbox_path(sandbox_id, "/files"), _entry, json=body, idempotent=False)


def list_files(sandbox_id: str, path: str, *, depth: int) -> Call[list[FileEntry]]:
    if depth < 1:
        raise InvalidArgumentError(f"depth must be >= 1, got {depth}")
    return Call(
        "GET",
        _sandbox_path(sandbox_id, "/filesystem"),
        _list("entries", FileEntry.from_wire),
        params={"path": path, "depth": str(depth)},
    )


def stat(sandbox_id: str, path: str) -> Call[FileEntry]:
    return Call("GET", _sandbox_path(sandbox_id, "/filesystem/stat"), _entry, params={"path": path})


def mkdir(sandbox_id: str, path: str, *, parents: bool, mode: str) -> Call[FileEntry]:
    body = {"path": path, "parents": parents, "mode": mode}
    # mkdir, move and remove are documented idempotent.
    return Call("POST", _sandbox_path(sandbox_id, "/filesystem/mkdir"), _entry, json=body)


def move(sandbox_id: str, source: str, destination: str) -> Call[FileEntry]:
    body = {"source": source, "destination": destination}
    return Call("POST", _sandbox_path(sandbox_id, "/filesystem/move"), _entry, json=body)


def remove(sandbox_id: str, path: str) -> Call[None]:
    return Call("POST", _sandbox_path(sandbox_id, "/filesystem/remove"), _none, json={"path": path})


def upload_path(sandbox_id: str) -> str:
    return _sandbox_path(sandbox_id, "/filesystem/upload")


def download(sandbox_id: str, path: str) -> Call[None]:
    return Call(
        "GET", _sandbox_path(sandbox_id, "/filesystem/download"), _none, params={"path": path}
    )


def parse_upload(response: httpx.Response) -> FileEntry:
    return _entry(response)


# ------------------------------------------------------------------ processes


def run_command(
    sandbox_id: str, command: str, *, cwd: str | None, timeout: float
) -> Call[CommandResult]:
    body: dict[str, Any] = {"command": command, "timeout": check_timeout(timeout, what="command")}
    if cwd is not None:
        body["cwd"] = cwd
    return Call(
        "POST",
        _sandbox_path(sandbox_id, "/processes/cmd"),
        _model(CommandResult.from_wire),
        json=body,
        idempotent=False,
        read_timeout=timeout + READ_MARGIN,
    )


def list_processes(sandbox_id: str) -> Call[list[ProcessInfo]]:
    return Call(
        "GET", _sandbox_path(sandbox_id, "/processes"), _list("items", ProcessInfo.from_wire)
    )


def get_process(sandbox_id: str, pid: str) -> Call[ProcessInfo]:
    path = _sandbox_path(sandbox_id, f"/processes/{quote(str(pid), safe='')}")
    return Call("GET", path, _model(ProcessInfo.from_wire))


def kill_process(sandbox_id: str, pid: str) -> Call[None]:
    path = _sandbox_path(sandbox_id, f"/processes/{quote(str(pid), safe='')}")
    return Call("DELETE", path, _none)


# ------------------------------------------------------------------ template and mount fields

#: CreateTemplateInput's fields: the official package's keyword (snake_case) → the wire
#: name (its `to_map()` key). UpdateTemplateInput has the same but `disk_size`,
#: `template_name` and `template_type` (tests check both against the installed package).
TEMPLATE_FIELDS: dict[str, str] = {
    "allow_anonymous_manage": "allowAnonymousManage",
    "arms_configuration": "armsConfiguration",
    "container_configuration": "containerConfiguration",
    "cpu": "cpu",
    "credential_configuration": "credentialConfiguration",
    "description": "description",
    "disk_size": "diskSize",
    "enable_agent": "enableAgent",
    "enable_pre_stop": "enablePreStop",
    "environment_variables": "environmentVariables",
    "execution_role_arn": "executionRoleArn",
    "log_configuration": "logConfiguration",
    "memory": "memory",
    "nas_config": "nasConfig",
    "network_configuration": "networkConfiguration",
    "oss_configuration": "ossConfiguration",
    "pre_stop_timeout_in_seconds": "preStopTimeoutInSeconds",
    "sandbox_idle_timeout_in_seconds": "sandboxIdleTimeoutInSeconds",
    "sandbox_ttlin_seconds": "sandboxTTLInSeconds",
    "scaling_config": "scalingConfig",
    "template_configuration": "templateConfiguration",
    "template_name": "templateName",
    "template_type": "templateType",
    "workspace_id": "workspaceId",
}
UPDATE_TEMPLATE_FIELDS: dict[str, str] = {
    k: v
    for k, v in TEMPLATE_FIELDS.items()
    if k not in ("disk_size", "template_name", "template_type")
}
#: CreateSandboxInput's mount fields (the rest are `create_sandbox`'s own arguments)
SANDBOX_MOUNT_FIELDS: dict[str, str] = {
    "nas_config": "nasConfig",
    "oss_mount_config": "ossMountConfig",
    "polar_fs_config": "polarFsConfig",
}
#: the fields whose value is a list of objects; every other field not listed in
#: _SCALARS is one object (an official model, or a dict with the wire's field names)
_LISTS = frozenset({"oss_configuration"})
_SCALARS: dict[str, tuple[type, ...]] = {
    "allow_anonymous_manage": (bool,),
    "cpu": (int, float),
    "description": (str,),
    "disk_size": (int,),
    "enable_agent": (bool,),
    "enable_pre_stop": (bool,),
    "environment_variables": (Mapping,),
    "execution_role_arn": (str,),
    "memory": (int,),
    "pre_stop_timeout_in_seconds": (int,),
    "sandbox_idle_timeout_in_seconds": (int,),
    "sandbox_ttlin_seconds": (int,),
    "template_name": (str,),
    "template_type": (str,),
    "workspace_id": (str,),
}


def wire_object(value: Any, field: str) -> dict[str, Any]:
    """One configuration object as the wire's JSON object: an official model object
    (its `to_map()`) or a mapping with the wire's field names, passed through as given
    (keys the documentation does not list are kept: it is not complete)."""
    to_map = getattr(value, "to_map", None)
    if callable(to_map) and not isinstance(value, Mapping):
        mapped = to_map()
        return dict(mapped) if isinstance(mapped, Mapping) else {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    raise InvalidArgumentError(
        f"{field} must be an alibabacloud_agentrun20250910 model object or a dict with the "
        f"wire's field names, got {type(value).__name__}"
    )


def wire_field(field: str, value: Any) -> Any:
    """A CreateTemplateInput / CreateSandboxInput field's value as the wire carries it."""
    if field in _SCALARS:
        kinds = _SCALARS[field]
        # bool is an int: a flag given where a number belongs is a mistake, not 1
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise InvalidArgumentError(f"{field} must be {names}, got {value!r}")
        return dict(value) if isinstance(value, Mapping) else value
    if field in _LISTS:
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise InvalidArgumentError(
                f"{field} must be a list of model objects or dicts (one per mount), "
                f"got {type(value).__name__}"
            )
        return [wire_object(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return wire_object(value, field)


def wire_fields(fields: Mapping[str, Any], allowed: Mapping[str, str], what: str) -> dict[str, Any]:
    """`{snake_name: value}` (None: not given) → `{wireName: wire value}`; an unknown
    name is an InvalidArgumentError listing the known ones."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in allowed:
            raise InvalidArgumentError(
                f"{what} has no field {name!r}: use the official package's names "
                f"({', '.join(sorted(allowed))})"
            )
        if value is not None:
            out[allowed[name]] = wire_field(name, value)
    return out


def snake_fields(wire: Mapping[str, Any], allowed: Mapping[str, str], what: str) -> dict[str, Any]:
    """A JSON object with the wire's names (a file's) → `{snake_name: value}`."""
    back = {v: k for k, v in allowed.items()}
    out: dict[str, Any] = {}
    for key, value in wire.items():
        if key in back:
            out[back[key]] = value
        elif key in allowed:  # the snake name itself
            out[key] = value
        else:
            raise InvalidArgumentError(
                f"{what} has no field {key!r}: use the wire's names ({', '.join(sorted(back))})"
            )
    return out


def sandbox_body(
    template_name: str,
    *,
    idle_timeout: float | None = None,
    sandbox_id: str | None = None,
    nas_config: Any = None,
    oss_mount_config: Any = None,
    polar_fs_config: Any = None,
) -> dict[str, Any]:
    """CreateSandboxInput's JSON body (the data and the control plane send the same)."""
    body: dict[str, Any] = {"templateName": template_name}
    if idle_timeout is not None:
        body["sandboxIdleTimeoutSeconds"] = int(idle_timeout)
    if sandbox_id is not None:
        body["sandboxId"] = sandbox_id
    mounts = {
        "nas_config": nas_config,
        "oss_mount_config": oss_mount_config,
        "polar_fs_config": polar_fs_config,
    }
    body.update(wire_fields(mounts, SANDBOX_MOUNT_FIELDS, "CreateSandboxInput"))
    return body


def network_configuration(value: Any, network_mode: str | None) -> dict[str, Any]:
    """networkConfiguration from a configuration (object or wire dict: `vpcId`,
    `vswitchIds`, `securityGroupId`, ...) and/or a mode; PUBLIC when neither names one."""
    config = wire_object(value, "network_configuration") if value is not None else {}
    given = config.get("networkMode")
    if network_mode is not None and given is not None and str(given) != str(network_mode):
        raise InvalidArgumentError(
            f"network_mode={network_mode!r} contradicts network_configuration's networkMode "
            f"{given!r}: give the mode in one place"
        )
    if given is None:
        config["networkMode"] = str(network_mode) if network_mode is not None else "PUBLIC"
    return config
