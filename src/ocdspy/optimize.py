"""optimize: train split -> an optimized DSPy program (`outputs/programs/NAME.json`) + run record.

The validation split is never shown to the optimizer: it is what `evaluate` proves the result
on. Optimizers that select among candidates (MIPROv2, GEPA, random search) get a selection set
carved out of the training split, grouped by session.

Every scored prediction goes through a `TrialTracker`, which knows which program produced it
(the agent module records itself per thread). That gives, for any optimizer, the score of each
candidate program it tried, and the best program so far when the user presses Ctrl-C.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ocdspy import __version__, tracking
from ocdspy.artifacts import Staged, file_sha256, remove_stale_temps
from ocdspy.config import ModelSettings, OptimizationSettings, Settings
from ocdspy.convert import Example
from ocdspy.errors import DataError, ModelError
from ocdspy.layout import Project, partial_name, program_file_name
from ocdspy.lm import runtime
from ocdspy.lm.providers import mask_keys
from ocdspy.lm.runtime import LMs
from ocdspy.lm.usage import ModelUsage
from ocdspy.lock import outputs_lock_dir, project_lock
from ocdspy.metric import resolve_metric
from ocdspy.optimizers import BuildContext, capable_teacher_warning, optimizer_spec
from ocdspy.split import DataRef, Splits, load_splits

# Rough size of what the model writes back, per mode, for cost estimates.
OUTPUT_TOKENS = {"plan": 160, "next_action": 50}


# ---------------------------------------------------------------------------------------------
# Result models


class TrialScore(BaseModel):
    """One candidate program the optimizer scored."""

    index: int
    score: float = Field(description="Mean metric over the predictions scored, 0-100.")
    scored: int = Field(description="Predictions scored for this candidate.")
    best_so_far: bool = False


class PlannedCalls(BaseModel):
    role: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None


class OptimizationPlan(BaseModel):
    """What a run will spend: the `--dry-run` answer, also kept in the run record."""

    optimizer: str
    program: str
    train_examples: int
    selection_examples: int
    metric_calls: int = Field(description="Predictions the optimizer will score (upper bound).")
    calls: list[PlannedCalls]
    total_cost: float | None
    notes: list[str] = Field(default_factory=list)


RunStatus = Literal["completed", "interrupted", "failed"]


class RunRecord(BaseModel):
    producer: str = f"ocdspy {__version__}"
    stage: str = "optimize"
    name: str
    status: RunStatus
    optimizer: str
    program: str
    tools: list[str]
    demos_shown: int
    settings: dict[str, Any]
    models: dict[str, dict[str, Any]]
    data: dict[str, DataRef]
    train_examples: int
    selection_examples: int
    plan: OptimizationPlan
    trials: list[TrialScore]
    best_score: float | None
    lm_usage: list[ModelUsage]
    started: str
    duration_s: float
    program_path: str | None
    program_sha256: str | None = None
    metric: str
    resume_hint: str | None = None
    error: str | None = None


class OptimizeResult(BaseModel):
    name: str
    program_path: Path | None
    record_path: Path | None
    record: RunRecord | None
    plan: OptimizationPlan
    dry_run: bool = False
    interrupted: bool = False
    warnings: list[str] = Field(default_factory=list)


class ProgressEvent(BaseModel):
    metric_calls: int
    planned_metric_calls: int
    candidates: int
    best_score: float | None


# ---------------------------------------------------------------------------------------------
# Data


def selection_split(
    train: list[Example], fraction: float = 0.5
) -> tuple[list[Example], list[Example]]:
    """Split the training sessions into (fit, selection), whole sessions on each side.

    Deterministic (by a hash of the session id) so a re-run picks the same sets and hits the
    cache. With a single session, both sides get all of it: better than refusing to run.
    """
    by_session: dict[str, list[Example]] = {}
    for e in train:
        by_session.setdefault(e.parent_session_id or e.session_id, []).append(e)
    if len(by_session) < 2:
        return train, train
    keys = sorted(by_session, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    target = fraction * len(train)
    sel: set[str] = set()
    taken = 0
    for k in keys:
        if taken >= target or len(sel) == len(keys) - 1:
            break
        sel.add(k)
        taken += len(by_session[k])
    fit = [e for e in train if (e.parent_session_id or e.session_id) not in sel]
    selection = [e for e in train if (e.parent_session_id or e.session_id) in sel]
    return fit, selection


# ---------------------------------------------------------------------------------------------
# Pre-flight checks and the dry-run plan


def preflight(settings: Settings, *, n_fit: int, n_sel: int) -> list[str]:
    """Check the optimizer's needs before anything is spent; raise with what to change.

    Returns warnings for things that work but are probably not what the user wants.
    """
    options = settings.optimization
    if n_fit < 1:
        raise DataError(
            "no training examples for the optimizer",
            hint="raise data.train_split, then re-run `ocdspy split`",
        )
    warnings = optimizer_spec(options.optimizer).check(options, n_fit, n_sel)
    teacher = capable_teacher_warning(settings)
    if teacher:
        warnings.append(teacher)
    if options.num_threads > 1 and settings.models.target.provider == "local":
        warnings.append(
            "num_threads > 1 with the local model: calls share one in-process model "
            "and run one at a time"
        )
    return warnings


def _price(model: ModelSettings) -> tuple[float, float] | None:
    """USD per input and output token, from LiteLLM's bundled price map; None if unknown."""
    if model.provider in ("local", "ollama"):
        return 0.0, 0.0
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        return None
    prefix = {"openai": "", "anthropic": "", "openai_compatible": "openai/"}.get(model.provider, "")
    for key in (model.model, f"{model.provider}/{model.model}", f"{prefix}{model.model}"):
        info = litellm.model_cost.get(key)
        if info and "input_cost_per_token" in info:
            return float(info["input_cost_per_token"]), float(info.get("output_cost_per_token", 0))
    return None


