"""`sandbox.git` (E2B's git API as git commands in the sandbox): parsers, checks, local runs."""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentrun_ci import Config, e2b
from agentrun_ci._models import CommandResult
from agentrun_ci.e2b import (
    AsyncGit,
    AsyncSandbox,
    AuthenticationException,
    CommandExitException,
    Git,
    GitAuthException,
    GitBranches,
    GitFileStatus,
    GitStatus,
    GitUpstreamException,
    InvalidArgumentException,
    Sandbox,
    SandboxException,
    _git,
)
from agentrun_ci.e2b._async_git import _masked

HOME = "/home/user"
AUTHOR = ("Sandbox Bot", "bot@example.com")
SECRET = "s3cr3t-t0ken:with/odd chars"

# ---------------------------------------------------------------- parsers and checks (no I/O)


def test_status_parses_branch_upstream_counts_and_every_kind_of_change() -> None:
    output = "\0".join(
        [
            "# branch.oid 0123456789abcdef0123456789abcdef01234567",
            "# branch.head main",
            "# branch.upstream origin/main",
            "# branch.ab +2 -1",
            "1 .M N... 100644 100644 100644 aaaa bbbb README.md",
            "1 A. N... 000000 100644 100644 0000 cccc new file.md",
            "1 D. N... 100644 000000 000000 dddd 0000 gone.md",
            "2 R. N... 100644 100644 100644 eeee eeee R100 renamed.md",
            "old name.md",
            "u UU N... 100644 100644 100644 100644 ffff 1111 2222 both.md",
            "? untracked.txt",
            "",
        ]
    )
    status = _git.parse_status(output)
    assert (status.current_branch, status.upstream, status.ahead, status.behind) == (
        "main",
        "origin/main",
        2,
        1,
    )
    assert not status.detached
    assert status.file_status == [
        GitFileStatus("README.md", "modified", " ", "M", staged=False),
        GitFileStatus("new file.md", "added", "A", " ", staged=True),
        GitFileStatus("gone.md", "deleted", "D", " ", staged=True),
        GitFileStatus("renamed.md", "renamed", "R", " ", staged=True, renamed_from="old name.md"),
        GitFileStatus("both.md", "conflict", "U", "U", staged=True),
        GitFileStatus("untracked.txt", "untracked", "?", "?", staged=False),
    ]
    assert (status.total_count, status.staged_count, status.unstaged_count) == (6, 4, 2)
    assert (status.untracked_count, status.conflict_count) == (1, 1)
    assert (status.has_conflicts, status.has_untracked, status.has_staged) == (True,) * 3
    assert (status.has_changes, status.is_clean) == (True, False)


def test_status_of_a_detached_head_has_no_branch() -> None:
    status = _git.parse_status("# branch.oid abc\0# branch.head (detached)\0")
    assert status == GitStatus(None, None, 0, 0, True, [])
    assert status.is_clean


def test_branches_parse_marks_the_checked_out_one() -> None:
    assert _git.parse_branches("feature\t \nmain\t*\n") == GitBranches(["feature", "main"], "main")
    assert _git.parse_branches("") == GitBranches([], None)


def test_reset_refuses_an_unknown_mode_naming_the_allowed_ones() -> None:
    with pytest.raises(
        InvalidArgumentException, match=r"Reset mode must be one of soft, mixed, hard, merge, keep"
    ):
        _git.build_reset_args("bogus", None, None)
    assert _git.build_reset_args("hard", "HEAD", None) == ["reset", "--hard", "HEAD"]
    assert _git.build_reset_args(None, None, ["a"]) == ["reset", "--", "a"]


@pytest.mark.parametrize(
    ("staged", "worktree", "flags"),
    [
        (None, None, ["--worktree"]),
        (True, None, ["--staged"]),
        (None, True, ["--worktree"]),
        (True, True, ["--worktree", "--staged"]),
    ],
)
def test_restore_resolves_staged_and_worktree_as_e2b_does(
    staged: bool | None, worktree: bool | None, flags: list[str]
) -> None:
    assert _git.restore_args(["a"], staged, worktree, None) == ["restore", *flags, "--", "a"]


def test_restore_needs_a_path_and_something_to_restore() -> None:
    with pytest.raises(InvalidArgumentException, match="at least one path"):
        _git.restore_args([], None, None, None)
    with pytest.raises(InvalidArgumentException, match="staged= and worktree="):
        _git.restore_args(["a"], False, False, None)


