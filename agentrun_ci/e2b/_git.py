"""The sans-I/O half of `sandbox.git`: command lines, argument checks, output parsers, models.

Nothing here runs anything: `AsyncGit` (in `_async_git`) sends what these functions
build through `sandbox.commands.run` and hands the output back to them.

Credentials never go into a URL, an argument list or the repository's config: git
asks a one-shot credential helper for them (`credential_helper_args`), which reads
them from two environment variables of that one command.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import attrs

from ._errors import InvalidArgumentException

__all__ = [
    "GitBranches",
    "GitFileStatus",
    "GitResetMode",
    "GitStatus",
]

GitResetMode = Literal["soft", "mixed", "hard", "merge", "keep"]
"""Mode of `git.reset()`."""

RESET_MODES: tuple[str, ...] = ("soft", "mixed", "hard", "merge", "keep")

#: every git call gets these: a git that wants a password fails at once instead of
#: waiting for a terminal that is not there
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}

#: where the one-shot credential helper reads the credentials from
USERNAME_VAR = "AGENTRUN_GIT_USERNAME"
PASSWORD_VAR = "AGENTRUN_GIT_PASSWORD"  # noqa: S105 - a variable's name, not a password

REDACTED = "***"


@attrs.frozen
class GitFileStatus:
    """One changed path in `git.status()`; `status` is a word ("modified", "added", …)."""

    name: str
    status: str
    index_status: str
    working_tree_status: str
    staged: bool
    renamed_from: str | None = None


@attrs.frozen
class GitStatus:
    """`git.status()`: the branch, its upstream, ahead/behind counts and the changed paths."""

    current_branch: str | None
    upstream: str | None
    ahead: int
    behind: int
    detached: bool
    file_status: list[GitFileStatus]

    @property
    def is_clean(self) -> bool:
        """No tracked or untracked changes."""
        return not self.file_status

    @property
    def has_changes(self) -> bool:
        """Some tracked or untracked change."""
        return bool(self.file_status)

    @property
    def has_staged(self) -> bool:
        """Some path has staged changes."""
        return any(f.staged for f in self.file_status)

    @property
    def has_untracked(self) -> bool:
        """Some path is untracked."""
        return any(f.status == "untracked" for f in self.file_status)

    @property
    def has_conflicts(self) -> bool:
        """Some path is in a merge conflict."""
        return any(f.status == "conflict" for f in self.file_status)

    @property
    def total_count(self) -> int:
        """How many paths changed."""
        return len(self.file_status)

    @property
    def staged_count(self) -> int:
        """How many paths have staged changes."""
        return sum(1 for f in self.file_status if f.staged)

    @property
    def unstaged_count(self) -> int:
        """How many paths have no staged change."""
        return sum(1 for f in self.file_status if not f.staged)

    @property
    def untracked_count(self) -> int:
        """How many paths are untracked."""
        return sum(1 for f in self.file_status if f.status == "untracked")

    @property
    def conflict_count(self) -> int:
        """How many paths are in a merge conflict."""
        return sum(1 for f in self.file_status if f.status == "conflict")


@attrs.frozen
class GitBranches:
    """`git.branches()`: the local branches and the checked-out one (None if detached)."""

    branches: list[str]
    current_branch: str | None


# --- command lines -------------------------------------------------------------------------


def git_command(args: Sequence[str], repo_path: str | None = None) -> str:
    """`git [-C repo_path] args…` with every part quoted for the shell."""
    parts = ["git", *(("-C", repo_path) if repo_path else ()), *args]
    return " ".join(shlex.quote(p) for p in parts)


def credential_helper_args() -> list[str]:
    """`-c` options that make git take the credentials from this command's environment only.

    The empty `credential.helper` first drops configured helpers, so the credentials are
    neither looked up in nor stored by them (`git credential-store` would write them to disk).
    """
    helper = (
        '!f() { test "$1" = get || return 0; '
        f'printf \'username=%s\\npassword=%s\\n\' "${USERNAME_VAR}" "${PASSWORD_VAR}"; }}; f'
    )
    return ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]


def credential_envs(username: str, password: str) -> dict[str, str]:
    return {USERNAME_VAR: username, PASSWORD_VAR: password}


def check_credentials(
    action: str, username: str | None, password: str | None
) -> tuple[str, str] | None:
    """The credentials, if given; refuses half a pair and values git cannot carry."""
    if password and not username:
        raise InvalidArgumentException(
            f"git {action}: a password or token needs a username too (for a token, any "
            "non-empty username works on most hosts, e.g. username='x-access-token')"
        )
    if username and not password:
        raise InvalidArgumentException(
            f"git {action}: username= needs password= (a password or token) as well"
        )
    if not username or not password:
        return None
    for name, value in (("username", username), ("password", password)):
        if "\n" in value or "\0" in value:
            # git's credential protocol is line-based; never echo the value itself
            raise InvalidArgumentException(
                f"git {action}: the {name} contains a newline or NUL, which git's credential "
                "protocol cannot carry"
            )
    return username, password


def check_http_url(action: str, url: str) -> None:
    """Credentials work over http(s) only (SSH uses keys)."""
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        # the URL itself is not quoted: it may hold a password of its own
        kind = f"a {scheme!r} URL" if scheme else "an scp-style or local path"
        raise InvalidArgumentException(
            f"git {action}: username/password credentials work with http(s) URLs only, not "
            f"with {kind}; for SSH remotes put a key in ~/.ssh instead"
        )


def url_with_credentials(url: str, username: str, password: str) -> str:
    """`https://user:password@host/…` (only for `clone(dangerously_store_credentials=True)`)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (and its URL-quoted form) replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED).replace(quote(secret, safe=""), REDACTED)
    return text


