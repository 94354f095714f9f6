"""The real Claude Code, Gemini CLI and Codex (and more) against pipemesh, end to end.

Each CLI runs real turns against the fake model (:mod:`tests.e2e.fakemodel`) with the
configuration that ``pipemesh setup X --write --approve`` wrote, unchanged: the tests
check that the CLI accepts it, starts ``pipemesh mcp``, offers its tools to the model,
runs the calls the "model" makes, and runs the hooks, which put waiting mesh messages
into the next model request.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from pipemesh.integrations._inbox import InboxFile
from pipemesh.wire import Message
from tests.e2e.clis import CODEX, PROFILES, Profile
from tests.e2e.conftest import VENV_BIN, Sandbox
from tests.e2e.fakemodel import FakeModel, ModelRequest, Reply, needs_pipemesh

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TURN_TIMEOUT_S = 180.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(params=PROFILES, ids=lambda p: p.cli)
def cli(request: pytest.FixtureRequest, sandbox: Sandbox) -> Profile:
    """A CLI, its provider settings written, and the project set up by pipemesh itself."""
    profile: Profile = request.param
    profile.exe()  # skip when not installed
    profile.prepare(sandbox)
    setup = sandbox.pipemesh(
        "setup", profile.cli, "--name", profile.agent, "--dir", str(sandbox.project),
        "--write", "--approve",
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    return profile


@pytest.fixture(params=PROFILES, ids=lambda p: p.cli)
def bare_cli(request: pytest.FixtureRequest, sandbox: Sandbox) -> Profile:
    """A CLI with only its provider settings: no pipemesh setup, the folder never trusted."""
    profile: Profile = request.param
    profile.exe()
    profile.prepare(sandbox)
    return profile


def _turn(box: Sandbox, cli: Profile, prompt: str) -> subprocess.CompletedProcess[str]:
    done = box.run(cli.turn(box, prompt), timeout_s=TURN_TIMEOUT_S)
    assert done.returncode == 0, f"{cli.cli} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _send(box: Sandbox, to: str, text: str) -> None:
    """Send over the mesh and wait until the agent's server has put it in its inbox file
    (the server appends on its router thread, a moment after the send returns)."""
    sent = box.pipemesh("send", to, text, "--from", "tester", "--type", "question")
    assert sent.returncode == 0, sent.stderr
    msg_id = sent.stdout.strip().split()[-1]
    inbox = InboxFile.open(box.mesh, to)
    deadline = time.monotonic() + 30
    while inbox.find(msg_id) is None:
        assert time.monotonic() < deadline, f"{msg_id} never reached {to}'s inbox file"
        time.sleep(0.02)


def _requests(model: FakeModel) -> str:
    return "\n".join(
        f"#{i} {r.api} tools={len(r.tools)} results={r.tool_results!r:.200}"
        for i, r in enumerate(model.turns())
    )


def test_mcp_listing_sees_the_server(cli: Profile, sandbox: Sandbox) -> None:
    """The CLI's own MCP listing shows pipemesh connected, from setup's config as written."""
    listing = sandbox.run(cli.mcp_list(sandbox), timeout_s=120)
    text = ANSI.sub("", listing.stdout + listing.stderr)
    assert cli.connected.search(text), f"{cli.cli} does not list pipemesh as connected:\n{text}"


def test_turn_sends_to_a_listening_agent(cli: Profile, sandbox: Sandbox, model: FakeModel) -> None:
    """A real turn: the model calls send(to=bob) and bob, listening on the mesh, gets it."""
    listener = sandbox.spawn_pipemesh("listen", "bob", "--count", "1", "--timeout", "240")
    sandbox.wait_registered("bob")

    @needs_pipemesh
    def brain(req: ModelRequest) -> Reply:
        if not any("sent " in r for r in req.tool_results):
            return Reply.call("send", to="bob", text=f"hello from {cli.cli}")
        return Reply.say("sent")

    model.brain = brain
    _turn(sandbox, cli, "say hello to bob over pipemesh")
    out, _ = listener.communicate(timeout=60)
    assert f"{cli.agent} -> bob" in out, _requests(model)
    assert f"hello from {cli.cli}" in out
    first = next(r for r in model.turns() if r.has_tool("send"))
    assert all(first.has_tool(t) for t in ("send", "broadcast", "inbox", "reply", "agents"))


def test_inbox_and_reply_answer_an_ask(cli: Profile, sandbox: Sandbox, model: FakeModel) -> None:
    """`pipemesh ask` gets its answer from a model that used inbox(wait_s) then reply(id)."""
    asks: list[subprocess.Popen[str]] = []

    @needs_pipemesh
    def brain(req: ModelRequest) -> Reply:
        if not asks:
            ask = [str(VENV_BIN / "pipemesh"), "ask", cli.agent, "what is 6 times 7?"]
            asks.append(sandbox.spawn([*ask, "--from", "asker", "--timeout", "120"]))
            return Reply.call("inbox", wait_s=60)
        found = re.search(r"\[([^\]\s]+)\] from asker", req.tool_results[-1])
        if found and not any("replied " in r for r in req.tool_results):
            return Reply.call("reply", id=found.group(1), text="42")
        return Reply.say("answered")

    model.brain = brain
    _turn(sandbox, cli, "answer what arrives in your pipemesh inbox")
    assert asks, f"the model never got pipemesh's tools:\n{_requests(model)}"
    out, err = asks[0].communicate(timeout=60)
    assert asks[0].returncode == 0, (out, err, _requests(model))
    assert out.strip() == "42"


def test_hooks_put_waiting_messages_into_the_next_request(
    cli: Profile, sandbox: Sandbox, model: FakeModel
) -> None:
    """Each hook hands a waiting message to the model: prompt, tool and stop hooks.

    One turn: a message waits before it starts (the prompt hook must add it to the first
    request); the model calls agents() while a second message arrives (the tool hook
    must add it to the next request); the model ends its turn while a third arrives
    (the stop hook must block the stop and hand it over in a further request). A CLI
    without one of the hooks gets no message for it.
    """
    if not (cli.prompt_hook or cli.tool_hook or cli.stop_hook):
        pytest.skip(f"{cli.cli} has no command hooks pipemesh can use (see docs/agents.md)")
    first, second, third = (
        "FIRST-waiting-before-the-turn",
        "SECOND-during-a-tool-call",
        "THIRD-at-the-end-of-the-turn",
    )
    if cli.prompt_hook:
        InboxFile.open(sandbox.mesh, cli.agent).append(
            Message("tester", cli.agent, 1, "question", "e2e-1", first)
        )
    step: list[str] = []

    @needs_pipemesh
    def brain(req: ModelRequest) -> Reply:
        step.append(req.path)
        if len(step) == 1:
            if cli.tool_hook:
                _send(sandbox, cli.agent, second)
            return Reply.call("agents")
        if len(step) == 2:
            if cli.stop_hook:
                _send(sandbox, cli.agent, third)
            return Reply.say("all done")
        return Reply.say("done with the handed-over message")

    model.brain = brain
    _turn(sandbox, cli, "check who is online")
    turns = [r for r in model.turns() if r.has_tool("agents")]
    log = _requests(model)
    if cli.prompt_hook:
        assert first in turns[0].text, (
            f"{cli.prompt_hook} hook did not add the waiting message to the first request\n{log}"
        )
    if cli.tool_hook:
        assert len(turns) >= 2, log
        assert second in turns[1].text, (
            f"{cli.tool_hook} hook did not add the message to the request after a tool call\n{log}"
        )
    if cli.stop_hook:
        assert len(turns) >= 3, f"{cli.stop_hook} hook did not continue the turn\n{log}"
        assert third in turns[2].text, (
            f"{cli.stop_hook} hook did not hand over the message that arrived at the end\n{log}"
        )
    assert InboxFile.open(sandbox.mesh, cli.agent).take(10) == []


def test_run_answers_an_ask_without_touching_the_interactive_agent(
    cli: Profile, sandbox: Sandbox, model: FakeModel
) -> None:
    """`pipemesh run X` answers an ask, started in a project set up for an interactive X:
    the headless CLI neither starts the project's MCP server nor runs its hooks (which
    would take the interactive agent's messages under its name)."""
    InboxFile.open(sandbox.mesh, cli.agent).append(
        Message("tester", cli.agent, 1, "question", "e2e-9", "for-the-interactive-agent-only")
    )

    def brain(req: ModelRequest) -> Reply:
        return Reply.say("The answer is 42.")

    model.brain = brain
    bot = sandbox.spawn_pipemesh("run", cli.cli, "--name", "bot", "--timeout", "150")
    sandbox.wait_registered("bot", timeout_s=60)
    ask = sandbox.pipemesh("ask", "bot", "what is 6 times 7?", "--timeout", "170", timeout_s=200)
    assert bot.poll() is None, bot.communicate(timeout=10)
    assert ask.returncode == 0, (ask.stdout, ask.stderr, _requests(model))
    assert "42" in ask.stdout
    assert model.turns(), "the headless CLI never asked the model"
    assert any("what is 6 times 7?" in r.text for r in model.turns()), (
        "the question never reached it"
    )
    for req in model.turns():
        assert not req.has_tool("inbox"), "the headless CLI started the project's pipemesh server"
        assert "for-the-interactive-agent-only" not in req.text, "it ran the project's hooks"
    left = InboxFile.open(sandbox.mesh, cli.agent).take(10)
    assert [m.body for m in left] == ["for-the-interactive-agent-only"]