def test_names_that_git_would_read_as_options_are_refused() -> None:
    with pytest.raises(InvalidArgumentException, match="read as an option"):
        _git.push_args("--receive-pack=touch /tmp/x", None, True)
    with pytest.raises(InvalidArgumentException, match="read as an option"):
        _git.build_reset_args(None, "--hard", None)


def test_every_argument_is_quoted_for_the_shell() -> None:
    cmd = _git.git_command(["commit", "-m", "it's $(rm -rf ~)"], "/home/user/my repo")
    assert cmd == "git -C '/home/user/my repo' commit -m 'it'\"'\"'s $(rm -rf ~)'"


def test_half_a_credential_pair_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidArgumentException, match="needs a username") as exc:
        _git.check_credentials("push", None, SECRET)
    assert SECRET not in str(exc.value)
    with pytest.raises(InvalidArgumentException, match="needs password="):
        _git.check_credentials("push", "me", None)
    with pytest.raises(InvalidArgumentException, match="newline") as exc:
        _git.check_credentials("clone", "me", SECRET + "\nx")
    assert SECRET not in str(exc.value)
    assert _git.check_credentials("clone", None, None) is None


def test_credentials_need_an_http_url() -> None:
    with pytest.raises(InvalidArgumentException, match="http") as exc:
        _git.check_http_url("clone", f"ssh://me:{SECRET}@host/repo.git")
    assert SECRET not in str(exc.value)


def test_config_scope_is_checked_and_local_needs_a_path() -> None:
    assert _git.config_scope(" Global ", None) == ("--global", None)
    assert _git.config_scope("local", "/r") == ("--local", "/r")
    with pytest.raises(InvalidArgumentException, match="needs path="):
        _git.config_scope("local", None)
    with pytest.raises(InvalidArgumentException, match="'global', 'local' or 'system'"):
        _git.config_scope("worktree", None)


def test_the_credential_helper_carries_variable_names_not_values() -> None:
    args = " ".join(_git.credential_helper_args())
    assert "$AGENTRUN_GIT_PASSWORD" in args
    assert args.startswith("-c credential.helper= -c")  # configured helpers dropped first


def test_a_masked_result_has_no_secret_left_anywhere() -> None:
    quoted = "s3cr3t-t0ken%3Awith%2Fodd%20chars"
    result = CommandResult(
        exit_code=128,
        stdout=f"out {SECRET}",
        stderr=f"fatal: https://me:{quoted}@host/",
        raw={"result": {"stdout": SECRET, "stderr": [quoted]}},
    )
    masked = _masked(result, [SECRET])
    for text in (repr(masked), str(masked.raw)):
        assert SECRET not in text
        assert quoted not in text
    assert masked.stderr == "fatal: https://me:***@host/"


def test_git_errors_are_e2b_names_and_our_classes() -> None:
    assert issubclass(GitAuthException, AuthenticationException)
    assert issubclass(GitUpstreamException, SandboxException)
    assert issubclass(CommandExitException, SandboxException)
    assert str(GitAuthException("git push: refused")) == "git push: refused"


def test_sync_git_mirrors_async_git_name_by_name_and_parameter_by_parameter() -> None:
    def methods(cls: type) -> dict[str, Callable[..., object]]:
        return {n: f for n, f in vars(cls).items() if not n.startswith("_") and callable(f)}

    async_methods, sync_methods = methods(AsyncGit), methods(Git)
    assert set(async_methods) == set(sync_methods)
    assert len(async_methods) == 19
    for name, method in async_methods.items():
        assert inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == inspect.signature(sync_methods[name]), name
        assert inspect.getdoc(method) == inspect.getdoc(sync_methods[name]), name


# ---------------------------------------------------------------- in a local sandbox

_dirs = itertools.count()


@pytest.fixture(scope="module")
def sbx(emulator: Config) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(config=emulator, metadata={"suite": "test_e2b_git"})
    yield sandbox
    sandbox.kill()
    e2b.close_shared()


@pytest.fixture
def base(sbx: Sandbox) -> str:
    path = f"{HOME}/git-{next(_dirs)}"
    sbx.commands.run(f"mkdir -p {path}")
    return path


def new_repo(sbx: Sandbox, path: str) -> str:
    sbx.git.init(path, initial_branch="main")
    sbx.git.configure_user(*AUTHOR, scope="local", path=path)
    return path


def commit_file(sbx: Sandbox, repo: str, name: str, text: str, message: str) -> None:
    sbx.files.write(f"{repo}/{name}", text)
    sbx.git.add(repo)
    sbx.git.commit(repo, message)


