"""`agentrun-ci-mcp` / `python -m agentrun_ci_mcp`: the CLI entry (options, logging).

Every option has an environment twin (`AGENTRUN_MCP_<NAME>`), because MCP hosts
pass configuration through the `env` of their server entry; a flag beats the
environment. Credentials are read by `agentrun_ci.Config.from_env()`
(`AGENTRUN_ACCESS_KEY_ID`, ...), never from flags, so they do not show up in
process listings.

stdout belongs to the protocol in stdio mode: logs go to stderr only.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import attrs

from . import __version__
from .options import (
    ALL_TOOLS,
    EXECUTE_CAP_SECONDS,
    SESSION_MOUNT_FIELDS,
    STRATEGY_CHOICES,
    TEMPLATE_CONFIG_FIELDS,
    TOOL_GROUPS,
    ServerOptions,
)
from .serve import (
    EOF_ANSWER_GRACE,
    EOF_BATCH_WINDOW,
    SHUTDOWN_GRACE,
    is_loopback,
    serve_http,
    serve_stdio,
)

if TYPE_CHECKING:
    from agentrun_ci import StrategyName

__all__ = [
    "EOF_ANSWER_GRACE",
    "EOF_BATCH_WINDOW",
    "SHUTDOWN_GRACE",
    "backend_options",
    "build_parser",
    "generated_token",
    "is_loopback",
    "main",
    "options_from_args",
    "run",
    "serve_stdio",
]

log = logging.getLogger("agentrun_ci_mcp")

ENV_PREFIX = "AGENTRUN_MCP_"


def _env(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(ENV_PREFIX + name)
    return value if value not in (None, "") else default


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(
        prog="agentrun-ci-mcp",
        description=(
            "MCP server that runs code in Alibaba Cloud AgentRun sandboxes (or a local "
            "emulator). Every option can also be set as AGENTRUN_MCP_<OPTION> in the "
            "environment; flags win."
        ),
    )
    p.add_argument("--version", action="version", version=f"agentrun-ci-mcp {__version__}")
    _transport_options(p.add_argument_group("transport").add_argument, env)
    _sandbox_options(p.add_argument_group("sandboxes and runs").add_argument, env)
    _template_options(p.add_argument_group("the template: network and storage").add_argument, env)
    _process_options(p.add_argument_group("process").add_argument, env)
    return p


_Add = Callable[..., argparse.Action]


def _transport_options(add: _Add, env: Mapping[str, str]) -> None:
    add(
        "--transport",
        choices=["stdio", "streamable-http"],
        default=_env(env, "TRANSPORT", "stdio"),
        help="stdio (default; for Claude Desktop and other hosts) or streamable-http [TRANSPORT]",
    )
    add("--host", default=_env(env, "HOST", "127.0.0.1"), help="HTTP bind address [HOST]")
    add("--port", type=int, default=int(_env(env, "PORT", "8000") or 8000), help="[PORT]")
    add(
        "--allow-remote",
        action="store_true",
        default=_bool(_env(env, "ALLOW_REMOTE")),
        help="allow binding to a non-loopback address (anyone who can reach it runs code) "
        "[ALLOW_REMOTE=1]",
    )
    add(
        "--auth-token",
        default=_env(env, "AUTH_TOKEN"),
        help="the token HTTP requests must send as `Authorization: Bearer <token>` (prefer "
        "the env var); without one, a random token is made and printed on stderr [AUTH_TOKEN]",
    )
    add(
        "--stateless",
        action="store_true",
        default=_bool(_env(env, "STATELESS")),
        help="streamable HTTP with no per-client state in the process, so that replicas "
        "behind a load balancer can serve any call: each client's state (its sandbox and "
        "contexts) travels in the `session` handle, signed with AGENTRUN_MCP_HANDLE_KEY, "
        "which every replica shares [STATELESS=1]",
    )
    add(
        "--allowed-hosts",
        default=_env(env, "ALLOWED_HOSTS"),
        help="comma-separated Host header values accepted over HTTP (DNS-rebinding "
        "protection), e.g. 'mcp.example.com:*'; loopback names by default [ALLOWED_HOSTS]",
    )
    add(
        "--allowed-origins",
        default=_env(env, "ALLOWED_ORIGINS"),
        help="comma-separated Origin values accepted over HTTP [ALLOWED_ORIGINS]",
    )


def _sandbox_options(add: _Add, env: Mapping[str, str]) -> None:
    add(
        "--backend",
        choices=["auto", "cloud", "local"],
        default=_env(env, "BACKEND", "auto"),
        help="auto: cloud when AgentRun credentials are set, else the local emulator [BACKEND]",
    )
    add(
        "--strategy",
        choices=STRATEGY_CHOICES,
        default=_env(env, "STRATEGY"),
        help="dedicated (default over HTTP): a new sandbox per client, files and processes "
        "private; singleton (default over stdio, where the host is the one client): one "
        "sandbox, a context per client, files shared, for clients that trust each other; "
        "pool: a sandbox per client from a warm pool; ephemeral: a new sandbox per call, no "
        "state [STRATEGY]",
    )
    add(
        "--pool-size",
        default=_env(env, "POOL_SIZE", "1,4"),
        help="N or MIN,MAX warm sandboxes for --strategy pool [POOL_SIZE]",
    )
    add(
        "--interpreter",
        default=_env(env, "INTERPRETER"),
        help="use this existing interpreter (template) instead of creating one; it is "
        "never deleted [INTERPRETER]",
    )
    add("--cpu", type=float, default=float(_env(env, "CPU", "2") or 2), help="vCPUs [CPU]")
    add(
        "--memory",
        type=int,
        default=int(_env(env, "MEMORY", "4096") or 4096),
        help="MiB per sandbox [MEMORY]",
    )
    add(
        "--timeout",
        type=float,
        default=float(_env(env, "TIMEOUT", "30") or 30),
        help="default seconds per run_code/run_command call, at most 30 [TIMEOUT]",
    )
    add(
        "--max-output-chars",
        type=int,
        default=int(_env(env, "MAX_OUTPUT_CHARS", "20000") or 20000),
        help="per stream; longer output keeps its head and tail [MAX_OUTPUT_CHARS]",
    )
    add(
        "--image-budget-bytes",
        type=int,
        default=int(_env(env, "IMAGE_BUDGET_BYTES", "400000") or 400000),
        help="total image bytes per call; larger plots are downscaled [IMAGE_BUDGET_BYTES]",
    )
    add(
        "--tools",
        default=_env(env, "TOOLS", "run_code,files,commands"),
        help=f"tool groups or names to expose: groups {', '.join(TOOL_GROUPS)}; "
        f"tools {', '.join(ALL_TOOLS)} [TOOLS]",
    )
    add(
        "--idle-timeout",
        type=float,
        default=float(_env(env, "IDLE_TIMEOUT", "1800") or 1800),
        help="release a client's sandbox state after this many idle seconds (with --stateless: "
        "the service deletes a client's sandbox after that long without a call) [IDLE_TIMEOUT]",
    )
    add(
        "--max-clients",
        type=int,
        default=int(_env(env, "MAX_CLIENTS", "64") or 64),
        help="most client states (and HTTP sessions) at once: the least recently used idle "
        "state is released for a new one (when none is idle, the new client's call is refused "
        "at once); a new HTTP session beyond it is refused with 503 [MAX_CLIENTS]",
    )


def _template_options(add: _Add, env: Mapping[str, str]) -> None:
    """What the template the server creates gets beyond cpu and memory: network, VPC,
    storage and any other CreateTemplateInput field."""
    add(
        "--network-mode",
        choices=["PUBLIC", "PRIVATE", "PUBLIC_AND_PRIVATE"],
        default=_env(env, "NETWORK_MODE"),
        help="the template's network: PUBLIC (the default), PRIVATE (its VPC only) or "
        "PUBLIC_AND_PRIVATE (the default when a --vpc-id is given) [NETWORK_MODE]",
    )
    add("--vpc-id", default=_env(env, "VPC_ID"), help="the VPC sandboxes join [VPC_ID]")
    add(
        "--vswitch-ids",
        default=_env(env, "VSWITCH_IDS"),
        help="comma-separated vSwitch ids in that VPC [VSWITCH_IDS]",
    )
    add(
        "--security-group-id",
        default=_env(env, "SECURITY_GROUP_ID"),
        help="the security group of the sandboxes in the VPC [SECURITY_GROUP_ID]",
    )
    add(
        "--template-config",
        metavar="FILE",
        default=_env(env, "TEMPLATE_CONFIG"),
        help="a JSON object of more CreateTemplateInput fields, by their wire names, for the "
        "template the server creates: nasConfig, ossConfiguration, logConfiguration, "
        "executionRoleArn, credentialConfiguration, ... [TEMPLATE_CONFIG]",
    )
    add(
        "--session-mounts",
        metavar="FILE",
        default=_env(env, "SESSION_MOUNTS"),
        help="a JSON object with nasConfig, ossMountConfig and/or polarFsConfig (wire "
        "names): storage every sandbox of the server mounts [SESSION_MOUNTS]",
    )


def _process_options(add: _Add, env: Mapping[str, str]) -> None:
    add(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default=_env(env, "LOOP", "auto"),
        help="event loop: auto uses uvloop when it is installed (it comes with the `mcp` "
        "extra off Windows), else asyncio [LOOP]",
    )
    add(
        "--log-level",
        default=(_env(env, "LOG_LEVEL", "INFO") or "INFO").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="stderr log level [LOG_LEVEL]",
    )
    add(
        "--log-format",
        choices=["text", "json"],
        default=_env(env, "LOG_FORMAT", "text"),
        help="stderr log lines as text, or one JSON object each for log collectors [LOG_FORMAT]",
    )


def _pool_size(text: str) -> int | tuple[int, int]:
    parts = [s.strip() for s in text.split(",") if s.strip()]
    try:
        if len(parts) == 1:
            return int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise ValueError(f"--pool-size must be N or MIN,MAX, got {text!r}")


def _tools(text: str) -> frozenset[str]:
    chosen: set[str] = set()
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item in TOOL_GROUPS:
            chosen.update(TOOL_GROUPS[item])
        elif item in ALL_TOOLS:
            chosen.add(item)
        else:
            raise ValueError(
                f"--tools: unknown {item!r}; use groups {', '.join(TOOL_GROUPS)} or tools "
                f"{', '.join(ALL_TOOLS)}"
            )
    if not chosen:
        raise ValueError("--tools selects no tool")
    return frozenset(chosen)


def _json_file(path: str | None, flag: str, allowed: Sequence[str]) -> dict[str, Any]:
    """A JSON object file's fields, each one `allowed`; ValueError naming the problem."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{flag} {path}: must hold a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"{flag} {path}: unknown field(s) {', '.join(unknown)}; use the wire's names: "
            f"{', '.join(allowed)}"
        )
    return data


