"""Configuration: one frozen record, filled from arguments first and the environment second."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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
    "api_key": ("AGENTRUN_API_KEY",),
    "region": ("AGENTRUN_REGION", "FC_REGION"),
    "control_endpoint": ("AGENTRUN_CONTROL_ENDPOINT",),
    "data_endpoint": ("AGENTRUN_DATA_ENDPOINT",),
}


# A host name or an IPv4 address (IPv6 literals are checked with `ipaddress`).
_HOST = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")


def _endpoint_problem(value: str) -> str | None:
    """Why `value` is not an endpoint URL we can use, or None when it is.

    Accepted: `https://host[:port][/path]`, `http://…` (an emulator), or a bare
    `host[:port]` (https is assumed, as Alibaba's SDK does).
    """
    if not value or any(c.isspace() for c in value):
        return "it is empty or contains spaces"
    url = value if "://" in value else "https://" + value
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"it does not parse as a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"the scheme {parts.scheme!r} is not http or https"
    if "@" in parts.netloc:
        return "it contains user@ credentials (give them as the AccessKey variables instead)"
    host = parts.hostname or ""
    if "[" in parts.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    elif not _HOST.match(host):
        return "it has no valid host name"
    if port == 0:
        return "port 0 is not a port a server listens on"
    if parts.query or parts.fragment:
        return "it has a query or a fragment (give only scheme, host, port and path)"
    return None


# an HTTP header value we can send as it is
_HEADER_VALUE = re.compile(r"^[\x21-\x7e]{1,512}$")


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
    #: a data-plane API key (AgentRun console → API keys): sent as `X-API-Key`, with the
    #: account id as `X-Acs-Parent-Id`, to the account's non-RAM data host. The control plane
    #: (templates) still needs the key pair.
    api_key: str | None = attrs.field(default=None, repr=False)
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
        if self.api_key is not None and not _HEADER_VALUE.match(self.api_key):
            raise ConfigError(
                "AGENTRUN_API_KEY (api_key) is not an API key: it must be the key the AgentRun "
                "console showed, printable ASCII without spaces; copy it again, or unset it"
            )
        if self.security_token and not self.access_key_id:
            raise ConfigError(
                "an STS security token needs its key pair: set AGENTRUN_ACCESS_KEY_ID and "
                "AGENTRUN_ACCESS_KEY_SECRET"
            )
        for field, variable in (
            ("control_endpoint", "AGENTRUN_CONTROL_ENDPOINT"),
            ("data_endpoint", "AGENTRUN_DATA_ENDPOINT"),
        ):
            value = getattr(self, field)
            if value is None:
                continue
            problem = _endpoint_problem(value)
            if problem is not None:
                raise ConfigError(
                    f"{variable} ({field}) = {value!r} is not a usable URL: {problem}. "
                    "Give https://host[:port] (or http://127.0.0.1:PORT for an emulator; "
                    "`agentrun-ci local serve` prints the values to export), or unset it"
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
            f"security_token={_masked(self.security_token)}, api_key={_masked(self.api_key)}, "
            f"account_id={self.account_id!r}, "
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
        config = cls(**values)
        if config.data_endpoint and not config.control_endpoint and not config.has_credentials:
            # Without a key pair the facade only goes remote with both endpoints (an emulator
            # elsewhere); a data endpoint alone would be passed over for the local default.
            raise ConfigError(
                "AGENTRUN_DATA_ENDPOINT is set, but neither AGENTRUN_CONTROL_ENDPOINT nor an "
                "AccessKey pair is, so it would be ignored and code would run on THIS machine: "
                "set AGENTRUN_CONTROL_ENDPOINT too for an emulator elsewhere (`agentrun-ci "
                "local serve` prints both), set AGENTRUN_ACCESS_KEY_ID and "
                "AGENTRUN_ACCESS_KEY_SECRET for the cloud, or unset AGENTRUN_DATA_ENDPOINT"
            )
        return config

    @property
    def has_credentials(self) -> bool:
        """True when a full access key pair is configured (the cloud backend's signal)."""
        return bool(self.access_key_id and self.access_key_secret)

    @property
    def data_headers(self) -> dict[str, str]:
        """Headers every data-plane request carries: the API key and the account it
        belongs to (`X-API-Key`, `X-Acs-Parent-Id`), when an API key is configured."""
        if not self.api_key:
            return {}
        headers = {"X-API-Key": self.api_key}
        if self.account_id:
            headers["X-Acs-Parent-Id"] = self.account_id
        return headers

    @property
    def control_url(self) -> str:
        """The control-plane base URL (scheme included)."""
        if self.control_endpoint:
            endpoint = self.control_endpoint.rstrip("/")
            return endpoint if "://" in endpoint else "https://" + endpoint
        return f"https://agentrun.{self.region}.aliyuncs.com"

    @property
    def data_url(self) -> str:
        """The data-plane base URL: the `-ram` host when requests are signed (with a key
        pair and no API key), else the account's own host."""
        if self.data_endpoint:
            endpoint = self.data_endpoint.rstrip("/")
            return endpoint if "://" in endpoint else "https://" + endpoint
        if not self.account_id:
            raise ConfigError(
                "no data endpoint: set AGENTRUN_ACCOUNT_ID to your Alibaba Cloud main account id "
                "(or AGENTRUN_DATA_ENDPOINT to a full URL)"
            )
        signed = self.has_credentials and not self.api_key
        label = f"{self.account_id}-ram" if signed else self.account_id
        return f"https://{label}.agentrun-data.{self.region}.aliyuncs.com"
