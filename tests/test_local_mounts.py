"""OSS / NAS / PolarFS mounts on the emulator: host directories bound into the sandbox
from `EmulatorSettings.mounts`, read-only where the configuration says so."""

from __future__ import annotations

import logging
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import running_emulator

from agentrun_ci import AsyncCodeInterpreter, BadRequestError, ControlPlane, DataPlane
from agentrun_ci._config import Config
from agentrun_ci.local import EmulatorSettings
from agentrun_ci.local._mounts import normalize_remote, requested_mounts
from agentrun_ci.local.cli import serve_main

pytest.importorskip("jupyter_client")

_HAS_JAIL = sys.platform.startswith("linux") and shutil.which("bwrap") is not None
needs_jail = pytest.mark.skipif(not _HAS_JAIL, reason="mounts need the bubblewrap jail")


@pytest.fixture(scope="module")
def hostdirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mounts")
    (root / "bucket" / "data").mkdir(parents=True)
    (root / "bucket" / "data" / "in.csv").write_text("a,b\n1,2\n")
    (root / "share").mkdir()
    (root / "share" / "note.txt").write_text("from nas\n")
    (root / "polar").mkdir()
    # the sandbox runs as a uid of its own (as root): it may write where all may
    for path in (root / "share", root / "polar"):
        path.chmod(0o777)
    return root


@pytest.fixture(scope="module")
def mounted(hostdirs: Path) -> Iterator[Config]:
    settings = EmulatorSettings(
        spare_kernels=1,
        mounts={
            "oss://my-bucket": str(hostdirs / "bucket"),
            "nas://srv.nas.aliyuncs.com:/share": str(hostdirs / "share"),
            "polarfs://pfs-1": str(hostdirs / "polar"),
        },
    )
    with running_emulator(settings) as (_, config):
        yield config


def _run(data: DataPlane, sandbox: str, code: str) -> str:
    execution = data.execute(sandbox, code)
    assert execution.error is None, execution.error
    return execution.stdout


@needs_jail
def test_template_and_sandbox_mounts_are_the_host_directories(
    mounted: Config, hostdirs: Path
) -> None:
    name = f"mounts-{uuid.uuid4().hex[:8]}"
    with ControlPlane(mounted) as control, DataPlane(mounted) as data:
        control.create_template(
            name,
            oss_configuration=[
                {
                    "bucketName": "my-bucket",
                    "prefix": "data",
                    "mountPoint": "/mnt/oss",
                    "permission": "READ_ONLY",
                }
            ],
            nas_config={
                "mountPoints": [
                    {"serverAddr": "srv.nas.aliyuncs.com:/share", "mountDir": "/mnt/nas"}
                ]
            },
        )
        control.wait_template_ready(name, timeout=30)
        sandbox = data.create_sandbox(
            name,
            polar_fs_config={
                "mountPoints": [
                    {"instanceId": "pfs-1", "mountDir": "/home/user/polar", "remoteDir": "/"}
                ]
            },
        ).sandbox_id
        try:
            data.wait_until_healthy(sandbox, timeout=60)
            assert (
                _run(data, sandbox, "print(open('/mnt/oss/in.csv').read(), end='')") == "a,b\n1,2\n"
            )
            assert (
                _run(data, sandbox, "print(open('/mnt/nas/note.txt').read(), end='')")
                == "from nas\n"
            )
            # read-only where the template says so (the OSS permission)
            refused = data.execute(sandbox, "open('/mnt/oss/new.txt', 'w')")
            assert refused.error is not None
            assert "Read-only file system" in refused.error.value
            assert not (hostdirs / "bucket" / "data" / "new.txt").exists()
            # read-write otherwise: a write from the sandbox lands in the host directory
            _run(data, sandbox, "open('/mnt/nas/out.txt', 'w').write('hi')")
            _run(data, sandbox, "open('/home/user/polar/p.txt', 'w').write('pf')")
            assert (hostdirs / "share" / "out.txt").read_text() == "hi"
            assert (hostdirs / "polar" / "p.txt").read_text() == "pf"
            # commands see them too
            listing = data.run_command(sandbox, "ls /mnt/oss /mnt/nas")
            assert "in.csv" in listing.stdout
            assert "note.txt" in listing.stdout
        finally:
            data.delete_sandbox(sandbox)
            control.delete_template(name)
    # the host directories outlive the sandbox, with what it wrote
    assert (hostdirs / "share" / "out.txt").exists()