def run(sbx: Sandbox, cmd: str) -> str:
    result = sbx.commands.run(cmd)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_init_add_commit_and_status(sbx: Sandbox, base: str) -> None:
    repo = new_repo(sbx, f"{base}/repo")
    assert run(sbx, f"git -C {repo} symbolic-ref --short HEAD") == "main"
    sbx.files.write(f"{repo}/a.txt", "a\n")
    untracked = sbx.git.status(repo)
    assert untracked.current_branch == "main"
    assert [(f.name, f.status) for f in untracked.file_status] == [("a.txt", "untracked")]

    sbx.git.add(repo, files=["a.txt"])
    staged = sbx.git.status(repo)
    assert [(f.name, f.status, f.staged) for f in staged.file_status] == [("a.txt", "added", True)]
    result = sbx.git.commit(repo, "first", author_name="Other Name")
    assert result.exit_code == 0
    assert (
        run(sbx, f"git -C {repo} log -1 --format=%an/%ae/%s") == "Other Name/bot@example.com/first"
    )
    assert sbx.git.status(repo).is_clean


def test_a_failed_git_command_raises_with_what_git_said(sbx: Sandbox, base: str) -> None:
    with pytest.raises(CommandExitException, match="not a git repository") as exc:
        sbx.git.status(base)
    assert exc.value.exit_code == 128
    assert "not a git repository" in exc.value.stderr
    repo = new_repo(sbx, f"{base}/repo")
    with pytest.raises(CommandExitException, match="nothing to commit"):
        sbx.git.commit(repo, "empty")
    assert sbx.git.commit(repo, "empty", allow_empty=True).exit_code == 0


def test_a_sandbox_without_git_gets_an_error_naming_the_fix(sbx: Sandbox, base: str) -> None:
    with pytest.raises(CommandExitException, match=r"git is not installed.*apt-get install"):
        sbx.git.init(f"{base}/repo", envs={"PATH": "/nonexistent"})


def test_branches_create_checkout_and_delete(sbx: Sandbox, base: str) -> None:
    repo = new_repo(sbx, f"{base}/repo")
    commit_file(sbx, repo, "a.txt", "a\n", "first")
    sbx.git.create_branch(repo, "feature")
    assert sbx.git.branches(repo) == GitBranches(["feature", "main"], "feature")
    sbx.git.checkout_branch(repo, "main")
    assert sbx.git.branches(repo).current_branch == "main"
    sbx.git.delete_branch(repo, "feature")
    assert sbx.git.branches(repo).branches == ["main"]


def test_reset_and_restore(sbx: Sandbox, base: str) -> None:
    repo = new_repo(sbx, f"{base}/repo")
    commit_file(sbx, repo, "a.txt", "a\n", "first")
    sbx.files.write(f"{repo}/a.txt", "changed\n")
    sbx.git.add(repo)
    sbx.git.restore(repo, ["a.txt"], staged=True)
    unstaged = sbx.git.status(repo)
    assert (unstaged.has_staged, unstaged.has_changes) == (False, True)
    sbx.git.restore(repo, ["a.txt"])
    assert sbx.git.status(repo).is_clean
    commit_file(sbx, repo, "b.txt", "b\n", "second")
    sbx.git.reset(repo, mode="hard", target="HEAD~1")
    assert run(sbx, f"git -C {repo} log --format=%s") == "first"


def test_config_set_get_and_configure_user(sbx: Sandbox, base: str) -> None:
    repo = new_repo(sbx, f"{base}/repo")
    assert sbx.git.get_config("pull.rebase", scope="local", path=repo) is None
    sbx.git.set_config("pull.rebase", "true", scope="local", path=repo)
    assert sbx.git.get_config("pull.rebase", scope="local", path=repo) == "true"
    assert run(sbx, f"git -C {repo} config --local --get pull.rebase") == "true"
    sbx.git.configure_user("Global Bot", "global@example.com")
    assert sbx.git.get_config("user.email") == "global@example.com"
    assert run(sbx, "git config --global --get user.name") == "Global Bot"


def test_remotes_add_get_and_overwrite(sbx: Sandbox, base: str) -> None:
    repo = new_repo(sbx, f"{base}/repo")
    assert sbx.git.remote_get(repo, "origin") is None
    sbx.git.remote_add(repo, "origin", f"{base}/one.git")
    assert sbx.git.remote_get(repo, "origin") == f"{base}/one.git"
    with pytest.raises(CommandExitException, match="already exists"):
        sbx.git.remote_add(repo, "origin", f"{base}/two.git")
    sbx.git.remote_add(repo, "origin", f"{base}/two.git", overwrite=True)
    assert sbx.git.remote_get(repo, "origin") == f"{base}/two.git"
    with pytest.raises(InvalidArgumentException, match="name"):
        sbx.git.remote_add(repo, "", f"{base}/two.git")


