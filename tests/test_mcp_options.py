"""Option parsing of `agentrun-ci-mcp` (flags, AGENTRUN_MCP_* twins, validation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from agentrun_ci_mcp.__main__ import (
    backend_options,
    build_parser,
    is_loopback,
    main,
    options_from_args,
)
from agentrun_ci_mcp.server import ALL_TOOLS


def _options(argv: list[str], env: dict[str, str] | None = None) -> object:
    return options_from_args(build_parser(env or {}).parse_args(argv))


def test_defaults() -> None:
    args = build_parser({}).parse_args([])
    assert args.transport == "stdio"
    assert args.host == "127.0.0.1"
    assert args.port == 8000
    assert args.allow_remote is False
    options = options_from_args(args)
    assert options.backend == "auto"
    assert options.strategy == "singleton"  # stdio: the host is the one client
    assert options.timeout == 30
    assert options.tools == frozenset(ALL_TOOLS)


def test_over_http_each_client_gets_a_sandbox_of_its_own_by_default() -> None:
    http = options_from_args(build_parser({}).parse_args(["--transport", "streamable-http"]))
    assert http.strategy == "dedicated"
    shared = ["--transport", "streamable-http", "--strategy", "singleton"]
    assert options_from_args(build_parser({}).parse_args(shared)).strategy == "singleton"
    env = {"AGENTRUN_MCP_STRATEGY": "singleton", "AGENTRUN_MCP_TRANSPORT": "streamable-http"}
    assert options_from_args(build_parser(env).parse_args([])).strategy == "singleton"


def test_environment_twins_and_flags_win() -> None:
    env = {
        "AGENTRUN_MCP_TRANSPORT": "streamable-http",
        "AGENTRUN_MCP_PORT": "9001",
        "AGENTRUN_MCP_BACKEND": "local",
        "AGENTRUN_MCP_STRATEGY": "pool",
        "AGENTRUN_MCP_POOL_SIZE": "2,6",
        "AGENTRUN_MCP_TIMEOUT": "12.5",
        "AGENTRUN_MCP_MAX_OUTPUT_CHARS": "5000",
        "AGENTRUN_MCP_IMAGE_BUDGET_BYTES": "1000",
        "AGENTRUN_MCP_TOOLS": "run_code,read_file",
        "AGENTRUN_MCP_ALLOW_REMOTE": "true",
        "AGENTRUN_MCP_INTERPRETER": "shared-tpl",
    }
    args = build_parser(env).parse_args(["--port", "9002", "--strategy", "ephemeral"])
    assert args.transport == "streamable-http"
    assert args.port == 9002
    assert args.allow_remote is True
    options = options_from_args(args)
    assert options.backend == "local"
    assert options.strategy == "ephemeral"
    assert options.pool_size == (2, 6)
    assert options.timeout == 12.5
    assert options.max_output_chars == 5000
    assert options.image_budget_bytes == 1000
    assert options.interpreter == "shared-tpl"
    assert options.tools == frozenset({"run_code", "reset_context", "read_file"})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeout", "60"], "cap"),
        (["--tools", "run_code,rm_rf"], "unknown 'rm_rf'"),
        (["--pool-size", "a,b"], "N or MIN,MAX"),
        (["--max-output-chars", "10"], "at least 100"),
    ],
)
def test_bad_values_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _options(argv)


def test_remote_bind_needs_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--transport", "streamable-http", "--host", "0.0.0.0"])
    assert exc.value.code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.0.0.5")
    assert not is_loopback("example.com")


def test_the_event_loop_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser({}).parse_args([]).loop == "auto"
    assert build_parser({"AGENTRUN_MCP_LOOP": "asyncio"}).parse_args([]).loop == "asyncio"
    assert backend_options("asyncio") == {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert backend_options("auto") == {}
    else:
        assert backend_options("auto") == {"use_uvloop": True}
        assert backend_options("uvloop") == {"use_uvloop": True}
    # without uvloop: auto falls back quietly, an explicit request is an error naming the fix
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert backend_options("auto") == {}
    with pytest.raises(ValueError, match="pip install uvloop"):
        backend_options("uvloop")


def test_import_free_constants_match_the_sdk() -> None:
    """`options` spells out two SDK values so the CLI starts without importing the SDK."""
    import agentrun_ci
    from agentrun_ci_mcp import options

    assert options.STRATEGY_CHOICES == agentrun_ci.STRATEGY_NAMES
    assert options.HOME == agentrun_ci.DEFAULT_CWD


def test_http_always_has_a_token() -> None:
    """Code the server runs shares the loopback: no HTTP app without a bearer token, and
    a token made when none is given is printed once, on the stream given (stderr)."""
    import io

    from agentrun_ci_mcp.__main__ import generated_token
    from agentrun_ci_mcp.serve import http_app

    args = build_parser({}).parse_args(["--transport", "streamable-http"])
    assert args.auth_token is None
    with pytest.raises(ValueError, match="auth token"):
        http_app(object(), args)
    err = io.StringIO()
    token = generated_token(err)
    assert len(token) >= 32
    assert f"AGENTRUN_MCP_AUTH_TOKEN={token}\n" in err.getvalue()
    assert "Authorization: Bearer" in err.getvalue()
    assert generated_token(io.StringIO()) != token


def test_vpc_flags_and_json_files_give_the_template_and_session_fields(
    tmp_path: Path,
) -> None:
    root = tmp_path
    template = root / "template.json"
    template.write_text(
        json.dumps(
            {
                "nasConfig": {"mountPoints": [{"serverAddr": "n:/", "mountDir": "/mnt/n"}]},
                "logConfiguration": {"project": "p", "logstore": "l"},
                "networkConfiguration": {"securityGroupId": "sg-file"},
            }
        )
    )
    mounts = root / "mounts.json"
    mounts.write_text(json.dumps({"ossMountConfig": {"mountPoints": [{"bucketName": "b"}]}}))
    argv = [
        "--vpc-id",
        "vpc-1",
        "--vswitch-ids",
        "vsw-1, vsw-2",
        "--template-config",
        str(template),
    ]
    options = options_from_args(
        build_parser({"AGENTRUN_MCP_SESSION_MOUNTS": str(mounts)}).parse_args(argv)
    )
    assert options.template_config["networkConfiguration"] == {
        "securityGroupId": "sg-file",
        "vpcId": "vpc-1",
        "vswitchIds": ["vsw-1", "vsw-2"],
        "networkMode": "PUBLIC_AND_PRIVATE",  # a VPC without a mode keeps the internet
    }
    # by the official package's names, as create_interpreter / create_sandbox take them
    assert set(options.template_fields) == {
        "nas_config",
        "log_configuration",
        "network_configuration",
    }
    assert options.session_mount_fields == {
        "oss_mount_config": {"mountPoints": [{"bucketName": "b"}]}
    }
    private = options_from_args(build_parser({}).parse_args(["--network-mode", "PRIVATE"]))
    assert private.template_config == {"networkConfiguration": {"networkMode": "PRIVATE"}}
    assert options_from_args(build_parser({}).parse_args([])).template_config == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1]", "must hold a JSON object"),
        ("{", "not JSON"),
        ('{"cpu": 2}', "unknown field"),
        ('{"networkConfiguration": "vpc"}', "must be a JSON object"),
    ],
)
def test_a_bad_template_config_file_names_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        _options(["--template-config", str(path)])
    with pytest.raises(ValueError, match="cannot read"):
        _options(["--session-mounts", str(path) + ".missing"])


def test_the_template_config_fields_are_what_the_facade_takes() -> None:
    """options.py spells out the wire names (no SDK import at start): the same set the
    facade's `template_fields` accepts, which leaves create_interpreter's own to it."""
    from agentrun_ci import _options, _wire
    from agentrun_ci_mcp import options

    facade = set(_wire.TEMPLATE_FIELDS) - set(_options._INTERPRETER_ARGUMENTS)
    assert set(options.TEMPLATE_CONFIG_FIELDS) == {_wire.TEMPLATE_FIELDS[f] for f in facade}
    assert set(options.SESSION_MOUNT_FIELDS) == set(_wire.SANDBOX_MOUNT_FIELDS.values())