@needs_jail
def test_a_sandbox_read_only_oss_mount_refuses_writes(mounted: Config, hostdirs: Path) -> None:
    name = f"mounts-ro-{uuid.uuid4().hex[:8]}"
    with ControlPlane(mounted) as control, DataPlane(mounted) as data:
        control.create_template(name)
        control.wait_template_ready(name, timeout=30)
        sandbox = data.create_sandbox(
            name,
            oss_mount_config={
                "mountPoints": [
                    {
                        "bucketName": "my-bucket",
                        "bucketPath": "/",
                        "mountDir": "/data/ro",
                        "readOnly": True,
                    },
                    {
                        "bucketName": "my-bucket",
                        "bucketPath": "/data",
                        "mountDir": "/data/rw",
                        "readOnly": False,
                    },
                ]
            },
        ).sandbox_id
        try:
            data.wait_until_healthy(sandbox, timeout=60)
            assert "data" in _run(data, sandbox, "import os; print(os.listdir('/data/ro'))")
            assert "in.csv" in _run(data, sandbox, "import os; print(os.listdir('/data/rw'))")
            refused = data.execute(sandbox, "open('/data/ro/x', 'w')")
            assert refused.error is not None
            assert "Read-only file system" in refused.error.value
        finally:
            data.delete_sandbox(sandbox)
            control.delete_template(name)


@needs_jail
def test_the_facade_passes_template_fields_and_session_mounts(mounted: Config) -> None:
    import anyio

    async def main() -> tuple[str, dict[str, object]]:
        async with AsyncCodeInterpreter(
            mounted,
            backend="cloud",  # the emulator at `mounted`, as a cloud endpoint
            reap_on_start=False,
            template_fields={
                "nas_config": {
                    "mountPoints": [
                        {"serverAddr": "srv.nas.aliyuncs.com:/share", "mountDir": "/mnt/nas"}
                    ]
                },
                "network_configuration": {"networkMode": "PUBLIC", "vpcId": "vpc-x"},
                "execution_role_arn": "acs:ram::1:role/r",
            },
            session_mounts={
                "oss_mount_config": {
                    "mountPoints": [
                        {"bucketName": "my-bucket", "bucketPath": "data", "mountDir": "/mnt/b"}
                    ]
                }
            },
        ) as ci:
            template = await ci.create_interpreter("mounts")
            out = await ci.execute_code(
                "import os; print(sorted(os.listdir('/mnt/nas')), os.listdir('/mnt/b'))"
            )
            assert out.error is None, out.error
            return out.stdout, template.raw

    stdout, raw = anyio.run(main)
    assert "note.txt" in stdout
    assert "in.csv" in stdout
    assert raw["executionRoleArn"] == "acs:ram::1:role/r"
    assert raw["networkConfiguration"] == {"networkMode": "PUBLIC", "vpcId": "vpc-x"}


def test_an_unmapped_mount_is_kept_and_warned_about(
    mounted: Config, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"mounts-unmapped-{uuid.uuid4().hex[:8]}"
    nas = {"mountPoints": [{"serverAddr": "other.nas.aliyuncs.com:/", "mountDir": "/mnt/other"}]}
    with ControlPlane(mounted) as control, DataPlane(mounted) as data:
        control.create_template(name, nas_config=nas)
        control.wait_template_ready(name, timeout=30)
        with caplog.at_level(logging.WARNING, logger="agentrun_ci.local"):
            sandbox = data.create_sandbox(name).sandbox_id
        try:
            assert control.get_template(name).raw["nasConfig"] == nas
            warned = [r.getMessage() for r in caplog.records if "not mounted" in r.getMessage()]
            assert warned, caplog.text
            assert "--mount nas://other.nas.aliyuncs.com:/=DIR" in warned[0]
            data.wait_until_healthy(sandbox, timeout=60)
            assert (
                _run(data, sandbox, "import os; print(os.path.exists('/mnt/other'))").strip()
                == "False"
            )
        finally:
            data.delete_sandbox(sandbox)
            control.delete_template(name)


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (
            {"bucketName": "my-bucket", "bucketPath": "nope", "mountDir": "/mnt/x"},
            "not a directory",
        ),
        ({"bucketName": "my-bucket", "bucketPath": "data", "mountDir": "/proc/x"}, "/proc/x"),
        ({"bucketName": "my-bucket", "bucketPath": "data", "mountDir": "relative"}, "relative"),
    ],
)
def test_a_mount_that_cannot_be_bound_is_a_400_naming_it(
    mounted: Config, mount: dict[str, str], message: str
) -> None:
    name = f"mounts-bad-{uuid.uuid4().hex[:8]}"
    with ControlPlane(mounted) as control, DataPlane(mounted) as data:
        control.create_template(name)
        control.wait_template_ready(name, timeout=30)
        try:
            with pytest.raises(BadRequestError, match=message):
                data.create_sandbox(name, oss_mount_config={"mountPoints": [mount]})
            assert control.list_sandboxes(template_name=name) == []
        finally:
            control.delete_template(name)