def check_ref(action: str, what: str, value: str | None) -> None:
    """Refuse a name git would read as an option (`--upload-pack=…` as a remote name)."""
    if value is not None and value.startswith("-"):
        raise InvalidArgumentException(
            f"git {action}: {what} {value!r} starts with '-', which git would read as an option"
        )


def init_args(path: str, bare: bool, initial_branch: str | None) -> list[str]:
    args = ["init"]
    if initial_branch:
        args += ["--initial-branch", initial_branch]
    if bare:
        args.append("--bare")
    return [*args, "--", path]


def clone_args(url: str, path: str | None, branch: str | None, depth: int | None) -> list[str]:
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise InvalidArgumentException(f"git clone: depth must be a positive int, not {depth!r}")
    args = ["clone"]
    if branch:
        args += ["--branch", branch, "--single-branch"]
    if depth:
        args += ["--depth", str(depth)]
    args += ["--", url]
    if path:
        args.append(path)
    return args


def build_remote_add_args(name: str, url: str, fetch: bool) -> list[str]:
    """`remote add [-f] name url`; both name and url are required."""
    if not name or not url:
        raise InvalidArgumentException(
            "git remote_add: both the remote's name (e.g. 'origin') and its URL are required"
        )
    return ["remote", "add", *(["-f"] if fetch else []), "--", name, url]


def check_remote_name(name: str) -> None:
    if not name:
        raise InvalidArgumentException("git remote_get: the remote's name is required")


def push_args(remote: str | None, branch: str | None, set_upstream: bool) -> list[str]:
    # --set-upstream only with a remote to track, as E2B does: a bare `git push` keeps
    # whatever upstream the branch has
    check_ref("push", "remote", remote)
    check_ref("push", "branch", branch)
    args = ["push"]
    if set_upstream and remote:
        args.append("--set-upstream")
    if remote:
        args.append(remote)
    if branch:
        args.append(branch)
    return args


def pull_args(remote: str | None, branch: str | None) -> list[str]:
    check_ref("pull", "remote", remote)
    check_ref("pull", "branch", branch)
    return ["pull", *([remote] if remote else []), *([branch] if branch else [])]