def _prompt_tokens(sample: Any | None, demos: int) -> int:
    """A rendered example's size in tokens (about 4 characters each), with its demos."""
    if sample is None:
        return 400
    chars = sum(len(str(v)) for v in sample.inputs().values())
    labels = sum(
        len(json.dumps(v, default=str)) for k, v in sample.items() if k not in sample.inputs()
    )
    return int((600 + chars * (1 + demos) + labels * demos) / 4)


def _planned_calls(
    role: str, model: ModelSettings, calls: int, input_tokens: int, output_tokens: int
) -> PlannedCalls:
    price = _price(model)
    cost = None if price is None else calls * (input_tokens * price[0] + output_tokens * price[1])
    return PlannedCalls(
        role=role,
        model=f"{model.provider}/{model.model}",
        calls=calls,
        input_tokens=calls * input_tokens,
        output_tokens=calls * output_tokens,
        cost=cost,
    )


def plan_run(
    settings: Settings, *, n_fit: int, n_sel: int, sample: Any | None = None, demos_shown: int = 3
) -> OptimizationPlan:
    options = settings.optimization
    spec = optimizer_spec(options.optimizer)
    estimate = spec.estimate(options, n_fit, n_sel)
    demos = min(demos_shown or 99, options.max_bootstrapped_demos + options.max_labeled_demos)
    prompt_tokens = _prompt_tokens(sample, demos)
    answer_tokens = OUTPUT_TOKENS.get(options.program, 100)
    calls = [
        _planned_calls(role, model, n, input_tokens, output_tokens)
        for role, model, n, input_tokens, output_tokens in (
            ("target", settings.models.target, estimate.target, prompt_tokens, answer_tokens),
            ("teacher", settings.models.teacher, estimate.teacher, prompt_tokens * 2, 300),
        )
        if n > 0
    ]
    costs = [c.cost for c in calls]
    notes = ["upper bounds: cached calls cost nothing, and optimizers stop early when they can"]
    if spec.needs_selection_set:
        notes.append(
            f"selection set: {n_sel} examples carved from the training split "
            "(the validation split stays held out for `ocdspy evaluate`)"
        )
    return OptimizationPlan(
        optimizer=options.optimizer,
        program=options.program,
        train_examples=n_fit,
        selection_examples=n_sel,
        metric_calls=estimate.metric,
        calls=calls,
        total_cost=None if None in costs else sum((c for c in costs if c is not None), 0.0),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# Trials


class TrialTracker:
    """Scores per candidate program, from the metric calls the optimizer makes."""

    def __init__(
        self, on_progress: Callable[[ProgressEvent], None] | None = None, planned: int = 0
    ) -> None:
        self._lock = threading.Lock()
        self._instances: dict[int, tuple[Any, str]] = {}
        self._scores: dict[str, list[float]] = {}
        self._states: dict[str, Any] = {}
        self._programs: dict[str, Any] = {}
        self.metric_calls = 0
        self.on_progress = on_progress
        self.planned = planned

    def wrap(self, metric: Callable[..., Any]) -> Callable[..., Any]:
        from ocdspy.program.agent import current_program

        def tracked(example: Any, prediction: Any, trace: Any = None, *rest: Any) -> Any:
            value = (
                metric(example, prediction, trace, *rest)
                if rest
                else metric(example, prediction, trace)
            )
            if trace is None:
                score = getattr(value, "score", value)
                self.record(current_program(), float(score or 0.0))
            return value

        tracked.__name__ = getattr(metric, "__name__", "metric")
        return tracked

    def record(self, program: Any, score: float) -> None:
        if program is None:
            return
        from ocdspy.program.agent import state_key

        with self._lock:
            known = self._instances.get(id(program))
            if known is None or known[0] is not program:
                key = state_key(program)
                self._instances[id(program)] = (program, key)
                if key not in self._states:
                    self._states[key] = program.dump_state()
                    self._programs[key] = program
                    self._scores[key] = []
            else:
                key = known[1]
            self._scores[key].append(score)
            self.metric_calls += 1
            event = ProgressEvent(
                metric_calls=self.metric_calls,
                planned_metric_calls=self.planned,
                candidates=len(self._scores),
                best_score=self._best_score(),
            )
        if self.on_progress is not None:
            self.on_progress(event)

    def _best_key(self) -> str | None:
        if not self._scores:
            return None
        most = max(len(v) for v in self._scores.values())
        # Only candidates scored on as many predictions as the most-scored one compete: a
        # lucky 3-example minibatch must not beat a full evaluation.
        full = {k: v for k, v in self._scores.items() if len(v) >= most}
        return max(full, key=lambda k: sum(full[k]) / len(full[k]))

    def _best_score(self) -> float | None:
        key = self._best_key()
        return None if key is None else 100 * sum(self._scores[key]) / len(self._scores[key])

    def trials(self) -> list[TrialScore]:
        best = self._best_key()
        return [
            TrialScore(
                index=i,
                score=round(100 * sum(v) / len(v), 2),
                scored=len(v),
                best_so_far=(k == best),
            )
            for i, (k, v) in enumerate(self._scores.items(), 1)
            if v
        ]

    def best_state(self) -> Any | None:
        key = self._best_key()
        return None if key is None else self._states[key]


# ---------------------------------------------------------------------------------------------
# Optimizers


def build_optimizer(
    settings: Settings,
    metric: Callable[..., Any],
    lms: LMs,
    *,
    n_fit: int,
    n_sel: int,
    log_dir: Path | None = None,
    gepa_metric: Callable[..., Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """(optimizer, compile kwargs other than student/trainset/valset) for the configured name."""
    options = settings.optimization
    spec = optimizer_spec(options.optimizer)
    context = BuildContext(
        options=options,
        metric=metric,
        gepa_metric=gepa_metric or metric,
        lms=lms,
        teacher=spec.teacher_argument(lms),
        n_fit=n_fit,
        n_sel=n_sel,
        log_dir=log_dir,
    )
    return spec.build(context)


# ---------------------------------------------------------------------------------------------
# The stage


def default_name(settings: Settings) -> str:
    return f"{settings.optimization.program}-{settings.optimization.optimizer.lower()}"


def _commit_run(
    settings: Settings, stem: str, program: Any | None, record: RunRecord
) -> tuple[Path | None, Path]:
    """Write the program and its record as one unit (record last, naming the program's hash).
    A completed run then drops the partial files an earlier interrupted run left."""
    project = Project(settings)
    rec_path = project.run_record(stem)
    with Staged() as staged:
        out_path, sha = _save_result(staged, program, project.program(stem))
        record.program_path = str(out_path) if out_path else None
        record.program_sha256 = sha
        staged.model(rec_path, record)
    if record.status == "completed":
        for old in (project.program(partial_name(stem)), project.run_record(partial_name(stem))):
            old.unlink(missing_ok=True)
    elif out_path is None:
        # An earlier partial program no longer has a record that describes it.
        project.program(stem).unlink(missing_ok=True)
    return out_path, rec_path


def save_program(program: Any, path: Path) -> None:
    """DSPy's own JSON format, written atomically with mode 0600 (it holds demos)."""
    with Staged() as staged:
        program.save(str(staged.path(path, ".tmp.json")))


def _save_result(
    staged: Staged, program: Any | None, program_file: Path
) -> tuple[Path | None, str | None]:
    if program is None:
        return None, None
    tmp = staged.path(program_file, ".tmp.json")
    program.save(str(tmp))
    return program_file, file_sha256(tmp)


def optimize(
    settings: Settings,
    *,
    name: str | None = None,
    dry_run: bool = False,
    lms: LMs | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    demos_shown: int | None = None,
) -> OptimizeResult:
    """Run the configured optimizer on the training split; save the program and a run record.

    `lms` replaces the configured models (tests pass DummyLMs). A completed run writes
    `NAME.json` and `NAME.run.json`. Ctrl-C during the optimizer, or a failure, saves the best
    candidate scored so far and its record as `NAME.partial.json` / `NAME.partial.run.json`,
    leaving the last completed program untouched, then re-raises. A run holds the project lock.
    With `tracking.enabled`, the run is logged to MLflow (`ocdspy.tracking`).
    """
    if dry_run:
        return _optimize(settings, name, True, lms, on_progress, demos_shown)
    with (
        tracking.run(settings, "optimize", name or default_name(settings)) as tracked,
        project_lock(outputs_lock_dir(settings), "optimize"),
    ):
        remove_stale_temps(settings.outputs.programs_dir)
        try:
            result = _optimize(
                settings, name, False, lms, tracked.on_trials(on_progress), demos_shown
            )
        except OptimizationInterrupted as e:
            tracked.optimized(e.result)  # the best candidate so far, in a run marked KILLED
            raise
        tracked.optimized(result)
        return result


@dataclass
class _Prepared:
    """Everything decided before the first LM call: enough for `--dry-run`."""

    name: str
    demos_shown: int
    splits: Splits
    tools: list[str]
    fit: list[Any]
    selection: list[Any]
    warnings: list[str]
    plan: OptimizationPlan


@dataclass
class _Outcome:
    """What the optimizer left: a program (or the best candidate), its trials and spending."""

    status: RunStatus
    started: dt.datetime
    duration_s: float = 0.0
    program: Any | None = None
    trials: list[TrialScore] = field(default_factory=list)
    usage: list[ModelUsage] = field(default_factory=list)
    metric: str = ""
    raised: BaseException | None = None
    error: str | None = None


def _optimize(
    settings: Settings,
    name: str | None,
    dry_run: bool,
    lms: LMs | None,
    on_progress: Callable[[ProgressEvent], None] | None,
    demos_shown: int | None,
) -> OptimizeResult:
    prepared = _prepare(settings, name, demos_shown)
    if dry_run:
        return OptimizeResult(
            name=prepared.name,
            program_path=None,
            record_path=None,
            record=None,
            plan=prepared.plan,
            dry_run=True,
            warnings=prepared.warnings,
        )
    outcome = _run_optimizer(settings, prepared, lms, on_progress)
    record = _run_record(settings, prepared, outcome)
    stem = prepared.name if outcome.status == "completed" else partial_name(prepared.name)
    out_path, rec_path = _commit_run(settings, stem, outcome.program, record)
    result = OptimizeResult(
        name=prepared.name,
        program_path=out_path,
        record_path=rec_path,
        record=record,
        plan=prepared.plan,
        interrupted=outcome.status == "interrupted",
        warnings=prepared.warnings,
    )
    _raise_if_stopped(outcome, result)
    return result


def _prepare(settings: Settings, name: str | None, demos_shown: int | None) -> _Prepared:
    """Load the split, carve the selection set, check the optimizer's needs and plan the run."""
    from ocdspy.program.agent import to_dspy_examples
    from ocdspy.program.render import available_tools

    options = settings.optimization
    splits = load_splits(settings.data.splits_dir)
    fit_turns, selection_turns = (
        selection_split(splits.train)
        if optimizer_spec(options.optimizer).needs_selection_set
        else (splits.train, [])
    )
    tools = available_tools(splits.train)

    def program_examples(turns: list[Example]) -> list[Any]:
        return to_dspy_examples(turns, options.program, tools)

    fit, selection = program_examples(fit_turns), program_examples(selection_turns)
    splits.refs["train"].program_examples = len(program_examples(splits.train))
    splits.refs["val"].program_examples = len(program_examples(splits.val))
    warnings = preflight(settings, n_fit=len(fit), n_sel=len(selection))
    shown = options.demos_shown if demos_shown is None else demos_shown
    plan = plan_run(
        settings,
        n_fit=len(fit),
        n_sel=len(selection),
        sample=fit[0] if fit else None,
        demos_shown=shown,
    )
    return _Prepared(
        name=name or default_name(settings),
        demos_shown=shown,
        splits=splits,
        tools=tools,
        fit=fit,
        selection=selection,
        warnings=warnings,
        plan=plan,
    )


def _run_optimizer(
    settings: Settings,
    prepared: _Prepared,
    lms: LMs | None,
    on_progress: Callable[[ProgressEvent], None] | None,
) -> _Outcome:
    """Compile the student with the configured optimizer. Ctrl-C or a failure keeps the best
    candidate scored so far instead of the optimizer's result."""
    from ocdspy.program.agent import build_program

    options = settings.optimization
    spec = optimizer_spec(options.optimizer)
    configured = resolve_metric(settings)
    lms = lms if lms is not None else runtime.build_lms(settings)
    tracker = TrialTracker(on_progress, planned=prepared.plan.metric_calls)
    with runtime.quiet():  # random search print()s its plan from its constructor
        optimizer, compile_kwargs = build_optimizer(
            settings,
            tracker.wrap(configured.metric),
            lms,
            n_fit=len(prepared.fit),
            n_sel=len(prepared.selection),
            log_dir=Project(settings).optimizer_logs(prepared.name) if spec.keeps_logs else None,
            gepa_metric=tracker.wrap(configured.gepa),
        )
    if spec.needs_selection_set:
        compile_kwargs["valset"] = prepared.selection

    def new_program() -> Any:
        return build_program(options.program, prepared.tools, demos_shown=prepared.demos_shown)

    meter = lms.meter()
    outcome = _compile(optimizer, new_program(), prepared.fit, compile_kwargs, lms, options)
    best = tracker.best_state()
    if outcome.program is None and best is not None:
        outcome.program = new_program()
        outcome.program.load_state(best)
    outcome.trials, outcome.usage = tracker.trials(), meter.usage()
    outcome.metric = configured.description
    return outcome


def _compile(
    optimizer: Any,
    student: Any,
    trainset: list[Any],
    compile_kwargs: dict[str, Any],
    lms: LMs,
    options: OptimizationSettings,
) -> _Outcome:
    """`optimizer.compile`, quietly, on the target LM; Ctrl-C and failures become the status."""
    import dspy

    outcome = _Outcome(status="completed", started=dt.datetime.now(dt.timezone.utc))
    started = time.monotonic()
    try:
        with (
            runtime.quiet(),
            dspy.context(
                lm=lms.target,
                adapter=dspy.JSONAdapter(),
                max_errors=options.max_errors,
                max_history_size=1_000_000,
            ),
        ):
            outcome.program = optimizer.compile(student, trainset=trainset, **compile_kwargs)
    except KeyboardInterrupt as e:
        outcome.status, outcome.raised = "interrupted", e
    except Exception as e:
        # Keep what was learned (and the record) before reporting the failure.
        # Masked: an HTTP error may quote the request header that carried the API key.
        outcome.status, outcome.raised = "failed", e
        outcome.error = mask_keys(f"{type(e).__name__}: {e}")
    outcome.duration_s = time.monotonic() - started
    return outcome


def _run_record(settings: Settings, prepared: _Prepared, outcome: _Outcome) -> RunRecord:
    options = settings.optimization
    resume = None
    if outcome.status != "completed":
        resume = (
            "re-run the same `ocdspy optimize` command: calls already made are answered "
            f"from the cache in {settings.outputs.cache_dir}, so it picks up where it "
            "stopped"
        )
    models = settings.models
    return RunRecord(
        name=prepared.name,
        status=outcome.status,
        optimizer=options.optimizer,
        program=options.program,
        tools=prepared.tools,
        demos_shown=prepared.demos_shown,
        settings=options.model_dump(mode="json"),
        models={
            "target": models.target.model_dump(mode="json", exclude={"api_key_env"}),
            "teacher": models.teacher.model_dump(mode="json", exclude={"api_key_env"}),
        },
        data=prepared.splits.refs,
        train_examples=len(prepared.fit),
        selection_examples=len(prepared.selection),
        plan=prepared.plan,
        trials=outcome.trials,
        best_score=max((t.score for t in outcome.trials if t.best_so_far), default=None),
        lm_usage=outcome.usage,
        started=outcome.started.isoformat(),
        duration_s=round(outcome.duration_s, 3),
        program_path=None,
        metric=outcome.metric,
        resume_hint=resume,
        error=outcome.error,
    )


def _raise_if_stopped(outcome: _Outcome, result: OptimizeResult) -> None:
    """Ctrl-C and failures reach the caller once the best candidate and the record are saved."""
    if isinstance(outcome.raised, KeyboardInterrupt):
        raise OptimizationInterrupted(result) from outcome.raised
    if outcome.raised is not None:
        raise ModelError(
            f"{result.plan.optimizer} failed: {outcome.error}",
            hint=f"run record kept at {result.record_path} (any completed "
            f"{program_file_name(result.name)} is unchanged); raise optimization.max_errors if "
            "single calls fail",
        ) from outcome.raised


class OptimizationInterrupted(KeyboardInterrupt):
    """Ctrl-C: the best program so far and the run record were saved; `result` says where."""

    def __init__(self, result: OptimizeResult) -> None:
        super().__init__("interrupted")
        self.result = result


def load_record(path: Path) -> RunRecord:
    return RunRecord.model_validate_json(path.read_bytes())
