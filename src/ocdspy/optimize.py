"""optimize: train split -> an optimized DSPy program (`outputs/programs/NAME.json`) + run record.

The validation split is never shown to the optimizer: it is what `evaluate` proves the result
on. Optimizers that select among candidates (MIPROv2, GEPA, random search) get a selection set
carved out of the training split, grouped by session.

Every scored prediction goes through a `TrialTracker`, which knows which program produced it
(the agent module records itself per thread). That gives, for any optimizer, the score of each
candidate program it tried, and the best program so far when the user presses Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import inspect
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import Staged, file_sha256, remove_stale_temps
from ocdspy.config import ModelSettings, Settings, capable_teacher_warning
from ocdspy.convert import Example
from ocdspy.errors import ConfigError, DataError, ModelError
from ocdspy.layout import Project, partial_name, program_file_name
from ocdspy.lm.providers import mask_keys
from ocdspy.lock import outputs_lock_dir, project_lock
from ocdspy.split import load_split

# Roles: the target model plays the agent; the teacher proposes instructions, reflects (GEPA)
# and bootstraps demos.
TEACHER_USE: dict[str, str] = {
    "MIPROv2": "prompt_model",
    "COPRO": "prompt_model",
    "GEPA": "reflection_lm",
    "SIMBA": "prompt_model",
    "BootstrapFewShot": "teacher_settings",
    "BootstrapFewShotWithRandomSearch": "teacher_settings",
}
NEEDS_SELECTION_SET = frozenset({"MIPROv2", "GEPA", "BootstrapFewShotWithRandomSearch"})
MIPRO_AUTO = {"light": (6, 100), "medium": (12, 300), "heavy": (18, 1000)}
GEPA_AUTO = {"light": (4, 380), "medium": (5, 690), "heavy": (7, 1035)}
MIPRO_MINIBATCH = 35
SIMBA_BSIZE = 32
GEPA_MIN_PROPOSALS = 3
SIMBA_MIN_TRAIN = 8
COPRO_BREADTH = 4
COPRO_DEPTH = 2
RANDOM_SEARCH_MAX_CANDIDATES = 8
# Rough size of what the model writes back, per mode, for cost estimates.
OUTPUT_TOKENS = {"plan": 160, "next_action": 50}


# ---------------------------------------------------------------------------------------------
# Result models


class DataRef(BaseModel):
    path: str
    sha256: str
    examples: int = Field(description="Turns (recorded examples) in the file.")
    program_examples: int = Field(0, description="DSPy examples made from them for this mode.")


class TrialScore(BaseModel):
    """One candidate program the optimizer scored."""

    index: int
    score: float = Field(description="Mean metric over the predictions scored, 0-100.")
    scored: int = Field(description="Predictions scored for this candidate.")
    best_so_far: bool = False


class ModelUsage(BaseModel):
    role: str
    model: str
    calls: int = Field(0, description="LM requests made, cached ones included.")
    cached: int = Field(0, description="Requests answered from the cache (no new call).")
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = Field(None, description="USD as the provider priced it; None if unknown.")

    @property
    def new_calls(self) -> int:
        return self.calls - self.cached


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


class RunRecord(BaseModel):
    producer: str = f"ocdspy {__version__}"
    stage: str = "optimize"
    name: str
    status: Literal["completed", "interrupted", "failed"]
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


class Splits(BaseModel):
    train: list[Example]
    val: list[Example]
    refs: dict[str, DataRef]


def load_splits(splits_dir: Path) -> Splits:
    """The split, checked by `ocdspy.split.load_split` (hashes, no shared session)."""
    loaded = load_split(splits_dir)
    train, val = loaded.train, loaded.val
    if not train:
        raise DataError(
            f"{loaded.train_path}: no training examples",
            hint="raise data.train_split or add sessions, then re-run `ocdspy split`",
        )
    if not val:
        raise DataError(
            f"{loaded.val_path}: no validation examples",
            hint="lower data.train_split or add sessions, then re-run `ocdspy split`",
        )
    m = loaded.manifest
    refs = {
        "train": DataRef(path=str(loaded.train_path), sha256=m.train.sha256, examples=len(train)),
        "val": DataRef(path=str(loaded.val_path), sha256=m.val.sha256, examples=len(val)),
    }
    return Splits(train=train, val=val, refs=refs)


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
    o = settings.optimization
    name = o.optimizer
    warnings: list[str] = []
    if n_fit < 1:
        raise DataError(
            "no training examples for the optimizer",
            hint="raise data.train_split, then re-run `ocdspy split`",
        )
    if name == "MIPROv2":
        if o.auto_mode is None and n_sel < MIPRO_MINIBATCH and o.num_trials > 0:
            # We turn minibatching off below 35; say so rather than let MIPROv2 raise.
            warnings.append(
                f"MIPROv2: the selection set has {n_sel} examples (< {MIPRO_MINIBATCH}), so every "
                "trial scores all of them (no minibatches)"
            )
        if n_fit + n_sel < 4:
            raise DataError(
                f"MIPROv2 needs at least 4 training examples to bootstrap demos and select among "
                f"candidates; the training split has {n_fit + n_sel if n_sel != n_fit else n_fit}",
                hint="use --optimizer BootstrapFewShot, or raise data.train_split",
            )
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError(
                "MIPROv2 needs optuna, which is not installed",
                hint="pip install 'ocdspy[optimize]' (dspy[optuna])",
            ) from None
    elif name == "SIMBA":
        if n_fit < SIMBA_MIN_TRAIN:
            raise DataError(
                f"SIMBA samples mini-batches of the training set and needs at least "
                f"{SIMBA_MIN_TRAIN} training examples; it has {n_fit}",
                hint="raise data.train_split, add sessions, or use --optimizer BootstrapFewShot",
            )
        if n_fit < SIMBA_BSIZE:
            warnings.append(
                f"SIMBA: batch size lowered from {SIMBA_BSIZE} to the {n_fit} training examples"
            )
    elif name == "GEPA":
        _, budget = _gepa_budget(settings, n_fit, n_sel)
        # GEPA first scores the selection set once; each proposal then costs about two
        # reflection minibatches (3 + 3 predictions).
        proposals = (budget - n_sel) // 6
        if proposals < GEPA_MIN_PROPOSALS:
            need = math.ceil((n_sel + 6 * GEPA_MIN_PROPOSALS) / max(1, n_fit + n_sel))
            raise ConfigError(
                f"GEPA's budget of {budget} metric calls leaves room for {max(0, proposals)} "
                f"instruction proposals after scoring the {n_sel}-example selection set once",
                hint=f"use --auto light, or --trials {need} or more (full evaluations)",
            )
    elif name == "COPRO":
        if n_fit < 2:
            raise DataError(
                "COPRO scores instructions on the training set and needs at least 2 "
                "training examples",
                hint="raise data.train_split",
            )
    elif (
        name in ("BootstrapFewShot", "BootstrapFewShotWithRandomSearch")
        and o.max_bootstrapped_demos == 0
        and o.max_labeled_demos == 0
    ):
        raise ConfigError(
            f"{name} with max_bootstrapped_demos=0 and max_labeled_demos=0 changes nothing",
            hint="set optimization.max_bootstrapped_demos or max_labeled_demos above 0",
        )
    teacher = capable_teacher_warning(settings)
    if teacher:
        warnings.append(teacher)
    if o.num_threads > 1 and settings.models.target.provider == "local":
        warnings.append(
            "num_threads > 1 with the local model: calls share one in-process model "
            "and run one at a time"
        )
    return warnings


def _gepa_budget(settings: Settings, n_fit: int, n_sel: int) -> tuple[int | None, int]:
    o = settings.optimization
    if o.auto_mode is not None:
        per, base = GEPA_AUTO[o.auto_mode]
        return None, per * n_sel + base
    return o.num_trials, o.num_trials * (n_fit + n_sel)


def _mipro_numbers(settings: Settings, n_fit: int, n_sel: int) -> dict[str, int]:
    o = settings.optimization
    zeroshot = o.max_bootstrapped_demos == 0 and o.max_labeled_demos == 0
    num_vars = 1 if zeroshot else 2
    if o.auto_mode is not None:
        n, cap = MIPRO_AUTO[o.auto_mode]
        val = min(n_sel, cap)
        trials = int(max(2 * num_vars * math.log2(n), 1.5 * n))
        minibatch = val > 50
        instr = n if zeroshot else int(n * 0.5)
    else:
        n, val, trials = 6, n_sel, o.num_trials
        minibatch = val > MIPRO_MINIBATCH
        instr = n
    return {
        "candidates": n,
        "instructions": instr,
        "val": val,
        "trials": trials,
        "minibatch": int(minibatch),
    }


def _estimate_metric_calls(settings: Settings, n_fit: int, n_sel: int) -> dict[str, int]:
    """Upper bounds of (target calls, teacher calls, scored predictions), one predictor."""
    o = settings.optimization
    name = o.optimizer
    if name == "BootstrapFewShot":
        return {"target": 0, "teacher": n_fit, "metric": 0}
    if name == "BootstrapFewShotWithRandomSearch":
        c = min(o.num_trials, RANDOM_SEARCH_MAX_CANDIDATES)
        return {"target": (c + 3) * n_sel, "teacher": c * n_fit, "metric": (c + 3) * n_sel}
    if name == "MIPROv2":
        m = _mipro_numbers(settings, n_fit, n_sel)
        if m["minibatch"]:
            evals = m["trials"] * MIPRO_MINIBATCH + (m["trials"] // 5 + 2) * m["val"]
        else:
            evals = (m["trials"] + 1) * m["val"]
        bootstrap = max(0, m["candidates"] - 3) * n_fit
        prompt = m["instructions"] + math.ceil(n_fit / 10) + 3
        return {"target": evals + bootstrap, "teacher": prompt, "metric": evals}
    if name == "COPRO":
        evals = COPRO_BREADTH * COPRO_DEPTH * n_fit
        return {"target": evals, "teacher": COPRO_BREADTH * COPRO_DEPTH, "metric": evals}
    if name == "GEPA":
        _, budget = _gepa_budget(settings, n_fit, n_sel)
        return {"target": budget, "teacher": max(1, budget // 7), "metric": budget}
    if name == "SIMBA":
        bsize = min(SIMBA_BSIZE, n_fit)
        steps = 8
        evals = steps * bsize * (4 + 1)
        return {"target": evals, "teacher": steps * 4, "metric": evals}
    raise ConfigError(f"unknown optimizer {name!r}")


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


def plan_run(
    settings: Settings, *, n_fit: int, n_sel: int, sample: Any | None = None, demos_shown: int = 3
) -> OptimizationPlan:
    o = settings.optimization
    est = _estimate_metric_calls(settings, n_fit, n_sel)
    demos = min(demos_shown or 99, o.max_bootstrapped_demos + o.max_labeled_demos)
    in_tok = _prompt_tokens(sample, demos)
    out_tok = OUTPUT_TOKENS.get(o.program, 100)
    calls: list[PlannedCalls] = []
    total: float | None = 0.0
    for role, model, n, tin, tout in (
        ("target", settings.models.target, est["target"], in_tok, out_tok),
        ("teacher", settings.models.teacher, est["teacher"], in_tok * 2, 300),
    ):
        if n == 0:
            continue
        price = _price(model)
        cost = None if price is None else n * (tin * price[0] + tout * price[1])
        total = None if cost is None or total is None else total + cost
        calls.append(
            PlannedCalls(
                role=role,
                model=f"{model.provider}/{model.model}",
                calls=n,
                input_tokens=n * tin,
                output_tokens=n * tout,
                cost=cost,
            )
        )
    notes = ["upper bounds: cached calls cost nothing, and optimizers stop early when they can"]
    if o.optimizer in NEEDS_SELECTION_SET:
        notes.append(
            f"selection set: {n_sel} examples carved from the training split "
            "(the validation split stays held out for `ocdspy evaluate`)"
        )
    return OptimizationPlan(
        optimizer=o.optimizer,
        program=o.program,
        train_examples=n_fit,
        selection_examples=n_sel,
        metric_calls=est["metric"],
        calls=calls,
        total_cost=total,
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
        k = self._best_key()
        return None if k is None else 100 * sum(self._scores[k]) / len(self._scores[k])

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
        k = self._best_key()
        return None if k is None else self._states[k]


# ---------------------------------------------------------------------------------------------
# Language models


class LMs(BaseModel):
    """The two roles; the same object when teacher and target are the same model."""

    model_config = {"arbitrary_types_allowed": True}
    target: Any
    teacher: Any


def build_lms(settings: Settings, *, needs_teacher: bool = True) -> LMs:
    """Check then build the target and teacher LMs (ocdspy.lm), with the project's cache."""
    try:
        from ocdspy.lm import build_lm, check_lm_settings, configure_cache
    except ImportError as e:  # pragma: no cover - only before the LM layer is installed
        raise ModelError(
            f"the language-model layer is not available: {e}", hint="pip install 'ocdspy[optimize]'"
        ) from e
    target_s, teacher_s = settings.models.target, settings.models.teacher
    check_lm_settings(target_s, "target")
    if needs_teacher:
        check_lm_settings(teacher_s, "teacher")
    configure_cache(settings.outputs.cache_dir)
    target = build_lm(target_s, role="target")
    if not needs_teacher or teacher_s == target_s:
        return LMs(target=target, teacher=target)
    return LMs(target=target, teacher=build_lm(teacher_s, role="teacher"))


