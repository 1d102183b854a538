"""Runs tracked in MLflow: `--track` (or `tracking.enabled`) logs each optimize, evaluate and
pipeline run, so `mlflow ui` shows them side by side.

A tracked run gets, as MLflow parameters, the settings that shaped it (optimizer, program mode,
models as provider/model and never a key, seeds) and the split's hashes and sizes; as metrics,
the best score after every scored prediction and each candidate's score; as artifacts, the
program and its run record, the report, and (in the pipeline) the exported agent file. DSPy's
own MLflow integration (`mlflow.dspy.autolog`) adds what it logs for each compile and
evaluation. Stages run inside the pipeline become child runs of the pipeline's run.

MLflow is the `track` extra, imported only when tracking is on. The default store is a SQLite
file under the outputs folder, with the runs' files beside it (see `ocdspy.layout`); nothing is
written anywhere else. A failure to log once a run has started is a logged warning, never the
end of the optimization it describes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocdspy import __version__
from ocdspy.config import Settings
from ocdspy.errors import ConfigError, OcdspyError
from ocdspy.layout import Project

if TYPE_CHECKING:
    from ocdspy.evaluate import EvaluateResult
    from ocdspy.optimize import OptimizeResult, ProgressEvent
    from ocdspy.pipeline import PipelineResult

MISSING_EXTRA = 'tracking needs MLflow: pip install "ocdspy[track]"'
# MLflow's own chatter ("Creating initial MLflow database tables...") would tear the progress
# display; its failures reach us as exceptions.
NOISY_LOGGERS = ("mlflow", "alembic")
STAGE_TAG = "ocdspy.stage"

log = logging.getLogger(__name__)


def tracking_uri(settings: Settings) -> str:
    """`tracking.uri`, or the project's own SQLite store under the outputs folder."""
    if settings.tracking.uri:
        return settings.tracking.uri
    return f"sqlite:///{Project(settings).tracking_store.resolve()}"


def experiment_name(settings: Settings) -> str:
    """`tracking.experiment`, or the name of the folder that holds the outputs folder."""
    if settings.tracking.experiment:
        return settings.tracking.experiment
    return settings.outputs.dir.resolve().parent.name or "ocdspy"


def import_mlflow() -> Any:
    """The `mlflow` module, or the one-line error that names the extra."""
    # MLflow 3 reports usage to its makers unless told not to; a user who wants that says so.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Its INFO lines ("Flushing the async trace logging queue...") would reach the terminal.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    try:
        import mlflow
    except ImportError:
        raise OcdspyError(MISSING_EXTRA) from None
    return mlflow


# ---------------------------------------------------------------------------------------------
# Parameters


def settings_params(settings: Settings) -> dict[str, Any]:
    """The settings that shape a run, as dotted keys. Models are provider/model only: never a
    key, its variable's name or an endpoint (which may carry a password)."""
    models = settings.models
    params: dict[str, Any] = {
        "models.target": f"{models.target.provider}/{models.target.model}",
        "models.teacher": f"{models.teacher.provider}/{models.teacher.model}",
        "data.seed": settings.data.seed,
        "data.train_split": settings.data.train_split,
    }
    params |= _flat(settings.optimization.model_dump(mode="json"), "optimization.")
    return params


def split_params(settings: Settings) -> dict[str, Any]:
    """The split's hashes and sizes, from its manifest ({} while there is none: the stage itself
    then says what is missing)."""
    from ocdspy.split import SplitManifest

    try:
        path = Project(settings).splits.manifest
        manifest = SplitManifest.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return {}
    params: dict[str, Any] = {"data.input_sha256": manifest.input_sha256}
    for name, side in (("train", manifest.train), ("val", manifest.val)):
        params |= {
            f"data.{name}.sha256": side.sha256,
            f"data.{name}.examples": side.examples,
            f"data.{name}.sessions": side.sessions,
        }
    return params


