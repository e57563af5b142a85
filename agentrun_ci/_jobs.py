"""Background jobs: commands that outlive AgentRun's 30 s cap, built from `/processes/cmd`.

The service runs one shell command per request, for at most 30 s, and has no
call to start a process and come back to it. A *job* is made of such requests
only, so it works the same on the cloud and on the local emulator:

* **start**: one command makes a private directory for the job under
  `$TMPDIR/.agentrun-jobs/`, starts a supervisor shell detached from the
  request (its own stdio, HUP ignored), and returns once the supervisor has
  written the job's pid. The supervisor runs the user's command in a session of
  its own (`setsid`, so the pid is also the process group a kill reaches), with
  stdout and stderr going to files, then writes the exit code.
  `$TMPDIR/.agentrun-jobs/<pid>` links to the directory.
* **poll**: one command reports the state and the output past the caller's
  byte offsets, waiting in the sandbox (up to `wait` seconds, <30) until there
  is new output or the job ends. Output travels base64-encoded so that bytes
  and offsets survive any encoding; a chunk is at most `CHUNK` bytes per stream.
* **stdin**: with `stdin=True` the command reads a FIFO. A placeholder writer
  (`sleep`) keeps it open until `close_job_stdin`, so the command sees EOF only
  then; writers open the FIFO read-write, which never blocks.
* **kill**: SIGKILL to the job's process group, then the call waits until the
  supervisor has reaped it (so `kill -0 <pid>` fails right after).

Nothing lives outside the sandbox: deleting the sandbox deletes the job's
processes and files. Whether AgentRun's gateway leaves a detached process
running after its `/processes/cmd` request ends is not documented (inferred
from its `/processes` listing, which shows processes apart from requests): the
emulator does, and a job that vanished is reported as ended with `exit_code`
None and an `error` saying so.

This module is sans-I/O: it builds the shell scripts and parses their output;
the data planes send them.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs

from ._errors import InvalidArgumentError

__all__ = [
    "CHUNK",
    "MAX_WAIT",
    "Job",
    "JobInfo",
    "kill_script",
    "list_script",
    "parse_job",
    "parse_kill",
    "parse_list",
    "poll_script",
    "start_script",
    "stdin_script",
]

#: the most output of one stream that one poll brings back (bytes)
CHUNK = 1 << 20
#: the longest a poll waits in the sandbox for news (the service caps a command at 30 s)
MAX_WAIT = 20.0
#: the exit code a job reports after a kill (the shell's 128 + SIGKILL)
KILLED_EXIT_CODE = 137

_MARK = "AGENTRUN-JOB"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# The job directory of pid $pid, or exit 3 ("no such job"). Used by every script but start.
_FIND = r"""
root="${TMPDIR:-/tmp}/.agentrun-jobs"
d="$root/$pid"
[ -d "$d" ] && [ -s "$d/pid" ] || { echo "AGENTRUN-JOB none"; exit 0; }
"""

# Print state, exit code, sizes, then base64 of each stream past its offset, after waiting
# (in 10 ms .. 200 ms steps, up to $wait_ms) for output past the offsets or the end.
_POLL = r"""
size() { wc -c < "$1" | tr -d ' '; }
alive() { kill -0 "$(cat "$d/pid")" 2>/dev/null; }
waited=0; step=10
while :; do
    [ -f "$d/exit" ] && break
    s1=$(size "$d/out"); s2=$(size "$d/err")
    [ "$s1" -gt "$o1" ] || [ "$s2" -gt "$o2" ] && break
    alive || break
    [ "$waited" -ge "$wait_ms" ] && break
    sleep "$(printf '0.%03d' "$step")"
    waited=$((waited + step)); step=$((step * 2))
    [ "$step" -gt 200 ] && step=200
done
if [ -f "$d/exit" ]; then state=exited; code=$(cat "$d/exit")
elif alive; then state=running; code=-
else
    sleep 0.05  # the supervisor may be writing the exit code right now
    if [ -f "$d/exit" ]; then state=exited; code=$(cat "$d/exit"); else state=lost; code=-; fi
