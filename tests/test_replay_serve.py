"""`ocdspy replay` end to end on the built-in model: no `--model`, so replay starts `ocdspy
serve` itself; real OpenCode 1.18.33 runs held-out turns of a small recording against it.

Whatever the 135M model does, the run must end with a reported status (no hang), at least one
of its tool calls must have gone through serve and been run by OpenCode, and the report must be
written. Integration: it loads the model and runs OpenCode (about two minutes on 2 cores).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from tests.opencode_support.opencode_env import ensure_opencode, have_node
from tests.opencode_support.replay_recording import TURNS, build_project, record
from tests.opencode_support.serve_threads import serve_threads

from ocdspy.config import load_settings
from ocdspy.replay import replay
from ocdspy.replay.report import STATUSES

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not have_node(), reason="node and npm are needed to install OpenCode"),
]

# The baseline: a body that shows the model the one move the held-out turns need.
READER = """---
description: Reads the file the user names.
mode: primary
---
You read files.

<example>
user: show me notes/todo.txt
call: read {"filePath": "notes/todo.txt"}
</example>

<example>
user: what does app/main.py do?
call: read {"filePath": "app/main.py"}
result: ok: <path>/home/me/app/main.py</path> (12 lines)
answer: It starts the app.
</example>
"""


def test_replay_on_the_built_in_model_through_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = ensure_opencode()
    assert binary is not None
    _, db = record(tmp_path / "rec", binary)
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    build_project(root, db, train=("fixtotal", "loopcase"), fraction=0.5)
    baseline = root / "reader.md"
    baseline.write_text(READER)

    lines: list[str] = []
    with serve_threads(1) as served:
        result = replay(
            load_settings(None, cwd=root).settings,
            baseline=baseline,
            opencode=binary,
            db=db,
            max_steps=4,
            timeout=70,
            say=lines.append,
        )

    (srv,) = served
    report = result.report
    assert report.model == srv.opencode_model == "ocdspy/smollm2-135m"
    runs = [r for t in report.turns for r in t.runs]
    assert sorted(t.message.strip('"') for t in report.turns) == sorted(
        [TURNS["filler"], TURNS["hangcase"]]
    )
    assert len(runs) == 2 and all(r.run.status in STATUSES for r in runs), lines
    assert sum(report.baseline.statuses.values()) == 2
    served_calls = [e for e in srv.log if e.tool is not None and e.status == 200]
    assert served_calls, [e.summary() for e in srv.log]
    # OpenCode ran what the model asked for: the replay saw the tool's result event.
    ran = {c.tool for r in runs for c in r.run.calls}
    assert served_calls[0].tool in ran, (ran, [e.summary() for e in srv.log])
    assert result.json_path.is_file() and result.markdown_path.is_file()
    assert "| reader |" in result.markdown_path.read_text()
    print("\n".join(lines))
    print("\n".join(e.summary() for e in srv.log))