def _flat(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# A run


class Run:
    """One MLflow run, logged through the client by run id (so worker threads may log too).
    Every method swallows MLflow's failures into a warning: tracking never stops a stage."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._lock = threading.Lock()

    def _safely(self, what: str, log_call: Callable[[], Any]) -> None:
        try:
            with self._lock:
                log_call()
        except Exception as e:
            log.warning("tracking: could not log %s: %s: %s", what, type(e).__name__, e)

    def params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, "" if v is None else str(v)) for k, v in params.items()]
        self._safely("parameters", lambda: self.client.log_batch(self.run_id, params=items))

    def metrics(self, values: Mapping[str, float | None], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        self._safely("metrics", lambda: self.client.log_batch(self.run_id, metrics=items))

    def artifact(self, path: Path | None, folder: str) -> None:
        if path is not None and path.is_file():
            self._safely(
                path.name, lambda: self.client.log_artifact(self.run_id, str(path), folder)
            )

    def name(self, run_name: str) -> None:
        self._safely("the run name", lambda: self.client.update_run(self.run_id, name=run_name))

    # -- what each stage logs

    def on_trials(
        self, on_progress: Callable[[ProgressEvent], None] | None
    ) -> Callable[[ProgressEvent], None]:
        """`optimize`'s `on_progress`, chained: the best score so far and the number of
        candidates, stepped by predictions scored, each time one of them changes. (Every
        prediction would be a write to the store, and MLflow's background writer makes each
        child run DSPy's integration ends wait for it.)"""
        last: list[tuple[float | None, int]] = []
        changed = threading.Lock()

        def tracked(event: ProgressEvent) -> None:
            now = (event.best_score, event.candidates)
            with changed:
                new = not last or last[0] != now
                last[:] = [now]
            if new:
                values = {"best_score": event.best_score, "candidates": event.candidates}
                self.metrics(values, step=event.metric_calls)
            if on_progress is not None:
                on_progress(event)

        return tracked

    def optimized(self, result: OptimizeResult) -> None:
        """Each candidate's score (step: its index), what the run spent, its program and
        record."""
        record = result.record
        if record is None:
            return
        self.params(
            {
                "optimize.name": record.name,
                "optimize.status": record.status,
                "optimize.train_examples": record.train_examples,
                "optimize.selection_examples": record.selection_examples,
            }
        )
        for trial in record.trials:
            self.metrics({"candidate_score": trial.score}, step=trial.index)
        self.metrics({"duration_s": record.duration_s, **_usage(record.lm_usage)})
        self.artifact(result.program_path, "program")
        self.artifact(result.record_path, "program")

    def evaluated(self, result: EvaluateResult) -> None:
        """Both sides' scores and components, the difference and its interval, the report."""
        report = result.report
        self.name(f"evaluate {report.name}")
        self.params(
            {
                "evaluate.program": report.name,
                "evaluate.program_sha256": report.program_sha256,
                "evaluate.optimizer": report.optimizer,
                "evaluate.examples_scored": report.examples_scored,
                "evaluate.resamples": report.difference.resamples,
            }
        )
        metrics: dict[str, float | None] = {
            "baseline_score": report.baseline.score,
            "optimized_score": report.optimized.score,
            "difference": report.difference.mean,
            "difference_ci_low": report.difference.ci_low,
            "difference_ci_high": report.difference.ci_high,
            "improved": report.improved,
            "worse": report.worse,
            "duration_s": report.duration_s,
            **_usage(report.lm_usage),
        }
        for side in ("baseline", "optimized"):
            for component, value in getattr(report, side).components.items():
                metrics[f"{side}.{component}"] = value
        self.metrics(metrics)
        self.artifact(result.json_path, "report")
        self.artifact(result.markdown_path, "report")

    def pipeline_done(self, settings: Settings, result: PipelineResult) -> None:
        """The pipeline's scores (the shipped forms', and the program's when it was scored)
        and the agent file it exported."""
        shipped: dict[str, float | None] = {
            f"{form}_score": scores.score for form, scores in result.shipped.items()
        }
        if result.shipped:
            shipped["untuned_score"] = next(iter(result.shipped.values())).baseline
        self.metrics(
            {
                "baseline_score": result.baseline_score,
                "optimized_score": result.optimized_score,
                **shipped,
                "seconds": result.seconds,
            }
        )
        if result.agent_name is not None:
            agent = Project(settings).agent(result.agent_name)
            self.artifact(agent.agent_path, "agent")
            self.artifact(agent.meta_path, "agent")


def _usage(usage: list[Any]) -> dict[str, float | None]:
    from ocdspy.lm.usage import total_usage

    totals = total_usage(usage)
    return {"lm_calls": totals.calls, "lm_new_calls": totals.new_calls, "lm_cost": totals.cost}


class _Untracked(Run):
    """What `run` yields when tracking is off: logs nothing and never imports MLflow."""

    def __init__(self) -> None:
        super().__init__(None, "")

    def params(self, params: Mapping[str, Any]) -> None:
        pass

    def metrics(self, values: Mapping[str, float | None], step: int = 0) -> None:
        pass

    def artifact(self, path: Path | None, folder: str) -> None:
        pass

    def name(self, run_name: str) -> None:
        pass


UNTRACKED = _Untracked()


@contextlib.contextmanager
def run(settings: Settings, stage: str, name: str | None = None) -> Iterator[Run]:
    """A tracked run of `stage` around the block, or (tracking off) a run that logs nothing.

    Inside another tracked run (the pipeline's) it is a child run. The run ends FINISHED,
    FAILED when the block raises, KILLED on Ctrl-C.
    """
    if not settings.tracking.enabled:
        yield UNTRACKED
        return
    mlflow = import_mlflow()
    with _quiet_mlflow():
        outermost = mlflow.active_run() is None
        tracked = _start(mlflow, settings, stage, name or stage, nested=not outermost)
        tracked.params(settings_params(settings) | split_params(settings))
        with _autologging(outermost):
            try:
                yield tracked
            except KeyboardInterrupt:
                _end(mlflow, "KILLED")
                raise
            except BaseException:
                _end(mlflow, "FAILED")
                raise
            _end(mlflow, "FINISHED")


def _start(mlflow: Any, settings: Settings, stage: str, name: str, *, nested: bool) -> Run:
    """Point MLflow at the store and the experiment, then start the run. The experiment is
    created on first use, with its files under the outputs folder for a local store (MLflow's
    default is ./mlruns in the working folder)."""
    uri = tracking_uri(settings)
    experiment = experiment_name(settings)
    try:
        if not settings.tracking.uri:
            Project(settings).tracking_store.parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            local = uri.startswith("sqlite:")
            location = Project(settings).tracking_artifacts.resolve().as_uri() if local else None
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
        # The child runs DSPy's integration starts go to the current experiment.
        mlflow.set_experiment(experiment_id=experiment_id)
        active = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=name,
            nested=nested,
            tags={STAGE_TAG: stage, "ocdspy.version": __version__},
        )
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"tracking.uri: cannot use the MLflow store {uri} (experiment {experiment!r}): {first}",
            hint="set tracking.uri to an MLflow tracking URI, e.g. sqlite:///outputs/mlflow.db",
        ) from None
    return Run(client, active.info.run_id)


def _end(mlflow: Any, status: str) -> None:
    try:
        mlflow.end_run(status)
    except Exception as e:
        log.warning("tracking: could not end the run: %s: %s", type(e).__name__, e)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    old = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in old.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _autologging(outermost: bool) -> Iterator[None]:
    """DSPy's MLflow integration for the outermost run, turned off again after it (it patches
    DSPy for the whole process). Without it only ocdspy's own metrics are logged."""
    if not outermost:
        yield
        return
    try:
        import dspy
        import mlflow.dspy

        track_usage = dspy.settings.track_usage
        mlflow.dspy.autolog(log_compiles=True, log_evals=True, silent=True)
    except Exception as e:
        log.warning("tracking: DSPy's MLflow autologging is off: %s: %s", type(e).__name__, e)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            mlflow.dspy.autolog(disable=True, silent=True)
            dspy.settings.configure(track_usage=track_usage)
