"""The `agentrun-ci` command line.

`main(argv) -> int` does the work and is what the tests call; `run()` is the
console-script entry point. Heavy imports (the emulator, the Alibaba package)
happen inside the subcommands that need them, so `agentrun-ci --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from ._version import __version__

if TYPE_CHECKING:
    from ._config import Config
    from ._models import Execution
    from ._sync_interpreter import CodeInterpreter

__all__ = ["main", "run"]

log = logging.getLogger("agentrun_ci.cli")

BACKENDS = ("auto", "cloud", "local")


def _mask(secret: str | None) -> str:
    """Say a secret is set without showing any of it (not even a prefix)."""
    if not secret:
        return "(not set)"
    return f"set ({len(secret)} chars)"


def _mask_id(key_id: str | None) -> str:
    """An access key id is not a secret, but its first characters are enough to tell keys apart."""
    if not key_id:
        return "(not set)"
    return key_id[:4] + "…" if len(key_id) > 8 else "****"


@contextmanager
def _progress(label: str, stream: TextIO) -> Iterator[None]:
    """Say what we wait for, with the elapsed time, when stderr is a terminal."""
    if not stream.isatty():
        yield
        return
    start = time.monotonic()
    stream.write(f"{label}…")
    stream.flush()
    try:
        yield
    finally:
        stream.write(f"\r{label}: done in {time.monotonic() - start:.1f} s\n")
        stream.flush()


# ---------------------------------------------------------------- run


def _interpreter(args: argparse.Namespace) -> CodeInterpreter:
    from ._sync_interpreter import CodeInterpreter

    return CodeInterpreter.from_env(
        backend=args.backend, strategy="singleton", interpreter_name=args.interpreter
    )


def _print_execution(execution: Execution, out: TextIO, err: TextIO) -> None:
    out.write(execution.stdout)
    err.write(execution.stderr)
    for result in execution.results:
        if result.formats() and not result.is_main_result:
            # rich display output (a figure, HTML) has no place on a terminal: name it
            out.write(f"[{', '.join(result.formats())}]\n")
        elif result.text is not None:
            out.write(result.text + "\n")
    if execution.error is not None:
        text = execution.error.traceback or f"{execution.error.name}: {execution.error.value}"
        err.write(text if text.endswith("\n") else text + "\n")
    elif execution.status != "ok":
        err.write(f"agentrun-ci: the execution ended with status {execution.status!r}\n")


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.file is not None:
        if args.file == "-":
            code = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as handle:
                code = handle.read()
    elif args.code is not None:
        code = args.code
    elif not sys.stdin.isatty():
        code = sys.stdin.read()
    else:
        err.write("agentrun-ci run: give the code as an argument, with -f FILE, or on stdin\n")
        return 2
    with _interpreter(args) as interpreter:
        with _progress("starting a session", err):
            interpreter.start_session()
        execution = interpreter.execute_code(code, language=args.language, timeout=args.timeout)
    if args.json:
        out.write(json.dumps(_execution_json(execution), indent=2) + "\n")
    else:
        _print_execution(execution, out, err)
    return 0 if execution.error is None and execution.status == "ok" else 1


def _execution_json(execution: Execution) -> dict[str, Any]:
    return {
        "stdout": execution.stdout,
        "stderr": execution.stderr,
        "results": [{"text": r.text, "formats": r.formats()} for r in execution.results],
        "error": None
        if execution.error is None
        else {
            "name": execution.error.name,
            "value": execution.error.value,
            "traceback": execution.error.traceback,
        },
        "execution_count": execution.execution_count,
        "status": execution.status,
    }


# ---------------------------------------------------------------- doctor


def _reachable(url: str, timeout: float = 3.0) -> str | None:
    """Return None when a TCP connection to the URL's host opens, else the reason."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def doctor(environ: Mapping[str, str], out: TextIO, *, check_network: bool = True) -> int:
    """Check configuration, credentials, endpoints and reachability; print fixes."""
    from ._config import Config
    from ._errors import ConfigError

    problems: list[str] = []

    def ok(msg: str) -> None:
        out.write(f"  ok    {msg}\n")

    def problem(msg: str, fix: str) -> None:
        problems.append(msg)
        out.write(f"  FIX   {msg}\n        → {fix}\n")

    out.write(f"agentrun-ci {__version__} doctor\n\nConfiguration\n")
    try:
        config: Config | None = Config.from_env(environ)
    except ConfigError as exc:
        config = None
        problem(str(exc), "set the variable it names (see README, Configuration)")
    if config is not None:
        ok(f"access key id      {_mask_id(config.access_key_id)}")
        ok(f"access key secret  {_mask(config.access_key_secret)}")
        if config.security_token:
            ok(f"security token     {_mask(config.security_token)}")
        ok(f"region             {config.region}")
        if not config.has_credentials:
            out.write(
                "  note  no AgentRun credentials: backend 'auto' will run code on THIS machine\n"
                "        with the local emulator. For the cloud set AGENTRUN_ACCESS_KEY_ID,\n"
                "        AGENTRUN_ACCESS_KEY_SECRET and AGENTRUN_ACCOUNT_ID.\n"
            )
        else:
            if not config.account_id and not config.data_endpoint:
                problem(
                    "AGENTRUN_ACCOUNT_ID is not set (the data endpoint needs your main account id)",
                    "export AGENTRUN_ACCOUNT_ID=<your Alibaba Cloud main account id>",
                )
            endpoints: list[tuple[str, Callable[[], str]]] = [
                ("control endpoint", lambda: config.control_url),
                ("data endpoint", lambda: config.data_url),
            ]
            for label, get in endpoints:
                try:
                    url = get()
                except ConfigError as exc:
                    if not problems:  # the missing account id above is this same problem
                        problem(str(exc), "set the variable it names")
                    continue
                ok(f"{label:<18} {url}")
                if check_network:
                    reason = _reachable(url)
                    if reason is None:
                        ok(f"{label:<18} reachable")
                    else:
                        problem(
                            f"{label} {url} is not reachable ({reason})",
                            "check the region, the endpoint variable, proxies and the network",
                        )
    out.write("\nLocal backend\n")
    missing = [m for m in ("jupyter_client", "ipykernel", "starlette", "uvicorn") if not _has(m)]
    if missing:
        problem(
            f"the local emulator needs {', '.join(missing)}",
            "pip install 'agentrun-ci[local]'",
        )
    else:
        ok("jupyter_client, ipykernel, starlette and uvicorn are installed")
    if shutil.which("node"):
        ok("node found: javascript contexts are available locally")
    else:
        out.write("  note  node is not on PATH: local javascript contexts are unavailable\n")
    out.write("\n")
    if problems:
        out.write(f"{len(problems)} problem(s) found.\n")
        return 1
    out.write("No problems found.\n")
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------- resources


