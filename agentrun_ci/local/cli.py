"""`agentrun-ci local serve`: run the emulator in the foreground (wired in agentrun_ci.cli).

Every request must be signed: with no key pair given, serve makes a random one and
prints it among the exports. Code in the emulator's own sandboxes shares this
machine's loopback, and unsigned, it could list, run code in and delete every other
sandbox; `--insecure` brings that back, with a warning at each start.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import sys
import threading
from types import FrameType

from ._mounts import mount_map, parse_mount
from ._server import LOOPBACK, LocalEmulator
from ._settings import EmulatorSettings, random_key_pair

__all__ = ["serve_main"]

log = logging.getLogger("agentrun_ci.local")

INSECURE_WARNING = (
    "--insecure: this emulator answers UNSIGNED requests. Any code on this machine, "
    "including the code running in its own sandboxes, can list every sandbox, read their "
    "files, run code in them and delete them. Drop --insecure and use the printed exports."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentrun-ci local serve",
        description="Serve the AgentRun control and data planes locally "
        "(code runs on THIS machine).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (anyone who reaches it can run code here)",
    )
    p.add_argument(
        "--access-key-id",
        help="require requests signed with this key pair; its secret comes from "
        "--access-key-secret-file, else $AGENTRUN_ACCESS_KEY_SECRET (without one, a random "
        "key pair is made and printed among the exports)",
    )
    p.add_argument(
        "--access-key-secret-file",
        metavar="PATH",
        help="read the secret from this file (first line; keep it mode 600)",
    )
    p.add_argument(
        "--access-key-secret",
        help="the secret itself: discouraged, any user can read it in `ps`",
    )
    p.add_argument(
        "--api-key",
        metavar="KEY",
        help="also accept data-plane requests carrying this API key as X-API-Key (AgentRun's "
        "API-key mode; clients set AGENTRUN_API_KEY); the control plane still takes only "
        "signatures",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="answer unsigned requests (no key pair): code in the sandboxes can then drive "
        "the emulator itself; for trusted code only",
    )
    p.add_argument("--max-exec-timeout", type=float, default=30.0, help="seconds per execution")
    p.add_argument(
        "--provisioning-delay",
        type=float,
        default=0.0,
        help="seconds templates/sandboxes stay CREATING",
    )
    p.add_argument("--memory-mb", type=int, default=2048, help="RLIMIT_AS per kernel/command")
    p.add_argument("--cpu-seconds", type=int, default=60, help="RLIMIT_CPU per command")
    p.add_argument("--max-processes", type=int, default=512, help="RLIMIT_NPROC")
    p.add_argument("--file-size-mb", type=int, default=1024, help="RLIMIT_FSIZE")
    p.add_argument("--idle-timeout", type=float, help="override every sandbox's idle timeout (s)")
    p.add_argument("--ttl", type=float, default=6 * 3600.0, help="max sandbox life (s)")
    p.add_argument("--max-upload-mb", type=int, default=100)
    _kernel_options(p.add_argument_group("kernels"))
    p.add_argument(
        "--no-network",
        action="store_true",
        help="every sandbox loopback only, whatever its template's networkMode",
    )
    p.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="REMOTE=HOSTDIR",
        help="a host directory that stands for OSS (oss://BUCKET[/PATH]), NAS "
        "(nas://SERVER:/PATH) or PolarFS (polarfs://INSTANCE[/PATH]): sandboxes whose "
        "template or own config mounts it get it bound at the mount directory (repeatable)",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def _kernel_options(p: argparse._ArgumentGroup) -> None:
    """Spare kernels and kernel starts."""
    p.add_argument(
        "--spare-kernels",
        type=int,
        default=1,
        help="spare kernels kept while sandboxes are being created (0: none)",
    )
    p.add_argument(
        "--max-spare-kernels",
        type=int,
        default=None,
        help="most spare kernels kept in a burst of creations (default: what the machine holds)",
    )
    p.add_argument(
        "--spare-idle-timeout",
        type=float,
        default=300.0,
        help="seconds without a sandbox creation after which every spare kernel is shut down",
    )
    p.add_argument(
        "--kernel-starts",
        type=int,
        default=None,
        help="kernels that may start at once (default: one per CPU); more wait their turn",
    )
    p.add_argument(
        "--kernel-start-queue",
        type=int,
        default=32,
        help="context creations that may wait for a kernel start before a 503",
    )
    p.add_argument(
        "--kernel-start-timeout",
        type=float,
        default=120.0,
        help="seconds a kernel may take to answer once its start began",
    )


_API_KEY = re.compile(r"^[\x21-\x7e]{1,512}$")


def _secret(args: argparse.Namespace) -> str | None:
    """The secret from the file, the argv flag (warned) or the environment; None = error."""
    if args.access_key_secret_file:
        try:
            with open(args.access_key_secret_file, encoding="utf-8") as fh:
                first = fh.readline().strip()
            mode = os.stat(args.access_key_secret_file).st_mode
        except OSError as exc:
            sys.stderr.write(f"cannot read --access-key-secret-file: {exc}\n")
            return None
        if not first:
            sys.stderr.write(f"--access-key-secret-file {args.access_key_secret_file} is empty\n")
            return None
        if mode & 0o077:
            sys.stderr.write(
                f"WARNING: {args.access_key_secret_file} is readable by other users: chmod 600 it\n"
            )
        return first
    if args.access_key_secret:
        sys.stderr.write(
            "WARNING: --access-key-secret puts the secret in this process's command line, "
            "which every user of this machine can read (ps): use --access-key-secret-file "
            "or $AGENTRUN_ACCESS_KEY_SECRET\n"
        )
        return str(args.access_key_secret)
    if args.access_key_id:  # only with an id: an exported cloud secret alone turns on nothing
        return os.environ.get("AGENTRUN_ACCESS_KEY_SECRET", "")
    return ""


def _warn_insecure() -> None:
    """The --insecure warning, once on stderr: as a log record where logging shows
    warnings, else written there directly (no log level hides it)."""
    if log.isEnabledFor(logging.WARNING):
        log.warning(INSECURE_WARNING)
    else:
        sys.stderr.write(f"WARNING: {INSECURE_WARNING}\n")


def _exports(url: str, key_id: str | None, generated_secret: str | None) -> str:
    """What serve prints on stdout: the endpoint, then `export` lines for a shell's
    `eval`, AGENTRUN_ACCOUNT_ID last (scripts wait for it). A secret the user gave is
    never echoed; one made here is, since this is the only place it can be learnt."""
    lines = [
        f"AgentRun emulator listening on {url}  (Ctrl-C to stop)",
        "# export these to point agentrun-ci (or Alibaba's SDK) at it:",
        f"export AGENTRUN_DATA_ENDPOINT={url}",
        f"export AGENTRUN_CONTROL_ENDPOINT={url}",
    ]
    if key_id:
        lines.append(f"export AGENTRUN_ACCESS_KEY_ID={shlex.quote(key_id)}")
        if generated_secret:
            lines.append(f"export AGENTRUN_ACCESS_KEY_SECRET={shlex.quote(generated_secret)}")
        else:
            lines.append("# and AGENTRUN_ACCESS_KEY_SECRET: the secret you passed")
    lines.append("export AGENTRUN_ACCOUNT_ID=local")
    return "".join(line + "\n" for line in lines)


def serve_main(argv: list[str]) -> int:
    """Serve until Ctrl-C or SIGTERM; print the endpoint and the environment to export."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.host not in LOOPBACK and not args.allow_remote:
        sys.stderr.write(
            f"refusing to bind {args.host}: the emulator runs any code it is sent on this "
            "machine. Pass --allow-remote if you really mean it.\n"
        )
        return 2
    if args.insecure and (
        args.access_key_id or args.access_key_secret_file or args.access_key_secret
    ):
        sys.stderr.write("give --insecure or a key pair (--access-key-id ...), not both\n")
        return 2
    if args.host not in LOOPBACK:
        sys.stderr.write(
            f"WARNING: serving on {args.host}: anyone who can reach it can run code here"
            + (" (--insecure: requests are not authenticated)" if args.insecure else "")
            + "\n"
        )
    if args.api_key is not None and not _API_KEY.match(args.api_key):
        sys.stderr.write(
            "--api-key must be printable ASCII without spaces (1 to 512 characters), as an "
            "X-API-Key header carries it\n"
        )
        return 2
    secret = _secret(args)
    if secret is None:
        return 2
    if bool(args.access_key_id) != bool(secret):
        sys.stderr.write(
            "give --access-key-id together with a secret (--access-key-secret-file or "
            "$AGENTRUN_ACCESS_KEY_SECRET), or neither\n"
        )
        return 2
    key_id: str | None = args.access_key_id
    generated = not key_id and not args.insecure
    if generated:
        key_id, secret = random_key_pair()
    if args.insecure:
        _warn_insecure()
    try:
        mounts = [parse_mount(spec) for spec in args.mount]
        mount_map(mounts)  # names a bad remote or directory before anything starts
    except ValueError as exc:
        sys.stderr.write(f"--mount: {exc}\n")
        return 2
    settings = EmulatorSettings(
        mounts=mounts,
        max_exec_timeout=args.max_exec_timeout,
        provisioning_delay=args.provisioning_delay,
        memory_mb=args.memory_mb or None,
        cpu_seconds=args.cpu_seconds or None,
        max_processes=args.max_processes or None,
        file_size_mb=args.file_size_mb or None,
        idle_timeout=args.idle_timeout,
        ttl=args.ttl,
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        spare_kernels=args.spare_kernels,
        max_spare_kernels=args.max_spare_kernels,
        spare_idle_timeout=args.spare_idle_timeout,
        kernel_starts=args.kernel_starts,
        kernel_start_queue=args.kernel_start_queue,
        kernel_start_timeout=args.kernel_start_timeout,
        no_network=args.no_network,
        access_key_id=key_id or None,
        access_key_secret=secret or None,
        api_key=args.api_key or None,
    )
    emulator = LocalEmulator(settings, host=args.host, port=args.port, register_as="serve")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        emulator.start()
        url = emulator.url
        sys.stdout.write(_exports(url, key_id, secret if generated else None))
        sys.stdout.flush()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        emulator.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0
