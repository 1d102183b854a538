"""pipeline: validate -> convert -> split -> optimize -> evaluate -> ship -> score -> export,
with one config. `ship` chooses how the agent file's demos and the plugin's pool are shown by
scoring them on training turns (`ocdspy.program.ship`); `score` measures what export writes as
it reaches the model on the held-out turns (`ocdspy.agents`).

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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import Artifact, file_sha256, remove_stale_temps, write_model_atomic
from ocdspy.config import PROGRAM_NEUTRAL_SETTINGS, Settings
from ocdspy.errors import DataError
from ocdspy.export import ShippedForm
from ocdspy.layout import Project
from ocdspy.lm.usage import ModelUsage, total_usage
from ocdspy.program.ship import ShipPlan
from ocdspy.progress import Reporter, Silent, on_examples, on_trials

if TYPE_CHECKING:
    from ocdspy.agents import AgentsReport
    from ocdspy.evaluate import Report
    from ocdspy.program.select import DemoPool

Status = Literal["ran", "skipped"]
T = TypeVar("T")


class StageOutcome(BaseModel):
    stage: str
    status: Status
    detail: str = ""
    seconds: float = 0.0


class PipelineState(Artifact):
    producer: str = f"ocdspy {__version__}"
    fingerprints: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    ship: ShipPlan | None = Field(None, description="The last ship stage's choice.")


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
    installed_form: str | None = None
    ship: ShipPlan | None = Field(
        None,
        description="How the shipped demos were chosen; its scores are training-side.",
    )
    shipped: dict[str, ShippedForm] = Field(
        default_factory=dict,
        description="By form (static, plugin): the agent's score as it reaches the model.",
    )
    warnings: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def _agent_body_sha(agent_path: Path) -> str:
    from ocdspy.export import body_sha256, parse_agent_file

    return body_sha256(parse_agent_file(agent_path.read_text(encoding="utf-8"))[1])


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(file_sha256(part).encode() if part.is_file() else b"<missing>")
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _ship_fingerprint(settings: Settings, program_file: Path) -> str:
    """What the ship stage's choice depends on: the program, the training split, the settings'
    plan, the search's size, the metric and the target model."""
    from ocdspy.export import default_plan

    return _fingerprint(
        "ship",
        program_file,
        Project(settings).splits.train,
        default_plan(settings).model_dump(mode="json"),
        settings.optimization.ship_search_steps,
        settings.optimization.metric_weights.model_dump(),
        settings.models.model_dump(mode="json")["target"],
    )


def searched_plan(settings: Settings, program_file: Path) -> ShipPlan | None:
    """The pipeline's last ship choice when it was made for this program with the current
    settings and training split (so `ocdspy export` alone writes what the pipeline scored),
    else None."""
    state = _load_state(Project(settings).pipeline_state)
    if state.ship is None or state.fingerprints.get("ship") != _ship_fingerprint(
        settings, program_file
    ):
        return None
    return state.ship


def _load_state(path: Path) -> PipelineState:
    if path.is_file():
        with contextlib.suppress(DataError):
            return PipelineState.load(path)
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
    lm_call: Any = None,
    progress: Reporter | None = None,
) -> PipelineResult:
    """Run every stage; see the module docstring for what is skipped.

    `lms` are the DSPy models optimize and evaluate use, `lm_call` the target model as the
    shipped-form scoring calls it (`ocdspy.agents.lm_call_for` by default).

    `force` redoes every stage; `overwrite` lets export replace an installed agent (backed up).
    Holds the data lock and then the outputs lock (`ocdspy.lock`) for the whole run.
    """
    from ocdspy import tracking
    from ocdspy.lock import data_lock_dir, outputs_lock_dir, project_lock

    with (
        tracking.run(settings, "pipeline", name) as tracked,  # optimize and evaluate: children
        project_lock(data_lock_dir(settings.data.processed_dir), "pipeline"),
        contextlib.ExitStack() as later,
    ):
        # The outputs lock is taken once validation passed: a failed check writes nothing.
        def lock_outputs() -> None:
            later.enter_context(project_lock(outputs_lock_dir(settings), "pipeline"))
            remove_stale_temps(settings.outputs.dir)

        started = time.perf_counter()
        run = _Run(settings, force=force, progress=progress)
        lm_call = _CountedCall(settings, lm_call)
        examples_path = run.validate_and_convert(lock_outputs)
        run.split(examples_path)
        program_file = run.optimize(name, lms)
        run.evaluate(program_file, lms)
        plan = run.ship(program_file, lm_call)
        shipped = run.score_shipped(program_file, agent_name, lm_call, plan)
        run.export(
            program_file,
            plan,
            agent_name=agent_name,
            install_to=install_to,
            set_default=set_default,
            overwrite=overwrite,
            shipped=shipped,
        )
        run.add_usage(lm_call.usage())
        run.sum_usage()
        run.result.seconds = round(time.perf_counter() - started, 1)
        tracked.pipeline_done(settings, run.result)
        return run.result


