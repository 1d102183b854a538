"""pipeline: validate -> convert -> split -> optimize -> evaluate -> export, with one config.

Each stage is skipped when its inputs and settings did not change since it last ran: convert
keeps its own manifest; for the others a fingerprint (hashes of the input files plus the
settings that matter) is kept in `outputs/pipeline.json`. Re-running after a change redoes only
what depends on it; DSPy's cache makes even a redone optimization cheap when most calls repeat.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import file_sha256, remove_stale_temps, write_model_atomic
from ocdspy.config import Settings
from ocdspy.errors import DataError
from ocdspy.lm.usage import ModelUsage, total_usage

STATE_FILE = "pipeline.json"
Status = Literal["ran", "skipped"]


class StageOutcome(BaseModel):
    stage: str
    status: Status
    detail: str = ""
    seconds: float = 0.0


class PipelineState(BaseModel):
    producer: str = f"ocdspy {__version__}"
    fingerprints: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)


class PipelineResult(BaseModel):
    stages: list[StageOutcome] = Field(default_factory=list)
    sessions: int = 0
    examples: int = 0
    train_examples: int = 0
    val_examples: int = 0
    train_sessions: int = 0
    val_sessions: int = 0
    optimizer: str = ""
    program_path: Path | None = None
    report_path: Path | None = None
    baseline_score: float | None = None
    optimized_score: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    lm_calls: int = 0
    lm_new_calls: int = 0
    lm_cost: float | None = None
    agent_name: str | None = None
    agent_path: Path | None = None
    installed_path: Path | None = None
    warnings: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            h.update(file_sha256(p).encode() if p.is_file() else b"<missing>")
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _load_state(path: Path) -> PipelineState:
    if path.is_file():
        try:
            return PipelineState.model_validate_json(path.read_bytes())
        except ValueError:
            pass
    return PipelineState()


def run_pipeline(
    settings: Settings,
    *,
    name: str | None = None,
    force: bool = False,
    install_to: Path | None = None,
    set_default: bool = False,
    overwrite: bool = False,
    agent_name: str | None = None,
    lms: Any = None,
    on_stage: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run every stage; see the module docstring for what is skipped.

    `force` redoes every stage; `overwrite` lets export replace an installed agent (backed up).
    Holds the data lock and then the outputs lock (`ocdspy.lock`) for the whole run.
    """
    from ocdspy.lock import data_lock_dir, outputs_lock_dir, project_lock

    with (
        project_lock(data_lock_dir(settings.data.processed_dir), "pipeline"),
        contextlib.ExitStack() as later,
    ):
        # The outputs lock is taken once validation passed: a failed check writes nothing.
        def lock_outputs() -> None:
            later.enter_context(project_lock(outputs_lock_dir(settings), "pipeline"))
            remove_stale_temps(settings.outputs.dir)

        return _run_pipeline(
            settings,
            lock_outputs,
            name=name,
            force=force,
            install_to=install_to,
            set_default=set_default,
            overwrite=overwrite,
            agent_name=agent_name,
            lms=lms,
            on_stage=on_stage,
        )


