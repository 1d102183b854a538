"""`ocdspy replay` without OpenCode: restoring workspaces from a real git snapshot store, the
event-stream watch (loops, step cap), running a stand-in `opencode` binary (timeouts, process
groups), scoring, the report with its interval, and resuming."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocdspy.cli import app
from ocdspy.config import MetricWeights, load_settings
from ocdspy.convert import Example, ExampleAction
from ocdspy.errors import ConfigError, DataError
from ocdspy.evaluate import bootstrap_ci
from ocdspy.metric import score_prediction
from ocdspy.replay import replay
from ocdspy.replay import workspace as ws
from ocdspy.replay.inputs import provider_block, strip_jsonc
from ocdspy.replay.report import AgentRun, AgentSummary, TurnReport, build_report, write_report
from ocdspy.replay.run import (
    RunResult,
    RunSpec,
    Watch,
    agent_text_for_run,
    permission_policy,
    run_agent,
    watch_events,
)
from ocdspy.replay.score import files_score, score_run
from ocdspy.replay.turns import Call, ReplayTurn
from ocdspy.split import write_split

# ---------------------------------------------------------------------------------------------
# Workspaces


def _git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _snapshot_store(data: Path, project: str, directory: str, files: dict[str, str]) -> str:
    """A snapshot store as OpenCode keeps one: a bare repository per worktree, trees written
    from the worktree with its own index. Returns the tree hash."""
    git_dir = ws.snapshot_git_dir(data, project, directory)
    git_dir.mkdir(parents=True)
    _git("init", "-q", "--bare", str(git_dir))
    work = data.parent / "worktree"
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    base = ["--git-dir", str(git_dir), "--work-tree", str(work)]
    _git(*base, "add", "-A")
    return _git(*base, "write-tree")


def _hash_tree(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def test_restore_snapshot_leaves_the_store_byte_identical(tmp_path: Path) -> None:
    data = tmp_path / "opencode"
    files = {"app.py": "print('recorded')\n", "pkg/util.py": "X = 1\n"}
    tree = _snapshot_store(data, "proj1", "/home/u/app", files)
    before = _hash_tree(data)
    git_dir = ws.find_snapshot(data, "proj1", "/home/u/app", tree)
    with ws.temp_workspace(tmp_path) as root:
        ws.restore_snapshot(git_dir, tree, root)
        assert {p: (root / p).read_text() for p in files} == files
        kept = root
    assert not kept.exists()
    assert _hash_tree(data) == before


def test_find_snapshot_by_project_when_the_folder_moved(tmp_path: Path) -> None:
    data = tmp_path / "opencode"
    tree = _snapshot_store(data, "proj1", "/old/place", {"a.txt": "a\n"})
    assert ws.find_snapshot(data, "proj1", "/new/place", tree).is_dir()


@pytest.mark.parametrize(
    ("project", "tree", "message"),
    [
        ("proj1", "0" * 40, "snapshot 0000000000000000000000000000000000000000 is gone"),
        ("other", None, "no snapshots of project other (another machine?)"),
    ],
)
def test_missing_snapshot_says_what_is_missing(
    tmp_path: Path, project: str, tree: str | None, message: str
) -> None:
    data = tmp_path / "opencode"
    real = _snapshot_store(data, "proj1", "/home/u/app", {"a.txt": "a\n"})
    with pytest.raises(DataError, match=re.escape(message)):
        ws.find_snapshot(data, project, "/home/u/app", tree or real)


def test_a_store_copied_through_git_says_its_refs_are_missing(tmp_path: Path) -> None:
    """Git keeps no empty folder: a store committed and checked out again has snapshot
    repositories without `refs/`, which git no longer opens."""
    import shutil

    data = tmp_path / "opencode"
    tree = _snapshot_store(data, "proj1", "/home/u/app", {"a.txt": "a\n"})
    git_dir = ws.snapshot_git_dir(data, "proj1", "/home/u/app")
    shutil.rmtree(git_dir / "refs")
    with pytest.raises(DataError, match="refs/ folder is missing") as caught:
        ws.find_snapshot(data, "proj1", "/home/u/app", tree)
    assert str(git_dir) in str(caught.value)
    (git_dir / "refs" / "heads").mkdir(parents=True)
    (git_dir / "refs" / "tags").mkdir()
    assert ws.find_snapshot(data, "proj1", "/home/u/app", tree) == git_dir


def test_no_snapshot_store_at_all(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no OpenCode snapshot store"):
        ws.find_snapshot(tmp_path, "proj1", "/x", "0" * 40)


def test_changed_files_are_the_fingerprint_diff(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    (tmp_path / "b").write_text("2")
    before = ws.fingerprint(tmp_path)
    (tmp_path / "a").write_text("changed")
    (tmp_path / "b").unlink()
    (tmp_path / "c").write_text("new")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_text("bytecode")
    assert ws.changed_files(before, ws.fingerprint(tmp_path)) == ["a", "b", "c"]


def test_workspace_from_a_revision_and_from_a_folder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "f.txt").write_text("v1\n")
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1", cwd=repo)
    (repo / "f.txt").write_text("v2, not committed\n")
    rev, copy = tmp_path / "rev", tmp_path / "copy"
    rev.mkdir()
    ws.export_revision(repo, "HEAD", rev)
    ws.copy_folder(repo, copy)
    assert (rev / "f.txt").read_text() == "v1\n"
    assert (copy / "f.txt").read_text() == "v2, not committed\n"
    assert not (copy / ".git").exists()


# ---------------------------------------------------------------------------------------------
# Watching the events


def _event(kind: str, **part: object) -> str:
    return json.dumps({"type": kind, "timestamp": 0, "sessionID": "ses_x", "part": part})


def _failing_read(path: str = "stats.py") -> str:
    state = {"status": "error", "input": {"filePath": path}, "error": "File not found"}
    return _event("tool_use", tool="read", state=state)


def test_the_same_failing_call_three_times_is_a_loop() -> None:
    watch = Watch(max_steps=25, workspace="/w")
    lines = [_event("step_start"), _failing_read()] * 5
    assert watch_events(lines, watch) == "loop"
    assert watch.failed_calls == 3 and watch.steps == 3


def test_different_or_successful_calls_in_between_are_no_loop() -> None:
    ok = _event(
        "tool_use", tool="read", state={"status": "completed", "input": {"filePath": "/w/a.py"}}
    )
    lines = [_failing_read(), _failing_read(), ok, _failing_read(), _failing_read("b.py")]
    watch = Watch(max_steps=25, workspace="/w")
    assert watch_events(lines, watch) is None
    assert watch.calls[2] == Call(tool="read", target="a.py")


def test_a_failing_command_counts_as_a_failing_call() -> None:
    state = {"status": "completed", "input": {"command": "pytest"}, "metadata": {"exit": 1}}
    lines = [_event("tool_use", tool="bash", state=state)] * 3
    assert watch_events(lines, Watch(max_steps=25, workspace="/w")) == "loop"


def test_step_cap_ends_the_run_at_the_step_past_it() -> None:
    watch = Watch(max_steps=4, workspace="/w")
    lines = []
    for i in range(10):
        lines += [_event("step_start"), _event("text", text=f"step {i}")]
    assert watch_events(lines, watch) == "step-cap"
    assert watch.steps == 5


def test_tokens_answer_and_errors_from_the_events() -> None:
    watch = Watch(max_steps=25, workspace="/w")
    lines = [
        _event("step_start"),
        _event("text", text="Done"),
        _event("step_finish", tokens={"input": 100, "output": 7}),
        json.dumps({"type": "error", "error": {"name": "APIError", "data": {"message": "bad"}}}),
        "not json",
    ]
    assert watch_events(lines, watch) is None
    assert (watch.tokens_input, watch.tokens_output, watch.response) == (100, 7, "Done")
    assert watch.errors == ["APIError: bad"]


# ---------------------------------------------------------------------------------------------
# Running a stand-in for OpenCode


FAKE_OPENCODE = """#!{python}
import json, os, subprocess, sys, time
message = sys.stdin.read()
agent = sys.argv[sys.argv.index("--agent") + 1]
def emit(kind, **part):
    print(json.dumps({{"type": kind, "part": part}}), flush=True)
