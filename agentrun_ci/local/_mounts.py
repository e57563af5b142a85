"""Storage mounts on one machine: OSS, NAS and PolarFS as host directories.

AgentRun mounts a template's `ossConfiguration` / `nasConfig` and a sandbox's own
`nasConfig` / `ossMountConfig` / `polarFsConfig` into the sandbox. The emulator has no
bucket and no file server: `EmulatorSettings.mounts` (`local serve --mount
REMOTE=HOSTDIR`) maps each remote to a host directory, which the jail binds at the
mount's directory, read-only where the configuration says so. A remote is named

    oss://BUCKET[/PATH]           a bucket, or a path in one
    nas://SERVER[:]/PATH          a NAS mount target (its `serverAddr`, as written)
    polarfs://INSTANCE[/PATH]     a PolarFS instance

and the longest mapped prefix wins: with `oss://data=/srv/data` mapped, a mount of
bucket `data`, path `/2024` binds `/srv/data/2024`. A mount with no mapping is kept on
the template or sandbox (they return it) but not bound: a warning names it and the
setting to add. The emulator's choices, as the service's are not documented: a
sandbox's own mounts come after its template's (the same directory twice: its own
wins); an OSS template mount is read-only when its `permission` says read only.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import ApiError

__all__ = ["BindMount", "MountRequest", "mount_map", "parse_mount", "requested_mounts", "resolve"]

log = logging.getLogger("agentrun_ci.local")

SCHEMES = ("oss", "nas", "polarfs")
#: where a mount may not go: what the jail itself shows (system directories, /proc,
#: /dev, the sandbox's /tmp, our tools) or nothing could be seen through
_RESERVED = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
    "/proc", "/dev", "/sys", "/run", "/var", "/opt/agentrun", "/root",
    "/tmp",  # noqa: S108 -- the path inside the jail: the sandbox's own /tmp
)  # fmt: skip


@attrs.frozen
class MountRequest:
    """One mount a template or sandbox asks for: its remote, where and how."""

    remote: str
    target: str
    read_only: bool


@attrs.frozen
class BindMount:
    """A host directory bound into a sandbox's jail at `target`."""

    source: Path
    target: str
    read_only: bool


def normalize_remote(text: str) -> str:
    """`scheme://authority/path`, lower-case scheme, no trailing or doubled slash; a NAS
    address's `host:/path` becomes `host/path`. ValueError for another scheme."""
    scheme, sep, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES or not rest.strip("/"):
        raise ValueError(
            f"mount remote {text!r} must be oss://BUCKET[/PATH], nas://SERVER[:/PATH] or "
            "polarfs://INSTANCE[/PATH]"
        )
    if scheme == "nas":
        host, colon, path = rest.partition(":")
        rest = f"{host}/{path}" if colon else rest
    parts = [p for p in rest.split("/") if p]
    return f"{scheme}://" + "/".join(parts)


def parse_mount(spec: str) -> tuple[str, str]:
    """`REMOTE=HOSTDIR` (the `--mount` option) → (remote, host directory)."""
    remote, sep, host = spec.rpartition("=")
    if not sep or not remote or not host:
        raise ValueError(f"expected REMOTE=HOSTDIR (e.g. oss://bucket=/srv/bucket), got {spec!r}")
    return remote, host


def mount_map(
    value: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...]:
    """`EmulatorSettings.mounts` as sorted (normalized remote, absolute host dir) pairs;
    ValueError naming a bad remote or a host directory that does not exist."""
    if value is None:
        return ()
    pairs = value.items() if isinstance(value, Mapping) else value
    out: dict[str, str] = {}
    for remote, host in pairs:
        key = normalize_remote(str(remote))
        path = os.path.abspath(os.path.expanduser(str(host)))
        if not os.path.isdir(path):
            raise ValueError(f"mount {remote!r} maps to {host!r}, which is not a directory")
        out[key] = path
    return tuple(sorted(out.items()))


