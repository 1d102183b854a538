"""The demo plugin in real OpenCode 1.18.33: each step's system prompt holds exactly the demos
the Python rule (`ocdspy.program.select`, as evaluate uses it) chose for that state.

The plugin, its pool and two agents are installed in a temp HOME; a scripted model drives a
multi-step turn (a read, a failing command, an edit, a passing command, the answer). Then the
plugin must add nothing for another agent, and a corrupt pool, a pool of another version, or a
plugin that throws must leave a warning in OpenCode's log and a session that still works.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ocdspy.convert import Example, ExampleAction
from ocdspy.plugin import write_plugin
from ocdspy.program.select import (
    Call,
    DemoPool,
    TurnState,
    build_pool,
    render_selection,
    select,
)
from opencode_support.fake_openai import FakeOpenAI, Script, call, text, tools
from opencode_support.opencode_env import ensure_opencode, have_node, isolated_env, run_opencode

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_node(), reason="node and npm are needed to install OpenCode"),
]

AGENT = "tuned"
ANSWER = "Fixed the crash."


def _example(eid: str, task: str, actions: list[tuple[str, str, bool]], response: str) -> Example:
    keys = {
        "read": "filePath",
        "edit": "filePath",
        "bash": "command",
        "grep": "pattern",
        "list": "path",
    }
    return Example(
        id=eid,
        session_id=eid.split(":")[0],
        turn_index=0,
        source="test",
        source_format="opencode",
        task=task,
        context="",
        history="",
        actions=[
            ExampleAction(step=i, tool=t, target=a, args={keys[t]: a}, success=ok, result="output")
            for i, (t, a, ok) in enumerate(actions, 1)
        ],
        response=response,
        success=True,
    )


def demo_pool() -> DemoPool:
    crash = _example(
        "ses_a:1",
        "fix the crash in main.py",
        [
            ("read", "main.py", True),
            ("bash", "python3 main.py", False),
            ("edit", "main.py", True),
            ("bash", "python3 main.py", True),
        ],
        "Fixed it.",
    )
    files = _example("ses_b:1", "list the files here", [("list", ".", True)], "Three files.")
    explain = _example(
        "ses_c:1",
        "explain what main does",
        [("grep", "def main", True), ("read", "main.py", True)],
        "It prints.",
    )
    steps = [(crash, i) for i in range(5)] + [(files, 0), (files, 1), (explain, 0), (explain, 2)]
    return build_pool(AGENT, steps, k=2)


def install(home: Path, pool: DemoPool) -> list[Path]:
    config = home / ".config" / "opencode"
    agents = config / "agent"
    agents.mkdir(parents=True, exist_ok=True)
    for name in (AGENT, "other"):
        (agents / f"{name}.md").write_text(
            f"---\ndescription: {name} agent\nmode: primary\nmodel: scripted/coder\n---\n"
            f"{name.upper()}-AGENT-BODY\n"
        )
    return write_plugin(config / "plugins", AGENT, pool)


def project(tmp_path: Path) -> Path:
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "app.py").write_text("print('hi')\n")
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    return proj


def script(proj: Path) -> Script:
    app = str(proj / "app.py")
    steps = [
        tools(call("read", filePath=app)),
        tools(call("bash", command="python3 nope.py", description="run it")),
        tools(call("edit", filePath=app, oldString="hi", newString="ho")),
        tools(call("bash", command="python3 app.py", description="run it")),
        text(ANSWER),
    ]
    return Script({"fixbug": steps}, default=[text("Hello.")])


# What the turn looks like before each of the five requests.
EXPECTED_CALLS = [
    [],
    [("read", True)],
    [("read", True), ("bash", False)],
    [("read", True), ("bash", False), ("edit", True)],
    [("read", True), ("bash", False), ("edit", True), ("bash", True)],
]


def system_text(body: dict[str, Any]) -> str:
    parts = []
    for m in body.get("messages", []):
        if m.get("role") == "system":
            c = m.get("content")
            parts.append(c if isinstance(c, str) else json.dumps(c))
    return "\n".join(parts)


def agent_requests(server: FakeOpenAI) -> list[dict[str, Any]]:
    """The agent's own requests (the title request offers no tools)."""
    return [b for b in server.requests if b.get("tools")]


