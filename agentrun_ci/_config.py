"""Configuration: one frozen record, filled from arguments first and the environment second."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import ConfigError

__all__ = ["DEFAULT_REGION", "Config"]

DEFAULT_REGION = "cn-hangzhou"

# The variables Alibaba's own SDK reads (agentrun-api.md §5); the first that is set wins.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "access_key_id": ("AGENTRUN_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
    "access_key_secret": ("AGENTRUN_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
    "security_token": ("AGENTRUN_SECURITY_TOKEN", "ALIBABA_CLOUD_SECURITY_TOKEN"),
    "account_id": ("AGENTRUN_ACCOUNT_ID", "FC_ACCOUNT_ID"),
    "region": ("AGENTRUN_REGION", "FC_REGION"),
    "control_endpoint": ("AGENTRUN_CONTROL_ENDPOINT",),
    "data_endpoint": ("AGENTRUN_DATA_ENDPOINT",),
}


def _masked(value: str | None) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen(kw_only=True)
class Config:
    """Where AgentRun is and how to talk to it.

    Build it with `Config.from_env()` (explicit keyword arguments beat the
    environment) or directly. The key secret and the STS token never appear in
    `repr` or `str`; the key id is shortened.
    """

    access_key_id: str | None = attrs.field(default=None, repr=False)
    access_key_secret: str | None = attrs.field(default=None, repr=False)
    security_token: str | None = attrs.field(default=None, repr=False)
    account_id: str | None = None
    region: str = DEFAULT_REGION
    control_endpoint: str | None = None
    data_endpoint: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_retries: int = 3

    def __attrs_post_init__(self) -> None:
        if bool(self.access_key_id) != bool(self.access_key_secret):
            missing = (
                "AGENTRUN_ACCESS_KEY_SECRET" if self.access_key_id else "AGENTRUN_ACCESS_KEY_ID"
            )
            raise ConfigError(
                f"half a key pair: set {missing} too (or unset both to use the local emulator)"
            )
        if self.security_token and not self.access_key_id:
            raise ConfigError(
                "an STS security token needs its key pair: set AGENTRUN_ACCESS_KEY_ID and "
                "AGENTRUN_ACCESS_KEY_SECRET"
            )
        if self.max_retries < 0:
            raise ConfigError("max_retries must be >= 0 (0 turns retries off)")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("connect_timeout and read_timeout must be positive seconds")

    def __repr__(self) -> str:
        key_id = self.access_key_id
        shown = "None" if key_id is None else repr(key_id[:4] + "…")
        return (
            f"Config(access_key_id={shown}, access_key_secret={_masked(self.access_key_secret)}, "
            f"security_token={_masked(self.security_token)}, account_id={self.account_id!r}, "
            f"region={self.region!r}, control_endpoint={self.control_endpoint!r}, "
            f"data_endpoint={self.data_endpoint!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read the AGENTRUN_* variables (ALIBABA_CLOUD_* / FC_* as fallbacks).

        Keyword arguments that are not None win over the environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, names in ENV_VARS.items():
            for name in names:
                if env.get(name):
                    values[field] = env[name]
                    break
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def has_credentials(self) -> bool:
        """True when a full access key pair is configured (the cloud backend's signal)."""
        return bool(self.access_key_id and self.access_key_secret)

    @property
    def control_url(self) -> str:
        """The control-plane base URL (scheme included)."""
        if self.control_endpoint:
            endpoint = self.control_endpoint.rstrip("/")
            return endpoint if "://" in endpoint else "https://" + endpoint
        return f"https://agentrun.{self.region}.aliyuncs.com"

    @property
    def data_url(self) -> str:
        """The data-plane base URL: the `-ram` host when requests are signed."""
        if self.data_endpoint:
            endpoint = self.data_endpoint.rstrip("/")
            return endpoint if "://" in endpoint else "https://" + endpoint
        if not self.account_id:
            raise ConfigError(
                "no data endpoint: set AGENTRUN_ACCOUNT_ID to your Alibaba Cloud main account id "
                "(or AGENTRUN_DATA_ENDPOINT to a full URL)"
            )
        label = f"{self.account_id}-ram" if self.has_credentials else self.account_id
        return f"https://{label}.agentrun-data.{self.region}.aliyuncs.com"