def _objects(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def _points(config: Any) -> list[dict[str, Any]]:
    return _objects(config.get("mountPoints")) if isinstance(config, dict) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _oss_read_only(permission: Any) -> bool:
    # The permission values are not documented (inferred: READ_ONLY / READ_WRITE).
    text = _text(permission).upper().replace("-", "_")
    return text in ("READ_ONLY", "READONLY", "RO", "READ")


def requested_mounts(template: Mapping[str, Any], sandbox: Mapping[str, Any]) -> list[MountRequest]:
    """Every mount a sandbox of `template` created with `sandbox` (bodies, wire names)
    asks for; entries without a remote or a directory are skipped (they mount nothing)."""
    found: list[MountRequest] = []

    def add(remote: str, target: str, read_only: bool) -> None:
        if remote and target:
            found.append(MountRequest(remote, target, read_only))

    for oss in _objects(template.get("ossConfiguration")):
        bucket = _text(oss.get("bucketName"))
        prefix = _text(oss.get("prefix")).strip("/")
        remote = f"oss://{bucket}/{prefix}" if bucket else ""
        add(remote, _text(oss.get("mountPoint")), _oss_read_only(oss.get("permission")))
    for body in (template, sandbox):
        for nas in _points(body.get("nasConfig")):
            server = _text(nas.get("serverAddr"))
            add(f"nas://{server}" if server else "", _text(nas.get("mountDir")), False)
    for oss in _points(sandbox.get("ossMountConfig")):
        bucket = _text(oss.get("bucketName"))
        path = _text(oss.get("bucketPath")).strip("/")
        remote = f"oss://{bucket}/{path}" if bucket else ""
        add(remote, _text(oss.get("mountDir")), oss.get("readOnly") is True)
    for polar in _points(sandbox.get("polarFsConfig")):
        instance = _text(polar.get("instanceId"))
        path = _text(polar.get("remoteDir")).strip("/")
        add(f"polarfs://{instance}/{path}" if instance else "", _text(polar.get("mountDir")), False)
    return found


def check_target(target: str) -> str:
    """The normalized mount directory; 400 naming it where the jail cannot bind one."""
    norm = posixpath.normpath(target) if target.startswith("/") else ""
    if norm.startswith("//"):
        norm = ""
    reserved = any(norm == r or norm.startswith(r + "/") for r in _RESERVED)
    home_only = norm.startswith("/home") and not norm.startswith("/home/user/")
    if not norm or norm == "/" or reserved or home_only or norm == "/opt":
        raise ApiError(
            400,
            "ERR_VALIDATION_FAILED",
            f"mount directory {target!r} cannot be mounted here: give an absolute path "
            "below /home/user or outside the system directories (e.g. /mnt/data)",
        )
    return norm


def resolve(
    requests: Iterable[MountRequest], mapping: tuple[tuple[str, str], ...], sandbox_id: str
) -> list[BindMount]:
    """The binds for `requests` under `mapping`; an unmapped remote is warned about and
    skipped; a mapped one whose host directory is missing is a 400 naming it."""
    binds: dict[str, BindMount] = {}
    for request in requests:
        target = check_target(request.target)
        try:
            remote = normalize_remote(request.remote)
        except ValueError:
            remote = ""
        match = next(
            (
                (key, host)
                for key, host in sorted(mapping, key=lambda kv: -len(kv[0]))
                if remote == key or remote.startswith(key + "/")
            ),
            None,
        )
        if match is None:
            log.warning(
                "sandbox %s: no host directory for mount %s at %s, so it is not mounted: map "
                "one with `agentrun-ci local serve --mount %s=DIR` (EmulatorSettings.mounts)",
                sandbox_id,
                request.remote,
                target,
                request.remote,
            )
            continue
        key, host = match
        source = Path(host, remote[len(key) :].lstrip("/"))
        if not source.is_dir():
            raise ApiError(
                400,
                "ERR_VALIDATION_FAILED",
                f"mount {request.remote} maps to {source}, which is not a directory: create "
                "it or change the emulator's mounts setting",
            )
        binds[target] = BindMount(source, target, request.read_only)
    return list(binds.values())
