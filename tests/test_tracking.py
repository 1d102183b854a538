"""Runs tracked in MLflow (`--track`): what a run logs, read back through MLflow's own client,
and the one-line error when the `track` extra is missing."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import EXAMPLES
from lm_fakes import SchemaEngine
from ocdspy import tracking
from ocdspy.artifacts import file_sha256
from ocdspy.config import ModelSettings, Settings, load_settings, settings_as_rows
from ocdspy.errors import ConfigError, OcdspyError
from ocdspy.optimize import ProgressEvent
from test_optimize import fake_lms, make_settings


@pytest.fixture(autouse=True)
def _nothing_outside_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test runs in an empty working folder; MLflow must leave it (and HOME) empty: no
    ./mlruns, ./mlflow.db or ~/.mlflow."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield cwd
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert not (Path(os.environ["HOME"]) / ".mlflow").exists()


@pytest.fixture
def dspy_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh DSPy cache for the tests that run a stage."""
    from ocdspy.lm import configure_cache

    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy_cache"))
    configure_cache(tmp_path / "dspy_cache")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the unit tests (creating one takes seconds); each test logs to an
    experiment of its own."""
    import mlflow

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # MLflow's Default experiment keeps its files in ./mlruns of the folder it was created in.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        mlflow.MlflowClient(uri).search_experiments()
    return uri


def tracked(tmp_path: Path, store: str | None = None, **opt: object) -> Settings:
    """Tracked settings over a small split; into `store` under an experiment named after the
    test, or (None) into the project's default store."""
    settings = make_settings(tmp_path, **opt)
    settings.tracking.enabled = True
    if store is not None:
        settings.tracking.uri, settings.tracking.experiment = store, tmp_path.name
    return settings


def client(settings: Settings) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking.tracking_uri(settings))


def runs(settings: Settings) -> list[Any]:
    """Every run of the project's experiment, oldest first."""
    store = client(settings)
    experiment = store.get_experiment_by_name(tracking.experiment_name(settings))
    return sorted(store.search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time)


def top_runs(settings: Settings) -> list[Any]:
    """The runs ocdspy started, without the child runs DSPy's integration adds."""
    return [r for r in runs(settings) if tracking.STAGE_TAG in r.data.tags]


def history(settings: Settings, run_id: str, key: str) -> list[tuple[int, float]]:
    metrics = client(settings).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in metrics)


def event(calls: int, candidates: int, best: float | None) -> ProgressEvent:
    return ProgressEvent(
        metric_calls=calls, planned_metric_calls=4, candidates=candidates, best_score=best
    )