def add_args(files: Sequence[str] | None, all: bool) -> list[str]:
    if files:
        return ["add", "--", *files]
    return ["add", "-A" if all else "."]


def commit_args(
    message: str, author_name: str | None, author_email: str | None, allow_empty: bool
) -> list[str]:
    # -c user.* before the subcommand: either half of the identity may come from config
    identity = []
    if author_name:
        identity += ["-c", f"user.name={author_name}"]
    if author_email:
        identity += ["-c", f"user.email={author_email}"]
    return [*identity, "commit", "-m", message, *(["--allow-empty"] if allow_empty else [])]


def build_reset_args(
    mode: str | None, target: str | None, paths: Sequence[str] | None
) -> list[str]:
    """`reset [--mode] [target] [-- paths…]`; `mode` must be one of `RESET_MODES`."""
    if mode and mode not in RESET_MODES:
        raise InvalidArgumentException(f"Reset mode must be one of {', '.join(RESET_MODES)}.")
    check_ref("reset", "target", target)
    args = ["reset", *([f"--{mode}"] if mode else []), *([target] if target else [])]
    if paths:
        args += ["--", *paths]
    return args


def restore_args(
    paths: Sequence[str], staged: bool | None, worktree: bool | None, source: str | None
) -> list[str]:
    """`restore`: neither flag means the worktree; only `staged=True` means the index only."""
    if not paths:
        raise InvalidArgumentException(
            "git restore: at least one path is required (use ['.'] for everything)"
        )
    if staged is None and worktree is None:
        staged, worktree = False, True
    elif worktree is None:
        worktree = False
    elif staged is None:
        staged = False
    if not staged and not worktree:
        raise InvalidArgumentException(
            "git restore: at least one of staged= and worktree= must be True"
        )
    args = ["restore", *(["--worktree"] if worktree else []), *(["--staged"] if staged else [])]
    if source:
        args += ["--source", source]
    return [*args, "--", *paths]


def config_scope(scope: str | None, path: str | None) -> tuple[str, str | None]:
    """The `git config` flag for `scope` and the repository to run in (local scope only)."""
    name = (scope or "global").strip().lower()
    if name == "local":
        if not path:
            raise InvalidArgumentException("git config: scope='local' needs path= (the repository)")
        return "--local", path
    if name in ("global", "system"):
        return f"--{name}", None
    raise InvalidArgumentException(
        f"git config: scope must be 'global', 'local' or 'system', not {scope!r}"
    )


# --- parsers -------------------------------------------------------------------------------

STATUS_ARGS = ["status", "--porcelain=v2", "--branch", "-z"]
# lstrip=2, not :short, which turns a branch named like a tag into "heads/x"
BRANCHES_ARGS = ["for-each-ref", "--format=%(refname:lstrip=2)%09%(HEAD)", "refs/heads"]


def _state(index: str, worktree: str) -> str:
    both = {index, worktree}
    for char, word in (
        ("U", "conflict"),
        ("R", "renamed"),
        ("C", "copied"),
        ("D", "deleted"),
        ("A", "added"),
        ("M", "modified"),
        ("T", "typechange"),
        ("?", "untracked"),
    ):
        if char in both:
            return word
    return "unknown"


