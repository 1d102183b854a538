"""The optimizers ocdspy runs, as one table: what each needs, checks, costs and how it is built.

Every DSPy optimizer has the same contract (`Teleprompter.compile(student, trainset=...)`), so
one entry per optimizer holds all that differs between them:

- its needs: a selection set carved from the training split (optimizers that choose among
  candidates), the constructor argument the teacher model goes to, and whether the result
  depends on the teacher writing instructions (then a tiny local teacher gets a warning);
- its pre-flight check: raise with what to change before anything is spent, or return warnings;
- its call estimate: upper bounds of target calls, teacher calls and scored predictions, for
  `--dry-run` and the progress bar;
- its builder: the DSPy optimizer object and the compile arguments besides student/trainset.

Adding an optimizer is adding one `OptimizerSpec` to `OPTIMIZERS` (and its name to
`config.OptimizerName`). `dspy` is imported only inside the builders.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocdspy.config import OptimizationSettings, Settings
from ocdspy.errors import ConfigError, DataError
from ocdspy.lm.runtime import LMs

MIPRO_AUTO = {"light": (6, 100), "medium": (12, 300), "heavy": (18, 1000)}
MIPRO_MINIBATCH = 35
MIPRO_CANDIDATES = 6
GEPA_AUTO = {"light": (4, 380), "medium": (5, 690), "heavy": (7, 1035)}
GEPA_MIN_PROPOSALS = 3
# GEPA first scores the selection set once; each proposal then costs about two reflection
# minibatches (3 + 3 predictions).
GEPA_CALLS_PER_PROPOSAL = 6
SIMBA_BSIZE = 32
SIMBA_MIN_TRAIN = 8
SIMBA_CANDIDATES = 6
SIMBA_STEPS = 8
COPRO_BREADTH = 4
COPRO_DEPTH = 2
RANDOM_SEARCH_MAX_CANDIDATES = 8


@dataclass(frozen=True)
class CallEstimate:
    """Upper bounds for one predictor: LM calls per role, and predictions the metric scores."""

    target: int
    teacher: int
    metric: int


@dataclass(frozen=True)
class BuildContext:
    """What a builder may use. `teacher` holds the teacher model under the constructor
    argument the spec names (`teacher_settings` is empty when the teacher is the target)."""

    options: OptimizationSettings
    metric: Callable[..., Any]
    gepa_metric: Callable[..., Any]
    lms: LMs
    teacher: dict[str, Any]
    n_fit: int
    n_sel: int
    log_dir: Path | None


Check = Callable[[OptimizationSettings, int, int], list[str]]
Estimate = Callable[[OptimizationSettings, int, int], CallEstimate]
Builder = Callable[[BuildContext], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    check: Check
    estimate: Estimate
    build: Builder
    teacher_use: str = "prompt_model"  # the constructor argument the teacher model goes to
    needs_selection_set: bool = False
    needs_capable_teacher: bool = False
    keeps_logs: bool = False  # resumable from `outputs/logs/NAME` (GEPA)

    def teacher_argument(self, lms: LMs) -> dict[str, Any]:
        if self.teacher_use == "teacher_settings":
            # BootstrapFewShot's teacher: none given means the student's own LM.
            shared = lms.teacher is lms.target
            return {"teacher_settings": {} if shared else {"lm": lms.teacher}}
        return {self.teacher_use: lms.teacher}


def _accepted(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` takes: DSPy releases add and drop optional ones."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


# ---------------------------------------------------------------------------------------------
# BootstrapFewShot and BootstrapFewShotWithRandomSearch


def _check_bootstrap(options: OptimizationSettings, n_fit: int, n_sel: int) -> list[str]:
    if options.max_bootstrapped_demos == 0 and options.max_labeled_demos == 0:
        raise ConfigError(
            f"{options.optimizer} with max_bootstrapped_demos=0 and max_labeled_demos=0 "
            "changes nothing",
            hint="set optimization.max_bootstrapped_demos or max_labeled_demos above 0",
        )
    return []


def _random_search_candidates(options: OptimizationSettings) -> int:
    return min(options.num_trials, RANDOM_SEARCH_MAX_CANDIDATES)


def _estimate_bootstrap(options: OptimizationSettings, n_fit: int, n_sel: int) -> CallEstimate:
    return CallEstimate(target=0, teacher=n_fit, metric=0)


def _estimate_random_search(options: OptimizationSettings, n_fit: int, n_sel: int) -> CallEstimate:
    # DSPy adds three programs of its own (zero-shot, labeled only, unshuffled) to the search.
    programs = _random_search_candidates(options) + 3
    return CallEstimate(
        target=programs * n_sel,
        teacher=_random_search_candidates(options) * n_fit,
        metric=programs * n_sel,
    )


def _bootstrap_arguments(context: BuildContext) -> dict[str, Any]:
    options = context.options
    return dict(
        metric=context.metric,
        max_bootstrapped_demos=options.max_bootstrapped_demos,
        max_labeled_demos=options.max_labeled_demos,
        max_errors=options.max_errors,
        **context.teacher,
    )


def _build_bootstrap(context: BuildContext) -> tuple[Any, dict[str, Any]]:
    import dspy

    return dspy.BootstrapFewShot(**_bootstrap_arguments(context)), {}


def _build_random_search(context: BuildContext) -> tuple[Any, dict[str, Any]]:
    import dspy

    optimizer = dspy.BootstrapFewShotWithRandomSearch(
        num_candidate_programs=_random_search_candidates(context.options),
        num_threads=context.options.num_threads,
        **_bootstrap_arguments(context),
    )
    return optimizer, {}


# ---------------------------------------------------------------------------------------------
# MIPROv2


def _check_mipro(options: OptimizationSettings, n_fit: int, n_sel: int) -> list[str]:
    warnings = []
    if options.auto_mode is None and n_sel < MIPRO_MINIBATCH and options.num_trials > 0:
        # Minibatching is turned off below 35 examples; say so rather than let MIPROv2 raise.
        warnings.append(
            f"MIPROv2: the selection set has {n_sel} examples (< {MIPRO_MINIBATCH}), so every "
            "trial scores all of them (no minibatches)"
        )
    if n_fit + n_sel < 4:
        # With one training session, fit and selection are the same examples.
        train_size = n_fit + n_sel if n_sel != n_fit else n_fit
        raise DataError(
            f"MIPROv2 needs at least 4 training examples to bootstrap demos and select among "
            f"candidates; the training split has {train_size}",
            hint="use --optimizer BootstrapFewShot, or raise data.train_split",
        )
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ConfigError(
            "MIPROv2 needs optuna, which is not installed",
            hint="pip install 'ocdspy[optimize]' (dspy[optuna])",
        ) from None
    return warnings


@dataclass(frozen=True)
class _MiproSearch:
    candidates: int
    instructions: int
    val: int
    trials: int
    minibatch: bool


def _mipro_search(options: OptimizationSettings, n_sel: int) -> _MiproSearch:
    """The search MIPROv2 will run, as DSPy 3.4 sizes it for `auto` or for explicit trials."""
    zeroshot = options.max_bootstrapped_demos == 0 and options.max_labeled_demos == 0
    if options.auto_mode is None:
        return _MiproSearch(
            candidates=MIPRO_CANDIDATES,
            instructions=MIPRO_CANDIDATES,
            val=n_sel,
            trials=options.num_trials,
            minibatch=n_sel > MIPRO_MINIBATCH,
        )
    candidates, val_cap = MIPRO_AUTO[options.auto_mode]
    num_vars = 1 if zeroshot else 2
    val = min(n_sel, val_cap)
    return _MiproSearch(
        candidates=candidates,
        instructions=candidates if zeroshot else int(candidates * 0.5),
        val=val,
        trials=int(max(2 * num_vars * math.log2(candidates), 1.5 * candidates)),
        minibatch=val > 50,
    )


def _estimate_mipro(options: OptimizationSettings, n_fit: int, n_sel: int) -> CallEstimate:
    search = _mipro_search(options, n_sel)
    if search.minibatch:
        evals = search.trials * MIPRO_MINIBATCH + (search.trials // 5 + 2) * search.val
    else:
        evals = (search.trials + 1) * search.val
    bootstrap = max(0, search.candidates - 3) * n_fit
    proposals = search.instructions + math.ceil(n_fit / 10) + 3
    return CallEstimate(target=evals + bootstrap, teacher=proposals, metric=evals)


def _build_mipro(context: BuildContext) -> tuple[Any, dict[str, Any]]:
    import dspy

    options = context.options
    kwargs: dict[str, Any] = dict(
        metric=context.metric,
        task_model=context.lms.target,
        max_bootstrapped_demos=options.max_bootstrapped_demos,
        max_labeled_demos=options.max_labeled_demos,
        auto=options.auto_mode,
        seed=options.seed,
        verbose=False,
        num_threads=options.num_threads,
        max_errors=options.max_errors,
        **context.teacher,
    )
    compile_kwargs: dict[str, Any] = {}
    if options.auto_mode is None:
        kwargs["num_candidates"] = MIPRO_CANDIDATES
        compile_kwargs = {
            "num_trials": options.num_trials,
            "minibatch": context.n_sel > MIPRO_MINIBATCH,
            "minibatch_size": min(MIPRO_MINIBATCH, context.n_sel),
        }
    return dspy.MIPROv2(**_accepted(dspy.MIPROv2.__init__, kwargs)), compile_kwargs


# ---------------------------------------------------------------------------------------------
# COPRO


def _check_copro(options: OptimizationSettings, n_fit: int, n_sel: int) -> list[str]:
    if n_fit < 2:
        raise DataError(
            "COPRO scores instructions on the training set and needs at least 2 training examples",
            hint="raise data.train_split",
        )
    return []


def _estimate_copro(options: OptimizationSettings, n_fit: int, n_sel: int) -> CallEstimate:
    evals = COPRO_BREADTH * COPRO_DEPTH * n_fit
    return CallEstimate(target=evals, teacher=COPRO_BREADTH * COPRO_DEPTH, metric=evals)


def _build_copro(context: BuildContext) -> tuple[Any, dict[str, Any]]:
    import dspy

    optimizer = dspy.COPRO(
        metric=context.metric, breadth=COPRO_BREADTH, depth=COPRO_DEPTH, **context.teacher
    )
    eval_kwargs = {"num_threads": context.options.num_threads, "display_progress": False}
    return optimizer, {"eval_kwargs": eval_kwargs}


# ---------------------------------------------------------------------------------------------
# GEPA


def gepa_budget(options: OptimizationSettings, n_fit: int, n_sel: int) -> tuple[int | None, int]:
    """(full evaluations to ask for, or None under `auto`; metric calls that makes)."""
    if options.auto_mode is not None:
        per_example, base = GEPA_AUTO[options.auto_mode]
        return None, per_example * n_sel + base
    return options.num_trials, options.num_trials * (n_fit + n_sel)


def _check_gepa(options: OptimizationSettings, n_fit: int, n_sel: int) -> list[str]:
    _, budget = gepa_budget(options, n_fit, n_sel)
    proposals = (budget - n_sel) // GEPA_CALLS_PER_PROPOSAL
    if proposals < GEPA_MIN_PROPOSALS:
        needed = n_sel + GEPA_CALLS_PER_PROPOSAL * GEPA_MIN_PROPOSALS
        trials = math.ceil(needed / max(1, n_fit + n_sel))
        raise ConfigError(
            f"GEPA's budget of {budget} metric calls leaves room for {max(0, proposals)} "
            f"instruction proposals after scoring the {n_sel}-example selection set once",
            hint=f"use --auto light, or --trials {trials} or more (full evaluations)",
        )
    return []


def _estimate_gepa(options: OptimizationSettings, n_fit: int, n_sel: int) -> CallEstimate:
    _, budget = gepa_budget(options, n_fit, n_sel)
    return CallEstimate(target=budget, teacher=max(1, budget // 7), metric=budget)


def _build_gepa(context: BuildContext) -> tuple[Any, dict[str, Any]]:
    import dspy

    options = context.options
    full_evals, _ = gepa_budget(options, context.n_fit, context.n_sel)
    budget: dict[str, Any] = (
        {"auto": options.auto_mode}
        if options.auto_mode is not None
        else {"max_full_evals": full_evals}
    )
    kwargs = dict(
        metric=context.gepa_metric,
        num_threads=options.num_threads,
        seed=options.seed,
        track_stats=False,
        log_dir=str(context.log_dir) if context.log_dir is not None else None,
        **context.teacher,
        **budget,
    )
    return dspy.GEPA(**_accepted(dspy.GEPA.__init__, kwargs)), {}


# ---------------------------------------------------------------------------------------------
# SIMBA


def _simba_bsize(n_fit: int) -> int:
    """DSPy's SIMBA asserts trainset >= bsize: the batch shrinks to a small training set."""
    return min(SIMBA_BSIZE, n_fit)


