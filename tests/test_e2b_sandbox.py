"""`agentrun_ci.e2b.Sandbox` against the local emulator, from E2B's documented behaviour."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agentrun_ci import (
    AgentRunError,
    Config,
    ConfigError,
    InvalidArgumentError,
    NotFoundError,
    RequestTimeout,
    e2b,
)
from agentrun_ci.e2b import (
    InvalidArgumentException,
    NotFoundException,
    OutputMessage,
    Sandbox,
    SandboxException,
    TimeoutException,
)


@pytest.fixture(scope="module")
def shared(emulator: Config) -> Iterator[None]:
    # What other modules of this worker left open goes first: calls that name no backend
    # (`connect(id)`, `kill(id)`) use the one the process already uses, which must be ours.
    e2b.close_shared()
    yield
    e2b.close_shared()


@pytest.fixture(scope="module")
def sbx(emulator: Config, shared: None) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(config=emulator, metadata={"suite": "test_e2b_sandbox"})
    yield sandbox
    sandbox.kill()


@pytest.fixture
def fresh(emulator: Config, shared: None) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []

    def make(**kwargs: object) -> Sandbox:
        sandbox = Sandbox.create(config=emulator, **kwargs)  # type: ignore[arg-type]
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.kill()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(0.05)


# ---------------------------------------------------------------- lifecycle


def test_get_info_returns_metadata_template_and_lifetime(fresh: Callable[..., Sandbox]) -> None:
    sandbox = fresh(timeout=120, metadata={"team": "a"})
    info = sandbox.get_info()
    assert info.sandbox_id == sandbox.sandbox_id
    assert info.metadata == {"team": "a"}
    assert info.state == "running"
    assert info.started_at is not None
    assert info.end_at is not None
    assert 119 <= (info.end_at - info.started_at).total_seconds() <= 121
    assert Sandbox.get_info(sandbox.sandbox_id).metadata == {"team": "a"}


def test_list_finds_running_sandboxes_by_metadata(
    sbx: Sandbox, fresh: Callable[..., Sandbox]
) -> None:
    other = fresh(metadata={"suite": "someone else"})
    page = Sandbox.list(query={"metadata": {"suite": "test_e2b_sandbox"}})
    found = page.next_items()
    assert not page.has_next
    ids = {info.sandbox_id for info in found}
    assert sbx.sandbox_id in ids
    assert other.sandbox_id not in ids
    assert other.sandbox_id in {i.sandbox_id for i in Sandbox.list().next_items()}


def test_connect_shares_the_default_context(sbx: Sandbox) -> None:
    sbx.run_code("shared_value = 41")
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.sandbox_id == sbx.sandbox_id
    assert again.run_code("shared_value + 1").text == "42"
    assert Sandbox(sandbox_id=sbx.sandbox_id).run_code("shared_value").text == "41"
    assert sbx.connect() is sbx


def test_connect_from_another_process(sbx: Sandbox, emulator: Config) -> None:
    sbx.run_code("from_parent = 'hello'")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTRUN_", "E2B_"))}
    env["AGENTRUN_CONTROL_ENDPOINT"] = str(emulator.control_endpoint)
    env["AGENTRUN_DATA_ENDPOINT"] = str(emulator.data_endpoint)
    script = (
        "import sys\n"
        "from agentrun_ci.e2b import Sandbox\n"
        "sbx = Sandbox.connect(sys.argv[1])\n"
        "print(sbx.run_code('from_parent').text)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, sbx.sandbox_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "hello"
    assert sbx.is_running()  # the other process did not take it down


def test_connect_to_an_unknown_sandbox_is_not_found(sbx: Sandbox) -> None:
    with pytest.raises(NotFoundException, match="not found"):
        Sandbox.connect("no-such-sandbox")
    with pytest.raises(NotFoundError):  # the same class under our name
        Sandbox.connect("no-such-sandbox")


def test_kill_instance_and_class_form(fresh: Callable[..., Sandbox]) -> None:
    first, second = fresh(), fresh()
    assert first.kill() is True
    assert first.kill() is False
    assert not first.is_running()
    with pytest.raises(SandboxException, match="killed"):
        first.run_code("1")
    assert Sandbox.kill(second.sandbox_id) is True
    assert not second.is_running()
    assert Sandbox.kill(second.sandbox_id) is False


def test_kill_stops_a_run_in_another_thread_at_once(fresh: Callable[..., Sandbox]) -> None:
    sandbox = fresh()
    started = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            started.set()
            sandbox.run_code("import time; time.sleep(25)", timeout=30)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    started.wait(5)
    wait_until(lambda: bool(sandbox._async._inflight), 10, "the run to start")
    began = time.monotonic()
    assert sandbox.kill() is True
    worker.join(10)
    assert not worker.is_alive()
    assert time.monotonic() - began < 5
    assert len(outcome) == 1
    assert isinstance(outcome[0], TimeoutException)
    assert "sandbox was killed while the request was in progress" in str(outcome[0])


def test_timeout_kills_the_sandbox_and_set_timeout_moves_it(
    fresh: Callable[..., Sandbox],
) -> None:
    sandbox = fresh(timeout=600)
    sandbox.set_timeout(1)
    end = sandbox.get_info().end_at
    assert end is not None
    wait_until(lambda: not sandbox.is_running(), 15, "the sandbox to die at its timeout")
    with pytest.raises(SandboxException):
        sandbox.run_code("1")


def test_context_manager_kills(emulator: Config, shared: None) -> None:
    with Sandbox.create(config=emulator) as sandbox:
        assert sandbox.is_running()
    assert not sandbox.is_running()


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"api_key": "e2b_123"}, "api_key"),
        ({"allow_internet_access": False}, "allow_internet_access"),
        ({"network": {"deny_out": ["0.0.0.0/0"]}}, "deny_out"),
        ({"network": {"allow_public_traffic": True}}, "allow_public_traffic"),
        ({"lifecycle": {"on_timeout": {"action": "kill", "keep_memory": False}}}, "keep_memory"),
        ({"mcp": {"x": {}}}, "mcp"),
        ({"volume_mounts": {"/data": "vol"}}, "volume_mounts"),
        ({"domain": "e2b.app"}, "domain"),
        ({"timeout": 7 * 3600}, "6 h"),
        ({"metadata": {"a": 1}}, "metadata"),
        ({"envs": {"A=B": "x"}}, "A=B"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_create_refuses_what_agentrun_cannot_honour_by_name(
    emulator: Config, shared: None, kwargs: dict[str, object], names: str
) -> None:
    with pytest.raises((InvalidArgumentError, ConfigError), match=names):
        Sandbox.create(config=emulator, **kwargs)  # type: ignore[arg-type]


def test_accepted_e2b_defaults(fresh: Callable[..., Sandbox]) -> None:
    sandbox = fresh(
        template="code-interpreter-v1",
        secure=False,
        network={"allow_public_traffic": False},
        lifecycle={"on_timeout": "kill"},
    )
    assert sandbox.run_code("1 + 1").text == "2"


def test_another_template_name_means_an_existing_interpreter(
    emulator: Config, shared: None
) -> None:
    with pytest.raises(NotFoundError, match="no-such-interpreter"):
        Sandbox.create("no-such-interpreter", config=emulator)


def test_e2b_api_key_without_agentrun_setup_names_the_agentrun_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith(("AGENTRUN_", "ALIBABA_CLOUD_", "FC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("E2B_API_KEY", "e2b_abc")
    with pytest.raises(ConfigError, match="AGENTRUN_ACCESS_KEY_ID"):
        Sandbox.create()


def test_languages_and_context_language_conflict(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match=r"python.*javascript.*bash"):
        sbx.run_code("1", language="r")
    context = sbx.create_code_context(language="python")
    with pytest.raises(InvalidArgumentException, match="context or language"):
        sbx.run_code("console.log(1)", language="js", context=context)


# ---------------------------------------------------------------- contexts


def test_default_contexts_are_python_and_javascript(fresh: Callable[..., Sandbox]) -> None:
    languages = [c.language for c in fresh().list_code_contexts()]
    assert languages == ["python", "javascript"]


def test_create_list_remove_contexts(sbx: Sandbox) -> None:
    sbx.files.make_dir("/home/user/work")
    context = sbx.create_code_context(cwd="/home/user/work", language="python")
    listed = sbx.list_code_contexts()
    assert listed[-1].id == context.id
    assert (listed[-1].language, listed[-1].cwd) == ("python", "/home/user/work")
    assert sbx.run_code("import os; os.path.basename(os.getcwd())", context=context).text == (
        "work"
    )
    sbx.remove_code_context(context.id)
    assert context.id not in [c.id for c in sbx.list_code_contexts()]


def test_contexts_are_independent(sbx: Sandbox) -> None:
    context = sbx.create_code_context()
    sbx.run_code("only_default = 1")
    execution = sbx.run_code("only_default", context=context)
    assert execution.error is not None
    assert execution.error.value == "name 'only_default' is not defined"
    sbx.remove_code_context(context)


def test_restart_context_forgets_state_and_keeps_the_id(sbx: Sandbox) -> None:
    context = sbx.create_code_context(language="python")
    sbx.run_code("x = 1", context=context)
    sbx.restart_code_context(context.id)
    execution = sbx.run_code("x", context=context)
    assert execution.error is not None
    assert execution.error.name == "NameError"
    assert context.id in [c.id for c in sbx.list_code_contexts()]
    sbx.remove_code_context(context)


def test_bash_context_runs_commands_in_its_cwd(sbx: Sandbox) -> None:
    sbx.files.make_dir("/home/user/shell")
    context = sbx.create_code_context(cwd="/home/user/shell", language="bash")
    execution = sbx.run_code("basename $(pwd); echo oops >&2; exit 3", context=context)
    assert execution.logs.stdout == ["shell\n"]
    assert execution.logs.stderr == ["oops\n"]
    assert execution.error is not None
    assert execution.error.value == "exit code 3"
    assert execution.execution_count == 1
    assert context.id in [c.id for c in sbx.list_code_contexts()]
    sbx.remove_code_context(context)
    assert context.id not in [c.id for c in sbx.list_code_contexts()]


JAILED = sys.platform.startswith("linux") and shutil.which("bwrap") is not None


@pytest.mark.skipif(not JAILED, reason="/home/user is real only in the jail (Linux, bwrap)")
def test_code_commands_and_files_agree_on_home_user(fresh: Callable[..., Sandbox]) -> None:
    # E2B: every kernel, `!` shell escapes, bash contexts and commands start in /home/user,
    # where the file API writes relative names
    sbx = fresh()
    assert sbx.run_code("import os; os.getcwd()").text == "/home/user"
    assert sbx.run_code("process.cwd()", language="js").text == "/home/user"
    assert sbx.run_code("pwd", language="bash").logs.stdout == ["/home/user\n"]
    assert "".join(sbx.run_code("!pwd").logs.stdout).strip() == "/home/user"  # a pty: \r\n
    assert sbx.commands.run("pwd").stdout == "/home/user\n"
    sbx.files.write("/home/user/agree.txt", "same file")
    assert sbx.run_code("open('agree.txt').read()").text == "same file"


@pytest.mark.skipif(not JAILED, reason="directories outside /home/user exist only in the jail")
def test_a_context_may_start_in_any_existing_directory(sbx: Sandbox) -> None:
    context = sbx.create_code_context(language="python", cwd="/tmp")
    assert context.cwd == "/tmp"
    assert sbx.run_code("import os; os.getcwd()", context=context).text == "/tmp"
    listed = [c for c in sbx.list_code_contexts() if c.id == context.id]
    assert [(c.language, c.cwd) for c in listed] == [("python", "/tmp")]
    sbx.remove_code_context(context)
    with pytest.raises(AgentRunError, match="not an existing directory"):
        sbx.create_code_context(language="python", cwd="/home/user/no/such/dir")


def test_javascript_takes_es_module_imports_and_top_level_await(sbx: Sandbox) -> None:
    imported = sbx.run_code(
        "import { readFileSync } from 'fs'\nconsole.log(typeof readFileSync)", language="js"
    )
    assert imported.logs.stdout == ["function\n"]
    awaited = sbx.run_code("await Promise.resolve('Hello World!')", language="javascript")
    assert awaited.text == "Hello World!"
    kept = sbx.run_code("const answer = await Promise.resolve(42)\nanswer", language="js")
    assert kept.text == "42"
    assert sbx.run_code("answer + 1", language="js").text == "43"


# ---------------------------------------------------------------- run_code


def test_callbacks_get_e2b_objects(sbx: Sandbox) -> None:
    out: list[OutputMessage] = []
    err: list[OutputMessage] = []
    results: list[e2b.Result] = []
    errors: list[e2b.ExecutionError] = []
    before = time.time_ns()
    execution = sbx.run_code(
        "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\n7 * 6",
        on_stdout=out.append,
        on_stderr=err.append,
        on_result=results.append,
        on_error=errors.append,
    )
    assert [(m.line, m.error) for m in out] == [("to out\n", False)]
    assert [(m.line, m.error) for m in err] == [("to err\n", True)]
    assert out[0].timestamp >= before
    assert [r.text for r in results] == ["42"] == [execution.text]
    assert errors == []
    sbx.run_code("undefined_name", on_error=errors.append)
    assert [e.name for e in errors] == ["NameError"]


def test_envs_apply_to_one_run_only(sbx: Sandbox) -> None:
    code = {
        "python": "import os; os.getenv('FOO', 'default')",
        "js": "process.env.FOO || 'default'",
    }
    for language, source in code.items():
        assert sbx.run_code(source, language=language, envs={"FOO": "bar"}).text == "bar"
        assert sbx.run_code(source, language=language).text == "default"
    bash = sbx.run_code("echo ${FOO:-default}", language="bash", envs={"FOO": "bar"})
    assert bash.logs.stdout == ["bar\n"]
    assert sbx.run_code("echo ${FOO:-default}", language="bash").logs.stdout == ["default\n"]


def test_sandbox_envs_reach_every_context_and_command(fresh: Callable[..., Sandbox]) -> None:
    sandbox = fresh(envs={"TEAM": "blue"})
    assert sandbox.run_code("import os; os.environ['TEAM']").text == "blue"
    assert sandbox.run_code("process.env.TEAM", language="js").text == "blue"
    assert sandbox.run_code("echo $TEAM", language="bash").logs.stdout == ["blue\n"]
    assert sandbox.commands.run("echo $TEAM").stdout == "blue\n"
    context = sandbox.create_code_context()
    assert sandbox.run_code("import os; os.environ['TEAM']", context=context).text == "blue"
    run = sandbox.run_code("import os; os.environ['TEAM']", envs={"TEAM": "red"})
    assert run.text == "red"
    assert sandbox.run_code("import os; os.environ['TEAM']").text == "blue"


def test_execution_count_counts_only_the_users_runs(fresh: Callable[..., Sandbox]) -> None:
    sandbox = fresh()
    assert sandbox.run_code("a = 1").execution_count == 1
    assert sandbox.run_code("a", envs={"X": "1"}).execution_count == 2
    assert sandbox.run_code("a").execution_count == 3


def test_the_setup_snippet_leaves_nothing_in_the_users_namespace(
    fresh: Callable[..., Sandbox],
) -> None:
    sbx = fresh()
    names = sbx.run_code("sorted(n for n in globals() if 'agentrun' in n.lower())")
    assert names.text == "[]"
    assert names.execution_count == 1
    assert sbx.run_code("_i1").text == "sorted(n for n in globals() if 'agentrun' in n.lower())"


def test_timeout_raises_and_the_context_stays_usable(sbx: Sandbox) -> None:
    sbx.run_code("kept = 'still here'")
    began = time.monotonic()
    with pytest.raises(TimeoutException, match="timeout"):
        sbx.run_code("import time; time.sleep(20)", timeout=1)
    assert time.monotonic() - began < 10
    assert sbx.run_code("kept").text == "still here"
    assert issubclass(TimeoutException, RequestTimeout)


def test_request_timeout_bounds_a_request(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException, match="request_timeout"):
        sbx.create_code_context(request_timeout=0.001)


def test_bad_run_arguments(sbx: Sandbox) -> None:
    with pytest.raises(InvalidArgumentException, match="timeout"):
        sbx.run_code("1", timeout=-1)
    with pytest.raises(InvalidArgumentException, match="envs"):
        sbx.run_code("1", envs={"": "x"})


# ---------------------------------------------------------------- models


def test_execution_and_result_have_e2b_fields(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "from IPython.display import display, HTML\n"
        "display({'text/latex': r'\\text{x}'}, raw=True)\n"
        "display({'text/plain': 'p', 'application/x-custom': 'c'}, raw=True)\n"
        "display(HTML('<b>b</b>'))\n"
        "'quoted'"
    )
    latex, custom, html, main = execution.results
    assert latex.formats() == ["latex"]
    assert latex.text is None
    assert latex.latex == "\\text{x}"
    assert custom.extra == {"application/x-custom": "c"}
    assert custom.formats() == ["text", "application/x-custom"]
    assert html.html == "<b>b</b>"
    assert "html" in html.formats()
    assert main.is_main_result
    assert not latex.is_main_result
    assert main.text == "quoted" == execution.text
    as_json = json.loads(execution.to_json())
    assert as_json["results"][0] == {"latex": "\\text{x}", "text": None}
    assert as_json["logs"] == {"stdout": [], "stderr": []}
    assert as_json["error"] is None
    failed = sbx.run_code("1/0")
    assert json.loads(failed.to_json())["error"]["name"] == "ZeroDivisionError"
    assert failed.raw.status == "error"  # agentrun-ci's own Execution under the view


def test_exception_names_are_our_classes() -> None:
    assert e2b.SandboxException is AgentRunError
    assert e2b.InvalidArgumentException is InvalidArgumentError
    assert e2b.NotFoundException is NotFoundError
    assert issubclass(TimeoutException, AgentRunError)
    with pytest.raises(InvalidArgumentError):
        e2b.AsyncSandbox()