def _history_len(lm: Any) -> int:
    return len(getattr(lm, "history", []) or [])


class _HistorySlice:
    def __init__(self, lm: Any, start: int) -> None:
        self.model = getattr(lm, "model", "?")
        self.history = (getattr(lm, "history", []) or [])[start:]


def usage_since(lm: Any, start: int, role: str) -> ModelUsage:
    """LM calls, cache hits, tokens and cost recorded in `lm.history` after index `start`."""
    from ocdspy.lm import lm_usage_summary

    u = ModelUsage(role=role, model=str(getattr(lm, "model", "?")))
    costs = []
    for row in lm_usage_summary([_HistorySlice(lm, start)]).values():
        u.calls += row["calls"]
        u.cached += row["cache_hits"]
        u.input_tokens += row["input_tokens"]
        u.output_tokens += row["output_tokens"]
        if row["cost"] is not None:
            costs.append(row["cost"])
    u.cost = sum(costs) if costs else None
    return u


# ---------------------------------------------------------------------------------------------
# Optimizers


def _accepted(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


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
    import dspy

    o = settings.optimization
    name = o.optimizer
    common = {"num_threads": o.num_threads, "max_errors": o.max_errors}
    teacher_settings = {"lm": lms.teacher} if lms.teacher is not lms.target else {}
    if name == "BootstrapFewShot":
        opt = dspy.BootstrapFewShot(
            metric=metric,
            teacher_settings=teacher_settings,
            max_bootstrapped_demos=o.max_bootstrapped_demos,
            max_labeled_demos=o.max_labeled_demos,
            max_errors=o.max_errors,
        )
        return opt, {}
    if name == "BootstrapFewShotWithRandomSearch":
        opt = dspy.BootstrapFewShotWithRandomSearch(
            metric=metric,
            teacher_settings=teacher_settings,
            max_bootstrapped_demos=o.max_bootstrapped_demos,
            max_labeled_demos=o.max_labeled_demos,
            num_candidate_programs=min(o.num_trials, RANDOM_SEARCH_MAX_CANDIDATES),
            **common,
        )
        return opt, {}
    if name == "MIPROv2":
        kwargs: dict[str, Any] = dict(
            metric=metric,
            prompt_model=lms.teacher,
            task_model=lms.target,
            max_bootstrapped_demos=o.max_bootstrapped_demos,
            max_labeled_demos=o.max_labeled_demos,
            auto=o.auto_mode,
            seed=o.seed,
            verbose=False,
            **common,
        )
        compile_kwargs: dict[str, Any] = {}
        if o.auto_mode is None:
            kwargs["num_candidates"] = 6
            compile_kwargs = {
                "num_trials": o.num_trials,
                "minibatch": n_sel > MIPRO_MINIBATCH,
                "minibatch_size": min(MIPRO_MINIBATCH, n_sel),
            }
        if log_dir is not None:
            kwargs["log_dir"] = str(log_dir)
        return dspy.MIPROv2(**_accepted(dspy.MIPROv2.__init__, kwargs)), compile_kwargs
    if name == "COPRO":
        opt = dspy.COPRO(
            prompt_model=lms.teacher, metric=metric, breadth=COPRO_BREADTH, depth=COPRO_DEPTH
        )
        return opt, {"eval_kwargs": {"num_threads": o.num_threads, "display_progress": False}}
    if name == "GEPA":
        full_evals, _budget = _gepa_budget(settings, n_fit, n_sel)
        budget_kw: dict[str, Any] = (
            {"auto": o.auto_mode} if o.auto_mode is not None else {"max_full_evals": full_evals}
        )
        kwargs = dict(
            metric=gepa_metric or metric,
            reflection_lm=lms.teacher,
            num_threads=o.num_threads,
            seed=o.seed,
            track_stats=False,
            log_dir=str(log_dir) if log_dir is not None else None,
            **budget_kw,
        )
        return dspy.GEPA(**_accepted(dspy.GEPA.__init__, kwargs)), {}
    if name == "SIMBA":
        opt = dspy.SIMBA(
            metric=metric,
            bsize=min(SIMBA_BSIZE, n_fit),
            max_demos=o.max_bootstrapped_demos + o.max_labeled_demos,
            prompt_model=lms.teacher,
            num_threads=o.num_threads,
        )
        return opt, {"seed": o.seed}
    raise ConfigError(f"unknown optimizer {name!r}")


def resolve_metric(settings: Settings) -> tuple[Callable[..., Any], Callable[..., Any], str]:
    """(metric, GEPA metric, description) from the config: ours, or a custom one."""
    from ocdspy.metric import AgentMetric, gepa_metric, load_metric

    spec = settings.optimization.metric
    if spec:
        fn = load_metric(spec)
        return fn, gepa_metric(fn), spec
    m = AgentMetric(settings.optimization.metric_weights)
    w = settings.optimization.metric_weights
    return (
        m,
        m.feedback,
        (
            f"ocdspy agent metric (success {w.success}, efficiency "
            f"{w.efficiency}, correctness {w.correctness})"
        ),
    )


# ---------------------------------------------------------------------------------------------
# The stage


def default_name(settings: Settings) -> str:
    return f"{settings.optimization.program}-{settings.optimization.optimizer.lower()}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """DSPy and optuna log every step; inside a CLI with its own progress that is noise."""
    import logging
    import sys

    names = ("dspy", "optuna", "LiteLLM", "litellm", "httpx")
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    # tqdm bars (BootstrapFewShot draws one) would interleave with our own progress on stderr.
    # tqdm reads TQDM_DISABLE only when imported, so its constructor is patched for the duration.
    try:
        import tqdm as tqdm_module
    except ImportError:  # pragma: no cover - dspy depends on tqdm
        tqdm_module = None
    tqdm_init = tqdm_module.tqdm.__init__ if tqdm_module is not None else None
    if tqdm_module is not None:
        tqdm_module.tqdm.__init__ = functools.partialmethod(tqdm_init, disable=True)
    try:
        # Some optimizers print() their progress: keep stdout for results (`--json`).
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for n, lvl in old.items():
            logging.getLogger(n).setLevel(lvl)
        if tqdm_module is not None:
            tqdm_module.tqdm.__init__ = tqdm_init


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
    """
    if dry_run:
        return _optimize(settings, name, True, lms, on_progress, demos_shown)
    with project_lock(outputs_lock_dir(settings), "optimize"):
        remove_stale_temps(settings.outputs.programs_dir)
        return _optimize(settings, name, False, lms, on_progress, demos_shown)


def _optimize(
    settings: Settings,
    name: str | None,
    dry_run: bool,
    lms: LMs | None,
    on_progress: Callable[[ProgressEvent], None] | None,
    demos_shown: int | None,
) -> OptimizeResult:
    o = settings.optimization
    name = name or default_name(settings)
    demos_shown = o.demos_shown if demos_shown is None else demos_shown
    splits = load_splits(settings.data.splits_dir)
    fit_ex, sel_ex = (
        (*selection_split(splits.train),)
        if o.optimizer in NEEDS_SELECTION_SET
        else (splits.train, [])
    )
    import dspy

    from ocdspy.program.agent import build_program, to_dspy_examples
    from ocdspy.program.render import available_tools

    tools = available_tools(splits.train)
    fit = to_dspy_examples(fit_ex, o.program, tools)
    sel = to_dspy_examples(sel_ex, o.program, tools)
    splits.refs["train"].program_examples = len(to_dspy_examples(splits.train, o.program, tools))
    splits.refs["val"].program_examples = len(to_dspy_examples(splits.val, o.program, tools))
    warnings = preflight(settings, n_fit=len(fit), n_sel=len(sel))
    plan = plan_run(
        settings,
        n_fit=len(fit),
        n_sel=len(sel),
        sample=fit[0] if fit else None,
        demos_shown=demos_shown,
    )
    if dry_run:
        return OptimizeResult(
            name=name,
            program_path=None,
            record_path=None,
            record=None,
            plan=plan,
            dry_run=True,
            warnings=warnings,
        )

    metric, gepa_fn, metric_desc = resolve_metric(settings)
    if lms is None:
        lms = build_lms(settings)
    tracker = TrialTracker(on_progress, planned=plan.metric_calls)
    log_dir = Project(settings).optimizer_logs(name)
    optimizer, compile_kwargs = build_optimizer(
        settings,
        tracker.wrap(metric),
        lms,
        n_fit=len(fit),
        n_sel=len(sel),
        log_dir=log_dir if o.optimizer in ("GEPA",) else None,
        gepa_metric=tracker.wrap(gepa_fn),
    )
    student = build_program(o.program, tools, demos_shown=demos_shown)
    if o.optimizer in ("MIPROv2", "GEPA", "BootstrapFewShotWithRandomSearch"):
        compile_kwargs["valset"] = sel

    starts = {
        id(lm): _history_len(lm)
        for lm in {id(lms.target): lms.target, id(lms.teacher): lms.teacher}.values()
    }
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    status: Literal["completed", "interrupted", "failed"] = "completed"
    interrupted: BaseException | None = None
    error: str | None = None
    result_program: Any = None
    try:
        with (
            quiet(),
            dspy.context(
                lm=lms.target,
                adapter=dspy.JSONAdapter(),
                max_errors=o.max_errors,
                max_history_size=1_000_000,
            ),
        ):
            result_program = optimizer.compile(student, trainset=fit, **compile_kwargs)
    except KeyboardInterrupt as e:
        status, interrupted = "interrupted", e
    except Exception as e:
        # Keep what was learned (and the record) before reporting the failure.
        # Masked: an HTTP error may quote the request header that carried the API key.
        status, interrupted, error = "failed", e, mask_keys(f"{type(e).__name__}: {e}")
    duration = time.monotonic() - t0

    if result_program is None:
        best = tracker.best_state()
        if best is not None:
            result_program = build_program(o.program, tools, demos_shown=demos_shown)
            result_program.load_state(best)
    stem = name if status == "completed" else partial_name(name)

    usage = [usage_since(lms.target, starts[id(lms.target)], "target")]
    if lms.teacher is not lms.target:
        usage.append(usage_since(lms.teacher, starts[id(lms.teacher)], "teacher"))
    trials = tracker.trials()
    best_score = max((t.score for t in trials if t.best_so_far), default=None)
    resume = None
    if status != "completed":
        resume = (
            "re-run the same `ocdspy optimize` command: calls already made are answered "
            f"from the cache in {settings.outputs.cache_dir}, so it picks up where it "
            "stopped"
        )
    record = RunRecord(
        name=name,
        status=status,
        optimizer=o.optimizer,
        program=o.program,
        tools=tools,
        demos_shown=demos_shown,
        settings=o.model_dump(mode="json"),
        models={
            "target": settings.models.target.model_dump(mode="json", exclude={"api_key_env"}),
            "teacher": settings.models.teacher.model_dump(mode="json", exclude={"api_key_env"}),
        },
        data=splits.refs,
        train_examples=len(fit),
        selection_examples=len(sel),
        plan=plan,
        trials=trials,
        best_score=best_score,
        lm_usage=usage,
        started=started.isoformat(),
        duration_s=round(duration, 3),
        program_path=None,
        metric=metric_desc,
        resume_hint=resume,
        error=error,
    )
    out_path, rec_path = _commit_run(settings, stem, result_program, record)
    result = OptimizeResult(
        name=name,
        program_path=out_path,
        record_path=rec_path,
        record=record,
        plan=plan,
        interrupted=status == "interrupted",
        warnings=warnings,
    )
    if isinstance(interrupted, KeyboardInterrupt):
        raise OptimizationInterrupted(result) from interrupted
    if interrupted is not None:
        raise ModelError(
            f"{o.optimizer} failed: {error}",
            hint=f"run record kept at {rec_path} (any completed {program_file_name(name)} is "
            "unchanged); "
            "raise optimization.max_errors if single calls fail",
        ) from interrupted
    return result


class OptimizationInterrupted(KeyboardInterrupt):
    """Ctrl-C: the best program so far and the run record were saved; `result` says where."""

    def __init__(self, result: OptimizeResult) -> None:
        super().__init__("interrupted")
        self.result = result


def load_record(path: Path) -> RunRecord:
    return RunRecord.model_validate_json(path.read_bytes())