fi
s1=$(size "$d/out"); s2=$(size "$d/err")
n1=$((s1 - o1)); [ "$n1" -gt "$chunk" ] && n1=$chunk; [ "$n1" -lt 0 ] && n1=0
n2=$((s2 - o2)); [ "$n2" -gt "$chunk" ] && n2=$chunk; [ "$n2" -lt 0 ] && n2=0
echo "AGENTRUN-JOB $state $code $s1 $s2 $n1 $n2"
tail -c +$((o1 + 1)) "$d/out" | head -c "$n1" | base64
echo "--"
tail -c +$((o2 + 1)) "$d/err" | head -c "$n2" | base64
"""

_START = r"""
root="${TMPDIR:-/tmp}/.agentrun-jobs"
mkdir -p "$root" && chmod 700 "$root" || { echo "AGENTRUN-JOB error cannot create $root"; exit 0; }
d=$(mktemp -d "$root/job.XXXXXXXX") || { echo "AGENTRUN-JOB error mktemp failed"; exit 0; }
printf '%s' "$meta" > "$d/meta"
printf '%s' "$script" | base64 -d > "$d/cmd"
: > "$d/out"; : > "$d/err"
if [ "$stdin" = 1 ]; then mkfifo "$d/in" || { echo "AGENTRUN-JOB error mkfifo failed"; exit 0; }; fi
shell=$(command -v bash || echo /bin/sh)
(
    trap '' HUP
    ulimit -t unlimited 2>/dev/null  # a job may use more CPU than one request
    if [ "$stdin" = 1 ]; then
        exec 3<>"$d/in"
        setsid "$shell" "$d/cmd" <"$d/in" >"$d/out" 2>"$d/err" 3<&- &
        job=$!
        (exec sleep 2147483647) >"$d/in" 3<&- &
        echo $! > "$d/holder"
        exec 3<&-
    else
        setsid "$shell" "$d/cmd" </dev/null >"$d/out" 2>"$d/err" &
        job=$!
    fi
    echo "$job" > "$d/pid.tmp" && mv "$d/pid.tmp" "$d/pid"
    wait "$job"; code=$?
    [ -f "$d/holder" ] && kill "$(cat "$d/holder")" 2>/dev/null
    echo "$code" > "$d/exit.tmp" && mv "$d/exit.tmp" "$d/exit"
) </dev/null >/dev/null 2>&1 &
n=0
while [ ! -s "$d/pid" ]; do
    n=$((n + 1)); [ "$n" -gt 500 ] && { echo "AGENTRUN-JOB error the job did not start"; exit 0; }
    sleep 0.01
done
pid=$(cat "$d/pid")
ln -sfn "${d##*/}" "$root/$pid"
d="$root/$pid"
echo "AGENTRUN-PID $pid"
"""

_KILL = r"""
if [ -f "$d/exit" ]; then echo "AGENTRUN-JOB ended"; exit 0; fi
p=$(cat "$d/pid")
kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
[ -f "$d/holder" ] && kill "$(cat "$d/holder")" 2>/dev/null
n=0
while [ ! -f "$d/exit" ] && kill -0 "$p" 2>/dev/null && [ "$n" -lt 500 ]; do
    sleep 0.01; n=$((n + 1))
done
echo "AGENTRUN-JOB killed"
"""

# A pid that is no job: kill that process (E2B's commands.kill takes any pid).
_KILL_OTHER = r"""
root="${TMPDIR:-/tmp}/.agentrun-jobs"
if [ ! -d "$root/$pid" ]; then
    kill -KILL "$pid" 2>/dev/null || { echo "AGENTRUN-JOB none"; exit 0; }
    n=0; while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 500 ]; do sleep 0.01; n=$((n + 1)); done
    echo "AGENTRUN-JOB killed"; exit 0
fi
"""

_LIST = r"""
root="${TMPDIR:-/tmp}/.agentrun-jobs"
echo "AGENTRUN-JOB list"
[ -d "$root" ] || exit 0
for link in "$root"/*; do
    [ -L "$link" ] || continue
    d=$link; pid=${link##*/}
    [ -f "$d/exit" ] && continue
    kill -0 "$pid" 2>/dev/null || continue
    printf 'AGENTRUN-JOB %s %s\n' "$pid" "$(cat "$d/meta")"
