"""Alibaba's own control-plane client (alibabacloud-agentrun20250910) against the emulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("jupyter_client")

from alibabacloud_agentrun20250910 import models
from alibabacloud_agentrun20250910.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config as TeaConfig

from agentrun_ci import ControlPlane
from agentrun_ci._auth import AgentRunAuth
from agentrun_ci._config import Config
from agentrun_ci.local import LocalEmulator
from agentrun_ci.local._signing import UNSIGNED

AK, SK = "LTAIlocaltestkey", "local-test-secret"


def _client(config: Config, secret: str = SK) -> Client:
    assert config.control_endpoint is not None
    host = config.control_endpoint.split("://", 1)[1]
    return Client(
        TeaConfig(
            access_key_id=AK,
            access_key_secret=secret,
            endpoint=host,
            protocol="HTTP",
            region_id="cn-hangzhou",
        )
    )


def _template_input(name: str) -> Any:
    return models.CreateTemplateInput(
        template_name=name,
        template_type="CodeInterpreter",
        cpu=2.0,
        memory=4096,
        disk_size=512,
        network_configuration=models.NetworkConfiguration(network_mode="PUBLIC"),
        sandbox_idle_timeout_in_seconds=1800,
        sandbox_ttlin_seconds=21600,
    )


def _exercise(client: Client) -> None:
    name = f"official-{uuid.uuid4().hex[:8]}"
    created = client.create_template(models.CreateTemplateRequest(body=_template_input(name)))
    assert created.body.code == "SUCCESS"
    assert created.body.data.template_name == name
    got = client.get_template(name).body.data
    assert (got.status, got.cpu, got.memory) == ("READY", 2.0, 4096)
    listed = client.list_templates(models.ListTemplatesRequest(template_name=name)).body.data
    assert [t.template_name for t in listed.items] == [name]
    with pytest.raises(ClientException) as dup:
        client.create_template(models.CreateTemplateRequest(body=_template_input(name)))
    assert dup.value.status_code == 409

    sandbox_id = f"owner-{uuid.uuid4().hex[:8]}"
    sb = client.create_sandbox(
        models.CreateSandboxRequest(
            body=models.CreateSandboxInput(
                template_name=name, sandbox_id=sandbox_id, sandbox_idle_timeout_seconds=600
            )
        )
    ).body.data
    assert (sb.sandbox_id, sb.status, sb.template_name) == (sandbox_id, "READY", name)
    assert client.get_sandbox(sandbox_id).body.data.status == "READY"
    items = client.list_sandboxes(models.ListSandboxesRequest(template_name=name)).body.data.items
    assert [s.sandbox_id for s in items] == [sandbox_id]
    assert client.pause_sandbox(sandbox_id).body.data.status == "PAUSED"
    assert client.resume_sandbox(sandbox_id).body.data.status == "READY"
    assert client.stop_sandbox(sandbox_id).body.data.status == "TERMINATED"
    assert client.delete_sandbox(sandbox_id).body.data.sandbox_id == sandbox_id
    with pytest.raises(ClientException) as gone:
        client.get_sandbox(sandbox_id)
    assert gone.value.status_code == 404
    client.delete_template(name)
    with pytest.raises(ClientException) as missing:
        client.get_template(name)
    assert missing.value.status_code == 404
    assert missing.value.code == "ERR_NOT_FOUND"


def test_official_client_unsigned_emulator(emulator: Config) -> None:
    _exercise(_client(emulator))


@pytest.fixture(scope="module")
def signed() -> Iterator[Config]:
    from agentrun_ci.local import EmulatorSettings

    with LocalEmulator(
        EmulatorSettings(spare_kernels=0), access_key_id=AK, access_key_secret=SK
    ) as config:
        yield config


def test_official_client_signed_emulator_verifies_acs3(signed: Config) -> None:
    _exercise(_client(signed))
    with pytest.raises(ClientException) as denied:
        _client(signed, secret="wrong").get_template("x")
    assert denied.value.status_code == 403
    assert denied.value.code == "ERR_FORBIDDEN"


def test_data_plane_signature_required(signed: Config) -> None:
    url = str(signed.data_endpoint)
    with httpx.Client(base_url=url) as plain:
        r = plain.get("/sandboxes/any/health")
        assert r.status_code == 403
        assert r.json() == {
            "code": "ERR_FORBIDDEN",
            "message": UNSIGNED,
            "requestId": r.headers["x-acs-request-id"],
        }
    with httpx.Client(base_url=url, auth=AgentRunAuth(AK, "bad", "cn-hangzhou")) as bad:
        wrong = bad.get("/sandboxes/any/health")
        assert wrong.status_code == 403
        assert wrong.json()["message"] == "Signature verification failed"  # as the cloud's
    with httpx.Client(base_url=url, auth=AgentRunAuth(AK, SK, "cn-hangzhou")) as good:
        # the control plane takes ACS3 only: an AGENTRUN4 signature there is refused
        refused = good.post("/2025-09-10/templates", json={"templateName": "signed"})
        assert refused.status_code == 403
        with ControlPlane(signed) as cp:
            cp.create_template("signed")
        sid = good.post("/sandboxes", json={"templateName": "signed"}).json()["data"]["sandboxId"]
        r = good.get(f"/sandboxes/{sid}/filesystem", params={"path": "/home/user", "depth": 1})
        assert r.status_code == 200, r.text
        assert good.delete(f"/sandboxes/{sid}").status_code == 200


# ---------------------------------------------------------------- every template field


def _every_field(form: str) -> dict[str, Any]:
    """Every configuration field of CreateTemplateInput, as model objects or wire dicts."""
    objects: dict[str, Any] = {
        "network_configuration": models.NetworkConfiguration(
            network_mode="PUBLIC_AND_PRIVATE",
            vpc_id="vpc-bp1local",
            vswitch_ids=["vsw-bp1a", "vsw-bp1b"],
            security_group_id="sg-bp1local",
        ),
        "oss_configuration": [
            models.OssConfiguration(
                bucket_name="my-bucket",
                prefix="data",
                mount_point="/mnt/oss",
                permission="READ_ONLY",
                region="cn-hangzhou",
                endpoint="oss-cn-hangzhou-internal.aliyuncs.com",
            )
        ],
        "nas_config": models.NASConfig(
            user_id=1000,
            group_id=1000,
            mount_points=[
                models.NASMountConfig(
                    server_addr="0a1b2c-xyz.cn-hangzhou.nas.aliyuncs.com:/share",
                    mount_dir="/mnt/nas",
                    enable_tls=True,
                )
            ],
        ),
        "log_configuration": models.LogConfiguration(project="my-project", logstore="my-store"),
        "container_configuration": models.ContainerConfiguration(
            image="registry.cn-hangzhou.aliyuncs.com/me/ci:1",
            command=["python", "-m", "x"],
            port=5000,
        ),
        "credential_configuration": models.CredentialConfiguration(credential_name="my-cred"),
        "arms_configuration": models.ArmsConfiguration(enable_arms=False, cms_workspace="ws-cms"),
        "scaling_config": models.ScalingConfig(min_instances=1),
    }
    if form == "dict":
        objects = {
            k: [o.to_map() for o in v] if isinstance(v, list) else v.to_map()
            for k, v in objects.items()
        }
    return {
        **objects,
        "template_configuration": {"anything": {"nested": [1, 2]}},
        "execution_role_arn": "acs:ram::123:role/agentrun",
        "workspace_id": "ws-local",
        "allow_anonymous_manage": True,
        "enable_agent": True,
        "enable_pre_stop": True,
        "pre_stop_timeout_in_seconds": 30,
    }


def _wire(value: Any) -> Any:
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value.to_map() if hasattr(value, "to_map") else value


@pytest.mark.parametrize("form", ["model", "dict"])
def test_official_client_reads_back_every_template_field_we_wrote(
    emulator: Config, form: str
) -> None:
    fields = _every_field(form)
    name = f"fields-{form}-{uuid.uuid4().hex[:8]}"
    official = _client(emulator)
    with ControlPlane(emulator) as control:
        created = control.create_template(
            name, cpu=1.0, memory=2048, environment={"A": "1"}, **fields
        )
        try:
            assert created.raw["networkConfiguration"]["vpcId"] == "vpc-bp1local"
            got = official.get_template(name).body.data
            # the official Template model has no armsConfiguration / scalingConfig: the
            # emulator's own answer carries them
            raw = httpx.get(f"{emulator.control_endpoint}/2025-09-10/templates/{name}").json()
            for field, value in fields.items():
                read = getattr(got, field, None)
                back = _wire(read) if read is not None else raw["data"][_WIRE[field]]
                assert back == _wire(value), field
            assert (got.cpu, got.memory, got.environment_variables) == (1.0, 2048, {"A": "1"})
        finally:
            control.delete_template(name)


def test_update_template_changes_what_the_official_client_reads(emulator: Config) -> None:
    name = f"update-{uuid.uuid4().hex[:8]}"
    official = _client(emulator)
    with ControlPlane(emulator) as control:
        control.create_template(name, cpu=2.0, execution_role_arn="acs:ram::1:role/old")
        try:
            updated = control.update_template(
                name,
                cpu=1.0,
                network_configuration=models.NetworkConfiguration(
                    network_mode="PRIVATE", vpc_id="vpc-new", vswitch_ids=["vsw-new"]
                ),
                nas_config={
                    "mountPoints": [{"serverAddr": "n.nas.aliyuncs.com:/", "mountDir": "/mnt/n"}]
                },
            )
            assert updated.status == "UPDATING" or updated.status == "READY"
            control.wait_template_ready(name, timeout=30)
            got = official.get_template(name).body.data
            assert got.cpu == 1.0
            assert got.network_configuration.to_map() == {
                "networkMode": "PRIVATE",
                "vpcId": "vpc-new",
                "vswitchIds": ["vsw-new"],
            }
            assert got.nas_config.mount_points[0].mount_dir == "/mnt/n"
            # what the update did not name stays
            assert got.execution_role_arn == "acs:ram::1:role/old"
            assert got.memory == 4096
        finally:
            control.delete_template(name)


def test_sandboxes_started_after_an_update_get_it_running_ones_keep_theirs(
    emulator: Config,
) -> None:
    from agentrun_ci import DataPlane

    name = f"update-env-{uuid.uuid4().hex[:8]}"
    show = "import os; print(os.environ.get('STAGE'))"
    with ControlPlane(emulator) as control, DataPlane(emulator) as data:
        control.create_template(name, environment={"STAGE": "before"})
        control.wait_template_ready(name, timeout=30)
        sandboxes: list[str] = []
        try:
            before = data.create_sandbox(name).sandbox_id
            sandboxes.append(before)
            control.update_template(name, environment_variables={"STAGE": "after"})
            control.wait_template_ready(name, timeout=30)
            after = data.create_sandbox(name).sandbox_id
            sandboxes.append(after)
            for sandbox in sandboxes:
                data.wait_until_healthy(sandbox, timeout=60)
            assert data.execute(before, show).stdout.strip() == "before"
            assert data.execute(after, show).stdout.strip() == "after"
        finally:
            for sandbox in sandboxes:
                data.delete_sandbox(sandbox)
            control.delete_template(name)


def test_update_template_with_nothing_to_change_is_refused_before_sending(
    emulator: Config,
) -> None:
    from agentrun_ci import InvalidArgumentError

    with ControlPlane(emulator) as control, pytest.raises(InvalidArgumentError, match="no field"):
        control.update_template("any")


@pytest.mark.parametrize("form", ["model", "dict"])
def test_sandbox_mount_configs_are_sent_and_returned(emulator: Config, form: str) -> None:
    mounts: dict[str, Any] = {
        "nas_config": models.NASConfig(
            user_id=0,
            group_id=0,
            mount_points=[
                models.NASMountConfig(server_addr="s.nas.aliyuncs.com:/x", mount_dir="/mnt/x")
            ],
        ),
        "oss_mount_config": models.OSSMountConfig(
            mount_points=[
                models.OSSMountPoint(
                    bucket_name="b",
                    bucket_path="/p",
                    endpoint="e",
                    mount_dir="/mnt/o",
                    read_only=True,
                )
            ]
        ),
        "polar_fs_config": models.PolarFsConfig(
            user_id=1,
            group_id=1,
            mount_points=[
                models.PolarFsMountConfig(instance_id="pfs-1", mount_dir="/mnt/p", remote_dir="/r")
            ],
        ),
    }
    if form == "dict":
        mounts = {k: v.to_map() for k, v in mounts.items()}
    name = f"mounts-{form}-{uuid.uuid4().hex[:8]}"
    with ControlPlane(emulator) as control:
        control.create_template(name)
        try:
            # nothing is mapped on this emulator: the mounts are kept but not bound
            sandbox = control.create_sandbox(name, **mounts)
            try:
                raw = httpx.get(
                    f"{emulator.control_endpoint}/2025-09-10/sandboxes/{sandbox.sandbox_id}"
                ).json()["data"]
                for field, value in mounts.items():
                    assert raw[_SANDBOX_WIRE[field]] == _wire(value), field
                # and the official client still reads the sandbox
                got = _client(emulator).get_sandbox(sandbox.sandbox_id).body.data
                assert got.sandbox_id == sandbox.sandbox_id
            finally:
                control.delete_sandbox(sandbox.sandbox_id)
        finally:
            control.delete_template(name)


_WIRE = {
    "network_configuration": "networkConfiguration",
    "oss_configuration": "ossConfiguration",
    "nas_config": "nasConfig",
    "log_configuration": "logConfiguration",
    "container_configuration": "containerConfiguration",
    "credential_configuration": "credentialConfiguration",
    "arms_configuration": "armsConfiguration",
    "scaling_config": "scalingConfig",
    "template_configuration": "templateConfiguration",
    "execution_role_arn": "executionRoleArn",
    "workspace_id": "workspaceId",
    "allow_anonymous_manage": "allowAnonymousManage",
    "enable_agent": "enableAgent",
    "enable_pre_stop": "enablePreStop",
    "pre_stop_timeout_in_seconds": "preStopTimeoutInSeconds",
}
_SANDBOX_WIRE = {
    "nas_config": "nasConfig",
    "oss_mount_config": "ossMountConfig",
    "polar_fs_config": "polarFsConfig",
}