def _template_config(args: argparse.Namespace) -> dict[str, Any]:
    """--template-config's fields, with --network-mode / --vpc-id ... over its network."""
    config = _json_file(args.template_config, "--template-config", TEMPLATE_CONFIG_FIELDS)
    network = config.get("networkConfiguration")
    if network is not None and not isinstance(network, dict):
        raise ValueError("--template-config: networkConfiguration must be a JSON object")
    network = dict(network or {})
    if args.vpc_id:
        network["vpcId"] = args.vpc_id
    if args.vswitch_ids:
        network["vswitchIds"] = [s.strip() for s in args.vswitch_ids.split(",") if s.strip()]
    if args.security_group_id:
        network["securityGroupId"] = args.security_group_id
    if args.network_mode:
        network["networkMode"] = args.network_mode
    elif network.get("vpcId") and "networkMode" not in network:
        network["networkMode"] = "PUBLIC_AND_PRIVATE"  # the VPC, and the internet as before
    if network:
        config["networkConfiguration"] = network
    return config


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """ServerOptions from parsed arguments; ValueError names the bad option."""
    if not 0 < args.timeout <= EXECUTE_CAP_SECONDS:
        raise ValueError(
            f"--timeout must be in (0, {EXECUTE_CAP_SECONDS:g}] s (the service's cap per run), "
            f"got {args.timeout:g}"
        )
    if args.max_output_chars < 100:
        raise ValueError("--max-output-chars must be at least 100")
    if args.image_budget_bytes < 0:
        raise ValueError("--image-budget-bytes must be >= 0 (0 drops every image)")
    if args.idle_timeout <= 0:
        raise ValueError("--idle-timeout must be positive seconds")
    if args.max_clients < 1:
        raise ValueError("--max-clients must be at least 1")
    # over HTTP several clients share the server: each gets a sandbox of its own by default
    default: StrategyName = "dedicated" if args.transport == "streamable-http" else "singleton"
    strategy: StrategyName = args.strategy or default
    stateless = bool(getattr(args, "stateless", False))
    if stateless and args.transport != "streamable-http":
        raise ValueError(
            "--stateless is for --transport streamable-http (replicas behind a load "
            "balancer); over stdio the process belongs to its one client"
        )
    if stateless and strategy != "dedicated":
        raise ValueError(
            f"--stateless keeps a sandbox per client (as --strategy dedicated); --strategy "
            f"{strategy} keeps state in one process. Drop --strategy"
        )
    return ServerOptions(
        backend=args.backend,
        strategy=strategy,
        pool_size=_pool_size(args.pool_size),
        interpreter=args.interpreter,
        cpu=args.cpu,
        memory=args.memory,
        timeout=args.timeout,
        max_output_chars=args.max_output_chars,
        image_budget_bytes=args.image_budget_bytes,
        tools=_tools(args.tools),
        idle_timeout=args.idle_timeout,
        max_clients=args.max_clients,
        stateless=stateless,
        template_config=_template_config(args),
        session_mounts=_json_file(args.session_mounts, "--session-mounts", SESSION_MOUNT_FIELDS),
    )


