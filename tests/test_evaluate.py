"""evaluate: baseline vs optimized on the validation split, report contents, CI math, CLI."""

from __future__ import annotations

import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from ocdspy.config import ModelSettings, Settings
from ocdspy.convert import Example, ExampleAction
from ocdspy.errors import DataError, ModelError
from ocdspy.evaluate import bootstrap_ci, evaluate, render_markdown, resolve_program
from ocdspy.lm import runtime
from ocdspy.lm.runtime import LMs
from ocdspy.optimize import optimize
from ocdspy.split import write_split

sys.path.insert(0, str(Path(__file__).parent))
from lm_fakes import SchemaEngine, schema_lm


@pytest.fixture(autouse=True)
def _dspy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy_cache"))
    from ocdspy.lm import configure_cache

    configure_cache(tmp_path / "dspy_cache")


# ---------------------------------------------------------------------------------------------
# CI math


def test_ci_of_constant_deltas_is_a_point() -> None:
    assert bootstrap_ci([5.0] * 20) == (5.0, 5.0)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_ci_matches_the_normal_approximation() -> None:
    rng = random.Random(1)
    deltas = [rng.gauss(10, 20) for _ in range(400)]
    lo, hi = bootstrap_ci(deltas, resamples=4000, seed=3)
    mean = statistics.fmean(deltas)
    se = statistics.stdev(deltas) / len(deltas) ** 0.5
    assert lo < mean < hi
    assert lo == pytest.approx(mean - 1.96 * se, abs=0.4 * se)
    assert hi == pytest.approx(mean + 1.96 * se, abs=0.4 * se)


def test_cluster_bootstrap_is_wider_for_correlated_sessions() -> None:
    # Two sessions' worth of identical steps: really two observations, not forty.
    deltas = [10.0] * 20 + [-10.0] * 20
    groups = ["a"] * 20 + ["b"] * 20
    per_example = bootstrap_ci(deltas, resamples=2000)
    per_session = bootstrap_ci(deltas, groups, resamples=2000)
    assert per_session[1] - per_session[0] > 2 * (per_example[1] - per_example[0])
    assert per_session == (-10.0, 10.0)


def test_ci_is_reproducible_and_narrows_with_confidence() -> None:
    d = [1.0, 3.0, -2.0, 8.0, 0.0, 4.0]
    assert bootstrap_ci(d, seed=7) == bootstrap_ci(d, seed=7)
    lo90, hi90 = bootstrap_ci(d, confidence=0.90)
    lo99, hi99 = bootstrap_ci(d, confidence=0.99)
    assert lo99 <= lo90 and hi90 <= hi99


# ---------------------------------------------------------------------------------------------
# The stage


def ex(i: int, calls: list[tuple[str, str]]) -> Example:
    return Example(
        id=f"ses_{i}/0",
        session_id=f"ses_{i}",
        turn_index=0,
        source="s.json",
        source_format="plugin",
        task=f"Task number {i}",
        context="project: /p",
        history="",
        actions=[
            ExampleAction(step=k + 1, tool=t, target=x, success=True, result="ok")
            for k, (t, x) in enumerate(calls)
        ],
        response="Done.",
        success=True,
    )


def settings_for(tmp_path: Path) -> Settings:
    train = [ex(i, [("edit", "src/a.py")]) for i in range(4)]
    # Validation: sessions whose first step is `edit` and one whose first step is `glob`.
    val = [ex(10 + i, [("edit", "src/a.py")]) for i in range(3)] + [ex(20, [("glob", "*.py")])]
    write_split(tmp_path / "splits", train, val)
    s = Settings()
    s.data.splits_dir = tmp_path / "splits"
    s.outputs.dir = tmp_path / "outputs"
    local = ModelSettings(provider="local", model="smollm2-135m")
    s.models.target = local
    s.models.teacher = local
    s.optimization.program = "next_action"
    s.optimization.optimizer = "BootstrapFewShot"
    s.optimization.max_bootstrapped_demos = 0
    s.optimization.max_labeled_demos = 2
    return s