def without_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import mlflow` fails, as it does without the `track` extra."""
    for name in [n for n in sys.modules if n == "mlflow" or n.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)


# ---------------------------------------------------------------------------------------------
# Settings and parameters (no MLflow needed)


def test_tracking_settings_layer_like_every_other_setting(tmp_path: Path) -> None:
    from_env = load_settings(environ={"OCDSPY_TRACKING__ENABLED": "true"}, cwd=tmp_path)
    assert from_env.settings.tracking.enabled is True
    assert from_env.sources["tracking.enabled"] == "env OCDSPY_TRACKING__ENABLED"
    from_flag = load_settings(overrides={"tracking.enabled": True}, environ={}, cwd=tmp_path)
    assert from_flag.sources["tracking.enabled"] == "flag"
    rows = settings_as_rows(load_settings(environ={}, cwd=tmp_path))
    assert ("tracking.enabled", "false", "default") in rows
    assert ("tracking.uri", "-", "default") in rows


def test_default_store_and_experiment_belong_to_the_project(tmp_path: Path) -> None:
    settings = Settings()
    settings.outputs.dir = tmp_path / "proj" / "outputs"
    assert tracking.tracking_uri(settings) == f"sqlite:///{tmp_path / 'proj' / 'outputs'}/mlflow.db"
    assert tracking.experiment_name(settings) == "proj"
    settings.tracking.uri, settings.tracking.experiment = "http://127.0.0.1:5000", "mine"
    assert tracking.tracking_uri(settings) == "http://127.0.0.1:5000"
    assert tracking.experiment_name(settings) == "mine"


def test_models_are_logged_as_provider_and_model_only() -> None:
    settings = Settings()
    settings.models.target = ModelSettings(
        provider="openai_compatible",
        model="qwen",
        api_base="http://user:hunter2@gpu.lan:8000/v1",
        api_key_env="MY_SECRET_KEY_VAR",
    )
    params = tracking.settings_params(settings)
    assert params["models.target"] == "openai_compatible/qwen"
    assert params["optimization.optimizer"] == "MIPROv2"
    assert params["optimization.metric_weights.success"] == 0.5
    text = repr(params)
    assert "hunter2" not in text and "MY_SECRET_KEY_VAR" not in text and "gpu.lan" not in text


# ---------------------------------------------------------------------------------------------
# Without the extra


def test_missing_extra_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_mlflow(monkeypatch)
    settings = tracked(tmp_path)
    with pytest.raises(OcdspyError) as raised, tracking.run(settings, "optimize"):
        pytest.fail("the block ran without MLflow")
    assert str(raised.value) == 'tracking needs MLflow: pip install "ocdspy[track]"'
    assert raised.value.exit_code == 1
    settings.tracking.enabled = False
    with tracking.run(settings, "optimize") as untracked:  # off: MLflow is never imported
        untracked.params({"a": 1})
        untracked.on_trials(None)(event(1, 1, 1.0))


@pytest.mark.parametrize(
    "command", [["optimize", "--track"], ["evaluate", "--track"], ["pipeline", "--track"]]
)
def test_track_flag_without_the_extra_fails_before_any_model_call(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocdspy.cli import app
    from ocdspy.lm import runtime

    without_mlflow(monkeypatch)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built")

    monkeypatch.setattr(runtime, "build_lms", no_model)
    result = CliRunner().invoke(app, command, catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.strip() == 'error: tracking needs MLflow: pip install "ocdspy[track]"'
    assert result.stdout == ""  # and nothing written: the working folder stays empty


# ---------------------------------------------------------------------------------------------
# A run


def test_run_logs_settings_split_hashes_and_scores_with_steps(tmp_path: Path, store: str) -> None:
    settings = tracked(tmp_path, store)
    seen: list[ProgressEvent] = []
    with tracking.run(settings, "optimize", "demo") as run:
        on_progress = run.on_trials(seen.append)
        for calls, candidates, best in ((1, 1, 50.0), (2, 1, 50.0), (3, 2, 75.0), (4, 2, 75.0)):
            on_progress(event(calls, candidates, best))
    assert len(seen) == 4  # the caller's own callback sees every event
    (logged,) = runs(settings)
    assert logged.info.run_name == "demo" and logged.info.status == "FINISHED"
    assert logged.data.tags[tracking.STAGE_TAG] == "optimize"
    params = logged.data.params
    assert params["data.train.sha256"] == file_sha256(settings.data.splits_dir / "train.jsonl")
    assert params["data.val.sha256"] == file_sha256(settings.data.splits_dir / "val.jsonl")
    assert params["data.train.examples"] == "6" and params["data.val.examples"] == "4"
    assert params["models.target"] == "local/smollm2-135m"
    assert params["optimization.seed"] == "9" and params["data.seed"] == "0"
    # Logged when they change, stepped by predictions scored.
    assert history(settings, logged.info.run_id, "best_score") == [(1, 50.0), (3, 75.0)]
    assert history(settings, logged.info.run_id, "candidates") == [(1, 1.0), (3, 2.0)]


def test_a_failed_block_fails_the_run_and_ctrl_c_kills_it(tmp_path: Path, store: str) -> None:
    import dspy
    from mlflow.dspy.callback import MlflowCallback

    settings = tracked(tmp_path, store)
    with pytest.raises(RuntimeError), tracking.run(settings, "evaluate"):
        raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt), tracking.run(settings, "optimize"):
        raise KeyboardInterrupt
    assert [r.info.status for r in runs(settings)] == ["FAILED", "KILLED"]
    # DSPy's integration is switched off again once the run ends.
    assert not any(isinstance(c, MlflowCallback) for c in dspy.settings.callbacks)


@pytest.mark.usefixtures("dspy_cache")
def test_ctrl_c_in_optimize_keeps_the_best_candidate_in_a_killed_run(
    tmp_path: Path, store: str
) -> None:
    from ocdspy.optimize import OptimizationInterrupted, optimize

    settings = tracked(tmp_path, store, optimizer="BootstrapFewShotWithRandomSearch", num_trials=4)
    with pytest.raises(OptimizationInterrupted) as info:
        optimize(settings, lms=fake_lms(SchemaEngine(interrupt_after=40)), name="cc")
    record = info.value.result.record
    assert record is not None and record.trials
    (logged,) = top_runs(settings)
    assert logged.info.status == "KILLED"
    # DSPy's integration put its child runs in the same experiment, not in MLflow's Default.
    assert len(runs(settings)) > 1 and not client(settings).search_runs(["0"])
    assert logged.data.params["optimize.status"] == "interrupted"
    assert [step for step, _ in history(settings, logged.info.run_id, "candidate_score")] == [
        t.index for t in record.trials
    ]
    files = {a.path for a in client(settings).list_artifacts(logged.info.run_id, "program")}
    assert files == {"program/cc.partial.json", "program/cc.partial.run.json"}


def test_logging_failures_are_warnings_not_stage_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenStore:
        def log_batch(self, *args: object, **kwargs: object) -> None:
            raise OSError("disk full")

    run = tracking.Run(BrokenStore(), "run-1")
    seen: list[ProgressEvent] = []
    with caplog.at_level(logging.WARNING, logger="ocdspy.tracking"):
        run.on_trials(seen.append)(event(1, 1, 9.0))
        run.params({"a": 1})
    assert len(seen) == 1
    assert "tracking: could not log metrics: OSError: disk full" in caplog.text


def test_an_unusable_store_is_a_config_error_before_the_block(tmp_path: Path) -> None:
    settings = tracked(tmp_path)
    settings.tracking.uri = "nosuchscheme://store"
    with (
        pytest.raises(ConfigError, match=r"tracking.uri: cannot use the MLflow store"),
        tracking.run(settings, "optimize"),
    ):
        pytest.fail("the block ran without a store")


# ---------------------------------------------------------------------------------------------
# Scripted stages, tracked end to end


@pytest.mark.integration
@pytest.mark.usefixtures("dspy_cache")
def test_scripted_optimize_and_evaluate_are_tracked(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from ocdspy.evaluate import evaluate
    from ocdspy.optimize import optimize

    settings = tracked(tmp_path, optimizer="BootstrapFewShotWithRandomSearch", num_trials=2)
    optimized = optimize(settings, lms=fake_lms(SchemaEngine()), name="rs")
    evaluated = evaluate(settings, "rs", lms=fake_lms(SchemaEngine()))
    # The tracked stages print nothing (what the test reads back below may: MLflow's download
    # progress bar).
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    record, report = optimized.record, evaluated.report
    assert record is not None and record.trials

    opt, ev = top_runs(settings)
    assert (opt.info.run_name, ev.info.run_name) == ("rs", "evaluate rs")
    assert opt.data.params["optimization.optimizer"] == "BootstrapFewShotWithRandomSearch"
    assert opt.data.params["optimize.selection_examples"] == str(record.selection_examples)
    assert opt.data.params["data.val.sha256"] == record.data["val"].sha256
    # Every candidate's score, stepped by its index, and the best as predictions scored.
    assert history(settings, opt.info.run_id, "candidate_score") == [
        (t.index, t.score) for t in record.trials
    ]
    best = history(settings, opt.info.run_id, "best_score")
    assert best and best[-1][1] == pytest.approx(max(t.score for t in record.trials), abs=0.01)
    # The program itself, byte for byte.
    store = client(settings)
    assert optimized.program_path is not None
    got = Path(store.download_artifacts(opt.info.run_id, "program/rs.json", str(tmp_path)))
    assert got.read_bytes() == optimized.program_path.read_bytes()
    assert {a.path for a in store.list_artifacts(opt.info.run_id, "program")} == {
        "program/rs.json",
        "program/rs.run.json",
    }
    # DSPy's own integration logged its compile into the same run.
    assert any(a.path == "best_model.json" for a in store.list_artifacts(opt.info.run_id))

    assert ev.data.metrics["optimized_score"] == report.optimized.score
    assert ev.data.metrics["difference"] == report.difference.mean
    assert ev.data.params["evaluate.program_sha256"] == report.program_sha256
    assert {a.path for a in store.list_artifacts(ev.info.run_id, "report")} == {
        "report/rs.json",
        "report/rs.md",
    }
    # The store and the runs' files are under the outputs folder, nowhere else.
    assert {"mlflow.db", "mlartifacts"} <= {p.name for p in settings.outputs.dir.iterdir()}


@pytest.mark.integration
@pytest.mark.usefixtures("dspy_cache")
def test_pipeline_run_holds_its_stages_and_the_agent_file(tmp_path: Path) -> None:
    from ocdspy.pipeline import run_pipeline

    shutil.copytree(
        EXAMPLES,
        tmp_path / "examples",
        ignore=shutil.ignore_patterns("processed", "splits", "outputs", ".dspy_cache"),
    )
    settings = load_settings(tmp_path / "examples" / "config.yaml", environ={}).settings
    settings.tracking.enabled = True
    settings.optimization.score_program = True  # the evaluate child run is tracked too
    # The shipped forms are scored by a scripted reply: this test is about what is tracked.
    result = run_pipeline(
        settings, lms=fake_lms(SchemaEngine()), lm_call=lambda request: "answer: done"
    )
    assert result.agent_name is not None

    logged = runs(settings)
    (pipeline,) = [r for r in logged if r.data.tags.get(tracking.STAGE_TAG) == "pipeline"]
    children = {
        r.data.tags.get(tracking.STAGE_TAG)
        for r in logged
        if r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id
    }
    assert children == {"optimize", "evaluate"}
    assert pipeline.data.metrics["optimized_score"] == result.optimized_score
    for form, shipped in result.shipped.items():
        assert pipeline.data.metrics[f"{form}_score"] == shipped.score
        assert pipeline.data.metrics["untuned_score"] == shipped.baseline
    agent = {a.path for a in client(settings).list_artifacts(pipeline.info.run_id, "agent")}
    assert agent == {f"agent/{result.agent_name}.md", f"agent/{result.agent_name}.meta.json"}