def _control(args: argparse.Namespace) -> Any:
    from ._config import Config
    from ._errors import ConfigError
    from ._sync.control_plane import ControlPlane

    config = Config.from_env()
    if not config.has_credentials and not config.control_endpoint:
        # Without keys the request would go to the cloud unsigned and come back 401.
        raise ConfigError(
            "no AgentRun credentials: set AGENTRUN_ACCESS_KEY_ID, AGENTRUN_ACCESS_KEY_SECRET and "
            "AGENTRUN_ACCOUNT_ID, or point AGENTRUN_CONTROL_ENDPOINT at an emulator "
            "(`agentrun-ci local serve` prints what to export)"
        )
    return ControlPlane(config)


def _cmd_interpreters(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _control(args) as control:
        if args.action == "list":
            for t in control.list_templates(template_type="CodeInterpreter"):
                out.write(f"{t.name}\t{t.status}\tcpu={t.cpu}\tmemory={t.memory}\n")
        elif args.action == "create":
            with _progress(f"creating interpreter {args.name}", err):
                control.create_template(args.name, cpu=args.cpu, memory=args.memory)
                t = control.wait_template_ready(args.name)
            out.write(f"{t.name}\t{t.status}\n")
        else:
            control.delete_template(args.name)
            out.write(f"deleted {args.name}\n")
    return 0


def _cmd_sessions(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _control(args) as control:
        if args.action == "list":
            sandboxes = control.list_sandboxes(template_name=args.interpreter)
            with _data_plane(control.config) as data:
                for s in sandboxes:
                    # RUNNING: a preview's word for READY (inferred)
                    running = s.status in ("READY", "RUNNING")
                    use = _current_use(data, s.sandbox_id) if running else "-"
                    out.write(f"{s.sandbox_id}\t{s.status}\t{s.template_name}\t{use}\n")
        else:
            control.stop_sandbox(args.session_id)
            out.write(f"stopped {args.session_id}\n")
    return 0


def _data_plane(config: Config) -> Any:
    from ._sync.data_plane import DataPlane

    return DataPlane(config)


#: each process costs one request: `sessions list` reads at most this many per session
_MAX_PROCESSES = 50


def _current_use(data: Any, sandbox_id: str) -> str:
    """`memory=… MiB cpu=… %` summed over the session's processes, `-` where unknown."""
    from ._errors import AgentRunError

    memory: float | None = None
    cpu: float | None = None
    try:
        processes = data.list_processes(sandbox_id)[:_MAX_PROCESSES]
        for process in processes:
            usage = data.get_process(sandbox_id, process.pid).usage
            if usage.memory_mb is not None:
                memory = (memory or 0.0) + usage.memory_mb
            if usage.cpu_percent is not None:
                cpu = (cpu or 0.0) + usage.cpu_percent
        if not processes:
            return "no processes"
    except AgentRunError as exc:  # the session went away, or the plane is unreachable
        log.debug("no usage for %s: %s", sandbox_id, exc)
        return "-"
    if memory is None and cpu is None:
        return "-"
    mem = "-" if memory is None else f"{memory:.1f}"
    return f"memory={mem}MiB cpu={'-' if cpu is None else f'{cpu:.0f}'}%"


def _cmd_reap(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._sync_interpreter import CodeInterpreter

    # reap_on_start=False: opening would otherwise reap everything at once, ignoring
    # --older-than, and the count printed below would always be 0.
    with CodeInterpreter.from_env(
        backend="cloud", owner=args.owner, reap_on_start=False
    ) as interpreter:
        count = interpreter.reap(older_than=args.older_than)
    out.write(f"reaped {count} orphaned resource(s)\n")
    return 0


# ---------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentrun-ci",
        description="Run code on Alibaba Cloud AgentRun, or here with the local emulator.",
    )
    p.add_argument("--version", action="version", version=f"agentrun-ci {__version__}")
    p.add_argument("--log-level", default=os.environ.get("AGENTRUN_LOG_LEVEL", "WARNING"))
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("AGENTRUN_LOG_FORMAT", "text"),
        help="log lines on stderr as text, or one JSON object each",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run code and print its output")
    r.add_argument("code", nargs="?", help="the code (or use -f FILE, or stdin)")
    r.add_argument("-f", "--file", help="read the code from FILE ('-' for stdin)")
    r.add_argument("-l", "--language", default="python", choices=["python", "javascript"])
    r.add_argument("-t", "--timeout", type=float, default=30.0, help="seconds (max 30)")
    r.add_argument(
        "--backend", default=os.environ.get("AGENTRUN_BACKEND", "auto"), choices=BACKENDS
    )
    r.add_argument("--interpreter", help="reuse this existing interpreter (template) by name")
    r.add_argument("--json", action="store_true", help="print the structured result as JSON")

    i = sub.add_parser("interpreters", help="list, create or delete interpreters (templates)")
    isub = i.add_subparsers(dest="action", required=True)
    isub.add_parser("list")
    ic = isub.add_parser("create")
    ic.add_argument("name")
    ic.add_argument("--cpu", type=float, default=2.0)
    ic.add_argument("--memory", type=int, default=4096)
    idl = isub.add_parser("delete")
    idl.add_argument("name")

    s = sub.add_parser("sessions", help="list or stop sessions (sandboxes)")
    ssub = s.add_subparsers(dest="action", required=True)
    sl = ssub.add_parser("list")
    sl.add_argument("--interpreter", help="only sessions of this interpreter")
    ss = ssub.add_parser("stop")
    ss.add_argument("session_id")

    rp = sub.add_parser("reap", help="delete sandboxes and templates orphaned by crashed runs")
    rp.add_argument("--older-than", type=float, default=0.0, help="seconds")
    rp.add_argument(
        "--owner", help="whose orphans (default: this host and user, or $AGENTRUN_CI_OWNER)"
    )

    dr = sub.add_parser("doctor", help="check configuration, credentials and reachability")
    dr.add_argument(
        "--no-network", action="store_true", help="skip the endpoint reachability checks"
    )

    loc = sub.add_parser("local", help="the local AgentRun emulator")
    lsub = loc.add_subparsers(dest="action", required=True)
    lsub.add_parser(
        "serve", help="serve the emulator (see `agentrun-ci local serve --help`)", add_help=False
    )
    return p


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the command line; return the exit status (also for `--help` and usage errors).

    `environ` is what `doctor` inspects (default: os.environ).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    env = os.environ if environ is None else environ
    # `local serve` owns its own options: hand everything after it over untouched.
    if argv[:2] == ["local", "serve"]:
        from .local.cli import serve_main

        with redirect_stdout(out), redirect_stderr(err):
            try:
                return serve_main(argv[2:])
            except SystemExit as exc:  # --help, usage errors
                return _exit_code(exc)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            args = _parser().parse_args(argv)
    except SystemExit as exc:
        return _exit_code(exc)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from ._logs import use_log_format

    use_log_format(args.log_format)
    from ._errors import AgentRunError

    commands: dict[str, Callable[[argparse.Namespace, TextIO, TextIO], int]] = {
        "run": _cmd_run,
        "interpreters": _cmd_interpreters,
        "sessions": _cmd_sessions,
        "reap": _cmd_reap,
        "doctor": lambda a, o, e: doctor(env, o, check_network=not a.no_network),
    }
    try:
        return commands[args.command](args, out, err)
    except AgentRunError as exc:
        err.write(f"agentrun-ci: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