def demo_aware(request: Any, values: list[Any]) -> Any:
    """Without demos the fake answers `glob`; shown demos, it answers `edit` (it copies)."""
    if "edit" in values:
        return "edit" if len(request.messages) > 1 else "glob"
    return values[0]


def test_evaluate_report_compares_baseline_and_optimized(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    engine = SchemaEngine(chooser=demo_aware)
    lm = schema_lm(engine)
    lms = LMs(target=lm, teacher=lm)
    optimize(s, lms=lms, name="prog")
    res = evaluate(s, "prog", lms=lms, resamples=500)
    r = res.report

    assert r.examples_scored == 8  # 4 val turns x (1 step + finish)
    assert r.program == "next_action" and r.optimizer == "BootstrapFewShot"
    by_id = {x.id: x for x in r.results}
    # First steps: `edit` sessions improve, the `glob` session gets worse.
    assert by_id["ses_10/0#1"].baseline_output.startswith("glob")
    assert by_id["ses_10/0#1"].optimized_output.startswith("edit")
    assert by_id["ses_10/0#1"].delta > 0
    assert by_id["ses_20/0#1"].delta < 0
    assert [w.id for w in r.worse_examples] == ["ses_20/0#1"]
    assert r.worse == 1 and r.improved == 3
    # Overall and components are means of the per-example results.
    assert r.baseline.score == pytest.approx(
        sum(x.baseline for x in r.results) / len(r.results), abs=0.01
    )
    assert r.difference.mean == pytest.approx(r.optimized.score - r.baseline.score, abs=0.02)
    assert r.components_difference["success"] > 0
    assert r.difference.ci_low <= r.difference.mean <= r.difference.ci_high
    assert r.difference.unit == "sessions"
    assert r.lm_usage[0].calls == 16  # same LM for both sides, 8 examples each

    saved = json.loads(res.json_path.read_text())
    assert saved["optimized"]["score"] == r.optimized.score
    md = res.markdown_path.read_text()
    assert "| **score** |" in md and "Examples that got worse" in md
    assert "`ses_20/0#1`" in md


def test_evaluate_needs_a_program(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    with pytest.raises(DataError, match="no optimized program") as info:
        resolve_program(s, None)
    assert "ocdspy optimize" in str(info.value)
    with pytest.raises(DataError, match="not found"):
        resolve_program(s, "nope")


def test_markdown_escapes_pipes(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    lm = schema_lm(SchemaEngine(chooser=demo_aware))
    optimize(s, lms=LMs(target=lm, teacher=lm), name="p2")
    r = evaluate(s, lms=LMs(target=lm, teacher=lm), resamples=200).report
    r.results[0].expected = "bash cat a | grep b"
    assert "cat a \\| grep b" in render_markdown(r)


# ---------------------------------------------------------------------------------------------
# CLI wiring


def _write_config(tmp_path: Path, s: Settings) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data:\n  splits_dir: {s.data.splits_dir}\n"
        "models:\n  target: {provider: local, model: smollm2-135m}\n"
        "  teacher: {provider: local, model: smollm2-135m, api_key_env: null}\n"
        "optimization:\n  optimizer: BootstrapFewShot\n  program: next_action\n"
        "  max_bootstrapped_demos: 0\n  max_labeled_demos: 2\n"
        f"outputs:\n  dir: {tmp_path / 'outputs'}\n  cache_dir: {tmp_path / 'cache'}\n"
    )
    return cfg


def test_cli_optimize_then_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ocdspy.cli import app

    s = settings_for(tmp_path)
    cfg = _write_config(tmp_path, s)
    lm = schema_lm(SchemaEngine(chooser=demo_aware))
    monkeypatch.setattr(runtime, "build_lms", lambda *a, **k: LMs(target=lm, teacher=lm))
    runner = CliRunner()
    r = runner.invoke(app, ["optimize", "--config", str(cfg), "--name", "cli"])
    assert r.exit_code == 0, r.output
    assert "saved" in r.output and "ocdspy evaluate cli" in r.output
    assert (tmp_path / "outputs" / "programs" / "cli.run.json").is_file()
    r = runner.invoke(app, ["evaluate", "cli", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["name"] == "cli" and data["improved"] == 3 and "results" not in data


def test_cli_dry_run_and_preflight_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ocdspy.cli import app

    cfg = _write_config(tmp_path, settings_for(tmp_path))
    runner = CliRunner()
    r = runner.invoke(app, ["optimize", "--config", str(cfg), "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["optimizer"] == "BootstrapFewShot" and plan["calls"][0]["cost"] == 0.0
    assert not (tmp_path / "outputs" / "programs").exists()
    r = runner.invoke(
        app,
        [
            "optimize",
            "--config",
            str(cfg),
            "--optimizer",
            "GEPA",
            "--auto",
            "none",
            "--trials",
            "1",
        ],
    )
    assert r.exit_code == 2
    assert "GEPA's budget" in r.output and "hint: use --auto light" in r.output
    r = runner.invoke(app, ["optimize", "--config", str(cfg), "--auto", "huge"])
    assert r.exit_code == 2


def test_cli_ctrl_c_exit_code_and_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ocdspy.cli import app

    s = settings_for(tmp_path)
    cfg = _write_config(tmp_path, s)
    lm = schema_lm(SchemaEngine(interrupt_after=1))
    monkeypatch.setattr(runtime, "build_lms", lambda *a, **k: LMs(target=lm, teacher=lm))
    (tmp_path / "cfg2.yaml").write_text(
        cfg.read_text().replace("max_bootstrapped_demos: 0", "max_bootstrapped_demos: 2")
    )
    r = CliRunner().invoke(app, ["optimize", "--config", str(tmp_path / "cfg2.yaml")])
    assert r.exit_code == 130
    assert "interrupted" in r.output and "to resume: re-run" in r.output


# ---------------------------------------------------------------------------------------------
# End to end with the real local model


@pytest.mark.integration
def test_end_to_end_with_the_local_model(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from ocdspy.config import load_settings
    from ocdspy.convert import convert, load_examples
    from ocdspy.lm.runtime import build_lms

    repo = Path(__file__).resolve().parents[1]
    # Converted here: a fresh checkout has no examples/data/processed (it is a build output).
    converted = convert([repo / "examples" / "data" / "raw"], tmp_path / "processed")
    examples = load_examples(converted.examples_path)
    by_session: dict[str, list[Example]] = {}
    for e in examples:
        by_session.setdefault(e.session_id, []).append(e)
    # A small split (about 15 LM calls): two short sessions to learn from, one to validate on.
    short = sorted(by_session.values(), key=lambda g: (sum(len(e.actions) for e in g), g[0].id))
    write_split(tmp_path / "splits", [e for g in short[:2] for e in g], short[2])
    s = load_settings(repo / "examples" / "config.yaml").settings
    s.data.splits_dir = tmp_path / "splits"
    s.outputs.dir = tmp_path / "outputs"
    s.outputs.cache_dir = tmp_path / "cache"
    s.optimization.program = "next_action"
    s.optimization.optimizer = "BootstrapFewShot"
    s.optimization.max_bootstrapped_demos = 1
    s.optimization.max_labeled_demos = 2

    res = optimize(s, name="e2e")
    rec = res.record
    assert rec is not None and rec.status == "completed"
    assert rec.lm_usage[0].model.startswith("local/") and rec.lm_usage[0].calls >= 1
    assert res.program_path is not None and res.program_path.is_file()

    ev = evaluate(s, "e2e")
    r = ev.report
    assert r.examples_scored == sum(len(e.actions) + 1 for e in short[2])
    assert 0 <= r.baseline.score <= 100 and 0 <= r.optimized.score <= 100
    for x in r.results:  # grammar-constrained: every answer parses into a tool call
        assert x.optimized_output.split()[0] in [*rec.tools, "finish"]
    assert ev.markdown_path.is_file()

    again = optimize(s, name="e2e", lms=build_lms(s)).record
    assert again is not None
    assert again.lm_usage[0].calls == again.lm_usage[0].cached  # warm re-run: no new calls


def test_one_failed_call_does_not_stop_the_evaluation(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    lm = schema_lm(SchemaEngine(chooser=demo_aware))
    optimize(s, lms=LMs(target=lm, teacher=lm), name="p3")
    flaky = schema_lm(SchemaEngine(chooser=demo_aware, fail_on=frozenset({2})), name="flaky")
    res = evaluate(s, "p3", lms=LMs(target=flaky, teacher=flaky), resamples=200)
    r = res.report
    assert r.baseline.errors == 1 and r.optimized.errors == 0
    assert r.examples_scored == 8
    # Part of the difference is the failed call: the verdict line says so.
    note = "baseline had 1 error (12%), optimized 0: the difference is partly errors"
    assert note in r.verdict
    assert f"Difference: {r.verdict}" in res.markdown_path.read_text()
    s.optimization.max_errors = 1
    always = schema_lm(SchemaEngine(fail_on=frozenset(range(1, 100))), name="down")
    with pytest.raises(ModelError, match="evaluation stopped"):
        evaluate(s, "p3", lms=LMs(target=always, teacher=always), resamples=200)


def test_repeated_failures_name_the_model_the_endpoint_and_the_count(tmp_path: Path) -> None:
    s = settings_for(tmp_path)
    lm = schema_lm(SchemaEngine(chooser=demo_aware))
    optimize(s, lms=LMs(target=lm, teacher=lm), name="p4")
    s.models.target = ModelSettings(
        provider="openai_compatible",
        model="qwen-7b",
        api_base="http://user:hunter2@127.0.0.1:8000/v1",
        timeout=30,
    )
    s.optimization.max_errors = 3
    s.optimization.num_threads = 1
    down = schema_lm(SchemaEngine(fail_on=frozenset(range(1, 100))), name="down")
    with pytest.raises(ModelError) as info:
        evaluate(s, "p4", lms=LMs(target=down, teacher=down), resamples=200)
    message = info.value.message
    assert message.startswith(
        "evaluation stopped after 3 failed calls to the target model "
        "openai_compatible/qwen-7b (http://127.0.0.1:8000/v1): "
    )
    assert "scripted failure" in message and "Execution cancelled" not in message
    assert "hunter2" not in str(info.value)
    assert "max_errors (now 3)" in (info.value.hint or "")

    class SlowEngine(SchemaEngine):
        def complete(self, request: Any) -> Any:
            raise TimeoutError(
                "no bytes for 30s; this is lm15's read timeout, not a server failure — raise "
                "it with Timeouts(read=...) if the model needs longer"
            )

    slow = schema_lm(SlowEngine(), name="slow")
    with pytest.raises(ModelError) as info:
        evaluate(s, "p4", lms=LMs(target=slow, teacher=slow), resamples=200)
    assert "Timeouts(" not in str(info.value) and "lm15" not in str(info.value)
    assert (info.value.hint or "").startswith("raise models.target.timeout (now 30 s)")


def test_same_errors_on_both_sides_leave_the_verdict_alone() -> None:
    from ocdspy.evaluate import SideScores, errors_note

    same = SideScores(score=50, components={}, errors=2)
    assert errors_note(same, same, 10) is None
    worse = SideScores(score=40, components={}, errors=9)
    none = SideScores(score=60, components={}, errors=0)
    assert errors_note(worse, none, 30) == (
        "baseline had 9 errors (30%), optimized 0: the difference is partly errors "
        "(a failed call scores 0, here on the baseline side)"
    )


def test_timeout_hint_names_our_setting() -> None:
    from ocdspy.lm.providers import in_our_words, model_error

    lib = (
        "LMTimeoutError: no bytes for 120s; this is lm15's read timeout, not a server failure "
        "— raise it with Timeouts(read=...) if the model needs longer"
    )
    text = in_our_words(lib, "target")
    assert "Timeouts(" not in text and "lm15" not in text
    assert "raise models.target.timeout in config.yaml if the model needs longer" in text
    err = model_error(
        TimeoutError(lib), ModelSettings(provider="ollama", model="q"), role="teacher"
    )
    assert "models.teacher.timeout" in err.message and "Timeouts(" not in err.message
