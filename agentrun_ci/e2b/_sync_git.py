"""`sandbox.git` for `Sandbox`: the sync twin of `AsyncGit` (same names, same parameters)."""

from __future__ import annotations

from collections.abc import Mapping

from .._models import CommandResult
from ._async_sandbox import AsyncSandbox
from ._git import GitBranches, GitResetMode, GitStatus
from ._portal import call as _call

__all__ = ["Git"]


class Git:
    """`sandbox.git`: clone, init, add, commit, push, pull, branches, status, config."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._git = sandbox.git

    def clone(
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
        return _call(
            self._git.clone(
                url=url,
                path=path,
                branch=branch,
                depth=depth,
                username=username,
                password=password,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
                dangerously_store_credentials=dangerously_store_credentials,
            )
        )

    def init(
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
        return _call(
            self._git.init(
                path=path,
                bare=bare,
                initial_branch=initial_branch,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def remote_add(
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
        return _call(
            self._git.remote_add(
                path=path,
                name=name,
                url=url,
                fetch=fetch,
                overwrite=overwrite,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def remote_get(
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
        return _call(
            self._git.remote_get(
                path=path,
                name=name,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def status(
        self,
        path: str,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> GitStatus:
        """The branch, its upstream and ahead/behind counts, and every changed path."""
        return _call(
            self._git.status(
                path=path,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def branches(
        self,
        path: str,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        request_timeout: float | None = None,
    ) -> GitBranches:
        """The local branches and the checked-out one."""
        return _call(
            self._git.branches(
                path=path,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def create_branch(
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
        return _call(
            self._git.create_branch(
                path=path,
                branch=branch,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def checkout_branch(
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
        return _call(
            self._git.checkout_branch(
                path=path,
                branch=branch,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def delete_branch(
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
        return _call(
            self._git.delete_branch(
                path=path,
                branch=branch,
                force=force,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def add(
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
        return _call(
            self._git.add(
                path=path,
                files=files,
                all=all,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def commit(
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
        return _call(
            self._git.commit(
                path=path,
                message=message,
                author_name=author_name,
                author_email=author_email,
                allow_empty=allow_empty,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def reset(
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
        return _call(
            self._git.reset(
                path=path,
                mode=mode,
                target=target,
                paths=paths,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def restore(
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
        return _call(
            self._git.restore(
                path=path,
                paths=paths,
                staged=staged,
                worktree=worktree,
                source=source,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def push(
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
        return _call(
            self._git.push(
                path=path,
                remote=remote,
                branch=branch,
                set_upstream=set_upstream,
                username=username,
                password=password,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def pull(
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
        return _call(
            self._git.pull(
                path=path,
                remote=remote,
                branch=branch,
                username=username,
                password=password,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def set_config(
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
        return _call(
            self._git.set_config(
                key=key,
                value=value,
                scope=scope,
                path=path,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def get_config(
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
        return _call(
            self._git.get_config(
                key=key,
                scope=scope,
                path=path,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def dangerously_authenticate(
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
        return _call(
            self._git.dangerously_authenticate(
                username=username,
                password=password,
                host=host,
                protocol=protocol,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )

    def configure_user(
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
        return _call(
            self._git.configure_user(
                name=name,
                email=email,
                scope=scope,
                path=path,
                envs=envs,
                user=user,
                cwd=cwd,
                timeout=timeout,
                request_timeout=request_timeout,
            )
        )
