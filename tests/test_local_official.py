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