done
"""

_STDIN = r"""
[ -p "$d/in" ] || { echo "AGENTRUN-JOB nostdin"; exit 0; }
[ -f "$d/exit" ] && { echo "AGENTRUN-JOB ended"; exit 0; }
if [ "$close" = 1 ]; then
    [ -f "$d/holder" ] && kill "$(cat "$d/holder")" 2>/dev/null
else
    printf '%s' "$data" | base64 -d 1<>"$d/in"
fi
echo "AGENTRUN-JOB ok"
"""


@attrs.frozen
class Job:
    """What one poll of a background job says: its state and the output past the offsets.

    `stdout`/`stderr` hold the bytes from the offsets asked for up to
    `stdout_offset`/`stderr_offset` (pass those to the next poll).
    """

    pid: int
    #: "running", "exited", or "lost" (the job's processes vanished without an exit code)
    state: str
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_offset: int = 0
    stderr_offset: int = 0
    #: the output written so far, per stream (bytes)
    stdout_size: int = 0
    stderr_size: int = 0

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def more(self) -> bool:
        """Output past this chunk is already there: poll again without waiting."""
        return self.stdout_offset < self.stdout_size or self.stderr_offset < self.stderr_size

    @property
    def error(self) -> str | None:
        """Why the job ended without an exit code or was killed, in words."""
        if self.state == "lost":
            return "the job's processes ended without recording an exit code"
        if self.exit_code == KILLED_EXIT_CODE:
            return "signal: killed"
        return None


@attrs.frozen
class JobInfo:
    """A running background job, as `list_jobs` reports it."""

    pid: int
    command: str
    cwd: str | None = None
    tag: str | None = None
    envs: dict[str, str] = attrs.field(factory=dict)
    started_at: datetime | None = None


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _pid(pid: int | str) -> int:
    try:
        number = int(pid)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"pid must be a whole number, got {pid!r}") from None
    if number <= 0:
        raise InvalidArgumentError(f"pid must be positive, got {number}")
    return number


def _wait_ms(wait: float) -> int:
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidArgumentError(
            f"wait={wait!r}: a poll waits 0 to {MAX_WAIT:g} s in the sandbox (one command "
            "may take 30 s); poll again for longer"
        )
    return int(wait * 1000)


def check_envs(envs: Mapping[str, str] | None) -> dict[str, str]:
    """Environment variable names a shell can export, values as text."""
    out: dict[str, str] = {}
    for name, value in (envs or {}).items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise InvalidArgumentError(
                f"environment variable name {name!r} is not valid: use letters, digits and "
                "underscores, not starting with a digit"
            )
        if not isinstance(value, str) or "\0" in value:
            raise InvalidArgumentError(f"environment variable {name} must be text without NUL")
        out[name] = value
    return out


def start_script(
    command: str,
    *,
    cwd: str | None = None,
    envs: Mapping[str, str] | None = None,
    stdin: bool = False,
    tag: str | None = None,
    wait: float = 0.0,
) -> str:
    """The shell command that starts `command` as a job, then polls it once (see `parse_job`).

    Send it with `/processes/cmd`'s `cwd` set to `cwd`: the job runs there."""
    if not isinstance(command, str) or not command.strip():
        raise InvalidArgumentError("command must be a non-empty string")
    if "\0" in command:
        raise InvalidArgumentError("command must not contain NUL characters")
    variables = check_envs(envs)
    # (the job starts in the start request's cwd: the service maps it, the emulator too)
    lines = [f"export {name}={_q(value)}" for name, value in variables.items()]
    lines.append(command)
    script = "\n".join(lines) + "\n"
    meta = {
        "command": command,
        "cwd": cwd,
        "tag": tag,
        "envs": variables,
        "started_at": datetime.now(timezone.utc).isoformat(),
    }
    return "\n".join(
        [
            f"meta={_q(base64.b64encode(json.dumps(meta).encode()).decode())}",
            f"script={_q(base64.b64encode(script.encode()).decode())}",
            f"stdin={1 if stdin else 0}",
            "o1=0 o2=0",
            f"chunk={CHUNK} wait_ms={_wait_ms(wait)}",
            _START,
            _POLL,
        ]
    )