def _run_pipeline(
    settings: Settings,
    lock_outputs: Callable[[], None],
    *,
    name: str | None,
    force: bool,
    install_to: Path | None,
    set_default: bool,
    overwrite: bool,
    agent_name: str | None,
    lms: Any,
    on_stage: Callable[[str], None] | None,
) -> PipelineResult:
    from ocdspy.convert import convert
    from ocdspy.split import load_split, split
    from ocdspy.validate import validate

    started = time.perf_counter()
    result = PipelineResult(optimizer=settings.optimization.optimizer)
    state_path = settings.outputs.dir / STATE_FILE
    state = _load_state(state_path)
    d = settings.data
    spent: list[ModelUsage] = []  # LM usage of the stages that ran, summed at the end

    def begin(stage: str) -> float:
        if on_stage is not None:
            on_stage(stage)
        return time.perf_counter()

    def done(stage: str, status: Status, detail: str, t0: float) -> None:
        result.stages.append(
            StageOutcome(
                stage=stage,
                status=status,
                detail=detail,
                seconds=round(time.perf_counter() - t0, 2),
            )
        )

    def save_state() -> None:
        write_model_atomic(state_path, state)

    # validate: always (cheap); its requirements gate everything after it.
    t0 = begin("validate")
    report = validate([d.raw_dir], min_examples=d.min_examples, require_success=d.require_success)
    failed = [r for r in report.requirements if not r.ok]
    if failed:
        first = failed[0]
        raise DataError(first.message, hint=first.fix)
    invalid = [f for f in report.files if f.errors]
    if invalid:
        result.warnings.append(
            f"{len(invalid)} input file(s) are invalid and were skipped; "
            f"`ocdspy validate {d.raw_dir}` shows why"
        )
    result.sessions = report.total_sessions
    lock_outputs()
    done("validate", "ran", f"{report.total_sessions} sessions, {report.total_examples} turns", t0)

    # convert: its manifest knows whether anything changed.
    t0 = begin("convert")
    conv = convert(
        [d.raw_dir],
        d.processed_dir,
        require_success=d.require_success,
        result_max_chars=d.result_max_chars,
        redact=d.redact,
        force=force,
    )
    result.examples = conv.manifest.examples_kept
    done(
        "convert",
        "skipped" if conv.cached else "ran",
        f"{conv.manifest.examples_kept} examples",
        t0,
    )

    # split
    t0 = begin("split")
    split_fp = _fingerprint("split", conv.examples_path, d.train_split, d.seed)
    train_path, val_path = d.splits_dir / "train.jsonl", d.splits_dir / "val.jsonl"
    sm = None
    if not force and state.fingerprints.get("split") == split_fp:
        try:
            sm = load_split(d.splits_dir).manifest  # redone unless its hashes check out
        except DataError:
            sm = None
    status: Status = "skipped"
    if sm is None:
        sm = split(
            conv.examples_path, d.splits_dir, train_fraction=d.train_split, seed=d.seed
        ).manifest
        state.fingerprints["split"] = split_fp
        save_state()
        status = "ran"
    result.train_examples, result.val_examples = sm.train.examples, sm.val.examples
    result.train_sessions, result.val_sessions = sm.train.sessions, sm.val.sessions
    done("split", status, f"train {sm.train.examples} / val {sm.val.examples}", t0)

    # optimize
    from ocdspy.optimize import default_name, optimize

    run_name = name or default_name(settings)
    t0 = begin("optimize")
    model_settings = settings.models.model_dump(mode="json")
    opt_fp = _fingerprint(
        "optimize",
        run_name,
        train_path,
        val_path,
        settings.optimization.model_dump(mode="json"),
        model_settings,
    )
    program_file = Path(state.outputs.get("program", ""))
    if not force and state.fingerprints.get("optimize") == opt_fp and program_file.is_file():
        status = "skipped"
        detail = f"{program_file.name} is up to date"
    else:
        opt = optimize(settings, name=run_name, lms=lms)
        if opt.program_path is None:
            raise DataError(
                "the optimizer produced no program",
                hint=f"see the run record in {settings.outputs.programs_dir}",
            )
        program_file = opt.program_path
        result.warnings += opt.warnings
        state.fingerprints["optimize"] = opt_fp
        state.outputs["program"] = str(program_file)
        state.fingerprints.pop("evaluate", None)
        save_state()
        status = "ran"
        detail = f"{settings.optimization.optimizer} -> {program_file.name}"
        if opt.record is not None:
            spent += opt.record.lm_usage
    result.program_path = program_file
    done("optimize", status, detail, t0)

    # evaluate
    from ocdspy.evaluate import evaluate

    t0 = begin("evaluate")
    eval_fp = _fingerprint(
        "evaluate",
        program_file,
        val_path,
        settings.optimization.metric_weights.model_dump(),
        settings.optimization.metric,
        model_settings["target"],
    )
    report_file = Path(state.outputs.get("report", ""))
    if not force and state.fingerprints.get("evaluate") == eval_fp and report_file.is_file():
        rep = json.loads(report_file.read_text(encoding="utf-8"))
        status = "skipped"
    else:
        ev = evaluate(settings, program_file, lms=lms)
        report_file = ev.json_path
        rep = ev.report.model_dump(mode="json")
        state.fingerprints["evaluate"] = eval_fp
        state.outputs["report"] = str(report_file)
        save_state()
        status = "ran"
        spent += ev.report.lm_usage
    result.report_path = report_file
    result.baseline_score = rep["baseline"]["score"]
    result.optimized_score = rep["optimized"]["score"]
    result.ci_low = rep["difference"]["ci_low"]
    result.ci_high = rep["difference"]["ci_high"]
    done(
        "evaluate",
        status,
        f"baseline {result.baseline_score:.1f} -> optimized {result.optimized_score:.1f}",
        t0,
    )

    # export: cheap, always redone so the agent matches the current program and report.
    from ocdspy.export import export_program

    t0 = begin("export")
    exp = export_program(
        settings,
        program_file,
        name=agent_name,
        install_to=install_to,
        set_default=set_default,
        force=overwrite,
    )
    result.warnings += exp.warnings
    result.agent_name, result.agent_path = exp.name, exp.agent_path
    result.installed_path = exp.installed_path
    done("export", "ran", str(exp.agent_path), t0)
    totals = total_usage(spent)
    result.lm_calls, result.lm_new_calls = totals.calls, totals.new_calls
    result.lm_cost = totals.cost
    result.seconds = round(time.perf_counter() - started, 1)
    return result