def log_text(env: dict[str, str]) -> str:
    logs = Path(env["XDG_DATA_HOME"]) / "opencode" / "log"
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))


def run(binary: Path, env: dict[str, str], proj: Path, agent: str, prompt: str) -> str:
    r = run_opencode(binary, ["run", "--agent", agent, prompt], env=env, cwd=proj, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def binary() -> Path:
    b = ensure_opencode("1.18.33")
    assert b is not None
    return b


def test_each_step_gets_the_demos_the_python_rule_chose(tmp_path: Path, binary: Path) -> None:
    pool = demo_pool()
    proj = project(tmp_path)
    with FakeOpenAI(script(proj)) as server:
        env = isolated_env(tmp_path, server.base_url)
        install(Path(env["HOME"]), pool)
        out = run(binary, env, proj, AGENT, "fixbug: the app crashes, fix the crash in app.py")
        assert ANSWER in out
        requests = agent_requests(server)
        assert len(requests) == len(EXPECTED_CALLS)
        chosen_sets = set()
        for body, calls in zip(requests, EXPECTED_CALLS, strict=True):
            state = TurnState(
                task="fixbug: the app crashes, fix the crash in app.py",
                calls=[Call(tool=t, ok=ok) for t, ok in calls],
            )
            chosen = select(pool, state)
            chosen_sets.add(tuple(d.id for d in chosen))
            system = system_text(body)
            assert "TUNED-AGENT-BODY" in system
            assert render_selection(pool, chosen) in system
            assert system.count(pool.intro) == 1
            for d in pool.demos:
                assert (d.text in system) == (d in chosen), (d.id, [c.id for c in chosen])
        assert len(chosen_sets) >= 3, "the steps should have chosen different demos"
        assert "failed to load plugin" not in log_text(env)

        # Another agent in the same HOME: nothing added.
        before = len(server.requests)
        run(binary, env, proj, "other", "say hello")
        for body in server.requests[before:]:
            assert pool.intro not in system_text(body)
            assert not any(d.text in system_text(body) for d in pool.demos)


@pytest.mark.parametrize("damage", ["corrupt", "version", "throws"])
def test_a_broken_plugin_or_pool_warns_and_the_agent_still_works(
    tmp_path: Path, binary: Path, damage: str
) -> None:
    pool = demo_pool()
    proj = project(tmp_path)
    with FakeOpenAI(script(proj)) as server:
        env = isolated_env(tmp_path, server.base_url)
        js, pool_path = install(Path(env["HOME"]), pool)
        if damage == "corrupt":
            pool_path.write_text(pool_path.read_text()[:200])
            expected = f"ocdspy-demos: {pool_path}: the demo pool is not valid JSON"
        elif damage == "version":
            data = json.loads(pool_path.read_text())
            data["version"] = 2
            pool_path.write_text(json.dumps(data))
            expected = f"ocdspy-demos: {pool_path}: version: this plugin reads version 1"
        else:
            source = js.read_text()
            hook = "const state = stateFromMessages(messages);"
            assert hook in source
            js.write_text(source.replace(hook, 'throw new Error("boom"); ' + hook))
            expected = "ocdspy-demos: choosing demos failed: boom; nothing added"
        out = run(binary, env, proj, AGENT, "fixbug: fix the crash in app.py")
        assert ANSWER in out
        requests = agent_requests(server)
        assert len(requests) == len(EXPECTED_CALLS)
        for body in requests:
            assert "TUNED-AGENT-BODY" in system_text(body)
            assert pool.intro not in system_text(body)
        log = log_text(env)
        assert "level=WARN" in log and expected in log, log[-3000:]
        assert log.count(expected) <= 2  # once per problem (OpenCode may echo a line)
