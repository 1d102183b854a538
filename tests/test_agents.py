"""`ocdspy evaluate --agent`: agent files scored as they reach the model (issue 8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ocdspy import agents as agents_mod
from ocdspy.agents import score_agents, score_forms, untuned_body
from ocdspy.cli import app
from ocdspy.convert import _MAIN_ARG
from ocdspy.errors import DataError
from ocdspy.split import load_splits
from test_optimize import _dspy_env, make_settings  # noqa: F401

TUNED = "TUNED-AGENT: copy the worked examples."


def oracle(settings: Any) -> Any:
    """A scripted model: the recorded next call when the system prompt holds TUNED, else it
    gives up at once. It also records every request it saw."""
    val = load_splits(settings.data.splits_dir).val
    by_task = {ex.task: ex for ex in val}
    seen: list[dict[str, Any]] = []

    def call(request: dict[str, Any]) -> str:
        seen.append(request)
        messages = request["messages"]
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        task = next(m["content"] for m in messages if m["role"] == "user")
        step = sum(1 for m in messages if m["role"] == "tool")
        example = by_task[task]
        if TUNED not in system or step >= len(example.actions):
            return "answer: done"
        action = example.actions[step]
        key = _MAIN_ARG.get(action.tool, ("input",))[0]
        return f"call: {action.tool} {json.dumps({key: action.target})}"

    call.seen = seen  # type: ignore[attr-defined]
    return call


def agent_file(path: Path, body: str) -> Path:
    path.write_text(f"---\ndescription: test agent\nmode: primary\n---\n{body}")
    return path


def test_an_agent_file_is_scored_against_the_untuned_agent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    tuned = agent_file(tmp_path / "tuned.md", f"{TUNED}\n")
    call = oracle(settings)
    result = score_agents(settings, [tuned], lm_call=call)
    report = result.report
    assert report.baseline.name == "untuned" and report.agents[0].name == "tuned"
    assert report.agents[0].score > report.baseline.score
    assert report.agents[0].difference is not None and report.agents[0].difference.mean > 0
    assert report.steps == sum(
        len(ex.actions) + 1 for ex in load_splits(settings.data.splits_dir).val
    )
    # What was scored is the file's body, byte for byte, as the first system message; the
    # untuned agent is the program's starting instructions.
    systems = [r["messages"][0]["content"] for r in call.seen]
    assert any(s.startswith(TUNED) for s in systems)
    assert any(s.startswith(untuned_body().strip()) for s in systems)
    assert result.json_path.name == "agents-tuned.json" and result.markdown_path.is_file()
    assert "| tuned | static |" in result.markdown_path.read_text()


def test_a_missing_agent_file_is_one_clear_error(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with pytest.raises(DataError, match="no such agent file"):
        score_agents(settings, [tmp_path / "nope.md"], lm_call=oracle(settings))


def test_cli_evaluate_agent_prints_each_agent_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path)
    (tmp_path / "config.yaml").write_text(
        f"data:\n  splits_dir: {settings.data.splits_dir}\n"
        f"outputs:\n  dir: {settings.outputs.dir}\n"
        "models:\n  target: {provider: local}\n  teacher: {provider: local}\n"
    )
    tuned = agent_file(tmp_path / "tuned.md", f"{TUNED}\n")
    other = agent_file(tmp_path / "mine.md", "My own hand-written agent.\n")
    monkeypatch.setattr(agents_mod, "lm_call_for", oracle)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["evaluate", "--agent", str(tuned), "--baseline", str(other)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "mine" in r.stdout and "tuned" in r.stdout and "baseline" in r.stdout
    assert "agents-tuned.md" in r.stdout


def test_a_score_of_another_body_or_pool_is_not_this_files_score(tmp_path: Path) -> None:
    """export's description may only quote a score measured on exactly its body (static) or
    its body and pool (plugin)."""
    from ocdspy.export import shipped_forms
    from ocdspy.program.select import DemoPool

    settings = make_settings(tmp_path)
    agent = agent_file(tmp_path / "tuned.md", f"{TUNED}\n")
    pool = DemoPool(agent="tuned", demos=[])
    report = score_forms(settings, [(agent, None), (agent, pool)], lm_call=oracle(settings))
    body = f"{TUNED}\n"
    assert set(shipped_forms(report.report, body, pool)) == {"static", "plugin"}
    assert set(shipped_forms(report.report, body, None)) == {"static"}
    other_pool = DemoPool(agent="tuned", k=2, demos=[])
    assert set(shipped_forms(report.report, body, other_pool)) == {"static"}
    assert shipped_forms(report.report, "Another body.\n", pool) == {}


def test_the_ship_search_reads_training_turns_only(tmp_path: Path) -> None:
    from ocdspy.export import default_plan
    from ocdspy.split import write_split
    from test_export import saved_program
    from test_optimize import example

    settings = make_settings(tmp_path, ship_search_steps=100)
    val = [example(100 + i).model_copy(update={"task": f"VAL-ONLY task {i}"}) for i in range(3)]
    write_split(settings.data.splits_dir, [example(i) for i in range(6)], val)
    seen: list[str] = []

    def call(request: dict[str, Any]) -> str:
        seen.append(json.dumps(request["messages"]))
        return 'call: read {"filePath": "src/totals.py"}'

    plan = agents_mod.search_ship(
        settings, saved_program(tmp_path / "p.json"), default_plan(settings), lm_call=call
    )
    assert plan.searched and len(seen) == 6 * plan.sample_steps  # 3 budgets + 3 values of k
    assert not any("VAL-ONLY" in text for text in seen)
    assert {c.setting for c in plan.candidates} == {"static_demo_tokens", "demos_shown"}