class _CountedCall:
    """The target model as the ship and score stages call it: made only when a stage calls it
    (`agents.lm_call_for` unless one was given), its requests counted for the run's summary."""

    def __init__(self, settings: Settings, call: Any) -> None:
        self.settings, self.call, self.calls = settings, call, 0

    def __call__(self, request: dict[str, Any]) -> Any:
        if self.call is None:
            from ocdspy.agents import lm_call_for

            self.call = lm_call_for(self.settings)
        self.calls += 1
        return self.call(request)

    def usage(self) -> list[ModelUsage]:
        target = self.settings.models.target
        model = f"{target.provider}/{target.model}"
        return [ModelUsage(role="target (shipped forms)", model=model, calls=self.calls)]


class _Run:
    """One pipeline run: its settings, what the last run recorded (`outputs/pipeline.json`) and
    the result so far. Each stage is a method."""

    def __init__(self, settings: Settings, *, force: bool, progress: Reporter | None) -> None:
        self.settings = settings
        self.project = Project(settings)
        self.force = force
        self.progress: Reporter = progress or Silent()
        self.state = _load_state(self.project.pipeline_state)
        self.result = PipelineResult(optimizer=settings.optimization.optimizer)
        self.spent: list[ModelUsage] = []  # LM usage of the stages that ran, summed once

    # -- the machinery every stage shares

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageOutcome]:
        """Announce the stage, time it, and add its outcome (status and detail set by the
        block) to the result once it finished."""
        self.progress.stage(name)
        t0 = time.perf_counter()
        outcome = StageOutcome(stage=name, status="ran")
        yield outcome
        outcome.seconds = round(time.perf_counter() - t0, 2)
        self.result.stages.append(outcome)

    def cached(
        self,
        stage: str,
        fingerprint: str,
        *,
        reuse: Callable[[], T | None],
        run: Callable[[], T],
    ) -> tuple[T, Status]:
        """The stage's output: the last run's (found by `reuse`, None when it is gone or
        broken) when the stage's inputs and settings have the fingerprint they had then,
        else a fresh one from `run`, whose fingerprint is then recorded."""
        if not self.force and self.state.fingerprints.get(stage) == fingerprint:
            kept = reuse()
            if kept is not None:
                return kept, "skipped"
        output = run()
        self.state.fingerprints[stage] = fingerprint
        write_model_atomic(self.project.pipeline_state, self.state)
        return output, "ran"

    def add_usage(self, usage: Iterable[ModelUsage]) -> None:
        self.spent += usage

    def sum_usage(self) -> None:
        totals = total_usage(self.spent)
        self.result.lm_calls, self.result.lm_new_calls = totals.calls, totals.new_calls
        self.result.lm_cost = totals.cost

    # -- the stages

    def validate_and_convert(self, lock_outputs: Callable[[], None]) -> Path:
        """Convert (its manifest knows whether anything changed), then check the data
        requirements against what it kept, so every input is parsed once. The requirements gate
        every later stage; the outputs lock is taken only once they hold."""
        from ocdspy.convert import convert
        from ocdspy.validate import check_converted

        data = self.settings.data
        with self.stage("validate") as outcome:
            converted = convert(
                [data.raw_dir],
                data.processed_dir,
                require_success=data.require_success,
                result_max_chars=data.result_max_chars,
                redact=data.redact,
                force=self.force,
            )
            checks = check_converted(converted, [data.raw_dir], min_examples=data.min_examples)
            failed = [r for r in checks if not r.ok]
            if failed:
                raise DataError(failed[0].message, hint=failed[0].fix)
            invalid = {p.file for p in converted.problems if p.severity == "error"}
            if invalid:
                self.result.warnings.append(
                    f"{len(invalid)} input file(s) are invalid and were skipped; "
                    f"`ocdspy validate {data.raw_dir}` shows why"
                )
            manifest = converted.manifest
            self.result.sessions = manifest.sessions_read
            lock_outputs()
            outcome.detail = f"{manifest.sessions_read} sessions, {manifest.turns_in} turns"
        with self.stage("convert") as outcome:
            self.result.examples = manifest.examples_kept
            outcome.status = "skipped" if converted.cached else "ran"
            outcome.detail = f"{manifest.examples_kept} examples"
        return converted.examples_path

    def split(self, examples_path: Path) -> None:
        from ocdspy.split import SplitManifest, load_split, split

        data = self.settings.data

        def reuse() -> SplitManifest | None:
            try:
                return load_split(data.splits_dir).manifest  # redone unless its hashes check out
            except DataError:
                return None

        def run() -> SplitManifest:
            return split(
                examples_path, data.splits_dir, train_fraction=data.train_split, seed=data.seed
            ).manifest

        with self.stage("split") as outcome:
            fingerprint = _fingerprint("split", examples_path, data.train_split, data.seed)
            manifest, outcome.status = self.cached("split", fingerprint, reuse=reuse, run=run)
            train, val = manifest.train, manifest.val
            self.result.train_examples, self.result.val_examples = train.examples, val.examples
            self.result.train_sessions, self.result.val_sessions = train.sessions, val.sessions
            outcome.detail = f"train {train.examples} / val {val.examples}"

    def optimize(self, name: str | None, lms: Any) -> Path:
        from ocdspy.optimize import default_name, optimize

        settings = self.settings
        run_name = name or default_name(settings)

        def reuse() -> Path | None:
            program_file = Path(self.state.outputs.get("program", ""))
            return program_file if program_file.is_file() else None

        def run() -> Path:
            optimized = optimize(
                settings,
                name=run_name,
                lms=lms,
                on_progress=on_trials(self.progress, settings.optimization.optimizer),
            )
            if optimized.program_path is None:
                raise DataError(
                    "the optimizer produced no program",
                    hint=f"see the run record in {settings.outputs.programs_dir}",
                )
            self.result.warnings += optimized.warnings
            self.state.outputs["program"] = str(optimized.program_path)
            self.state.fingerprints.pop("evaluate", None)
            if optimized.record is not None:
                self.add_usage(optimized.record.lm_usage)
            return optimized.program_path

        with self.stage("optimize") as outcome:
            fingerprint = _fingerprint(
                "optimize",
                run_name,
                self.project.splits.train,
                self.project.splits.val,
                # What shapes only the shipped files (or whether the program is scored) does
                # not change the program.
                settings.optimization.model_dump(
                    mode="json", exclude=set(PROGRAM_NEUTRAL_SETTINGS)
                ),
                settings.models.model_dump(mode="json"),
            )
            program_file, outcome.status = self.cached(
                "optimize", fingerprint, reuse=reuse, run=run
            )
            outcome.detail = (
                f"{program_file.name} is up to date"
                if outcome.status == "skipped"
                else f"{settings.optimization.optimizer} -> {program_file.name}"
            )
        self.result.program_path = program_file
        return program_file

    def evaluate(self, program_file: Path, lms: Any) -> None:
        """The optimized program against the unoptimized one on the held-out steps, when
        `optimization.score_program` asks for it: a diagnostic of the optimizer's work. What
        the user installs is scored by `score_shipped` either way."""
        from ocdspy.evaluate import Report, evaluate

        settings = self.settings

        def reuse() -> tuple[Path, Report] | None:
            report_file = Path(self.state.outputs.get("report", ""))
            if not report_file.is_file():
                return None
            try:
                return report_file, Report.load(report_file)
            except DataError:
                return None

        def run() -> tuple[Path, Report]:
            evaluated = evaluate(
                settings, program_file, lms=lms, on_progress=on_examples(self.progress)
            )
            self.state.outputs["report"] = str(evaluated.json_path)
            self.add_usage(evaluated.report.lm_usage)
            return evaluated.json_path, evaluated.report

        with self.stage("evaluate") as outcome:
            if not settings.optimization.score_program:
                outcome.status = "skipped"
                outcome.detail = (
                    "the program itself is not scored (optimization.score_program: false); "
                    "the agent file is, in the score stage"
                )
                return
            fingerprint = _fingerprint(
                "evaluate",
                program_file,
                self.project.splits.val,
                settings.optimization.metric_weights.model_dump(),
                settings.optimization.metric,
                settings.models.model_dump(mode="json")["target"],
            )
            (report_file, report), outcome.status = self.cached(
                "evaluate", fingerprint, reuse=reuse, run=run
            )
            self.result.report_path = report_file
            self.result.baseline_score = report.baseline.score
            self.result.optimized_score = report.optimized.score
            self.result.ci_low = report.difference.ci_low
            self.result.ci_high = report.difference.ci_high
            outcome.detail = (
                f"baseline {report.baseline.score:.1f} -> optimized {report.optimized.score:.1f}"
            )

    def ship(self, program_file: Path, lm_call: Any) -> ShipPlan:
        """How many demos the agent file and the plugin show: the settings' values, or with
        `optimization.ship_search_steps` the best of a few choices scored on training turns
        (`agents.search_ship`). Skipped when the program, the training split and the settings
        that matter are unchanged."""
        from ocdspy.agents import search_ship
        from ocdspy.export import default_plan

        settings = self.settings
        base = default_plan(settings)
        steps = settings.optimization.ship_search_steps

        def run() -> ShipPlan:
            if steps == 0:
                plan = base.model_copy(update={"note": "no search (ship_search_steps: 0)"})
            else:
                plan = search_ship(
                    settings,
                    program_file,
                    base,
                    lm_call=lm_call,
                    on_step=on_examples(self.progress),
                )
            self.state.ship = plan  # what `searched_plan` gives a later `ocdspy export`
            return plan

        with self.stage("ship") as outcome:
            fingerprint = _ship_fingerprint(settings, program_file)
            plan, outcome.status = self.cached(
                "ship", fingerprint, reuse=lambda: self.state.ship if steps else None, run=run
            )
            outcome.detail = describe_plan(plan)
        self.result.ship = plan
        return plan

    def score_shipped(
        self, program_file: Path, agent_name: str | None, lm_call: Any, plan: ShipPlan
    ) -> AgentsReport:
        """Score what export will write, as it reaches the model: the agent file alone (static
        form) and with its demo plugin (plugin form), against the untuned agent. The files are
        written to outputs/prompts first; export then rewrites them with the scores. Skipped
        when the body, the pool, the held-out split and the target model are unchanged."""
        from ocdspy.agents import AgentsReport, score_forms
        from ocdspy.export import export_program
        from ocdspy.program.select import load_pool

        settings = self.settings
        draft = export_program(settings, program_file, name=agent_name, ship=plan)
        forms: list[tuple[Path, DemoPool | None]] = [(draft.agent_path, None)]
        if len(draft.plugin_files) > 1:
            forms.append((draft.agent_path, load_pool(draft.plugin_files[1])))
        report_file = self.project.agents_report(draft.name).json_path

        def reuse() -> AgentsReport | None:
            try:
                return AgentsReport.load(report_file) if report_file.is_file() else None
            except DataError:
                return None

        def run() -> AgentsReport:
            scored = score_forms(
                settings, forms, lm_call=lm_call, on_step=on_examples(self.progress)
            )
            return scored.report

        with self.stage("score") as outcome:
            fingerprint = _fingerprint(
                "score",
                _agent_body_sha(draft.agent_path),
                *draft.plugin_files[1:],
                self.project.splits.val,
                settings.optimization.metric_weights.model_dump(),
                settings.models.model_dump(mode="json")["target"],
            )
            report, outcome.status = self.cached("score", fingerprint, reuse=reuse, run=run)
            outcome.detail = (
                ", ".join(f"{entry.form} {entry.score:.1f}" for entry in report.agents)
                + f" (untuned {report.baseline.score:.1f})"
            )
        return report

    def export(
        self,
        program_file: Path,
        plan: ShipPlan,
        *,
        agent_name: str | None,
        install_to: Path | None,
        set_default: bool,
        overwrite: bool,
        shipped: AgentsReport | None = None,
    ) -> None:
        """Cheap, so always redone: the agent then matches the current program and report."""
        from ocdspy.export import export_program

        with self.stage("export") as outcome:
            exported = export_program(
                self.settings,
                program_file,
                name=agent_name,
                install_to=install_to,
                set_default=set_default,
                force=overwrite,
                shipped=shipped,
                ship=plan,
            )
            self.result.warnings += exported.warnings
            self.result.agent_name, self.result.agent_path = exported.name, exported.agent_path
            self.result.installed_path = exported.installed_path
            self.result.installed_form = exported.installed_form
            self.result.shipped = exported.shipped
            outcome.detail = str(exported.agent_path)


def describe_plan(plan: ShipPlan) -> str:
    """One line: what ships, and the training-side scores it was chosen on."""
    what = f"static demos {plan.static_tokens} tokens, plugin {plan.k} per step"
    if not plan.searched:
        return what + (f" ({plan.note})" if plan.note else " (from the settings)")
    scores = ", ".join(
        f"{'tokens' if c.form == 'static' else 'k'} {c.value}: {c.score:.1f}"
        for c in plan.candidates
    )
    return f"{what}; training-side scores on {plan.sample_steps} steps: {scores}"