def backend_options(loop: str) -> dict[str, Any]:
    """anyio's asyncio options for --loop (uvloop: about 0.8 ms less per tool call here)."""
    if loop == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401 -- only probing that it is installed
    except ImportError:
        if loop == "uvloop":
            raise ValueError("--loop uvloop: uvloop is not installed; pip install uvloop") from None
        return {}
    return {"use_uvloop": True}


def generated_token(err: TextIO) -> str:
    """A random bearer token for an HTTP server started without one, written to `err`.

    Code run by this server shares the machine's loopback: without a token, it could
    open sessions of its own, run code in other clients' state and use up
    --max-clients. The token lives in this process only (not in its environment or
    command line), so sandboxed code cannot learn it."""
    token = secrets.token_urlsafe(32)
    err.write(
        "agentrun-ci-mcp: no --auth-token (or AGENTRUN_MCP_AUTH_TOKEN) given: HTTP requests "
        "must send this generated token as `Authorization: Bearer <token>`:\n"
        f"AGENTRUN_MCP_AUTH_TOKEN={token}\n"
    )
    err.flush()
    return token


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        # stderr keeps --log-level when a client's logging/setLevel asks for more detail
        # (the records it wants are let through our loggers: see mcplog)
        handler.setLevel(getattr(logging, args.log_level))
    if args.log_format == "json":
        # imported only then: the SDK loads after the handshake (see tools.py)
        from agentrun_ci._logs import use_log_format

        use_log_format(args.log_format)
    try:
        options = options_from_args(args)
        loop_options = backend_options(args.loop)
        if options.stateless:
            from .stateless import HandleKey

            options = attrs.evolve(options, handle_key=HandleKey.from_env(os.environ))
    except ValueError as exc:
        parser.error(str(exc))
    if args.transport == "streamable-http":
        if not is_loopback(args.host):
            if not args.allow_remote:
                parser.error(
                    f"--host {args.host} is not a loopback address: anyone who can reach it "
                    "could run code. Pass --allow-remote (and set AGENTRUN_MCP_AUTH_TOKEN) to "
                    "do it anyway"
                )
            log.warning("listening on %s:%d beyond this machine", args.host, args.port)
        if not args.auth_token:
            args.auth_token = generated_token(sys.stderr)

    from .server import build_server

    mcp, state = build_server(options)
    log.info("agentrun-ci-mcp %s on %s", __version__, args.transport)
    try:
        if args.transport == "stdio":
            status: int = anyio.run(serve_stdio, mcp, state, backend_options=loop_options)
        else:
            status = anyio.run(serve_http, mcp, state, args, backend_options=loop_options)
    except KeyboardInterrupt:
        return 130
    return status


def run() -> None:
    """The console script: `main()`, then a prompt exit.

    The cleanup is done when `main()` returns. What is left is the interpreter's
    own teardown (freeing every module of `mcp`, pydantic, the SDK...), which took
    over a second on a busy machine: long enough for a host's SIGTERM, sent 2 s
    after it closes stdin, to land on a server that had finished. So the exit
    hooks (the SDK's last-resort sweep, the emulator's stop) run here, the streams
    are flushed, and the process ends without the teardown.
    """
    status = main()
    # a signal after the loop ended is recorded (serve.Signals), not fatal: finish
    atexit._run_exitfuncs()  # what a normal exit would run (no public spelling)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    run()
