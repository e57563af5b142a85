"""Sans-I/O request builders and response parsers (no network)."""

from __future__ import annotations

import httpx
import pytest

from agentrun_ci import APIError, InvalidArgumentError, Sandbox, _wire


def test_execute_body_and_read_timeout() -> None:
    call = _wire.execute("sbx", "1+1", context_id="ctx", language=None, timeout=20)
    assert (call.method, call.path) == ("POST", "/sandboxes/sbx/contexts/execute")
    assert call.json == {"code": "1+1", "timeout": 20.0, "contextId": "ctx"}
    assert call.read_timeout == 20 + _wire.READ_MARGIN
    assert not call.idempotent


def test_execute_without_context_defaults_to_python() -> None:
    call = _wire.execute("sbx", "x", context_id=None, language=None, timeout=5)
    assert call.json["language"] == "python"
    assert "contextId" not in call.json


def test_a_context_start_outwaits_the_emulators_start_deadline() -> None:
    """Creating a context starts a kernel: a slow start that succeeds must not become a
    client RequestTimeout (Config.read_timeout is 60 s; a loaded emulator may take 120 s)."""
    local = pytest.importorskip("agentrun_ci.local")  # the emulator's extra
    deadline = local.EmulatorSettings().kernel_start_timeout
    call = _wire.create_context("sbx", language="python", cwd="/home/user")
    assert call.read_timeout is not None
    assert call.read_timeout > deadline
    # an execute without a context makes the language's default one first
    bare = _wire.execute("sbx", "x", context_id=None, language=None, timeout=5)
    assert bare.read_timeout == 5 + _wire.READ_MARGIN + call.read_timeout


def test_execute_timeout_above_the_cap_names_the_cap_and_the_way_out() -> None:
    with pytest.raises(InvalidArgumentError, match=r"30 s") as info:
        _wire.execute("sbx", "x", context_id=None, language=None, timeout=31)
    assert "run_command" in str(info.value)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("-inf"), True, "5"])
def test_execute_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(InvalidArgumentError):
        _wire.execute("sbx", "x", context_id=None, language=None, timeout=timeout)


def test_unknown_language_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="python, javascript"):
        _wire.create_context("sbx", language="ruby", cwd="/")


def test_empty_sandbox_id_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="sandbox_id"):
        _wire.health("")


def test_path_segments_are_percent_encoded() -> None:
    assert _wire.get_context("s b", "c/d").path == "/sandboxes/s%20b/contexts/c%2Fd"


def test_binary_write_is_base64() -> None:
    call = _wire.write_file("s", "/a.bin", b"\xff\x00", mode="644", create_dir=True)
    assert call.json["encoding"] == "base64"
    assert call.json["content"] == "/wA="


@pytest.mark.parametrize(
    ("builder", "idempotent"),
    [
        (lambda: _wire.create_sandbox("t"), False),
        (lambda: _wire.stop_sandbox("s"), True),
        (lambda: _wire.delete_sandbox("s"), True),
        (lambda: _wire.create_context("s", language="python", cwd="/"), False),
        (lambda: _wire.write_file("s", "/p", "x", mode="644", create_dir=True), False),
        (lambda: _wire.mkdir("s", "/p", parents=True, mode="0755"), True),
        (lambda: _wire.move("s", "/a", "/b"), True),
        (lambda: _wire.remove("s", "/a"), True),
        (lambda: _wire.run_command("s", "ls", cwd=None, timeout=5), False),
        (lambda: _wire.get_sandbox("s"), True),
    ],
)
def test_idempotency_flags(builder: object, idempotent: bool) -> None:
    assert builder().idempotent is idempotent  # type: ignore[operator]


def _response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "https://x/"))


def test_envelope_is_unwrapped() -> None:
    call = _wire.get_sandbox("s")
    sandbox = call.parse(
        _response(200, {"code": "SUCCESS", "requestId": "r", "data": {"sandboxId": "s"}})
    )
    assert sandbox == Sandbox(sandbox_id="s")


def test_flat_sandbox_is_accepted() -> None:
    assert _wire.get_sandbox("s").parse(_response(200, {"sandboxId": "s"})).sandbox_id == "s"


def test_envelope_failure_code_is_an_api_error() -> None:
    body = {"code": "ERR_BAD_REQUEST", "requestId": "r9", "data": None, "message": "nope"}
    with pytest.raises(APIError, match="nope") as info:
        _wire.get_sandbox("s").parse(_response(200, body))
    assert (info.value.code, info.value.request_id) == ("ERR_BAD_REQUEST", "r9")


def test_non_json_success_body_is_an_api_error() -> None:
    response = httpx.Response(
        200,
        content=b"<html>",
        headers={"x-fc-request-id": "fc1"},
        request=httpx.Request("GET", "https://x/"),
    )
    with pytest.raises(APIError, match="not JSON") as info:
        _wire.health("s").parse(response)
    assert info.value.request_id == "fc1"