def _check_simba(options: OptimizationSettings, n_fit: int, n_sel: int) -> list[str]:
    if n_fit < SIMBA_MIN_TRAIN:
        raise DataError(
            f"SIMBA samples mini-batches of the training set and needs at least "
            f"{SIMBA_MIN_TRAIN} training examples; it has {n_fit}",
            hint="raise data.train_split, add sessions, or use --optimizer BootstrapFewShot",
        )
    if n_fit < SIMBA_BSIZE:
        return [f"SIMBA: batch size lowered from {SIMBA_BSIZE} to the {n_fit} training examples"]
    return []


def _estimate_simba(options: OptimizationSettings, n_fit: int, n_sel: int) -> CallEstimate:
    # Each step samples every candidate LM on a batch, then scores up to candidates + 1 new
    # programs on it; at the end up to candidates + 1 winners are scored on the whole trainset.
    batch = _simba_bsize(n_fit)
    per_step = batch * (SIMBA_CANDIDATES + SIMBA_CANDIDATES + 1)
    evals = SIMBA_STEPS * per_step + (SIMBA_CANDIDATES + 1) * n_fit
    return CallEstimate(target=evals, teacher=SIMBA_STEPS * (SIMBA_CANDIDATES + 1), metric=evals)


def _build_simba(context: BuildContext) -> tuple[Any, dict[str, Any]]:
    import dspy

    options = context.options
    optimizer = dspy.SIMBA(
        metric=context.metric,
        bsize=_simba_bsize(context.n_fit),
        num_candidates=SIMBA_CANDIDATES,
        max_steps=SIMBA_STEPS,
        max_demos=options.max_bootstrapped_demos + options.max_labeled_demos,
        num_threads=options.num_threads,
        **context.teacher,
    )
    return optimizer, {"seed": options.seed}


