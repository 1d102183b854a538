"""An exported agent, installed with --install-to and --set-default, loads in real OpenCode.

Installs `opencode-ai@1.18.33` from npm (cached outside the test's HOME), points HOME at a temp
dir, and asks OpenCode itself: `opencode agent list` must list the agent with its mode, and
`opencode run` must start and send the agent's prompt to the (scripted) model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocdspy.cli import app
from opencode_support.fake_openai import FakeOpenAI, Script, text
from opencode_support.opencode_env import (
    ensure_opencode,
    have_node,
    isolated_env,
    run_opencode,
)
from test_export import INSTRUCTIONS, saved_program

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_node(), reason="node and npm are needed to install OpenCode"),
]


def test_exported_agent_loads_in_real_opencode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = ensure_opencode("1.18.33")
    assert binary is not None
    project = tmp_path / "project"
    (project / "outputs" / "programs").mkdir(parents=True)
    saved_program(project / "outputs" / "programs" / "run1.json")
    # The target model as OpenCode knows it: the scripted provider of the test config.
    (project / "config.yaml").write_text(
        "models:\n  target:\n    provider: openai\n    model: scripted-coder\n"
    )

    with FakeOpenAI(Script(default=[text("Hello from the scripted model.")])) as server:
        env = isolated_env(tmp_path, server.base_url)
        home = Path(env["HOME"])
        agents = home / ".config" / "opencode" / "agent"
        monkeypatch.chdir(project)
        r = CliRunner().invoke(
            app, ["export", "--name", "tuned", "--install-to", str(agents), "--set-default"]
        )
        assert r.exit_code == 0, r.stdout + r.stderr
        cfg = json.loads((agents.parent / "opencode.json").read_text())
        assert cfg["default_agent"] == "tuned"
        assert cfg["provider"]  # the rest of the user's config is kept

        # The scripted provider is named `scripted`; point the agent at it so it can run here.
        agent_file = agents / "tuned.md"
        agent_file.write_text(
            agent_file.read_text().replace("model: openai/scripted-coder", "model: scripted/coder")
        )

        listed = run_opencode(binary, ["agent", "list"], env=env, cwd=project, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert "tuned (primary)" in listed.stdout, listed.stdout

        ran = run_opencode(binary, ["run", "say hello"], env=env, cwd=project, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert "Hello from the scripted model." in ran.stdout
        systems = [
            m.get("content")
            for body in server.requests
            if body.get("tools")
            for m in body.get("messages", [])
            if m.get("role") == "system"
        ]
        prompt = json.dumps(systems)
        assert INSTRUCTIONS in prompt, "OpenCode did not use the default agent's prompt"