def poll_script(
    pid: int | str, *, stdout_offset: int = 0, stderr_offset: int = 0, wait: float = 0.0
) -> str:
    """The shell command that reports job `pid` past the offsets (see `parse_job`)."""
    for offset in (stdout_offset, stderr_offset):
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidArgumentError(f"an output offset is a byte count >= 0, got {offset!r}")
    return "\n".join(
        [
            f"pid={_pid(pid)}",
            f"o1={stdout_offset} o2={stderr_offset}",
            f"chunk={CHUNK} wait_ms={_wait_ms(wait)}",
            _FIND,
            _POLL,
        ]
    )


def kill_script(pid: int | str) -> str:
    """The shell command that SIGKILLs job `pid` (or any process `pid`) and waits for its end."""
    return "\n".join([f"pid={_pid(pid)}", _KILL_OTHER, _FIND, _KILL])


def list_script() -> str:
    """The shell command that lists the running jobs."""
    return _LIST


def stdin_script(pid: int | str, data: bytes | None) -> str:
    """The shell command that writes `data` to job `pid`'s stdin (None: close it)."""
    payload = base64.b64encode(data or b"").decode()
    return "\n".join(
        [
            f"pid={_pid(pid)}",
            f"close={1 if data is None else 0}",
            f"data={_q(payload)}",
            _FIND,
            _STDIN,
        ]
    )


class JobError(Exception):
    """A job script said something other than what its caller expects (parsed here)."""


def _header(stdout: str) -> list[str]:
    for line in stdout.splitlines():
        if line.startswith(_MARK + " "):
            return line.split(" ")[1:]
    raise JobError(f"no job report in the command's output: {stdout[:200]!r}")


def parse_job(
    pid: int | str | None, stdout: str, *, stdout_offset: int = 0, stderr_offset: int = 0
) -> Job | None:
    """A `Job` from a start or poll script's output; None when there is no such job.

    Raises JobError when the script could not start the job (its words say why).
    """
    head = _header(stdout)
    if head[0] == "none":
        return None
    if head[0] == "error":
        raise JobError(" ".join(head[1:]))
    state, code, size1, size2, n1, n2 = head[:6]
    body = stdout.split(_MARK + " ", 1)[1].split("\n", 1)[1] if "\n" in stdout else ""
    out_b64, _, err_b64 = body.partition("\n--\n")
    if not _ and body.startswith("--\n"):
        out_b64, err_b64 = "", body[3:]
    out = base64.b64decode("".join(out_b64.split()))
    err = base64.b64decode("".join(err_b64.split()))
    if len(out) != int(n1) or len(err) != int(n2):
        raise JobError("the job's output arrived cut short")
    job_pid = int(pid) if pid is not None else started_pid(stdout)
    return Job(
        pid=job_pid,
        state=state,
        exit_code=None if code == "-" else int(code),
        stdout=out,
        stderr=err,
        stdout_offset=stdout_offset + len(out),
        stderr_offset=stderr_offset + len(err),
        stdout_size=int(size1),
        stderr_size=int(size2),
    )


def started_pid(stdout: str) -> int:
    """The pid a start script printed (`pid=` is set by the script before it polls)."""
    for line in stdout.splitlines():
        if line.startswith("AGENTRUN-PID "):
            return int(line.split(" ")[1])
    raise JobError(f"no pid in the start script's output: {stdout[:200]!r}")


def parse_kill(stdout: str) -> bool:
    """True if the kill script killed something (a job or a process)."""
    return _header(stdout)[0] == "killed"


def parse_stdin(stdout: str) -> str:
    """'ok', 'none' (no such job), 'ended' (the job is over) or 'nostdin'."""
    return _header(stdout)[0]


def parse_list(stdout: str) -> list[JobInfo]:
    """The running jobs a list script printed."""
    jobs: list[JobInfo] = []
    for line in stdout.splitlines():
        if not line.startswith(_MARK + " "):
            continue
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        _, pid, meta = parts
        try:
            raw: Any = json.loads(base64.b64decode(meta))
        except ValueError:
            raw = {}
        started = raw.get("started_at")
        jobs.append(
            JobInfo(
                pid=int(pid),
                command=str(raw.get("command") or ""),
                cwd=raw.get("cwd"),
                tag=raw.get("tag"),
                envs=dict(raw.get("envs") or {}),
                started_at=datetime.fromisoformat(started) if isinstance(started, str) else None,
            )
        )
    return sorted(jobs, key=lambda job: job.pid)
