"""The proof of `ocdspy replay`: sessions recorded by real OpenCode 1.18.33 (driven by the
scripted model server) go through collect, convert and split; their held-out turns are then
replayed in real OpenCode against a second scripted server, from the recording's snapshots.

Needs node/npm (the CI installs them): without them the test fails, it does not skip.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
from pathlib import Path

import pytest
from tests.opencode_support.fake_openai import FakeOpenAI, Script, call, hang, text, tools
from tests.opencode_support.opencode_env import (
    MODEL,
    data_dir,
    ensure_opencode,
    isolated_env,
    provider_config,
    run_opencode,
)
from tests.opencode_support.record import PERMISSION, make_project
from typer.testing import CliRunner

from ocdspy.cli import app
from ocdspy.collect import collect
from ocdspy.config import load_settings
from ocdspy.convert import convert, load_examples
from ocdspy.replay import replay
from ocdspy.split import assign, split

MARKER = "# state-at-recording: 7f3a"
BUG = "return self.quantity + self.unit_price"
FIX = "return self.quantity * self.unit_price"
TESTS = "python3 -m unittest discover -s tests -q"

TURNS = {
    "fixtotal": "Please fixtotal: LineItem.total adds quantity and price instead of multiplying.",
    "loopcase": "loopcase: summarise what README.md says.",
    "hangcase": "hangcase: what does invoice_tool/report.py do?",
    "filler": "filler: show me data/invoices.csv.",
}


def _recording_script(project: Path) -> Script:
    p = lambda rel: str(project / rel)  # noqa: E731  absolute, as models send them
    return Script(
        {
            "fixtotal": [
                tools(call("read", filePath=p("invoice_tool/models.py"))),
                tools(
                    call("edit", filePath=p("invoice_tool/models.py"), oldString=BUG, newString=FIX)
                ),
                text("Fixed LineItem.total: it multiplies now."),
            ],
            "loopcase": [tools(call("read", filePath=p("README.md"))), text("A CSV invoice tool.")],
            "hangcase": [
                tools(call("read", filePath=p("invoice_tool/report.py"))),
                text("It loads invoices from CSV and renders totals."),
            ],
            "filler": [tools(call("read", filePath=p("data/invoices.csv"))), text("Four rows.")],
        }
    )


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


def _record(tmp_path: Path, binary: Path) -> tuple[Path, Path]:
    """Record one session per turn of TURNS; returns (project, opencode.db)."""
    work = tmp_path / "rec"
    project = work / "invoice-tool"
    with FakeOpenAI(_recording_script(project)) as server:
        env = isolated_env(work, server.base_url, config={"permission": PERMISSION})
        make_project(project, env)
        models = project / "invoice_tool" / "models.py"
        # Uncommitted: only the snapshot holds this state, not the repository.
        models.write_text(models.read_text() + f"\n{MARKER}\n")
        for message in TURNS.values():
            res = run_opencode(binary, ["run", "--model", MODEL, message], env=env, cwd=project)
            assert res.returncode == 0, res.stderr
    return project, data_dir(env) / "opencode.db"


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _split_with_filler_in_train(examples: Path, splits: Path) -> None:
    """Split with the first seed that leaves the three replayed turns held out."""
    loaded = load_examples(examples)
    for seed in range(200):
        train, _ = assign(loaded, train_fraction=0.2, seed=seed)
        # `opencode run` records a message given on its command line in quotes.
        if [e.task.strip('"') for e in train] == [TURNS["filler"]]:
            split(examples, splits, train_fraction=0.2, seed=seed)
            return
    raise AssertionError("no seed puts only the filler session in train")


def test_replay_in_real_opencode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = ensure_opencode()
    assert binary is not None, "node and npm are needed to install OpenCode 1.18.33"
    project, db = _record(tmp_path, binary)
    # The checkout moves on after the recording: the replay must not read it.
    models = project / "invoice_tool" / "models.py"
    models.write_text("# rewritten after the recording\n")
    store = db.parent
    store_before = (_tree_hash(store / "snapshot"), db.read_bytes())
    checkout_before = _tree_hash(project)

    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    collect(Path("data/raw"), db=db)
    convert([Path("data/raw")], Path("data/processed"))
    _split_with_filler_in_train(Path("data/processed/examples.jsonl"), Path("data/splits"))

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
    assert (_tree_hash(store / "snapshot"), db.read_bytes()) == store_before
    assert _tree_hash(project) == checkout_before
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