config = os.path.join(os.environ["HOME"], ".config", "opencode")
with open({log!r}, "a") as f:
    f.write(json.dumps({{"agent": agent, "message": message, "files": sorted(os.listdir(".")),
        "agent_file": open(os.path.join(config, "agents", agent + ".md")).read(),
        "config": json.load(open(os.path.join(config, "opencode.json")))}}) + "\\n")
if "hang" in message:
    child = subprocess.Popen(["sleep", "300"])
    open({pidfile!r}, "w").write(str(child.pid))
    time.sleep(300)
if "loop" in message:
    while True:
        emit("step_start")
        emit("tool_use", tool="read", state={{"status": "error",
             "input": {{"filePath": "stats.py"}}, "error": "File not found"}})
if "crash" in message:
    print("Error: provider not found", file=sys.stderr)
    sys.exit(3)
emit("step_start")
emit("tool_use", tool="edit", state={{"status": "completed",
     "input": {{"filePath": os.path.join(os.getcwd(), "app.py")}}, "output": "ok"}})
open("app.py", "a").write("# fixed\\n")
emit("step_finish", tokens={{"input": 100, "output": 5}})
emit("step_start")
emit("text", text="Fixed app.py.")
emit("step_finish", tokens={{"input": 120, "output": 4}})
"""


@pytest.fixture
def fake_opencode(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "opencode"
    path.parent.mkdir()
    path.write_text(
        FAKE_OPENCODE.format(
            python=sys.executable, log=str(tmp_path / "runs.jsonl"), pidfile=str(tmp_path / "pid")
        )
    )
    path.chmod(0o755)
    return path


def _runs_log(tmp_path: Path) -> list[dict[str, object]]:
    log = tmp_path / "runs.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _spec(binary: Path, root: Path, message: str, timeout: float = 60) -> RunSpec:
    home = root.parent / "home"
    from ocdspy.replay.run import AgentSetup, prepare_home

    env = prepare_home(
        home,
        agent=AgentSetup("tuned", "---\ndescription: t\n---\n\nDo it.\n"),
        model="p/m",
        provider={"p": {"npm": "x"}},
        policy=permission_policy(["read"]),
    )
    return RunSpec(binary, "tuned", "p/m", message, root, env, 25, timeout)


def test_a_hanging_run_is_killed_with_its_process_group(
    tmp_path: Path, fake_opencode: Path
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    result = run_agent(_spec(fake_opencode, root, "please hang", timeout=3))
    assert result.status == "timeout"
    child = int((tmp_path / "pid").read_text())
    # The tool it started is gone too (reaped by init once killed, so no zombie stays ours).
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(child, 0)
            import time

            time.sleep(0.1)


def test_a_looping_run_is_ended(tmp_path: Path, fake_opencode: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    result = run_agent(_spec(fake_opencode, root, "loop please"))
    assert result.status == "loop" and result.failed_calls == 3


def test_a_run_that_fails_says_why(tmp_path: Path, fake_opencode: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    result = run_agent(_spec(fake_opencode, root, "crash"))
    assert result.status == "error" and result.exit_code == 3
    assert result.errors == ["opencode exited with 3: Error: provider not found"]


# ---------------------------------------------------------------------------------------------
# What a run is given


def test_permission_policy_allows_the_recorded_tools_only() -> None:
    assert permission_policy(["read", "write", "bash", "read"]) == {
        "*": "deny",
        "bash": "allow",
        "read": "allow",
        "edit": "allow",
        "external_directory": "deny",
    }


def test_installed_agent_keeps_its_body_loses_its_model_and_stays_inside_the_policy() -> None:
    text = (
        "---\ndescription: d\nmodel: ollama/x\nsteps: 9\n"
        "permission:\n  bash:\n    '*': allow\n    'rm *': deny\n  webfetch: allow\n---\n\nBody.\n"
    )
    installed = agent_text_for_run(text, permission_policy(["bash"]))
    from ocdspy.export import parse_agent_file

    front, body = parse_agent_file(installed)
    assert body == parse_agent_file(text)[1] and "model" not in front and front["steps"] == 9
    assert front["permission"]["bash"] == {"*": "allow", "rm *": "deny"}
    assert "webfetch" not in front["permission"] and front["permission"]["*"] == "deny"
    assert front["permission"]["external_directory"] == "deny"


def test_provider_block_is_copied_from_jsonc_and_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "opencode.jsonc"
    config.write_text(
        '{\n  // mine\n  "mcp": {"secret": {"url": "http://x//y"}},\n'
        '  "provider": {"ollama": {"options": {"baseURL": "http://127.0.0.1:11434/v1"},},\n'
        '  /* another */ "other": {}},\n}\n'
    )
    assert json.loads(strip_jsonc(config.read_text()))["mcp"]["secret"]["url"] == "http://x//y"
    assert provider_block("ollama/qwen", config) == {
        "ollama": {"options": {"baseURL": "http://127.0.0.1:11434/v1"}}
    }
    with pytest.raises(ConfigError, match=r"opencode.jsonc: provider.nope: not declared"):
        provider_block("nope/m", config)


# ---------------------------------------------------------------------------------------------
# Scoring and the report


def _turn(session: str = "ses_a", index: int = 0) -> ReplayTurn:
    return ReplayTurn(
        id=f"{session}/{index}",
        session_id=session,
        turn_index=index,
        message="fix app.py",
        changed_files=["app.py"],
        tools=["read", "edit"],
        calls=[Call(tool="read", target="app.py"), Call(tool="edit", target="app.py")],
        response="Fixed app.py.",
    )


def test_trajectory_score_is_evaluates_metric_in_plan_mode() -> None:
    turn = _turn()
    run = RunResult(status="ok", calls=[Call(tool="edit", target="app.py")], response="Fixed.")
    weights = MetricWeights()
    got = score_run(turn, run, ["app.py", "other.py"], weights)
    same = score_prediction(
        {"plan": [c.model_dump() for c in turn.calls], "response": turn.response},
        {"plan": [c.model_dump() for c in run.calls], "response": run.response},
    )
    assert got.score == pytest.approx(100 * same.weighted(weights))
    assert got.files.precision == 0.5 and got.files.recall == 1.0
    looped = score_run(turn, run.model_copy(update={"status": "loop"}), [], weights)
    assert looped.score == 0 and looped.components == got.components


def test_files_score_with_nothing_to_change() -> None:
    assert files_score([], []).f1 == 1.0
    assert files_score([], ["x"]).f1 == 0.0


def _agent_run(agent: str, score: float) -> AgentRun:
    from ocdspy.replay.score import FilesScore, RunScore

    return AgentRun(
        agent=agent,
        workspace="snapshot abc",
        run=RunResult(status="ok" if score else "timeout", steps=2, wall_s=1.5),
        score=RunScore(
            score=score,
            components={"success": score, "efficiency": 100, "correctness": score},
            files=FilesScore(precision=1, recall=1, f1=1),
        ),
    )


def test_report_difference_is_the_session_bootstrap_of_the_turn_deltas(tmp_path: Path) -> None:
    scores = {"ses_a/0": (20, 60), "ses_a/1": (40, 40), "ses_b/0": (0, 50), "ses_c/0": (30, 0)}
    turns = [
        TurnReport(
            id=tid,
            session_id=tid.split("/")[0],
            turn_index=0,
            message="m",
            runs=[_agent_run("untuned", b), _agent_run("tuned", a)],
        )
        for tid, (b, a) in scores.items()
    ]
    turns.append(
        TurnReport(
            id="ses_d/0",
            session_id="ses_d",
            turn_index=0,
            message="m",
            problem="session ses_d turn 0: snapshot x is gone",
        )
    )
    report = build_report(
        name="tuned",
        model="p/m",
        store="db",
        baseline=AgentSummary(name="untuned", sha256="1"),
        agents=[AgentSummary(name="tuned", sha256="2")],
        turns=turns,
        verify=False,
    )
    d = report.agents[0].difference
    assert d is not None
    deltas = [a - b for b, a in scores.values()]
    groups = [t.split("/")[0] for t in scores]
    assert d.mean == pytest.approx(sum(deltas) / 4)
    assert (d.ci_low, d.ci_high) == bootstrap_ci(deltas, groups)
    assert d.unit == "sessions"
    assert report.baseline.statuses == {"ok": 3, "timeout": 1}
    from ocdspy.layout import ReportFiles

    files = ReportFiles(tmp_path / "reports", "replay-tuned")
    write_report(report, files)
    assert stat.S_IMODE(files.json_path.stat().st_mode) == 0o600
    md = files.markdown_path.read_text()
    assert "not replayed: session ses_d turn 0: snapshot x is gone" in md
    assert f"{d.mean:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]" in md


# ---------------------------------------------------------------------------------------------
# The whole replay, with the stand-in binary: fallbacks, messages per turn, resuming


def _example(session: str, task: str) -> Example:
    return Example(
        id=f"{session}/0",
        session_id=session,
        turn_index=0,
        source="s",
        source_format="opencode-db",
        task=task,
        context="",
        history="",
        actions=[ExampleAction(step=1, tool="edit", target="app.py")],
        response="Fixed app.py.",
        success=True,
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.chdir(root)
    write_split(
        root / "data" / "splits",
        [_example("ses_train", "train")],
        [_example("ses_1", "fix app.py"), _example("ses_2", "fix app.py again")],
    )
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('v1')\n")
    (root / "user-opencode.json").write_text('{"provider": {"p": {"npm": "x"}}}')
    return root


def _replay(root: Path, binary: Path, **kwargs: object) -> object:
    return replay(
        load_settings(None, cwd=root).settings,
        model="p/m",
        opencode_config=root / "user-opencode.json",
        opencode=binary,
        **kwargs,  # type: ignore[arg-type]
    )


def test_without_a_store_or_fallback_each_turn_says_why_and_the_rest_goes_on(
    project: Path, fake_opencode: Path
) -> None:
    lines: list[str] = []
    result = _replay(project, fake_opencode, say=lines.append)
    turns = result.report.turns  # type: ignore[attr-defined]
    assert [t.problem for t in turns] == [
        "session ses_1 turn 0: no OpenCode store, so no snapshot; pass --workspace DIR or "
        "--revision REV to replay it anyway",
        "session ses_2 turn 0: no OpenCode store, so no snapshot; pass --workspace DIR or "
        "--revision REV to replay it anyway",
    ]
    assert sum("not replayed" in line for line in lines) == 2


def test_replay_from_a_folder_resumes_and_reruns_a_changed_agent(
    project: Path, fake_opencode: Path, tmp_path: Path
) -> None:
    agent = project / "tuned.md"
    agent.write_text("---\ndescription: Tuned\nmode: primary\nmodel: other/x\n---\n\nFix.\n")
    src = project / "src"
    first = _replay(
        project, fake_opencode, agents=[agent], workspace=src, verify="grep -q fixed app.py"
    )
    report = first.report  # type: ignore[attr-defined]
    assert first.ran == 4 and first.reused == 0  # type: ignore[attr-defined]
    run = report.turns[0].runs[1]
    assert run.workspace.startswith(f"folder {src} (no OpenCode store")
    assert run.run.status == "ok" and run.score.files.changed == ["app.py"]
    assert run.verify.exit_code == 0 and run.score.files.f1 == 1.0
    assert (src / "app.py").read_text() == "print('v1')\n"  # copied, never used in place
    seen = _runs_log(tmp_path)
    assert [r["agent"] for r in seen] == ["untuned", "tuned"] * 2
    assert seen[0]["message"] == "fix app.py"  # as recorded, on standard input
    assert all("app.py" in r["files"] for r in seen)  # type: ignore[operator]
    tuned = seen[1]
    assert "model:" not in tuned["agent_file"]  # type: ignore[operator]
    assert tuned["config"]["provider"] == {"p": {"npm": "x"}}  # type: ignore[index]
    assert tuned["config"]["permission"]["*"] == "deny"  # type: ignore[index]

    again = _replay(  # the same timeout as the default, given as an int
        project,
        fake_opencode,
        agents=[agent],
        workspace=src,
        verify="grep -q fixed app.py",
        timeout=300,
    )
    assert (again.ran, again.reused) == (0, 4)  # type: ignore[attr-defined]
    assert len(_runs_log(tmp_path)) == 4

    agent.write_text(agent.read_text().replace("Fix.", "Fix it well."))
    changed = _replay(
        project, fake_opencode, agents=[agent], workspace=src, verify="grep -q fixed app.py"
    )
    assert (changed.ran, changed.reused) == (2, 2)  # type: ignore[attr-defined]
    assert [r["agent"] for r in _runs_log(tmp_path)[4:]] == ["tuned", "tuned"]


def test_cli_replay_prints_a_summary_and_reuses(project: Path, fake_opencode: Path) -> None:
    args = [
        "replay",
        "--model",
        "p/m",
        "--opencode-config",
        str(project / "user-opencode.json"),
        "--opencode",
        str(fake_opencode),
        "--workspace",
        str(project / "src"),
        "--limit",
        "1",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "runs: 1 run, 0 reused" in first.output
    assert "report: outputs/reports/replay-untuned.md" in first.output
    second = CliRunner().invoke(app, args)
    assert "runs: 0 run, 1 reused" in second.output


def test_cli_replay_error_is_one_line(project: Path, fake_opencode: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "replay",
            "--model",
            "nope/m",
            "--opencode-config",
            str(project / "user-opencode.json"),
            "--opencode",
            str(fake_opencode),
        ],
    )
    assert result.exit_code == 2
    assert "provider.nope: not declared" in result.output


def test_ctrl_c_removes_the_workspace_and_keeps_finished_runs(
    project: Path, fake_opencode: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    import ocdspy.replay.runner as runner
    from ocdspy.errors import Interrupted

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    real = runner.run_agent
    calls: list[str] = []

    def interrupted_second(spec: RunSpec) -> RunResult:
        calls.append(spec.agent)
        if len(calls) == 2:
            assert list(temp.glob("ocdspy-replay-*"))  # the workspace and HOME of this run
            raise KeyboardInterrupt
        return real(spec)

    monkeypatch.setattr(runner, "run_agent", interrupted_second)
    with pytest.raises(Interrupted, match="1 runs finished and saved in"):
        _replay(project, fake_opencode, workspace=project / "src")
    assert not list(temp.glob("ocdspy-replay-*"))
    monkeypatch.setattr(runner, "run_agent", real)
    again = _replay(project, fake_opencode, workspace=project / "src")
    assert (again.ran, again.reused) == (1, 1)  # type: ignore[attr-defined]


def test_without_model_replay_starts_and_stops_ocdspy_serve(
    project: Path, fake_opencode: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import types

    events: list[str] = []

    @contextlib.contextmanager
    def serving(**kwargs: object):  # type: ignore[no-untyped-def]
        events.append(f"start {kwargs['host']}")
        yield types.SimpleNamespace(
            opencode_model="ocdspy/smollm",
            provider_config=lambda: {"ocdspy": {"options": {"baseURL": "http://127.0.0.1:1/v1"}}},
        )
        events.append("stop")

    monkeypatch.setitem(sys.modules, "ocdspy.serve", types.SimpleNamespace(serving=serving))
    result = replay(
        load_settings(None, cwd=project).settings,
        opencode=fake_opencode,
        workspace=project / "src",
        limit=1,
    )
    assert events == ["start 127.0.0.1", "stop"]
    assert result.report.model == "ocdspy/smollm"
    assert _runs_log(tmp_path)[0]["config"]["provider"] == {  # type: ignore[index]
        "ocdspy": {"options": {"baseURL": "http://127.0.0.1:1/v1"}}
    }


def test_without_model_or_serve_the_error_says_to_pass_model(
    project: Path, fake_opencode: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocdspy.errors import ModelError

    monkeypatch.setitem(sys.modules, "ocdspy.serve", None)  # import fails
    with pytest.raises(ModelError, match="ocdspy serve"):
        replay(load_settings(None, cwd=project).settings, opencode=fake_opencode, limit=1)


def test_a_snapshot_restores_when_its_recorded_worktree_is_gone(tmp_path: Path) -> None:
    """OpenCode 1.18.33 writes `core.worktree = <the session's folder>` into each snapshot
    repository; git refuses any command there once that folder's parent is gone (another
    machine, a moved checkout) unless the work tree is given on the command line."""
    data = tmp_path / "data"
    tree = _snapshot_store(data, "p1", "/gone/project", {"a.py": "print(1)\n"})
    git_dir = ws.snapshot_git_dir(data, "p1", "/gone/project")
    _git("--git-dir", str(git_dir), "config", "core.bare", "false")
    _git("--git-dir", str(git_dir), "config", "core.worktree", str(tmp_path / "gone" / "project"))
    found = ws.find_snapshot(data, "p1", "/gone/project", tree)
    dest = tmp_path / "dest"
    dest.mkdir()
    ws.restore_snapshot(found, tree, dest)
    assert (dest / "a.py").read_text() == "print(1)\n"