def parse_status(output: str) -> GitStatus:
    """Parse `git status --porcelain=v2 --branch -z`.

    Index and worktree letters are porcelain v1's (`' '` for unchanged, where v2 has
    `.`), as E2B reports them. `-z` keeps paths with spaces or quotes unescaped.
    """
    head: str | None = None
    upstream: str | None = None
    ahead = behind = 0
    files: list[GitFileStatus] = []
    fields = output.split("\0")
    i = 0
    while i < len(fields):
        entry = fields[i]
        i += 1
        if entry.startswith("# branch.head "):
            head = entry[len("# branch.head ") :]
        elif entry.startswith("# branch.upstream "):
            upstream = entry[len("# branch.upstream ") :]
        elif entry.startswith("# branch.ab "):
            for part in entry[len("# branch.ab ") :].split():
                if part[1:].isdigit():
                    if part[0] == "+":
                        ahead = int(part[1:])
                    elif part[0] == "-":
                        behind = int(part[1:])
        elif entry.startswith("? "):
            files.append(GitFileStatus(entry[2:], "untracked", "?", "?", staged=False))
        elif entry[:2] in ("1 ", "2 ", "u "):
            kind = entry[0]
            # 1 XY sub mH mI mW hH hI path
            # 2 XY sub mH mI mW hH hI Xscore path \0 orig
            # u XY sub m1 m2 m3 mW h1 h2 h3 path
            meta = {"1": 7, "2": 8, "u": 9}[kind]
            parts = entry.split(" ", meta + 1)
            if len(parts) < meta + 2:
                continue  # not the shape git documents; skip rather than guess
            xy = parts[1].replace(".", " ")
            index, worktree = xy[0], xy[1]
            renamed_from = None
            if kind == "2" and i < len(fields):
                renamed_from = fields[i]
                i += 1
            state = "conflict" if kind == "u" else _state(index, worktree)
            files.append(
                GitFileStatus(
                    parts[-1],
                    state,
                    index,
                    worktree,
                    staged=index not in (" ", "?"),
                    renamed_from=renamed_from,
                )
            )
    detached = head == "(detached)"
    return GitStatus(
        current_branch=None if detached else head,
        upstream=upstream,
        ahead=ahead,
        behind=behind,
        detached=detached,
        file_status=files,
    )


def parse_branches(output: str) -> GitBranches:
    """Parse `BRANCHES_ARGS`' output: `name<TAB>*` for the checked-out branch."""
    branches: list[str] = []
    current = None
    for line in output.splitlines():
        name, _, mark = line.partition("\t")
        if not name:
            continue
        branches.append(name)
        if mark.strip() == "*":
            current = name
    return GitBranches(branches=branches, current_branch=current)


# --- what a failed git said ----------------------------------------------------------------

# lower-cased phrases of git and of the usual hosts (GitHub, GitLab, Bitbucket); a bare
# "permission denied" is left out: a directory git cannot write says it too
_AUTH_PHRASES = (
    "authentication failed",
    "terminal prompts disabled",
    "could not read username",
    "could not read password",
    "invalid username or password",
    "access denied",
    "permission denied (publickey",
    "not authorized",
    "the requested url returned error: 401",
    "the requested url returned error: 403",
)

_UPSTREAM_PHRASES = (
    "has no upstream branch",
    "no upstream branch",
    "no upstream configured",
    "no tracking information",
    "set the remote as upstream",
    "set the upstream branch",
    "please specify which branch you want to merge with",
)


def is_auth_failure(output: str) -> bool:
    text = output.lower()
    return any(p in text for p in _AUTH_PHRASES)


def is_missing_upstream(output: str) -> bool:
    text = output.lower()
    return any(p in text for p in _UPSTREAM_PHRASES)


def is_git_missing(exit_code: int | None, stderr: str) -> bool:
    """The shell could not find git (exit 127, "git: command not found" or "not found")."""
    return exit_code == 127 and "git" in stderr and "not found" in stderr


def auth_message(action: str, with_credentials: bool) -> str:
    if with_credentials:
        return (
            f"git {action}: the remote refused the username and password/token given: check "
            "them, and that the token may read (and for push, write) this repository"
        )
    return (
        f"git {action}: the remote asks for credentials (a private repository?): pass "
        "username= and password= (a token), or call git.dangerously_authenticate() once"
    )


def upstream_message(action: str) -> str:
    if action == "push":
        return (
            "git push failed because no upstream branch is configured: pass "
            "set_upstream=True with remote= and branch= once, or pass remote= and branch= "
            "every time"
        )
    return (
        "git pull failed because no upstream branch is configured: pass remote= and branch=, "
        "or set one once (git.push(..., set_upstream=True), or run "
        "'git branch --set-upstream-to=origin/<branch> <branch>')"
    )