def test_list_contexts_accepts_a_bare_array() -> None:
    contexts = _wire.list_contexts("s").parse(_response(200, [{"id": "a"}, {"id": "b"}, "junk"]))
    assert [c.id for c in contexts] == ["a", "b"]


def test_delete_context_accepts_204() -> None:
    response = httpx.Response(204, request=httpx.Request("DELETE", "https://x/"))
    assert _wire.delete_context("s", "c").parse(response) is None


# ---------------------------------------------------------------- template and mount fields


def _official_keys(model: type) -> dict[str, str]:
    """A model's keyword → its wire name, read off the installed official package: each
    field set alone to a stand-in whose `to_map()` is empty."""
    import inspect
    from types import SimpleNamespace

    stand_in = SimpleNamespace(to_map=lambda: {}, validate=lambda: None)
    empty = set(model().to_map())  # ossConfiguration is always sent, as []
    out: dict[str, str] = {}
    for name in inspect.signature(model.__init__).parameters:
        if name == "self":
            continue
        for value in (stand_in, [stand_in]):
            try:
                keys = set(model(**{name: value}).to_map()) - empty
            except TypeError:
                continue
            break
        out[name] = keys.pop() if keys else "ossConfiguration"
    return out


def test_the_field_tables_are_the_official_packages() -> None:
    models = pytest.importorskip("alibabacloud_agentrun20250910.models")
    assert _official_keys(models.CreateTemplateInput) == _wire.TEMPLATE_FIELDS
    assert _official_keys(models.UpdateTemplateInput) == _wire.UPDATE_TEMPLATE_FIELDS
    sandbox = _official_keys(models.CreateSandboxInput)
    assert {k: sandbox[k] for k in _wire.SANDBOX_MOUNT_FIELDS} == _wire.SANDBOX_MOUNT_FIELDS


def test_fields_take_model_objects_or_wire_dicts_and_keep_unknown_keys() -> None:
    models = pytest.importorskip("alibabacloud_agentrun20250910.models")
    network = models.NetworkConfiguration(network_mode="PRIVATE", vpc_id="vpc-1")
    as_object = _wire.wire_fields(
        {
            "network_configuration": network,
            "oss_configuration": [models.OssConfiguration(bucket_name="b")],
        },
        _wire.TEMPLATE_FIELDS,
        "CreateTemplateInput",
    )
    as_dict = _wire.wire_fields(
        {"network_configuration": network.to_map(), "oss_configuration": [{"bucketName": "b"}]},
        _wire.TEMPLATE_FIELDS,
        "CreateTemplateInput",
    )
    assert (
        as_object
        == as_dict
        == {
            "networkConfiguration": {"networkMode": "PRIVATE", "vpcId": "vpc-1"},
            "ossConfiguration": [{"bucketName": "b"}],
        }
    )
    future = _wire.wire_fields({"nas_config": {"newKey": 1}}, _wire.TEMPLATE_FIELDS, "x")
    assert future == {"nasConfig": {"newKey": 1}}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"vpc_id": "vpc-1"}, "no field 'vpc_id'"),
        ({"nas_config": "nas.example:/"}, "nas_config must be an alibabacloud_agentrun20250910"),
        ({"oss_configuration": {"bucketName": "b"}}, "oss_configuration must be a list"),
        ({"oss_configuration": ["b"]}, r"oss_configuration\[0\] must be"),
        ({"allow_anonymous_manage": "yes"}, "allow_anonymous_manage must be bool"),
        ({"memory": True}, "memory must be int"),
    ],
)
def test_a_bad_field_is_refused_naming_it(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        _wire.wire_fields(fields, _wire.TEMPLATE_FIELDS, "CreateTemplateInput")


def test_network_mode_fills_in_or_must_agree() -> None:
    assert _wire.network_configuration(None, None) == {"networkMode": "PUBLIC"}
    assert _wire.network_configuration({"vpcId": "v"}, "PRIVATE") == {
        "vpcId": "v",
        "networkMode": "PRIVATE",
    }
    with pytest.raises(InvalidArgumentError, match="contradicts"):
        _wire.network_configuration({"networkMode": "PUBLIC"}, "PRIVATE")


def test_create_sandbox_sends_the_mounts_as_wire_objects() -> None:
    call = _wire.create_sandbox(
        "t", nas_config={"mountPoints": []}, polar_fs_config={"userId": 1, "mountPoints": []}
    )
    assert call.json == {
        "templateName": "t",
        "nasConfig": {"mountPoints": []},
        "polarFsConfig": {"userId": 1, "mountPoints": []},
    }
    assert call.idempotent is False