def test_clone_push_and_pull_through_a_local_bare_repository(sbx: Sandbox, base: str) -> None:
    remote = f"{base}/remote.git"
    sbx.git.init(remote, bare=True, initial_branch="main")
    repo = new_repo(sbx, f"{base}/repo")
    commit_file(sbx, repo, "README.md", "hello\n", "first")
    sbx.git.remote_add(repo, "origin", remote)
    sbx.git.push(repo, remote="origin", branch="main")  # set_upstream=True by default
    assert sbx.git.status(repo).upstream == "origin/main"

    sbx.git.clone(remote, f"{base}/clone")
    assert sbx.files.read(f"{base}/clone/README.md") == "hello\n"
    commit_file(sbx, repo, "README.md", "hello\nmore\n", "second")
    assert sbx.git.status(repo).ahead == 1
    sbx.git.push(repo)
    sbx.git.pull(f"{base}/clone")
    assert sbx.files.read(f"{base}/clone/README.md") == "hello\nmore\n"

    shallow = sbx.git.clone(f"file://{remote}", f"{base}/shallow", branch="main", depth=1)
    assert shallow.exit_code == 0
    assert run(sbx, f"git -C {base}/shallow rev-list --count HEAD") == "1"


def test_push_and_pull_without_upstream_say_how_to_set_one(sbx: Sandbox, base: str) -> None:
    remote = f"{base}/remote.git"
    sbx.git.init(remote, bare=True, initial_branch="main")
    repo = new_repo(sbx, f"{base}/repo")
    commit_file(sbx, repo, "a.txt", "a\n", "first")
    sbx.git.remote_add(repo, "origin", remote)
    with pytest.raises(GitUpstreamException, match="no upstream branch is configured") as exc:
        sbx.git.push(repo, set_upstream=False)
    assert isinstance(exc.value.__cause__, CommandExitException)
    with pytest.raises(GitUpstreamException, match="remote= and branch="):
        sbx.git.pull(repo)


# ---------------------------------------------------------------- credentials


@pytest.fixture
def http_remote(sbx: Sandbox, base: str) -> Iterator[dict[str, str]]:
    """A bare repository served over http://127.0.0.1 (dumb HTTP) behind Basic auth."""
    source = new_repo(sbx, f"{base}/source")
    commit_file(sbx, source, "README.md", "private\n", "first")
    run(sbx, f"git clone -q --bare {source} {base}/www/repo.git")
    run(sbx, f"git -C {base}/www/repo.git update-server-info")
    server = Path(__file__).with_name("git_http_server.py").read_text()
    sbx.files.write(f"{base}/server.py", server)
    state = f"{base}/state"
    run(sbx, f"mkdir -p {state}")
    run(
        sbx,
        f"nohup python {base}/server.py {base}/www me '{SECRET}' {state} "
        f">{state}/out.log 2>&1 & echo $! > {state}/pid",
    )
    deadline = time.monotonic() + 30
    while not sbx.files.exists(f"{state}/port"):
        assert time.monotonic() < deadline, sbx.commands.run(f"cat {state}/out.log").stdout
        time.sleep(0.05)
    port = sbx.files.read(f"{state}/port")
    try:
        yield {"url": f"http://127.0.0.1:{port}/repo.git", "state": state}
    finally:
        sbx.commands.run(f"kill $(cat {state}/pid)")


def assert_nowhere(sbx: Sandbox, secret: str, *texts: object) -> list[str]:
    """`secret` is in none of `texts` and in no file of the sandbox but the test server's."""
    for text in texts:
        assert secret not in f"{text} {text!r}"
    found = sbx.commands.run(f"grep -rlF -- '{secret}' {HOME} || true").stdout
    # only the test's own server command line and its log of what git sent may hold it
    assert all("/state/" in line or line.endswith("server.py") for line in found.split()), found
    return found.split()


def test_clone_with_credentials_uses_them_once_and_stores_them_nowhere(
    sbx: Sandbox, base: str, http_remote: dict[str, str]
) -> None:
    result = sbx.git.clone(http_remote["url"], f"{base}/clone", username="me", password=SECRET)
    assert sbx.files.read(f"{base}/clone/README.md") == "private\n"
    assert (
        sbx.commands.run(f"cat {http_remote['state']}/auth.log").stdout.count(f"me:{SECRET}") >= 1
    )
    assert sbx.git.remote_get(f"{base}/clone", "origin") == http_remote["url"]
    assert not sbx.files.exists(f"{HOME}/.git-credentials")
    found = assert_nowhere(sbx, SECRET, result)
    assert f"{http_remote['state']}/auth.log" in found  # the scan does find it where it is


