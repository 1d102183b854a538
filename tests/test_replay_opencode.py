"""The proof of `ocdspy replay`: sessions recorded by real OpenCode 1.18.33 (driven by the
scripted model server) go through collect, convert and split; their held-out turns are then
replayed in real OpenCode against a second scripted server, from the recording's snapshots.

Needs node/npm (the CI installs them): without them the test fails, it does not skip.
"""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import pytest
from tests.opencode_support.fake_openai import (
    FakeOpenAI,
    Script,
    call,
    hang,
    system_text,
    text,
    tools,
)
from tests.opencode_support.opencode_env import MODEL, ensure_opencode, provider_config
from tests.opencode_support.replay_recording import (
    BUG,
    FIX,
    MARKER,
    TESTS,
    TURNS,
    build_project,
    record,
    tree_hash,
)
from typer.testing import CliRunner

from ocdspy.cli import app
from ocdspy.config import load_settings
from ocdspy.layout import PLUGINS_DIR
from ocdspy.plugin import write_plugin
from ocdspy.program.select import TurnState, build_pool, render_selection, select
from ocdspy.replay import replay
from ocdspy.split import load_split


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(opencode binary, project, opencode.db): one session per turn of TURNS, recorded once
    for the module."""
    binary = ensure_opencode()
    assert binary is not None, "node and npm are needed to install OpenCode 1.18.33"
    project, db = record(tmp_path_factory.mktemp("rec"), binary)
    return binary, project, db


def _replay_script() -> Script:
    return Script(
        {
            # Relative paths: the replayed workspace is a temp folder the script cannot know.
            "fixtotal": [
                tools(call("read", filePath="invoice_tool/models.py")),
                tools(
                    call("edit", filePath="invoice_tool/models.py", oldString=BUG, newString=FIX)
                ),
                text("Fixed LineItem.total: it multiplies now."),
            ],
            # The same failing call, again and again (what the built-in model did).
            "loopcase": [tools(call("read", filePath="stats.py"))],
            "hangcase": [hang(120)],
        }
    )


def test_replay_in_real_opencode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: tuple[Path, Path, Path]
) -> None:
    binary, project, db = recording
    # The checkout moves on after the recording: the replay must not read it.
    models = project / "invoice_tool" / "models.py"
    models.write_text("# rewritten after the recording\n")
    store = db.parent
    store_before = (tree_hash(store / "snapshot"), db.read_bytes())
    checkout_before = tree_hash(project)

    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    build_project(root, db, train=("filler",))

    user_config = tmp_path / "user-opencode.json"
    agent = root / "tuned.md"
    agent.write_text("---\ndescription: Tuned for the test\nmode: primary\n---\n\nFix bugs.\n")
    settings = load_settings(None, cwd=root).settings
    lines: list[str] = []
    with FakeOpenAI(_replay_script()) as server:
        user_config.write_text(json.dumps({"provider": provider_config(server.base_url)}))
        result = replay(
            settings,
            agents=[agent],
            model=MODEL,
            opencode_config=user_config,
            opencode=binary,
            db=db,
            verify=TESTS,
            timeout=30,
            say=lines.append,
        )
        requests = list(server.requests)

    report = result.report
    runs = {(t.session_id, r.agent): r for t in report.turns for r in t.runs}
    by_task = {t.message.strip('"'): t for t in report.turns}
    assert sorted(by_task) == sorted(TURNS[k] for k in ("fixtotal", "loopcase", "hangcase"))
    status = {
        (name, r.agent): r.run.status
        for name, message in TURNS.items()
        if message in by_task
        for r in by_task[message].runs
    }
    assert status == {
        ("fixtotal", "untuned"): "ok",
        ("fixtotal", "tuned"): "ok",
        ("loopcase", "untuned"): "loop",
        ("loopcase", "tuned"): "loop",
        ("hangcase", "untuned"): "timeout",
        ("hangcase", "tuned"): "timeout",
    }
    fixed = by_task[TURNS["fixtotal"]].runs[1]
    assert fixed.workspace.startswith("snapshot ")
    assert fixed.score.files.changed == ["invoice_tool/models.py"]
    assert fixed.score.files.f1 == 1.0
    assert fixed.verify is not None and fixed.verify.exit_code == 0
    assert fixed.score.score > 50
    looped = by_task[TURNS["loopcase"]].runs[1]
    assert looped.score.score == 0 and looped.run.failed_calls == 3
    # Each turn starts from its own snapshot: this session was recorded after the fix.
    assert looped.verify is not None and looped.verify.exit_code == 0
    # The first read saw the file as it was when the turn was recorded.
    tool_outputs = [
        m.get("content") or ""
        for body in requests
        for m in body.get("messages", [])
        if m.get("role") == "tool"
    ]
    assert any(MARKER in str(out) and BUG in str(out) for out in tool_outputs)
    assert report.agents[0].difference is not None
    assert report.baseline.statuses == {"ok": 1, "loop": 1, "timeout": 1}

    for path in (result.json_path, result.markdown_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "| tuned |" in result.markdown_path.read_text()
    assert len(lines) == 6 and all("reused" not in line for line in lines)
    assert (tree_hash(store / "snapshot"), db.read_bytes()) == store_before
    assert tree_hash(project) == checkout_before
    assert not list(temp.glob("ocdspy-replay-*"))
    assert len(runs) == 6

    # A second run with the same inputs reuses every run (no server: nothing may call it).
    cli = CliRunner().invoke(
        app,
        [
            "replay",
            "--agent",
            str(agent),
            "--model",
            MODEL,
            "--opencode-config",
            str(user_config),
            "--opencode",
            str(binary),
            "--db",
            str(db),
            "--verify",
            TESTS,
            "--timeout",
            "30",
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert "0 run, 6 reused" in cli.output


TUNED_BODY = "TUNED-AGENT-BODY: read before you answer."


def test_the_plugin_beside_an_agent_puts_its_demos_into_the_replayed_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording: tuple[Path, Path, Path]
) -> None:
    """An agent exported with its plugin (`plugins/ocdspy-NAME.js` + pool beside the .md) is
    replayed with the plugin loaded: its requests carry the demos the selection rule picks;
    the untuned baseline's carry none."""
    binary, _, db = recording
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    build_project(root, db, train=("filler", "loopcase", "hangcase"), fraction=0.75)
    train = load_split(root / "data" / "splits").train
    pool = build_pool("tuned", [(ex, s) for ex in train for s in range(len(ex.actions) + 1)], k=2)
    assert len(pool.demos) >= 4
    agent = root / "tuned.md"
    agent.write_text(f"---\ndescription: Tuned for the test\nmode: primary\n---\n\n{TUNED_BODY}\n")
    write_plugin(root / PLUGINS_DIR, "tuned", pool)

    user_config = tmp_path / "user-opencode.json"
    settings = load_settings(None, cwd=root).settings
    script = Script(
        {"fixtotal": [tools(call("read", filePath="invoice_tool/models.py")), text("ok")]}
    )
    with FakeOpenAI(script) as server:
        user_config.write_text(json.dumps({"provider": provider_config(server.base_url)}))
        result = replay(
            settings,
            agents=[agent],
            model=MODEL,
            opencode_config=user_config,
            opencode=binary,
            db=db,
            timeout=60,
        )
        requests = list(server.requests)

    report = result.report
    assert [a.plugin for a in report.agents] == [True] and not report.baseline.plugin
    (turn,) = report.turns
    assert TURNS["fixtotal"] in turn.message
    assert [r.run.status for r in turn.runs] == ["ok", "ok"]
    # Only the agents' own requests: the replay names the session, so OpenCode asks the model
    # for no title (which would queue in front of the run on `ocdspy serve`).
    assert all(b.get("tools") for b in requests)
    tuned = [b for b in requests if TUNED_BODY in system_text(b)]
    untuned = [b for b in requests if TUNED_BODY not in system_text(b)]
    assert len(tuned) == 2 and len(untuned) == 2
    first = render_selection(pool, select(pool, TurnState(task=turn.message)))
    assert first and first in system_text(tuned[0])
    assert all(pool.intro in system_text(b) for b in tuned)
    assert not any(pool.intro in system_text(b) for b in untuned)