def test_run_answers_in_a_folder_never_trusted(
    bare_cli: Profile, sandbox: Sandbox, model: FakeModel
) -> None:
    """`pipemesh run X` works where the user never ran X (Gemini CLI exits 55 there
    unless told to skip the trust check)."""
    model.brain = lambda req: Reply.say("Fine, thanks.")
    sandbox.spawn_pipemesh("run", bare_cli.cli, "--name", "bot", "--timeout", "150")
    sandbox.wait_registered("bot", timeout_s=60)
    ask = sandbox.pipemesh("ask", "bot", "how are you?", "--timeout", "170", timeout_s=200)
    assert ask.returncode == 0, (ask.stdout, ask.stderr, _requests(model))
    assert "Fine, thanks." in ask.stdout
    assert any("how are you?" in r.text for r in model.turns()), "the question never reached it"


def test_doctor_all_set_after_setup(cli: Profile, sandbox: Sandbox) -> None:
    """After `setup X --write --approve`, doctor finds the real CLI and nothing missing."""
    done = sandbox.pipemesh("doctor", "--cli", cli.cli, "--dir", str(sandbox.project), timeout_s=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok       installed  {cli.exe()}" in done.stdout
    assert "MISSING" not in done.stdout


def test_doctor_says_what_is_missing_before_setup(bare_cli: Profile, sandbox: Sandbox) -> None:
    """Before setup, doctor exits 1 and names the setup command."""
    done = sandbox.pipemesh("doctor", "--cli", bare_cli.cli, "--dir", str(sandbox.project))
    assert done.returncode == 1, done.stdout
    assert "MISSING  config" in done.stdout
    assert f"pipemesh setup {bare_cli.cli} --name NAME" in done.stdout


def test_without_approve_the_cli_does_not_use_the_server(
    bare_cli: Profile, sandbox: Sandbox
) -> None:
    """Claude Code, Gemini CLI, Codex and Copilot CLI ignore a project's server until approved or
    trusted: what `setup --approve` writes (or the step setup prints) is needed."""
    if not bare_cli.needs_approval:
        pytest.skip(f"{bare_cli.cli} uses a project's MCP server without approval")
    setup = sandbox.pipemesh(
        "setup", bare_cli.cli, "--name", bare_cli.agent, "--dir", str(sandbox.project), "--write"
    )
    assert setup.returncode == 0, setup.stderr
    assert "next: " in setup.stdout
    assert "--write --approve" in setup.stdout
    listing = sandbox.run(bare_cli.mcp_list(sandbox), timeout_s=120)
    text = ANSI.sub("", listing.stdout + listing.stderr)
    assert not bare_cli.connected.search(text), text


def test_codex_passes_pipemesh_home_to_the_server(sandbox: Sandbox, model: FakeModel) -> None:
    """Set up with no mesh home in the commands (none given at setup time), Codex still
    starts `pipemesh mcp` on the session's PIPEMESH_HOME: setup's `env_vars` passes it."""
    CODEX.exe()
    CODEX.prepare(sandbox)
    mesh_home = sandbox.env.pop("PIPEMESH_HOME")
    args = ("setup", "codex", "--name", "cx", "--dir", str(sandbox.project), "--write", "--approve")
    setup = sandbox.pipemesh(*args)
    sandbox.env["PIPEMESH_HOME"] = mesh_home
    assert setup.returncode == 0, setup.stderr
    assert "--home" not in (sandbox.project / ".codex" / "config.toml").read_text()
    listener = sandbox.spawn_pipemesh("listen", "bob", "--count", "1", "--timeout", "240")
    sandbox.wait_registered("bob")

    @needs_pipemesh
    def brain(req: ModelRequest) -> Reply:
        if not any("sent " in r for r in req.tool_results):
            return Reply.call("send", to="bob", text="hello through env_vars")
        return Reply.say("sent")

    model.brain = brain
    _turn(sandbox, CODEX, "say hello to bob over pipemesh")
    out, _ = listener.communicate(timeout=60)
    assert "cx -> bob" in out, _requests(model)
    assert "hello through env_vars" in out
