"""The `agentrun-ci` command line.

`main(argv) -> int` does the work and is what the tests call; `run()` is the
console-script entry point. Heavy imports (the emulator, the Alibaba package)
happen inside the subcommands that need them, so `agentrun-ci --help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast
from urllib.parse import urlsplit

from ._version import __version__

if TYPE_CHECKING:
    from ._config import Config
    from ._discovery import Entry
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


class _Status(io.TextIOBase):
    """stderr with at most one open progress line ("starting a session…").

    Anything else written to stderr while the line is open (a log warning, the
    user's stderr) first ends that line, so it never lands in the middle of it.
    Progress is shown only on a terminal.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._open: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text and self._open is not None:
            self.stream.write("\n")
            self._open = None
        self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @contextmanager
    def progress(self, label: str) -> Iterator[None]:
        """Say what we wait for, then how long it took (terminal only)."""
        if not self.stream.isatty():
            yield
            return
        start = time.monotonic()
        self.stream.write(f"{label}…")
        self.stream.flush()
        self._open = label
        try:
            yield
        finally:
            elapsed = f"{label}: done in {time.monotonic() - start:.1f} s\n"
            # still on our line: rewrite it; else something interrupted it: a fresh line
            self.stream.write(("\r" if self._open == label else "") + elapsed)
            self.stream.flush()
            self._open = None


@contextmanager
def _progress(label: str, stream: TextIO) -> Iterator[None]:
    """A progress line on `stream` (a `_Status` keeps other output off it)."""
    status = stream if isinstance(stream, _Status) else _Status(stream)
    with status.progress(label):
        yield


class _LogHandler(logging.Handler):
    """Log records to the command's stderr (through `_Status`, so off the progress line).

    A message that already speaks to the user ("agentrun-ci: running code on THIS
    machine …") is printed as it is; anything else with its level and logger name.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.bare_user_lines = True  # False with --log-format json: every line is formatted
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            bare = self.bare_user_lines and message.startswith("agentrun-ci: ")
            text = message if bare else self.format(record)
            self.stream.write(text + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)


# ---------------------------------------------------------------- run


def _interpreter(args: argparse.Namespace) -> CodeInterpreter:
    from ._config import Config
    from ._sync_interpreter import CodeInterpreter

    config = Config.from_env()
    # On the embedded emulator, the run's sandbox takes the spare kernel the emulator
    # starts at once (ready or still starting): one kernel start, begun early.
    return CodeInterpreter(
        config, backend=args.backend, strategy="singleton", interpreter_name=args.interpreter
    )


#: which running emulator `run` prefers: one served on purpose outlives a script's
_KIND_ORDER = {"serve": 0, "mcp": 1, "embedded": 2}


def _running_emulator(args: argparse.Namespace) -> Entry | None:
    """For `run` on the local backend (no credentials, or `--backend local`; not
    `--own-emulator`): a live, reachable local emulator of this user whose port accepts a
    connection (the newest of the most lasting kind), or None."""
    from ._config import Config
    from ._discovery import live_entries

    config = Config.from_env()
    remote = config.has_credentials or bool(config.control_endpoint and config.data_endpoint)
    if args.own_emulator or not (
        args.backend == "local" or (args.backend == "auto" and not remote)
    ):
        return None
    try:
        entries = [e for e in live_entries() if e.reachable]
    except OSError:
        return None
    entries.sort(key=lambda e: (_KIND_ORDER.get(e.kind, 3), -e.started))
    for entry in entries:
        if _reachable(entry.url, timeout=1.0) is None:
            return entry
    return None


def _read_code(args: argparse.Namespace) -> str | None:
    """The code to run, from the argument, -f FILE or stdin; None when there is none."""
    if args.file is not None:
        if args.file == "-":
            return sys.stdin.read()
        try:
            with open(args.file, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise _UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise _UsageError(
                f"{args.file} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}): "
                f"save it as UTF-8 (for example: iconv -f latin1 -t utf-8 {args.file} > utf8.py)"
            ) from exc
    if args.code is not None:
        return str(args.code)
    if not sys.stdin.isatty():
        return sys.stdin.read()
    return None


class _UsageError(Exception):
    """Bad command-line input: printed as `agentrun-ci run: …`, exit status 2."""


_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}


def _save_images(execution: Execution, directory: str) -> dict[int, list[str]]:
    """Write each result's images into `directory`; {result index: [paths]}."""
    import base64

    saved: dict[int, list[str]] = {}
    os.makedirs(directory, exist_ok=True)
    count = execution.execution_count or 0
    for index, result in enumerate(execution.results):
        for mime, ext in _EXTENSIONS.items():
            value = result.data.get(mime)
            if not isinstance(value, str):
                continue
            body = value.encode() if ext == "svg" else base64.b64decode(value)
            path = os.path.join(directory, f"result-{count}-{index + 1}.{ext}")
            with open(path, "wb") as handle:
                handle.write(body)
            saved.setdefault(index, []).append(path)
    return saved


def _print_execution(
    execution: Execution, out: TextIO, err: TextIO, saved: Mapping[int, list[str]] | None = None
) -> None:
    out.write(execution.stdout)
    err.write(execution.stderr)
    for index, result in enumerate(execution.results):
        paths = (saved or {}).get(index)
        if paths:
            out.write(f"[{', '.join(result.formats())} saved to {', '.join(paths)}]\n")
        elif result.formats() and not result.is_main_result:
            # rich display output (a figure, HTML) has no place on a terminal: name it
            hint = (
                " (--save-images DIR writes it to a file)"
                if any(m in _EXTENSIONS for m in result.formats())
                else ""
            )
            out.write(f"[{', '.join(result.formats())}]{hint}\n")
        elif result.text is not None:
            out.write(result.text + "\n")
    if execution.error is not None:
        text = execution.error.traceback or f"{execution.error.name}: {execution.error.value}"
        err.write(text if text.endswith("\n") else text + "\n")
    elif execution.status != "ok":
        err.write(f"agentrun-ci: the execution ended with status {execution.status!r}\n")


def _cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._wire import check_timeout

    try:
        code = _read_code(args)
    except _UsageError as exc:
        err.write(f"agentrun-ci run: {exc}\n")
        return 2
    if code is None:
        err.write("agentrun-ci run: give the code as an argument, with -f FILE, or on stdin\n")
        return 2
    # Refused here, before a backend (and maybe an emulator) is started for nothing.
    check_timeout(args.timeout)
    running = _running_emulator(args)
    if running is not None:
        status = _run_on(running, code, args, out, err)
        if status is not None:
            return status
    interpreter = _interpreter(args)
    try:
        with _progress("starting a session", err):
            interpreter.start_session()
        execution = interpreter.execute_code(code, language=args.language, timeout=args.timeout)
        # Printed now, not after the session is torn down (that takes a moment).
        return _report(execution, args, out, err)
    except KeyboardInterrupt:
        # What the teardown of an interrupted run meets (a request cut off, an emulator
        # already stopping) is not the user's news: main() says "interrupted", nothing else.
        logging.disable(logging.CRITICAL)
        raise
    finally:
        interpreter.close()


def _report(execution: Execution, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print the execution (and save its images) as asked; the exit status."""
    saved = _save_images(execution, args.save_images) if args.save_images else None
    if args.json:
        data = _execution_json(execution)
        if saved is not None:
            data["saved_images"] = [p for paths in saved.values() for p in paths]
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_execution(execution, out, err, saved)
    out.flush()
    err.flush()
    return 0 if execution.error is None and execution.status == "ok" else 1


#: the interpreter (template) `run` keeps in a running emulator it uses, for the next run
RUN_TEMPLATE = "agentrun-ci-run"


def _run_on(
    entry: Entry, code: str, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int | None:
    """`run` in a running local emulator of this user, on its data plane alone (no
    facade, no control-plane client: a one-shot command's time is mostly its imports).

    A session of its own (owner-tagged: a crash leaves nothing the reaper would not
    find) from `--interpreter` or the kept `RUN_TEMPLATE`, deleted after. None when that
    fails before the code runs (the emulator stopped meanwhile, it refused us): the
    caller then starts an emulator of its own.
    """
    import ssl

    import httpx

    from ._errors import AgentRunError
    from ._ownership import OwnerTag
    from ._sync.data_plane import DataPlane

    (log.warning if args.backend == "auto" else log.info)(
        "agentrun-ci: no AgentRun credentials found; running code on THIS machine in the "
        "running local emulator %s (--own-emulator starts one of this command's own)",
        entry.describe(),
    )
    sandbox_id = OwnerTag.current().new_name("run")
    # The emulator speaks plain HTTP on loopback: a transport whose TLS context loads no
    # CA bundle (loading one is most of a client's start, and it would verify nothing
    # here; an https URL would fail its verification, not skip it).
    transport = httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    with DataPlane(entry.config, transport=transport) as data:
        try:
            with _progress("starting a session", err):
                _start_on(entry, data, sandbox_id, args.interpreter)
        except AgentRunError as exc:
            log.warning(
                "agentrun-ci: the running local emulator %s failed (%s); starting one of "
                "this command's own",
                entry.describe(),
                exc,
            )
            with contextlib.suppress(AgentRunError):
                data.delete_sandbox(sandbox_id)
            return None
        try:
            execution = data.execute(sandbox_id, code, language=args.language, timeout=args.timeout)
            return _report(execution, args, out, err)
        except KeyboardInterrupt:
            logging.disable(logging.CRITICAL)  # as below: "interrupted" is all the user hears
            raise
        finally:
            with contextlib.suppress(AgentRunError):
                data.delete_sandbox(sandbox_id)


def _start_on(entry: Entry, data: Any, sandbox_id: str, interpreter: str | None) -> None:
    """Start the session `sandbox_id` in `entry`'s emulator and wait until it is healthy;
    make the kept run template first where it is missing."""
    from ._errors import ConflictError, NotFoundError

    template = interpreter or RUN_TEMPLATE
    try:
        data.create_sandbox(template, idle_timeout=600, sandbox_id=sandbox_id)
    except NotFoundError:
        if interpreter is not None:
            raise
        from ._sync.control_plane import ControlPlane

        with ControlPlane(entry.config) as control:
            with contextlib.suppress(ConflictError):  # another run made it meanwhile
                control.create_template(
                    RUN_TEMPLATE,
                    description="agentrun-ci run: kept for the next run (deleted with the "
                    "emulator)",
                )
            control.wait_template_ready(RUN_TEMPLATE)
        data.create_sandbox(template, idle_timeout=600, sandbox_id=sandbox_id)
    data.wait_until_healthy(sandbox_id)


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


#: Regions with an AgentRun endpoint (the control-plane client's endpoint map).
REGIONS = ("cn-hangzhou", "cn-shanghai", "cn-shenzhen", "cn-beijing", "ap-southeast-1")


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


class _Report:
    """The doctor's output: one verdict line per item, problems counted."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.problems = 0

    def section(self, title: str) -> None:
        self.out.write(f"\n{title}\n")

    def ok(self, msg: str) -> None:
        self.out.write(f"  ok    {msg}\n")

    def note(self, msg: str) -> None:
        self.out.write(f"  note  {msg}\n")

    def problem(self, msg: str, fix: str) -> None:
        self.problems += 1
        self.out.write(f"  FIX   {msg}\n        → {fix}\n")


def doctor(
    environ: Mapping[str, str],
    out: TextIO,
    *,
    check_network: bool = True,
    check_kernel: bool = True,
) -> int:
    """Check configuration, credentials, endpoints and the local backend; print fixes.

    Each item gets one verdict (`ok`, `note` or `FIX` with what to do). Endpoints are
    tried over TCP unless `check_network` is false; the local backend is tried for real
    (an emulator, a sandbox and a Python kernel running `1 + 1`) unless `check_kernel`
    is false.
    """
    from ._config import Config
    from ._errors import ConfigError

    report = _Report(out)
    out.write(f"agentrun-ci {__version__} doctor\n")
    report.section("Configuration")
    try:
        config: Config | None = Config.from_env(environ)
    except ConfigError as exc:
        config = None
        report.problem(str(exc), "set or fix the variable it names (docs: Configuration)")
    if config is not None:
        _doctor_config(config, report, check_network)
    report.section("Local backend")
    _doctor_local(report, check_kernel)
    out.write("\n")
    if report.problems:
        out.write(f"{report.problems} problem(s) found.\n")
        return 1
    out.write("No problems found.\n")
    return 0


def _doctor_config(config: Config, report: _Report, check_network: bool) -> None:
    from ._errors import ConfigError

    report.ok(f"access key id      {_mask_id(config.access_key_id)}")
    report.ok(f"access key secret  {_mask(config.access_key_secret)}")
    if config.security_token:
        report.ok(f"security token     {_mask(config.security_token)}")
    if config.api_key:
        report.ok(f"api key            {_mask(config.api_key)}")
    for problem, fix in _shape_problems(config):
        report.problem(problem, fix)
    if config.region in REGIONS:
        report.ok(f"region             {config.region}")
    else:
        report.problem(
            f"region {config.region!r} is not an AgentRun region",
            f"set AGENTRUN_REGION to one of {', '.join(REGIONS)}",
        )
    if not config.has_credentials and not (config.control_endpoint and config.data_endpoint):
        report.note(
            "no AgentRun credentials: backend 'auto' will run code on THIS machine\n"
            "        with the local emulator. For the cloud set AGENTRUN_ACCESS_KEY_ID,\n"
            "        AGENTRUN_ACCESS_KEY_SECRET and AGENTRUN_ACCOUNT_ID."
        )
        return
    endpoints: list[tuple[str, Callable[[], str]]] = [
        ("control endpoint", lambda: config.control_url),
        ("data endpoint", lambda: config.data_url),
    ]
    for label, get in endpoints:
        try:
            url = get()
        except ConfigError:
            # the one reason: no account id (and no data endpoint) to build the URL from
            report.problem(
                f"{label:<18} cannot be built: AGENTRUN_ACCOUNT_ID is not set (the data "
                "endpoint needs your main account id)",
                "export AGENTRUN_ACCOUNT_ID=<your Alibaba Cloud main account id>",
            )
            continue
        if not check_network:
            report.ok(f"{label:<18} {url} (not tried: --no-network)")
            continue
        derived = config.control_endpoint if label.startswith("control") else config.data_endpoint
        if config.region not in REGIONS and not derived:
            # built from the unknown region: its failure would be the region problem again
            report.note(f"{label:<18} {url} not tried (fix the region first)")
            continue
        reason = _reachable(url)
        if reason is None:
            report.ok(f"{label:<18} {url} (reachable)")
        else:
            report.problem(
                f"{label} {url} is not reachable ({reason})",
                "check the region, the endpoint variable, proxies and the network",
            )


# What Alibaba Cloud's credentials look like: a RAM user's AccessKey id starts with LTAI, a
# temporary (STS) one with "STS."; secrets are about 30 characters; a main account id is
# a number. Only checked where the cloud is the target: an emulator makes its own.
_KEY_ID_SHAPE = re.compile(r"^(LTAI[A-Za-z0-9]{8,40}|STS\.[A-Za-z0-9]{8,80})$")
_ACCOUNT_SHAPE = re.compile(r"^[0-9]{6,20}$")


def _shape_problems(config: Config) -> list[tuple[str, str]]:
    """Credentials that cannot be right by their shape, for the cloud's endpoints."""
    cloud = not (config.control_endpoint or config.data_endpoint) or any(
        (urlsplit(e if "://" in e else "https://" + e).hostname or "").endswith(".aliyuncs.com")
        for e in (config.control_endpoint, config.data_endpoint)
        if e
    )
    if not cloud:
        return []
    found: list[tuple[str, str]] = []
    key_id, secret = config.access_key_id, config.access_key_secret
    if key_id and not _KEY_ID_SHAPE.match(key_id):
        found.append(
            (
                f"access key id {_mask_id(key_id)} does not look like an Alibaba Cloud "
                "AccessKey id (LTAI... for a RAM user's key, STS.... for a temporary one)",
                "copy the AccessKey id again from the RAM console into AGENTRUN_ACCESS_KEY_ID",
            )
        )
    if key_id and key_id.startswith("STS.") and not config.security_token:
        found.append(
            (
                "a temporary (STS.) access key id needs its security token",
                "export AGENTRUN_SECURITY_TOKEN with the token issued with that key",
            )
        )
    if secret and len(secret) < 16:
        found.append(
            (
                f"the access key secret has {len(secret)} characters; Alibaba Cloud's have 30",
                "copy the AccessKey secret again into AGENTRUN_ACCESS_KEY_SECRET",
            )
        )
    if config.account_id and not _ACCOUNT_SHAPE.match(config.account_id):
        found.append(
            (
                f"account id {config.account_id!r} is not a number; an Alibaba Cloud main "
                "account id is (the console shows it under your avatar)",
                "set AGENTRUN_ACCOUNT_ID to your main account's numeric id",
            )
        )
    return found


def _doctor_local(report: _Report, check_kernel: bool) -> None:
    missing = [m for m in ("jupyter_client", "ipykernel", "starlette", "uvicorn") if not _has(m)]
    if missing:
        report.problem(
            f"the local emulator needs {', '.join(missing)}",
            "install the local extra: pip install -e '.[local]' in your clone",
        )
    elif not check_kernel:
        report.ok("emulator packages installed (kernel not tried: --no-kernel)")
        tools = [t for t in ("bwrap", "slirp4netns", "pasta") if shutil.which(t)]
        found = ", ".join(tools) if tools else "none of bwrap, slirp4netns, pasta"
        report.note(f"sandbox isolation not tried (--no-kernel); on PATH: {found}")
    else:
        failure, seconds, isolation = _try_local_kernel()
        if failure is None:
            report.ok(f"local emulator started a Python kernel and ran 1 + 1 ({seconds:.1f} s)")
            for ok, line, fix in isolation:
                if ok:
                    report.ok(line)
                else:
                    report.note(f"{line}: {fix}")
        else:
            report.problem(
                f"the local emulator could not run code: {failure}",
                "run `agentrun-ci --log-level DEBUG run '1'` to see why; the local backend "
                "needs Linux or macOS and a writable temporary directory",
            )
    if shutil.which("node"):
        report.ok("node found: javascript contexts are available locally")
    else:
        report.note("node is not on PATH: local javascript contexts are unavailable")


Isolation = list[tuple[bool, str, str]]


def _isolation(interpreter: Any) -> Isolation:
    """What the emulator that ran the kernel isolates sandboxes with: (ok, what, fix) each."""
    emulator = getattr(interpreter._async._backend, "_emulator", None)
    core = getattr(emulator, "core", None)
    if core is None:
        return []
    found: Isolation = []
    jail = core.jail
    if jail is not None:
        found.append((True, f"sandboxes are isolated: {jail.description}", ""))
    else:
        found.append(
            (
                False,
                "sandboxes are NOT isolated (no bubblewrap jail): code sees this machine's files",
                "install bubblewrap (apt-get install bubblewrap)",
            )
        )
    if core.uplink is not None:
        found.append(
            (True, f"network: a namespace per sandbox, PUBLIC out through {core.uplink.kind}", "")
        )
    else:
        found.append(
            (
                False,
                "network: PUBLIC sandboxes share this machine's network (loopback included)",
                "install slirp4netns (apt-get install slirp4netns) or passt",
            )
        )
    if jail is not None and jail.privileged:
        found.append((True, f"one uid per sandbox, leased from {jail.uid} upwards", ""))
    return found


def _try_local_kernel() -> tuple[str | None, float, Isolation]:
    """Run `1 + 1` on a fresh local emulator; (None, seconds, what isolates its sandboxes)
    or (what failed, seconds, [])."""
    from ._config import Config
    from ._errors import AgentRunError
    from ._sync_interpreter import CodeInterpreter
    from .local import EmulatorSettings

    start = time.monotonic()
    try:
        with CodeInterpreter(
            Config(),  # not the environment's: a bad variable is reported above, not here
            backend="local",
            reap_on_start=False,
            emulator_settings=EmulatorSettings(spare_kernels=0),
        ) as interpreter:
            execution = interpreter.execute_code("1 + 1", timeout=30)
            isolation = _isolation(interpreter)
    except (AgentRunError, OSError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}", time.monotonic() - start, []
    if execution.text != "2":
        what = execution.error.name if execution.error else repr(execution.text)
        return f"1 + 1 gave {what}", time.monotonic() - start, []
    return None, time.monotonic() - start, isolation


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------- resources


def _is_local_default() -> bool:
    """No credentials and no endpoint configured: the resource commands act on this
    user's running local emulators (the registry in `_discovery`)."""
    from ._config import Config

    config = Config.from_env()
    return not config.has_credentials and not config.control_endpoint


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


# ------------------------------------------------ this user's local emulators


_NO_EMULATOR = (
    "agentrun-ci: no AgentRun credentials, and no local emulator of yours is running. "
    "Start one (`agentrun-ci local serve`, or any script or MCP server on the local backend) "
    "or set AGENTRUN_ACCESS_KEY_ID, AGENTRUN_ACCESS_KEY_SECRET and AGENTRUN_ACCOUNT_ID for "
    "the cloud\n"
)


def _local_emulators(err: TextIO) -> list[Entry]:
    """The registry's live emulators this command can reach; says on `err` when there is
    none, and which ones it cannot reach."""
    from ._discovery import ENV, live_entries, registry_dir

    if registry_dir() is None:
        err.write(
            f"agentrun-ci: no AgentRun credentials, and {ENV}=off: no local emulator is "
            "listed. Unset it, or set the cloud's credentials\n"
        )
        return []
    entries = live_entries()
    if not entries:
        err.write(_NO_EMULATOR)
    for entry in entries:
        if entry.withheld:
            err.write(
                f"agentrun-ci: not listing the emulator {entry.describe()}: its sandboxes run as "
                "you without the jail, so it keeps its key pair out of the registry (where "
                "their code could read it). A `local serve` is reached through the variables it "
                "printed\n"
            )
    return [e for e in entries if e.reachable]


@contextmanager
def _local_control(entry: Entry) -> Iterator[Any]:
    """A ControlPlane on one registered emulator, quick to give up on one that hangs."""
    import attrs

    from ._sync.control_plane import ControlPlane

    config = attrs.evolve(entry.config, connect_timeout=3.0, read_timeout=30.0, max_retries=0)
    with ControlPlane(config) as control:
        yield control


def _each_emulator(err: TextIO) -> Iterator[tuple[Entry, Any]]:
    """(entry, control plane) for each reachable local emulator; one that fails is named
    on `err` and skipped."""
    from ._errors import AgentRunError

    for entry in _local_emulators(err):
        try:
            with _local_control(entry) as control:
                yield entry, control
        except AgentRunError as exc:
            err.write(f"agentrun-ci: the emulator {entry.describe()} failed: {exc}\n")


def _owner_of(sandbox_id: str, err: TextIO) -> Entry | None:
    """The registered emulator that runs `sandbox_id`, or None."""
    from ._errors import NotFoundError

    for entry, control in _each_emulator(err):
        try:
            control.get_sandbox(sandbox_id)
        except NotFoundError:
            continue
        return entry
    return None


def _cmd_interpreters(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.action == "list" and _is_local_default():
        emulators = found = 0
        for entry, control in _each_emulator(err):
            emulators += 1
            for t in control.list_templates(template_type="CodeInterpreter"):
                found += 1
                out.write(
                    f"{t.name}\t{t.status}\tcpu={t.cpu}\tmemory={t.memory}\t{entry.describe()}\n"
                )
        if emulators and not found:
            err.write(f"agentrun-ci: no interpreters in your {emulators} local emulator(s)\n")
        return 0
    return _cloud_interpreters(args, out, err)


def _cloud_interpreters(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._errors import NotFoundError

    with _control(args) as control:
        if args.action == "list":
            templates = control.list_templates(template_type="CodeInterpreter")
            for t in templates:
                out.write(f"{t.name}\t{t.status}\tcpu={t.cpu}\tmemory={t.memory}\n")
            if not templates:
                err.write("agentrun-ci: no interpreters (CodeInterpreter templates) here\n")
        elif args.action == "create":
            with _progress(f"creating interpreter {args.name}", err):
                control.create_template(args.name, cpu=args.cpu, memory=args.memory)
                t = control.wait_template_ready(args.name)
            out.write(f"{t.name}\t{t.status}\n")
        else:
            # delete_template treats "already gone" as done (right for cleanup); a user who
            # names an interpreter to delete wants to hear that it did not exist.
            try:
                control.get_template(args.name)
            except NotFoundError:
                err.write(
                    f"agentrun-ci: no interpreter named {args.name!r}: nothing deleted "
                    "(`agentrun-ci interpreters list` shows the names)\n"
                )
                return 1
            control.delete_template(args.name)
            out.write(f"deleted {args.name}\n")
    return 0


def _cmd_sessions(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if _is_local_default():
        return _local_sessions(args, out, err)
    with _control(args) as control:
        if args.action == "list":
            if not _list_sessions(control, args.interpreter, out):
                which = f" of interpreter {args.interpreter!r}" if args.interpreter else ""
                err.write(f"agentrun-ci: no sessions{which}\n")
            return 0
        return _end_session(control, args, out, err)


def _local_sessions(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`sessions list|stop|kill` over every local emulator of this user."""
    if args.action == "list":
        emulators = found = 0
        for entry, control in _each_emulator(err):
            emulators += 1
            found += _list_sessions(control, args.interpreter, out, entry.describe())
        if emulators and not found:
            which = f" of interpreter {args.interpreter!r}" if args.interpreter else ""
            err.write(f"agentrun-ci: no sessions{which} in your {emulators} local emulator(s)\n")
        return 0
    owner = _owner_of(args.session_id, err)
    if owner is None:
        err.write(
            f"agentrun-ci: no local emulator of yours runs a session {args.session_id!r} "
            "(`agentrun-ci sessions list` shows them)\n"
        )
        return 1
    with _local_control(owner) as control:
        return _end_session(control, args, out, err)


def _list_sessions(control: Any, interpreter: str | None, out: TextIO, where: str = "") -> int:
    """One line per session (id, status, interpreter, current use[, emulator]); the count."""
    sandboxes = control.list_sandboxes(template_name=interpreter)
    with _data_plane(control.config) as data:
        for s in sandboxes:
            # RUNNING: a preview's word for READY (inferred)
            running = data is not None and s.status in ("READY", "RUNNING")
            use = _current_use(data, s.sandbox_id) if running else "-"
            tail = f"\t{where}" if where else ""
            out.write(f"{s.sandbox_id}\t{s.status}\t{s.template_name}\t{use}{tail}\n")
    return len(sandboxes)


def _end_session(control: Any, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`stop` (the sandbox stays listed, stopped) or `kill` (stopped and deleted)."""
    from ._errors import NotFoundError

    if args.action == "stop":
        control.stop_sandbox(args.session_id)
        out.write(f"stopped {args.session_id}\n")
        return 0
    try:  # delete_sandbox counts "already gone" as done; the user should hear it was not there
        control.get_sandbox(args.session_id)
    except NotFoundError:
        err.write(
            f"agentrun-ci: no session {args.session_id!r}: nothing killed "
            "(`agentrun-ci sessions list` shows them)\n"
        )
        return 1
    control.delete_sandbox(args.session_id)
    out.write(f"killed {args.session_id}\n")
    return 0


@contextmanager
def _data_plane(config: Config) -> Iterator[Any]:
    """A DataPlane for reading sessions' use, or None where no data endpoint is set."""
    from ._errors import ConfigError
    from ._sync.data_plane import DataPlane

    try:
        plane = DataPlane(config)
    except ConfigError as exc:  # the list still works: the use column says "-"
        log.debug("no data plane for current use: %s", exc)
        yield None
        return
    with plane:
        yield plane


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


MCP_CLIENTS = ("claude-desktop", "claude-code", "cursor")

#: where each client keeps its MCP servers (told on stderr, after the config)
_CONFIG_FILES = {
    "claude-desktop": "claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/, "
    "Windows: %APPDATA%\\Claude\\, Linux: ~/.config/Claude/)",
    "cursor": ".cursor/mcp.json in your project, or ~/.cursor/mcp.json for every project",
}

#: the variables the cloud backend needs, with what to put there (the key pair as
#: placeholders: a config file is no place for this shell's credentials)
_CLOUD_ENV = (
    ("AGENTRUN_ACCESS_KEY_ID", None, "<your AccessKey id>"),
    ("AGENTRUN_ACCESS_KEY_SECRET", None, "<your AccessKey secret>"),
    ("AGENTRUN_ACCOUNT_ID", "account_id", "<your main account id>"),
    ("AGENTRUN_REGION", "region", None),
)


def _mcp_launch() -> list[str]:
    """This installation's MCP server, by absolute path: its console script next to the
    interpreter, else the interpreter running the module."""
    script = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "agentrun-ci-mcp")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [os.path.abspath(sys.executable), "-m", "agentrun_ci_mcp"]


#: what a plot or a DataFrame asks of a local kernel (the `data` extra brings them)
_DATA_STACK = ("numpy", "pandas", "matplotlib")


def _cmd_mcp_config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._config import Config

    missing = [
        m
        for m in ("mcp",) + (("jupyter_client",) if args.backend != "cloud" else ())
        if not _has(m)
    ]
    if missing:
        extras = "mcp" if args.backend == "cloud" else "mcp,local"
        err.write(
            f"agentrun-ci mcp-config: this installation lacks {', '.join(missing)}: install "
            f"the extras first (pip install -e '.[{extras}]' in your clone), then run this "
            "again so that the config points at a server that can start\n"
        )
        return 1
    config = Config.from_env()
    backend = args.backend
    if backend == "auto":
        backend = "cloud" if config.has_credentials else "local"
    command, *rest = _mcp_launch()
    server_args = [*rest, "--backend", backend]
    env: dict[str, str] = {}
    if backend == "cloud":
        for variable, field, placeholder in _CLOUD_ENV:
            value = getattr(config, field) if field else None
            if value or placeholder:
                env[variable] = str(value or placeholder)
    if args.client == "claude-code":
        line = ["claude", "mcp", "add", args.name]
        for key, value in env.items():
            line += ["-e", f"{key}={value}"]
        line += ["--", command, *server_args]
        out.write(" ".join(shlex.quote(part) for part in line) + "\n")
    else:
        entry: dict[str, Any] = {"command": command, "args": server_args}
        if env:
            entry["env"] = env
        out.write(json.dumps({"mcpServers": {args.name: entry}}, indent=2) + "\n")
        err.write(f"put it in {_CONFIG_FILES[args.client]}, then restart the client\n")
    if any(v.startswith("<") for v in env.values()):
        err.write("replace the <...> values with your credentials (docs: credentials.md)\n")
    lacking = [m for m in _DATA_STACK if not _has(m)]
    if backend == "local" and lacking:
        err.write(
            f"note: local kernels run in this installation's Python, which lacks "
            f"{', '.join(lacking)}: plots and DataFrames need the data extra "
            "(pip install -e '.[mcp,local,data]' in your clone)\n"
        )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but an unknown option is reported by the (sub)command it was given to,
    with the closest option it has, and nothing runs."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        parsed, extras = self.parse_known_args(argv, namespace)
        if extras:
            self._refuse(argv, extras)
        return parsed

    def _refuse(self, argv: list[str], extras: list[str]) -> NoReturn:
        parser: argparse.ArgumentParser = self
        for token in argv:  # the deepest (sub)command named on the line
            sub = _subcommands(parser).get(token)
            if sub is not None:
                parser = sub
        flag = next((e for e in extras if e.startswith("-") and e != "-"), None)
        if flag is None:
            parser.error(f"unexpected argument {extras[0]!r}")
        name = flag.split("=", 1)[0]
        known = [o for action in parser._actions for o in action.option_strings]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        parser.error(f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else ""))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    r.add_argument(
        "--own-emulator",
        action="store_true",
        help="on the local backend, start an emulator for this run even when one of yours "
        "is running (by default a running one is used)",
    )
    r.add_argument("--json", action="store_true", help="print the structured result as JSON")
    r.add_argument(
        "--save-images",
        metavar="DIR",
        help="write PNG, JPEG and SVG results (plots) into DIR and print their paths",
    )

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
    ss = ssub.add_parser("stop", help="stop a session (it stays listed, stopped)")
    ss.add_argument("session_id")
    sk = ssub.add_parser("kill", help="stop a session and delete it")
    sk.add_argument("session_id")

    rp = sub.add_parser("reap", help="delete sandboxes and templates orphaned by crashed runs")
    rp.add_argument("--older-than", type=float, default=0.0, help="seconds")
    rp.add_argument(
        "--owner", help="whose orphans (default: this host and user, or $AGENTRUN_CI_OWNER)"
    )

    dr = sub.add_parser("doctor", help="check configuration, credentials and reachability")
    dr.add_argument(
        "--no-network", action="store_true", help="skip the endpoint reachability checks"
    )
    dr.add_argument(
        "--no-kernel", action="store_true", help="do not start a local kernel to test the backend"
    )

    mc = sub.add_parser(
        "mcp-config", help="print an MCP client's config for this installation's MCP server"
    )
    mc.add_argument("--client", required=True, choices=MCP_CLIENTS)
    mc.add_argument(
        "--backend",
        default=os.environ.get("AGENTRUN_BACKEND", "auto"),
        choices=BACKENDS,
        help="auto: cloud when AccessKey variables are set here, else local",
    )
    mc.add_argument("--name", default="agentrun", help="the server's name in the client")

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
    try:
        level = logging.getLevelName(args.log_level.upper())
        if not isinstance(level, int):
            raise ValueError(args.log_level)
    except ValueError:
        err.write(
            f"agentrun-ci: unknown --log-level {args.log_level!r}: "
            "use DEBUG, INFO, WARNING or ERROR\n"
        )
        return 2
    from ._logs import LOG_FORMATS, JsonFormatter

    if args.log_format not in LOG_FORMATS:  # argparse checks the flag, not the variable
        err.write(
            f"agentrun-ci: unknown --log-format (or AGENTRUN_LOG_FORMAT) {args.log_format!r}: "
            f"use {' or '.join(LOG_FORMATS)}\n"
        )
        return 2
    status = _Status(err)
    # a TextIOBase, used where a TextIO is expected (it has every method the commands call)
    status_err = cast(TextIO, status)
    handler = _LogHandler(status_err)
    if args.log_format == "json":  # every line JSON, the user-facing ones too
        handler.setFormatter(JsonFormatter())
        handler.bare_user_lines = False
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    handler.setLevel(level)
    from ._errors import AgentRunError

    commands: dict[str, Callable[[argparse.Namespace, TextIO, TextIO], int]] = {
        "run": _cmd_run,
        "interpreters": _cmd_interpreters,
        "sessions": _cmd_sessions,
        "reap": _cmd_reap,
        "mcp-config": _cmd_mcp_config,
        "doctor": lambda a, o, e: doctor(
            env, o, check_network=not a.no_network, check_kernel=not a.no_kernel
        ),
    }
    try:
        return commands[args.command](args, out, status_err)
    except AgentRunError as exc:
        status.write(f"agentrun-ci: {exc}\n")
        return 1
    except KeyboardInterrupt:
        status.write(f"agentrun-ci {args.command}: interrupted\n")
        return 130
    finally:
        logging.disable(logging.NOTSET)
        root.removeHandler(handler)
        root.setLevel(saved_level)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