def test_wrong_credentials_raise_git_auth_without_the_password(
    sbx: Sandbox, base: str, http_remote: dict[str, str]
) -> None:
    with pytest.raises(GitAuthException, match="refused the username") as exc:
        sbx.git.clone(http_remote["url"], f"{base}/clone", username="me", password="wrong-pass")
    cause = exc.value.__cause__
    assert isinstance(cause, CommandExitException)
    assert "wrong-pass" not in f"{exc.value} {cause} {cause.stderr} {cause.stdout}"
    with pytest.raises(GitAuthException, match="asks for credentials"):
        sbx.git.clone(http_remote["url"], f"{base}/anonymous")


def test_credentials_in_the_url_are_lifted_out_of_the_clone(
    sbx: Sandbox, base: str, http_remote: dict[str, str]
) -> None:
    url = http_remote["url"].replace("http://", "http://me:s3cr3t-t0ken%3Awith%2Fodd%20chars@")
    sbx.git.clone(url, f"{base}/clone")
    assert sbx.git.remote_get(f"{base}/clone", "origin") == http_remote["url"]
    assert_nowhere(sbx, SECRET)


def test_store_credentials_only_when_asked(
    sbx: Sandbox, base: str, http_remote: dict[str, str]
) -> None:
    sbx.git.clone(
        http_remote["url"],
        f"{base}/clone",
        username="me",
        password=SECRET,
        dangerously_store_credentials=True,
    )
    stored = sbx.git.remote_get(f"{base}/clone", "origin")
    assert (stored or "").startswith("http://me:s3cr3t-t0ken")
    run(sbx, f"rm -rf {base}/clone")


def test_pull_and_push_with_credentials_leave_the_config_clean(
    sbx: Sandbox, base: str, http_remote: dict[str, str]
) -> None:
    clone = f"{base}/clone"
    sbx.git.clone(http_remote["url"], clone, username="me", password=SECRET)
    sbx.git.configure_user(*AUTHOR, scope="local", path=clone)
    before = sbx.files.read(f"{clone}/.git/config")
    assert sbx.git.pull(clone, username="me", password=SECRET).exit_code == 0
    commit_file(sbx, clone, "b.txt", "b\n", "second")
    # dumb HTTP cannot take a push: it fails, and still leaves nothing behind
    with pytest.raises(CommandExitException) as exc:
        sbx.git.push(clone, username="me", password=SECRET)
    assert sbx.files.read(f"{clone}/.git/config") == before
    assert_nowhere(sbx, SECRET, exc.value, exc.value.stderr, exc.value.stdout)


def test_credentials_with_an_ssh_remote_are_refused(sbx: Sandbox, base: str) -> None:
    repo = new_repo(sbx, f"{base}/repo")
    sbx.git.remote_add(repo, "origin", "git@example.com:me/repo.git")
    with pytest.raises(InvalidArgumentException, match="http"):
        sbx.git.push(repo, username="me", password=SECRET)
    sbx.git.remote_add(repo, "fork", "https://example.com/me/fork.git")
    with pytest.raises(InvalidArgumentException, match="pass remote="):
        sbx.git.push(repo, username="me", password=SECRET)


def test_dangerously_authenticate_stores_them_for_later_commands(
    sbx: Sandbox, base: str, http_remote: dict[str, str]
) -> None:
    host = http_remote["url"].split("/")[2]
    result = sbx.git.dangerously_authenticate("me", SECRET, host=host, protocol="http")
    assert SECRET not in repr(result)
    assert sbx.git.get_config("credential.helper") == "store"
    try:
        sbx.git.clone(http_remote["url"], f"{base}/clone")
        assert sbx.files.read(f"{base}/clone/README.md") == "private\n"
    finally:
        run(sbx, "git config --global --unset credential.helper; rm -f ~/.git-credentials")


# ---------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_git_runs_on_async_sandbox(emulator: Config) -> None:
    async with await AsyncSandbox.create(config=emulator) as sbx:
        await sbx.git.init(f"{HOME}/arepo", initial_branch="trunk")
        status = await sbx.git.status(f"{HOME}/arepo")
        assert status.current_branch == "trunk"
        assert status.is_clean
