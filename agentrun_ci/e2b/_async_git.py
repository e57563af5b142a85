"""`sandbox.git` for `AsyncSandbox`: E2B's git API, run as git commands in the sandbox.

Each method is one (rarely two) `sandbox.commands.run` calls of the sandbox's own `git`,
every argument quoted for the shell (the command lines and parsers are in `_git`). A git
that fails raises `CommandExitException` with git's output; a remote that wants
credentials raises `GitAuthException`, a push or pull with nowhere to go
`GitUpstreamException`, as E2B's do.

Credentials (`username=`/`password=` of clone, push and pull) reach git through a
one-shot credential helper that reads them from the command's environment: they are not
in the remote's URL, not in git's arguments, not in `.git/config`, and `***` replaces
them in any output, result or message. The two that store them, as E2B's API says, are
`clone(dangerously_store_credentials=True)` (in the clone's `origin` URL) and
`dangerously_authenticate()` (in `~/.git-credentials`, via git's `store` helper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs

from .._models import CommandResult
from . import _git
from ._errors import (
    CommandExitException,
    GitAuthException,
    GitUpstreamException,
    InvalidArgumentException,
)
from ._git import GitBranches, GitResetMode, GitStatus

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

__all__ = ["AsyncGit"]

GIT_MISSING = (
    "git is not installed in this sandbox (the shell says: {stderr}): install it in the "
    "sandbox's image (Debian/Ubuntu: 'apt-get install -y git'; Alpine: 'apk add git'), "
    "or once per sandbox with commands.run"
)

#: the most of git's output a message quotes (all of it stays on the exception)
_QUOTE_CHARS = 2000


class AsyncGit:
    """`sandbox.git`: clone, init, add, commit, push, pull, branches, status, config."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox

    async def _run(
        self,
        action: str,
        cmd: str,
        envs: Mapping[str, str] | None,
        user: str | None,
        cwd: str | None,
        timeout: float | None,
        request_timeout: float | None,
        *,
        secrets: Sequence[str] = (),
        secret_envs: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run `cmd`; returns its result whatever the exit code, with `secrets` masked."""
        merged = {**_git.GIT_ENV, **(envs or {}), **(secret_envs or {})}
        try:
            result = await self._sbx.commands.run(
                cmd,
                envs=merged,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        except CommandExitException as failed:  # git's exit code is read below, per action
            result = CommandResult(
                exit_code=failed.exit_code,
                stdout=failed.stdout,
                stderr=failed.stderr,
                error=failed.error,
            )
        if secrets:
            result = _masked(result, secrets)
        if _git.is_git_missing(result.exit_code, result.stderr):
            raise CommandExitException(
                GIT_MISSING.format(stderr=result.stderr.strip()),
                exit_code=result.exit_code,
                stdout=result.stdout,
                stderr=result.stderr,
            )
        return result

    async def _git(
        self,
        action: str,
        args: Sequence[str],
        repo_path: str | None,
        envs: Mapping[str, str] | None,
        user: str | None,
        cwd: str | None,
        timeout: float | None,
        request_timeout: float | None,
    ) -> CommandResult:
        """Run `git [-C repo_path] args…`; a non-zero exit raises `CommandExitException`."""
        cmd = _git.git_command(args, repo_path)
        result = await self._run(action, cmd, envs, user, cwd, timeout, request_timeout)
        return _checked(action, result)

    async def _remote_url(
        self,
        action: str,
        path: str,
        remote: str | None,
        envs: Mapping[str, str] | None,
        user: str | None,
        cwd: str | None,
        timeout: float | None,
        request_timeout: float | None,
    ) -> tuple[str, str]:
        """The remote credentials go to (`remote`, or the only one) and its URL, in one call."""
        _git.check_ref(action, "remote", remote)
        cmd = _git.git_command(["config", "--get-regexp", r"^remote\..*\.url$"], path)
        result = await self._run(action, cmd, envs, user, cwd, timeout, request_timeout)
        if result.exit_code not in (0, 1):  # 1: no remote at all
            _checked(action, result)
        urls: dict[str, str] = {}
        for line in result.stdout.splitlines():
            key, _, url = line.partition(" ")
            urls[key[len("remote.") : -len(".url")]] = url
        if remote is None:
            if len(urls) != 1:
                raise InvalidArgumentException(
                    f"git {action}: pass remote= to say where the credentials go (the "
                    f"repository has {len(urls)} remotes: {', '.join(sorted(urls)) or 'none'})"
                )
            remote = next(iter(urls))
        if remote not in urls:
            raise InvalidArgumentException(
                f'git {action}: remote "{remote}" URL not found in repository {path!r} (add '
                "it with git.remote_add)"
            )
        _git.check_http_url(action, urls[remote])
        return remote, urls[remote]

    async def clone(
        self,
        url: str,
        path: str | None = None,
        branch: str | None = None,
        depth: int | None = None,
        username: str | None = None,
        password: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
        dangerously_store_credentials: bool = False,
    ) -> CommandResult:
        """Clone `url` into `path` (default: git's, from the URL, under `cwd`).

        `username`/`password` (a token) are for http(s) URLs; they are used for this clone
        only unless `dangerously_store_credentials=True` keeps them in `origin`'s URL.
        Credentials written in `url` itself are treated the same way.
        """
        if not url:
            raise InvalidArgumentException("git clone: url is required")
        url_secrets: list[str] = []
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.password is not None:
            # credentials written in the URL: lift them out, so that they are stored only
            # when asked (explicit username=/password= win over them)
            url_secrets = [parts.password, unquote(parts.password)]
            if not username and not password:
                username, password = unquote(parts.username or ""), unquote(parts.password)
            url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        credentials = _git.check_credentials("clone", username, password)
        prefix: list[str] = []
        secret_envs = None
        secrets = url_secrets
        if credentials:
            username, password = credentials
            _git.check_http_url("clone", url)
            secrets = [*url_secrets, password]
            if dangerously_store_credentials:
                url = _git.url_with_credentials(url, username, password)
            else:
                prefix = _git.credential_helper_args()
                secret_envs = _git.credential_envs(username, password)
        args = [*prefix, *_git.clone_args(url, path, branch, depth)]
        result = await self._run(
            "clone",
            _git.git_command(args),
            envs,
            user,
            cwd,
            timeout,
            request_timeout,
            secrets=secrets,
            secret_envs=secret_envs,
        )
        return _checked_remote("clone", result, credentials is not None)

    async def init(
        self,
        path: str,
        bare: bool = False,
        initial_branch: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Create a repository at `path` (`bare=True` for one without a worktree)."""
        args = _git.init_args(path, bare, initial_branch)
        return await self._git("init", args, None, envs, user, cwd, timeout, request_timeout)

    async def remote_add(
        self,
        path: str,
        name: str,
        url: str,
        fetch: bool = False,
        overwrite: bool = False,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Add remote `name` (`overwrite=True` sets its URL if it exists; `fetch=True` fetches)."""
        args = _git.build_remote_add_args(name, url, fetch)
        if not overwrite:
            return await self._git(
                "remote add", args, path, envs, user, cwd, timeout, request_timeout
            )
        add = _git.git_command(_git.build_remote_add_args(name, url, False), path)
        set_url = _git.git_command(["remote", "set-url", "--", name, url], path)
        cmd = f"{{ {add} 2>/dev/null || {set_url}; }}"
        if fetch:
            cmd += " && " + _git.git_command(["fetch", "--", name], path)
        result = await self._run("remote add", cmd, envs, user, cwd, timeout, request_timeout)
        return _checked("remote add", result)

    async def remote_get(
        self,
        path: str,
        name: str,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> str | None:
        """The URL of remote `name`, or None if the repository has no such remote."""
        _git.check_remote_name(name)
        _git.check_ref("remote_get", "remote", name)
        cmd = _git.git_command(["remote", "get-url", name], path)
        result = await self._run("remote get-url", cmd, envs, user, cwd, timeout, request_timeout)
        if result.exit_code == 2:  # git: "No such remote"
            return None
        return _checked("remote get-url", result).stdout.strip() or None

    async def status(
        self,
        path: str,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> GitStatus:
        """The branch, its upstream and ahead/behind counts, and every changed path."""
        result = await self._git(
            "status", _git.STATUS_ARGS, path, envs, user, cwd, timeout, request_timeout
        )
        return _git.parse_status(result.stdout)

    async def branches(
        self,
        path: str,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> GitBranches:
        """The local branches and the checked-out one."""
        result = await self._git(
            "branch", _git.BRANCHES_ARGS, path, envs, user, cwd, timeout, request_timeout
        )
        return _git.parse_branches(result.stdout)

    async def create_branch(
        self,
        path: str,
        branch: str,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Create `branch` at HEAD and check it out."""
        _git.check_ref("create_branch", "branch", branch)
        return await self._git(
            "checkout -b",
            ["checkout", "-b", branch],
            path,
            envs,
            user,
            cwd,
            timeout,
            request_timeout,
        )

    async def checkout_branch(
        self,
        path: str,
        branch: str,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Check out the existing `branch`."""
        _git.check_ref("checkout_branch", "branch", branch)
        return await self._git(
            "checkout", ["checkout", branch], path, envs, user, cwd, timeout, request_timeout
        )

    async def delete_branch(
        self,
        path: str,
        branch: str,
        force: bool = False,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Delete `branch` (`force=True` also when it is not merged)."""
        _git.check_ref("delete_branch", "branch", branch)
        args = ["branch", "-D" if force else "-d", branch]
        return await self._git("branch", args, path, envs, user, cwd, timeout, request_timeout)

    async def add(
        self,
        path: str,
        files: list[str] | None = None,
        all: bool = True,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Stage `files`, or without them every change (`all=False`: the worktree root's)."""
        args = _git.add_args(files, all)
        return await self._git("add", args, path, envs, user, cwd, timeout, request_timeout)

    async def commit(
        self,
        path: str,
        message: str,
        author_name: str | None = None,
        author_email: str | None = None,
        allow_empty: bool = False,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Commit what is staged; the author's name/email default to git's config."""
        args = _git.commit_args(message, author_name, author_email, allow_empty)
        return await self._git("commit", args, path, envs, user, cwd, timeout, request_timeout)

    async def reset(
        self,
        path: str,
        mode: GitResetMode | None = None,
        target: str | None = None,
        paths: list[str] | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Reset HEAD (or `paths`) to `target` (default HEAD) with `mode`."""
        args = _git.build_reset_args(mode, target, paths)
        return await self._git("reset", args, path, envs, user, cwd, timeout, request_timeout)

    async def restore(
        self,
        path: str,
        paths: list[str],
        staged: bool | None = None,
        worktree: bool | None = None,
        source: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Restore `paths` in the worktree (default) and/or unstage them (`staged=True`)."""
        args = _git.restore_args(paths, staged, worktree, source)
        return await self._git("restore", args, path, envs, user, cwd, timeout, request_timeout)

    async def push(
        self,
        path: str,
        remote: str | None = None,
        branch: str | None = None,
        set_upstream: bool = True,
        username: str | None = None,
        password: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Push to `remote`/`branch` (default: the upstream); credentials for this push only."""
        credentials = _git.check_credentials("push", username, password)
        prefix: list[str] = []
        secret_envs = None
        if credentials:
            remote, _url = await self._remote_url(
                "push", path, remote, envs, user, cwd, timeout, request_timeout
            )
            prefix = _git.credential_helper_args()
            secret_envs = _git.credential_envs(*credentials)
        args = [*prefix, *_git.push_args(remote, branch, set_upstream)]
        result = await self._run(
            "push",
            _git.git_command(args, path),
            envs,
            user,
            cwd,
            timeout,
            request_timeout,
            secrets=[credentials[1]] if credentials else [],
            secret_envs=secret_envs,
        )
        return _checked_remote("push", result, credentials is not None)

    async def pull(
        self,
        path: str,
        remote: str | None = None,
        branch: str | None = None,
        username: str | None = None,
        password: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Pull from `remote`/`branch` (default: the upstream); credentials for this pull only."""
        credentials = _git.check_credentials("pull", username, password)
        _git.pull_args(remote, branch)  # refuse bad names before any round trip
        if not remote and not branch:
            upstream = _git.git_command(
                ["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"], path
            )
            found = await self._run("pull", upstream, envs, user, cwd, timeout, request_timeout)
            if found.exit_code != 0:
                if "not a git repository" in found.stderr.lower():
                    _checked("pull", found)
                raise GitUpstreamException(_git.upstream_message("pull"))
        prefix: list[str] = []
        secret_envs = None
        if credentials:
            remote, _url = await self._remote_url(
                "pull", path, remote, envs, user, cwd, timeout, request_timeout
            )
            prefix = _git.credential_helper_args()
            secret_envs = _git.credential_envs(*credentials)
        args = [*prefix, *_git.pull_args(remote, branch)]
        result = await self._run(
            "pull",
            _git.git_command(args, path),
            envs,
            user,
            cwd,
            timeout,
            request_timeout,
            secrets=[credentials[1]] if credentials else [],
            secret_envs=secret_envs,
        )
        return _checked_remote("pull", result, credentials is not None)

    async def set_config(
        self,
        key: str,
        value: str,
        scope: str = "global",
        path: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Set git config `key` in `scope` ('global', 'system', or 'local' with `path`)."""
        _check_key("set_config", key)
        flag, repo = _git.config_scope(scope, path)
        return await self._git(
            "config", ["config", flag, key, value], repo, envs, user, cwd, timeout, request_timeout
        )

    async def get_config(
        self,
        key: str,
        scope: str = "global",
        path: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> str | None:
        """Git config `key` in `scope`, or None if it is not set there."""
        _check_key("get_config", key)
        flag, repo = _git.config_scope(scope, path)
        cmd = _git.git_command(["config", flag, "--get", key], repo)
        result = await self._run("config", cmd, envs, user, cwd, timeout, request_timeout)
        if result.exit_code == 1:  # git: the key is not set
            return None
        return _checked("config", result).stdout.strip() or None

    async def dangerously_authenticate(
        self,
        username: str,
        password: str,
        host: str = "github.com",
        protocol: str = "https",
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Store credentials for `protocol://host` in git's global credential store.

        They stay in plain text in `~/.git-credentials` for every later git command, and
        for anything else running in the sandbox (an agent, too) to read: prefer
        `username=`/`password=` on clone, push and pull, and short-lived tokens.
        """
        if not username or not password:
            raise InvalidArgumentException(
                "git dangerously_authenticate: both username and password (a token) are required"
            )
        _git.check_credentials("dangerously_authenticate", username, password)
        host = host.strip() or "github.com"
        protocol = protocol.strip() or "https"
        for what, value in (("host", host), ("protocol", protocol)):
            if "\n" in value or "\0" in value:
                raise InvalidArgumentException(
                    f"git dangerously_authenticate: {what} {value!r} contains a newline or NUL"
                )
        store = _git.git_command(["config", "--global", "credential.helper", "store"])
        approve = _git.git_command(["credential", "approve"])
        cmd = (
            f"{store} && printf 'protocol=%s\\nhost=%s\\nusername=%s\\npassword=%s\\n\\n' "
            f'"$AGENTRUN_GIT_PROTOCOL" "$AGENTRUN_GIT_HOST" "${_git.USERNAME_VAR}" '
            f'"${_git.PASSWORD_VAR}" | {approve}'
        )
        secret_envs = {
            "AGENTRUN_GIT_PROTOCOL": protocol,
            "AGENTRUN_GIT_HOST": host,
            **_git.credential_envs(username, password),
        }
        result = await self._run(
            "credential approve",
            cmd,
            envs,
            user,
            cwd,
            timeout,
            request_timeout,
            secrets=[password],
            secret_envs=secret_envs,
        )
        return _checked("credential approve", result)

    async def configure_user(
        self,
        name: str,
        email: str,
        scope: str = "global",
        path: str | None = None,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        """Set `user.name` and `user.email` in `scope` (one command for both)."""
        if not name or not email:
            raise InvalidArgumentException("git configure_user: both name and email are required")
        flag, repo = _git.config_scope(scope, path)
        cmd = " && ".join(
            _git.git_command(["config", flag, key, value], repo)
            for key, value in (("user.name", name), ("user.email", email))
        )
        result = await self._run("config", cmd, envs, user, cwd, timeout, request_timeout)
        return _checked("config", result)


def _check_key(action: str, key: str) -> None:
    if not key:
        raise InvalidArgumentException(f"git {action}: the config key is required")
    _git.check_ref(action, "key", key)


def _masked(result: CommandResult, secrets: Sequence[str]) -> CommandResult:
    """`result` with `secrets` masked in its output and in its raw wire record."""

    def mask(value: object) -> object:
        if isinstance(value, str):
            return _git.redact(value, secrets)
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    raw = mask(dict(result.raw))
    assert isinstance(raw, dict)
    return attrs.evolve(
        result,
        stdout=_git.redact(result.stdout, secrets),
        stderr=_git.redact(result.stderr, secrets),
        raw=raw,
    )


def _checked(action: str, result: CommandResult) -> CommandResult:
    """`result` if git exited 0, else `CommandExitException` quoting what git said."""
    if result.exit_code == 0:
        return result
    said = (result.stderr.strip() or result.stdout.strip() or "no output")[-_QUOTE_CHARS:]
    raise CommandExitException(
        f"git {action} failed with exit code {result.exit_code}: {said}",
        exit_code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr,
    )


def _checked_remote(action: str, result: CommandResult, with_credentials: bool) -> CommandResult:
    """`_checked` for clone, push and pull, which tell auth and upstream failures apart.

    The `CommandExitException` with git's output is the `__cause__` of either.
    """
    try:
        return _checked(action, result)
    except CommandExitException as failed:
        output = result.stderr + "\n" + result.stdout
        if _git.is_auth_failure(output):
            raise GitAuthException(_git.auth_message(action, with_credentials)) from failed
        if action != "clone" and _git.is_missing_upstream(output):
            raise GitUpstreamException(_git.upstream_message(action)) from failed
        raise
