"""Config: environment precedence, derived endpoints, hidden secrets, ConfigError naming the fix."""

from __future__ import annotations

import pytest

from agentrun_ci import Config, ConfigError


def test_agentrun_variables_win_over_fallbacks() -> None:
    env = {
        "AGENTRUN_ACCESS_KEY_ID": "ak-primary",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "ak-fallback",
        "AGENTRUN_ACCESS_KEY_SECRET": "sk",
        "AGENTRUN_ACCOUNT_ID": "111",
        "FC_ACCOUNT_ID": "222",
        "AGENTRUN_REGION": "cn-shanghai",
        "FC_REGION": "cn-beijing",
    }
    config = Config.from_env(env)
    assert config.access_key_id == "ak-primary"
    assert config.account_id == "111"
    assert config.region == "cn-shanghai"


def test_fallback_variables_are_read() -> None:
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "ak",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sk",
        "ALIBABA_CLOUD_SECURITY_TOKEN": "sts",
        "FC_ACCOUNT_ID": "222",
        "FC_REGION": "cn-beijing",
    }
    config = Config.from_env(env)
    assert (config.access_key_id, config.access_key_secret) == ("ak", "sk")
    assert config.security_token == "sts"
    assert (config.account_id, config.region) == ("222", "cn-beijing")


def test_region_defaults_to_hangzhou() -> None:
    assert Config.from_env({}).region == "cn-hangzhou"


def test_explicit_arguments_beat_the_environment_and_none_does_not() -> None:
    env = {"AGENTRUN_ACCOUNT_ID": "111", "AGENTRUN_REGION": "cn-shanghai"}
    config = Config.from_env(env, account_id="999", region=None)
    assert config.account_id == "999"
    assert config.region == "cn-shanghai"


def test_unrelated_variables_are_ignored() -> None:
    config = Config.from_env({"AGENTRUN_SDK_DEBUG": "1", "ACCOUNT_ID": "1"})
    assert config == Config()


def test_data_endpoint_is_used_verbatim() -> None:
    env = {
        "AGENTRUN_DATA_ENDPOINT": "http://127.0.0.1:8080",
        "AGENTRUN_ACCESS_KEY_ID": "a",
        "AGENTRUN_ACCESS_KEY_SECRET": "b",
    }
    assert Config.from_env(env).data_url == "http://127.0.0.1:8080"


def test_data_url_uses_ram_host_with_a_key_pair() -> None:
    config = Config(
        access_key_id="a", access_key_secret="b", account_id="123", region="cn-shenzhen"
    )
    assert config.data_url == "https://123-ram.agentrun-data.cn-shenzhen.aliyuncs.com"


def test_data_url_uses_plain_host_without_keys() -> None:
    config = Config(account_id="123")
    assert config.data_url == "https://123.agentrun-data.cn-hangzhou.aliyuncs.com"


def test_control_url_default_and_override() -> None:
    assert Config(region="cn-shanghai").control_url == "https://agentrun.cn-shanghai.aliyuncs.com"
    env = {"AGENTRUN_CONTROL_ENDPOINT": "agentrun-vpc.cn-hangzhou.aliyuncs.com"}
    assert Config.from_env(env).control_url == "https://agentrun-vpc.cn-hangzhou.aliyuncs.com"


def test_missing_account_id_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="AGENTRUN_ACCOUNT_ID"):
        _ = Config(access_key_id="a", access_key_secret="b").data_url


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"AGENTRUN_ACCESS_KEY_ID": "a"}, "AGENTRUN_ACCESS_KEY_SECRET"),
        ({"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "b"}, "AGENTRUN_ACCESS_KEY_ID"),
    ],
)
def test_half_a_key_pair_names_the_other_half(env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        Config.from_env(env)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_secrets_are_hidden_from_repr_and_str() -> None:
    config = Config(
        access_key_id="LTAIverysecretid", access_key_secret="sk-SECRET", security_token="tok-SECRET"
    )
    for text in (repr(config), str(config)):
        assert "sk-SECRET" not in text
        assert "tok-SECRET" not in text
        assert "LTAIverysecretid" not in text


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.region = "x"  # type: ignore[misc]


def test_negative_retries_are_rejected() -> None:
    with pytest.raises(ConfigError, match="max_retries"):
        Config(max_retries=-1)


def test_sts_token_without_key_pair_is_rejected() -> None:
    with pytest.raises(ConfigError, match="AGENTRUN_ACCESS_KEY_ID"):
        Config.from_env({"AGENTRUN_SECURITY_TOKEN": "sts"})


def test_plane_construction_needs_a_data_url() -> None:
    from agentrun_ci import DataPlane

    with pytest.raises(ConfigError, match="AGENTRUN_ACCOUNT_ID"):
        DataPlane(Config())


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not a url", "spaces"),
        ("ftp://x", "scheme 'ftp'"),
        ("https://", "no valid host"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://user@example.com", "user@"),
        ("example.com?x=1", "query"),
    ],
)
@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("AGENTRUN_CONTROL_ENDPOINT", "control_endpoint"),
        ("AGENTRUN_DATA_ENDPOINT", "data_endpoint"),
    ],
)
def test_bad_endpoint_urls_are_refused_when_the_config_is_made(
    value: str, why: str, variable: str, field: str
) -> None:
    env = {"AGENTRUN_ACCESS_KEY_ID": "a", "AGENTRUN_ACCESS_KEY_SECRET": "b", variable: value}
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    message = str(info.value)
    assert variable in message
    assert repr(value) in message
    assert why in message
    with pytest.raises(ConfigError, match=variable):
        Config(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "https://agentrun.cn-hangzhou.aliyuncs.com",
        "agentrun-vpc.cn-hangzhou.aliyuncs.com",
        "http://127.0.0.1:8080",
        "http://[::1]:8080/",
        "http://emulator_1:8000/prefix",
    ],
)
def test_good_endpoint_urls_are_accepted(value: str) -> None:
    config = Config(control_endpoint=value, data_endpoint=value)
    assert config.control_url.startswith(("http://", "https://"))


def test_a_data_endpoint_alone_without_keys_is_not_silently_ignored() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"AGENTRUN_DATA_ENDPOINT": "http://127.0.0.1:8080"})
    message = str(info.value)
    assert "AGENTRUN_CONTROL_ENDPOINT" in message
    assert "THIS machine" in message
    # with its control twin, or with a key pair, it is used
    both = {
        "AGENTRUN_DATA_ENDPOINT": "http://127.0.0.1:8080",
        "AGENTRUN_CONTROL_ENDPOINT": "http://127.0.0.1:8080",
    }
    assert Config.from_env(both).data_url == "http://127.0.0.1:8080"
