"""API-key access to the data plane: `Config.api_key` (AGENTRUN_API_KEY) sends `X-API-Key`
and `X-Acs-Parent-Id` to the account's non-RAM host, and the emulator (`api_key=`, `local
serve --api-key`) accepts it on the data plane only, refusing a wrong key with 401."""

from __future__ import annotations

import httpx
import pytest
import respx
from support import running_emulator

from agentrun_ci import (
    AuthenticationError,
    CodeInterpreter,
    Config,
    ConfigError,
    ControlPlane,
    DataPlane,
    NotFoundError,
    PermissionDeniedError,
)

KEY = "ak-test-0123456789abcdef"


def test_the_key_comes_from_the_environment_and_is_never_shown() -> None:
    config = Config.from_env({"AGENTRUN_API_KEY": KEY, "AGENTRUN_ACCOUNT_ID": "123"})
    assert config.api_key == KEY
    assert KEY not in repr(config)
    assert "api_key='***'" in repr(config)
    assert config.data_headers == {"X-API-Key": KEY, "X-Acs-Parent-Id": "123"}
    # the API-key host is the account's own, not the `-ram` one signatures go to
    assert config.data_url == "https://123.agentrun-data.cn-hangzhou.aliyuncs.com"
    signed = Config(access_key_id="id", access_key_secret="s", account_id="123")
    assert signed.data_url.startswith("https://123-ram.")
    assert signed.data_headers == {}


@pytest.mark.parametrize("bad", ["", "has space", "tab\there", "ключ"])
def test_a_key_that_cannot_be_one_is_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match="AGENTRUN_API_KEY"):
        Config(api_key=bad, account_id="123")


@respx.mock
def test_data_requests_carry_the_key_and_the_account_and_no_signature() -> None:
    config = Config(api_key=KEY, account_id="123", access_key_id="id", access_key_secret="s")
    route = respx.get("https://123.agentrun-data.cn-hangzhou.aliyuncs.com/sandboxes/s1").mock(
        return_value=httpx.Response(200, json={"code": "SUCCESS", "data": {"sandboxId": "s1"}})
    )
    with DataPlane(config) as data:
        assert data.get_sandbox("s1").sandbox_id == "s1"
    sent = route.calls.last.request.headers
    assert sent["x-api-key"] == KEY
    assert sent["x-acs-parent-id"] == "123"
    assert "agentrun-authorization" not in sent


def test_the_interpreter_with_only_an_api_key_says_what_it_also_needs() -> None:
    config = Config(api_key=KEY, account_id="123")
    with (
        CodeInterpreter(config) as ci,
        pytest.raises(ConfigError, match="AGENTRUN_ACCESS_KEY_ID"),
    ):
        ci.execute_code("1")


def test_the_emulator_takes_the_key_on_the_data_plane_only() -> None:
    pytest.importorskip("jupyter_client")
    from agentrun_ci.local import EmulatorSettings

    settings = EmulatorSettings(spare_kernels=0, api_key=KEY)
    with running_emulator(settings, access_key_id="kid", access_key_secret="ksecret") as (
        _,
        signed,
    ):
        with ControlPlane(signed) as control:
            control.create_template("keyed", memory=1024)
            control.wait_template_ready("keyed")
        keyed = Config(
            api_key=KEY,
            account_id="local",
            control_endpoint=signed.control_endpoint,
            data_endpoint=signed.data_endpoint,
        )
        with DataPlane(keyed) as data:
            sid = data.create_sandbox("keyed").sandbox_id
            assert sid is not None
            try:
                assert data.execute(sid, "6 * 7").text == "42"
            finally:
                data.delete_sandbox(sid)
        wrong = Config(
            api_key="not-the-key",
            account_id="local",
            control_endpoint=signed.control_endpoint,
            data_endpoint=signed.data_endpoint,
        )
        with DataPlane(wrong) as data, pytest.raises(AuthenticationError, match="API key"):
            data.get_sandbox("nope")
        neither = Config(
            account_id="local",
            control_endpoint=signed.control_endpoint,
            data_endpoint=signed.data_endpoint,
        )
        with DataPlane(neither) as data, pytest.raises(PermissionDeniedError, match="X-API-Key"):
            data.get_sandbox("nope")
        # the control plane still takes only signatures
        with ControlPlane(keyed) as control, pytest.raises(PermissionDeniedError):
            control.list_templates()
        with DataPlane(keyed) as data, pytest.raises(NotFoundError):  # past the check
            data.get_sandbox("nope")
        with ControlPlane(signed) as control:
            control.delete_template("keyed")
