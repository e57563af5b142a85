"""Option parsing of `agentrun-ci-mcp` (flags, AGENTRUN_MCP_* twins, validation)."""

from __future__ import annotations

import sys

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