def test_a_template_field_of_the_wrong_kind_is_a_400_naming_it(mounted: Config) -> None:
    import httpx

    url = f"{mounted.control_endpoint}/2025-09-10/templates"
    for body, field in (
        ({"nasConfig": "nas.example:/"}, "nasConfig must be an object"),
        ({"ossConfiguration": {"bucketName": "b"}}, "ossConfiguration must be a list"),
        ({"allowAnonymousManage": "yes"}, "allowAnonymousManage must be true or false"),
    ):
        answer = httpx.post(url, json={"templateName": f"bad-{uuid.uuid4().hex[:6]}", **body})
        assert answer.status_code == 400
        assert field in answer.json()["message"]


def test_mount_settings_name_a_bad_remote_or_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be oss://"):
        EmulatorSettings(mounts={"s3://bucket": str(tmp_path)})
    with pytest.raises(ValueError, match="not a directory"):
        EmulatorSettings(mounts={"oss://bucket": str(tmp_path / "missing")})
    settings = EmulatorSettings(mounts={"NAS://h.example:/share/": str(tmp_path)})
    assert settings.mounts == (("nas://h.example/share", str(tmp_path)),)


def test_local_serve_refuses_a_bad_mount_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_main(["--mount", "oss-bucket-without-dir"]) == 2
    assert "REMOTE=HOSTDIR" in capsys.readouterr().err
    assert serve_main(["--mount", f"oss://b={tmp_path / 'missing'}"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_remotes_and_requests_are_read_from_every_config() -> None:
    assert normalize_remote("oss://b//x/") == "oss://b/x"
    assert normalize_remote("nas://h:/a/b") == "nas://h/a/b"
    template = {
        "ossConfiguration": [
            {"bucketName": "b", "prefix": "p", "mountPoint": "/m1", "permission": "READ_WRITE"}
        ],
        "nasConfig": {"mountPoints": [{"serverAddr": "h:/s", "mountDir": "/m2"}]},
    }
    sandbox = {
        "nasConfig": {"mountPoints": [{"serverAddr": "h:/t", "mountDir": "/m3"}]},
        "ossMountConfig": {
            "mountPoints": [
                {"bucketName": "b", "bucketPath": "/q", "mountDir": "/m4", "readOnly": True}
            ]
        },
        "polarFsConfig": {
            "mountPoints": [{"instanceId": "i", "remoteDir": "/r", "mountDir": "/m5"}]
        },
    }
    got = [(r.remote, r.target, r.read_only) for r in requested_mounts(template, sandbox)]
    assert got == [
        ("oss://b/p", "/m1", False),
        ("nas://h:/s", "/m2", False),
        ("nas://h:/t", "/m3", False),
        ("oss://b/q", "/m4", True),
        ("polarfs://i/r", "/m5", False),
    ]


@needs_jail
def test_the_mcp_servers_flags_and_files_reach_the_template_and_sandboxes(
    mounted: Config, tmp_path: Path
) -> None:
    import json

    import anyio
    import attrs

    from agentrun_ci_mcp.__main__ import build_parser, options_from_args
    from agentrun_ci_mcp.state import make_interpreter

    template = tmp_path / "template.json"
    template.write_text(
        json.dumps(
            {
                "nasConfig": {
                    "mountPoints": [
                        {"serverAddr": "srv.nas.aliyuncs.com:/share", "mountDir": "/mnt/nas"}
                    ]
                },
                "workspaceId": "ws-mcp",
            }
        )
    )
    mounts = tmp_path / "mounts.json"
    mounts.write_text(
        json.dumps(
            {"polarFsConfig": {"mountPoints": [{"instanceId": "pfs-1", "mountDir": "/mnt/pfs"}]}}
        )
    )
    argv = [
        "--vpc-id",
        "vpc-mcp",
        "--template-config",
        str(template),
        "--session-mounts",
        str(mounts),
    ]
    options = options_from_args(build_parser({}).parse_args(argv))
    options = attrs.evolve(
        options, config=mounted, backend="cloud", owner="mnt" + uuid.uuid4().hex[:4]
    )

    async def main() -> tuple[str, dict[str, object]]:
        ci = await make_interpreter(options)
        try:
            out = await ci.execute_code(
                "import os; print(os.listdir('/mnt/nas'), os.path.isdir('/mnt/pfs'))"
            )
            assert out.error is None, out.error
            template = await ci.control_plane.get_template(ci.code_interpreter_id or "")
            return out.stdout, template.raw
        finally:
            await ci.close()

    stdout, raw = anyio.run(main)
    assert "note.txt" in stdout
    assert "True" in stdout
    assert raw["workspaceId"] == "ws-mcp"
    assert raw["networkConfiguration"] == {"vpcId": "vpc-mcp", "networkMode": "PUBLIC_AND_PRIVATE"}
