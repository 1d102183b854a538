"""optimize: pre-flight checks, dry run, run record, Ctrl-C, cache reuse (scripted engines)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ocdspy.artifacts import file_sha256
from ocdspy.config import ModelSettings, Settings
from ocdspy.convert import Example, ExampleAction
from ocdspy.errors import ConfigError, DataError
from ocdspy.lm.runtime import LMs
from ocdspy.optimize import (
    OptimizationInterrupted,
    TrialTracker,
    load_record,
    optimize,
    plan_run,
    preflight,
    selection_split,
)
from ocdspy.split import write_split

sys.path.insert(0, str(Path(__file__).parent))
from lm_fakes import SchemaEngine, schema_lm

TASKS = [
    (
        "Fix the failing totals test",
        [("read", "src/totals.py"), ("edit", "src/totals.py"), ("bash", "pytest -q")],
    ),
    ("Bump the version", [("grep", "version"), ("edit", "pyproject.toml")]),
    ("Where is the config loaded?", [("grep", "load_config"), ("read", "src/config.py")]),
    ("Add a changelog", [("bash", "git log --oneline"), ("write", "CHANGELOG.md")]),
]


@pytest.fixture(autouse=True)
def _dspy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy_cache"))
    # DSPy builds its cache once per process: give each test a fresh one (memory and disk).
    from ocdspy.lm import configure_cache

    configure_cache(tmp_path / "dspy_cache")


def example(i: int) -> Example:
    task, calls = TASKS[i % len(TASKS)]
    return Example(
        id=f"ses_{i}/0",
        session_id=f"ses_{i}",
        turn_index=0,
        source="s.json",
        source_format="plugin",
        task=task,
        context="project: /p (python)",
        history="",
        actions=[
            ExampleAction(step=k + 1, tool=t, target=x, success=True, result="ok")
            for k, (t, x) in enumerate(calls)
        ],
        response=f"Done: {task.lower()}.",
        success=True,
    )


def make_settings(tmp_path: Path, n_train: int = 6, n_val: int = 4, **opt: object) -> Settings:
    splits = tmp_path / "splits"
    write_split(
        splits, [example(i) for i in range(n_train)], [example(100 + i) for i in range(n_val)]
    )
    s = Settings()
    s.data.splits_dir = splits
    s.outputs.dir = tmp_path / "outputs"
    s.outputs.cache_dir = tmp_path / "cache"
    local = ModelSettings(provider="local", model="smollm2-135m")
    s.models.target = local
    s.models.teacher = local
    s.optimization.program = "next_action"
    for k, v in opt.items():
        setattr(s.optimization, k, v)
    return s


def fake_lms(engine: SchemaEngine) -> LMs:
    lm = schema_lm(engine)
    return LMs(target=lm, teacher=lm)


def test_bootstrap_fewshot_saves_program_and_record(tmp_path: Path) -> None:
    s = make_settings(
        tmp_path, optimizer="BootstrapFewShot", max_bootstrapped_demos=2, max_labeled_demos=2
    )
    engine = SchemaEngine(pick=lambda v: "edit" if "edit" in v else v[0])
    res = optimize(s, lms=fake_lms(engine), name="t1")
    assert res.program_path == s.outputs.programs_dir / "t1.json"
    saved = json.loads(res.program_path.read_text())
    assert "step" in saved and "demos" in saved["step"]  # DSPy's own format
    assert 1 <= len(saved["step"]["demos"]) <= 4

    rec = load_record(s.outputs.programs_dir / "t1.run.json")
    assert rec.status == "completed"
    assert rec.optimizer == "BootstrapFewShot" and rec.program == "next_action"
    assert rec.data["train"].sha256 == file_sha256(s.data.splits_dir / "train.jsonl")
    assert rec.data["val"].sha256 == file_sha256(s.data.splits_dir / "val.jsonl")
    assert rec.data["train"].program_examples == sum(len(TASKS[i % 4][1]) + 1 for i in range(6))
    assert rec.settings["max_bootstrapped_demos"] == 2
    (usage,) = rec.lm_usage
    # Sessions repeat tasks, so some prompts repeat: those are answered from the cache.
    assert usage.calls - usage.cached == engine.calls > 0
    assert usage.input_tokens == 100 * engine.calls
    assert rec.duration_s > 0
    assert "finish" not in rec.tools and "read" in rec.tools

    # The saved program loads back into the same program shape.
    from ocdspy.program.agent import build_program

    prog = build_program(rec.program, rec.tools, demos_shown=rec.demos_shown)
    prog.load(str(res.program_path))
    assert len(prog.step.demos) == len(saved["step"]["demos"])


def test_rerun_with_unchanged_inputs_makes_no_new_calls(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShotWithRandomSearch", num_trials=2)
    first = SchemaEngine()
    optimize(s, lms=fake_lms(first), name="warm")
    assert first.calls > 0
    again = SchemaEngine()
    rec = optimize(s, lms=fake_lms(again), name="warm").record
    assert again.calls == 0
    assert rec is not None and rec.lm_usage[0].calls >= first.calls
    assert rec.lm_usage[0].cached == rec.lm_usage[0].calls


def test_random_search_records_trials_and_best(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShotWithRandomSearch", num_trials=2)
    rec = optimize(s, lms=fake_lms(SchemaEngine()), name="rs").record
    assert rec is not None and rec.trials
    assert sum(t.best_so_far for t in rec.trials) == 1
    best = next(t for t in rec.trials if t.best_so_far)
    assert rec.best_score == best.score
    assert all(0 <= t.score <= 100 and t.scored > 0 for t in rec.trials)
    assert rec.selection_examples > 0 and rec.train_examples > 0


def test_ctrl_c_keeps_best_so_far_and_record(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShotWithRandomSearch", num_trials=4)
    # Enough calls for the first candidates to be scored, then Ctrl-C.
    engine = SchemaEngine(interrupt_after=40)
    with pytest.raises(OptimizationInterrupted) as info:
        optimize(s, lms=fake_lms(engine), name="cc")
    res = info.value.result
    assert res.interrupted
    rec = load_record(s.outputs.programs_dir / "cc.partial.run.json")
    assert rec.status == "interrupted"
    assert rec.trials, "candidates scored before the interrupt are in the record"
    assert rec.resume_hint is not None and "re-run" in rec.resume_hint
    assert res.program_path is not None and res.program_path.is_file()
    assert rec.program_path == str(res.program_path)


def test_ctrl_c_before_any_score_saves_no_program(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="BootstrapFewShot")
    with pytest.raises(OptimizationInterrupted) as info:
        optimize(s, lms=fake_lms(SchemaEngine(interrupt_after=1)), name="early")
    assert info.value.result.program_path is None
    assert not (s.outputs.programs_dir / "early.json").exists()
    assert load_record(s.outputs.programs_dir / "early.partial.run.json").status == "interrupted"
    assert not (s.outputs.programs_dir / "early.partial.json").exists()


def test_dry_run_spends_nothing(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="MIPROv2", auto_mode="light")
    s.models.teacher = ModelSettings(
        provider="openai", model="gpt-4o-mini", api_key_env="OPENAI_API_KEY"
    )
    engine = SchemaEngine()
    res = optimize(s, lms=fake_lms(engine), dry_run=True, name="dry")
    assert engine.calls == 0
    assert res.dry_run and res.record is None
    assert not s.outputs.programs_dir.exists()
    by_role = {c.role: c for c in res.plan.calls}
    assert by_role["target"].calls > 0 and by_role["target"].cost == 0.0  # local is free
    assert by_role["teacher"].model == "openai/gpt-4o-mini"
    assert by_role["teacher"].cost is not None and by_role["teacher"].cost > 0
    assert res.plan.total_cost == pytest.approx(by_role["teacher"].cost)


def test_plan_numbers_follow_the_optimizer(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    s.optimization.optimizer = "BootstrapFewShot"
    p = plan_run(s, n_fit=20, n_sel=0)
    assert [(c.role, c.calls) for c in p.calls] == [("teacher", 20)]
    s.optimization.optimizer = "GEPA"
    s.optimization.auto_mode = "light"
    assert plan_run(s, n_fit=20, n_sel=10).metric_calls == 4 * 10 + 380
    s.optimization.auto_mode = None
    s.optimization.num_trials = 3
    assert plan_run(s, n_fit=20, n_sel=10).metric_calls == 3 * 30
    s.models.target = ModelSettings(provider="openai", model="no-such-model-xyz")
    assert plan_run(s, n_fit=20, n_sel=10).total_cost is None  # unknown price, not 0


@pytest.mark.parametrize(
    ("optimizer", "n_fit", "n_sel", "error", "match"),
    [
        ("SIMBA", 5, 0, DataError, "at least 8 training examples; it has 5"),
        ("MIPROv2", 2, 1, DataError, "--optimizer BootstrapFewShot"),
        ("COPRO", 1, 0, DataError, "at least 2"),
    ],
)
def test_preflight_says_what_to_change(
    tmp_path: Path, optimizer: str, n_fit: int, n_sel: int, error: type[Exception], match: str
) -> None:
    s = make_settings(tmp_path, optimizer=optimizer)
    with pytest.raises(error) as info:
        preflight(s, n_fit=n_fit, n_sel=n_sel)
    assert match in str(info.value)


def test_preflight_gepa_budget_and_empty_demos(tmp_path: Path) -> None:
    s = make_settings(tmp_path, optimizer="GEPA", auto_mode=None, num_trials=1)
    with pytest.raises(
        ConfigError, match="GEPA's budget of 40 metric calls leaves room for 1 "
    ) as info:
        preflight(s, n_fit=10, n_sel=30)
    assert "--auto light, or --trials 2 or more" in str(info.value)
    s.optimization.num_trials = 2
    preflight(s, n_fit=10, n_sel=30)
    preflight(
        s.model_copy(
            update={"optimization": s.optimization.model_copy(update={"auto_mode": "light"})}
        ),
        n_fit=1,
        n_sel=39,
    )
    s2 = make_settings(
        tmp_path, optimizer="BootstrapFewShot", max_bootstrapped_demos=0, max_labeled_demos=0
    )
    with pytest.raises(ConfigError, match="changes nothing"):
        preflight(s2, n_fit=10, n_sel=0)
    s3 = make_settings(tmp_path, optimizer="SIMBA")
    assert any("batch size lowered" in w for w in preflight(s3, n_fit=10, n_sel=0))


def test_preflight_runs_before_any_call(tmp_path: Path) -> None:
    s = make_settings(tmp_path, n_train=2, optimizer="SIMBA")
    engine = SchemaEngine()
    with pytest.raises(DataError, match="SIMBA"):
        optimize(s, lms=fake_lms(engine))
    assert engine.calls == 0


def test_missing_splits_say_run_split(tmp_path: Path) -> None:
    s = Settings()
    s.data.splits_dir = tmp_path / "nowhere"
    with pytest.raises(DataError, match="split not found") as info:
        optimize(s, dry_run=True)
    assert "ocdspy split" in str(info.value)


def test_selection_split_keeps_sessions_whole_and_is_stable() -> None:
    exs = [example(i) for i in range(10)]
    exs += [example(3).model_copy(update={"id": "ses_3/1", "turn_index": 1})]
    fit, sel = selection_split(exs)
    assert fit and sel
    assert {e.session_id for e in fit}.isdisjoint({e.session_id for e in sel})
    assert selection_split(list(reversed(exs)))[1] == [e for e in reversed(exs) if e in sel]
    one = [example(0)]
    assert selection_split(one) == (one, one)


def test_tracker_prefers_fully_scored_candidates() -> None:
    class P:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def dump_state(self) -> dict:
            return {"tag": self.tag}

    t = TrialTracker()
    a, b = P("a"), P("b")
    for _ in range(4):
        t.record(a, 0.5)
    t.record(b, 1.0)  # a lucky minibatch
    assert t.best_state() == {"tag": "a"}
    for _ in range(3):
        t.record(b, 0.9)
    assert t.best_state() == {"tag": "b"}
    trials = t.trials()
    assert [(x.index, x.scored, x.best_so_far) for x in trials] == [(1, 4, False), (2, 4, True)]
    assert trials[1].score == pytest.approx(92.5)


@pytest.mark.parametrize(
    "optimizer", ["MIPROv2", "GEPA", "COPRO", "SIMBA", "BootstrapFewShotWithRandomSearch"]
)
def test_every_optimizer_runs_end_to_end(tmp_path: Path, optimizer: str) -> None:
    s = make_settings(
        tmp_path, n_train=10, n_val=3, optimizer=optimizer, auto_mode=None, num_trials=3
    )
    engine = SchemaEngine()
    res = optimize(s, lms=fake_lms(engine), name="any")
    rec = res.record
    assert rec is not None and rec.status == "completed" and rec.optimizer == optimizer
    assert res.program_path is not None and res.program_path.is_file()
    assert rec.trials, "every optimizer here scores at least one candidate"
    assert rec.lm_usage[0].calls >= engine.calls > 0
    scored = sum(t.scored for t in rec.trials)
    if optimizer != "GEPA":  # GEPA checks its budget between iterations: it may overrun one
        assert scored <= rec.plan.metric_calls, "the plan is an upper bound of scored predictions"


def test_every_configurable_optimizer_has_one_table_entry() -> None:
    from typing import get_args

    from ocdspy.config import OptimizerName
    from ocdspy.optimizers import OPTIMIZERS, optimizer_spec

    assert set(OPTIMIZERS) == set(get_args(OptimizerName))
    assert all(name == spec.name for name, spec in OPTIMIZERS.items())
    with pytest.raises(ConfigError, match="unknown optimizer 'Nope'"):
        optimizer_spec("Nope")


def test_simba_entry_checks_its_batch_and_estimates_its_calls(tmp_path: Path) -> None:
    from ocdspy.optimizers import OPTIMIZERS, SIMBA_CANDIDATES, SIMBA_STEPS

    spec = OPTIMIZERS["SIMBA"]
    assert not spec.needs_selection_set and spec.teacher_use == "prompt_model"
    s = make_settings(tmp_path, optimizer="SIMBA")
    with pytest.raises(DataError, match="at least 8 training examples; it has 7"):
        preflight(s, n_fit=7, n_sel=0)
    # DSPy's SIMBA asserts trainset >= bsize: a small training set becomes the batch.
    assert preflight(s, n_fit=12, n_sel=0) == [
        "SIMBA: batch size lowered from 32 to the 12 training examples"
    ]
    assert preflight(s, n_fit=32, n_sel=0) == []
    # Per step: every candidate LM samples the batch, then up to candidates + 1 new programs
    # are scored on it; at the end up to candidates + 1 winners on the whole training set.
    for n_fit, batch in ((12, 12), (100, 32)):
        plan = plan_run(s, n_fit=n_fit, n_sel=0)
        per_step = batch * (2 * SIMBA_CANDIDATES + 1)
        assert plan.metric_calls == SIMBA_STEPS * per_step + (SIMBA_CANDIDATES + 1) * n_fit
        assert plan.selection_examples == 0
        assert not any("selection set" in note for note in plan.notes)
    assert plan_run(s, n_fit=100, n_sel=0).metric_calls == 8 * 32 * 13 + 7 * 100


def test_each_optimizer_gets_the_teacher_where_its_entry_says(tmp_path: Path) -> None:
    from ocdspy.optimize import build_optimizer
    from ocdspy.optimizers import OPTIMIZERS

    target, teacher = schema_lm(SchemaEngine()), schema_lm(SchemaEngine())
    lms = LMs(target=target, teacher=teacher)
    for name, spec in OPTIMIZERS.items():
        s = make_settings(tmp_path, optimizer=name, auto_mode=None)
        optimizer, _ = build_optimizer(s, lambda *a: 1.0, lms, n_fit=40, n_sel=40)
        given = getattr(optimizer, spec.teacher_use)
        if spec.teacher_use == "teacher_settings":
            assert given == {"lm": teacher}, name
        else:
            assert given is teacher, name
    shared = LMs(target=target, teacher=target)
    s = make_settings(tmp_path, optimizer="BootstrapFewShot")
    optimizer, _ = build_optimizer(s, lambda *a: 1.0, shared, n_fit=4, n_sel=0)
    assert optimizer.teacher_settings == {}  # the student's own LM


@pytest.mark.parametrize("optimizer", ["BootstrapFewShot", "BootstrapFewShotWithRandomSearch"])
def test_optimizer_chatter_stays_out_of_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], optimizer: str
) -> None:
    s = make_settings(tmp_path, optimizer=optimizer, max_bootstrapped_demos=1, num_trials=1)
    optimize(s, lms=fake_lms(SchemaEngine()), name="quiet")
    out, err = capfd.readouterr()
    assert "Bootstrapped" not in out + err  # BootstrapFewShot print()s it
    assert "Going to sample" not in out + err  # random search, from its constructor
    assert out == ""