# ---------------------------------------------------------------------------------------------
# The table

OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec(
            name="BootstrapFewShot",
            teacher_use="teacher_settings",
            check=_check_bootstrap,
            estimate=_estimate_bootstrap,
            build=_build_bootstrap,
        ),
        OptimizerSpec(
            name="BootstrapFewShotWithRandomSearch",
            teacher_use="teacher_settings",
            needs_selection_set=True,
            check=_check_bootstrap,
            estimate=_estimate_random_search,
            build=_build_random_search,
        ),
        OptimizerSpec(
            name="MIPROv2",
            teacher_use="prompt_model",
            needs_selection_set=True,
            needs_capable_teacher=True,
            check=_check_mipro,
            estimate=_estimate_mipro,
            build=_build_mipro,
        ),
        OptimizerSpec(
            name="COPRO",
            teacher_use="prompt_model",
            needs_capable_teacher=True,
            check=_check_copro,
            estimate=_estimate_copro,
            build=_build_copro,
        ),
        OptimizerSpec(
            name="GEPA",
            teacher_use="reflection_lm",
            needs_selection_set=True,
            needs_capable_teacher=True,
            keeps_logs=True,
            check=_check_gepa,
            estimate=_estimate_gepa,
            build=_build_gepa,
        ),
        OptimizerSpec(
            name="SIMBA",
            teacher_use="prompt_model",
            check=_check_simba,
            estimate=_estimate_simba,
            build=_build_simba,
        ),
    )
}


def optimizer_spec(name: str) -> OptimizerSpec:
    spec = OPTIMIZERS.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown optimizer {name!r}", hint="one of: " + ", ".join(sorted(OPTIMIZERS))
        )
    return spec


def capable_teacher_warning(settings: Settings) -> str | None:
    """A warning when the optimizer leans on the teacher and the teacher is the local model."""
    name = settings.optimization.optimizer
    spec = OPTIMIZERS.get(name)
    if spec is None or not spec.needs_capable_teacher:
        return None
    if settings.models.teacher.provider != "local":
        return None
    return (
        f"{name} writes instructions with the teacher model, and the teacher is a local model "
        "(models.teacher.provider: local), too small to write useful ones: expect little or no "
        "gain; set models.teacher to a capable model, or use --optimizer BootstrapFewShot"
    )
