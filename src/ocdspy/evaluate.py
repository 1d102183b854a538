"""evaluate: baseline vs optimized program on the held-out validation split, same LM.

Reports the overall metric and each component, per-example results, the difference with a
bootstrap confidence interval, and the examples that got worse. Writes
`outputs/reports/NAME.json` and `NAME.md`.

The interval resamples whole sessions (a cluster bootstrap): the steps of one session are not
independent, and resampling them one by one would give an interval that is too narrow.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

from ocdspy import __version__, tracking
from ocdspy.artifacts import Artifact, Staged, file_sha256, remove_stale_temps
from ocdspy.config import ModelSettings, Settings
from ocdspy.display import printable
from ocdspy.errors import DataError, ModelError
from ocdspy.layout import Project, ReportFiles, is_partial, program_name, run_record_beside
from ocdspy.lm import runtime
from ocdspy.lm.providers import mask_keys
from ocdspy.lm.runtime import LMs
from ocdspy.lm.usage import ModelUsage, UsageMeter
from ocdspy.lock import outputs_lock_dir, project_lock
from ocdspy.metric import COMPONENTS, as_calls, resolve_metric, score_prediction
from ocdspy.optimize import RunRecord, load_record
from ocdspy.split import load_splits

WORSE_SHOWN = 10


class SideScores(BaseModel):
    score: float = Field(description="Mean of the configured metric, 0-100.")
    components: dict[str, float] = Field(description="Mean of each component, 0-100.")
    errors: int = Field(0, description="Examples whose prediction failed (scored 0).")


class ExampleResult(BaseModel):
    id: str
    session_id: str
    expected: str
    baseline_output: str
    optimized_output: str
    baseline: float
    optimized: float
    delta: float
    baseline_components: dict[str, float]
    optimized_components: dict[str, float]


class Difference(BaseModel):
    mean: float = Field(description="optimized - baseline, points of 100.")
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int
    unit: str = Field(description="What the bootstrap resamples: sessions or examples.")
    significant: bool = Field(description="The interval lies entirely above or below 0.")


class Report(Artifact):
    producer: str = f"ocdspy {__version__}"
    stage: str = "evaluate"
    name: str
    program_path: str
    program_sha256: str | None = None
    program: str
    optimizer: str | None
    metric: str
    model: str
    val: dict[str, Any]
    examples_scored: int
    baseline: SideScores
    optimized: SideScores
    difference: Difference
    components_difference: dict[str, float]
    improved: int
    worse: int
    unchanged: int
    verdict: str = Field("", description="One line: what the difference means, errors included.")
    worse_examples: list[ExampleResult]
    results: list[ExampleResult]
    lm_usage: list[ModelUsage]
    started: str
    duration_s: float


class EvaluateResult(BaseModel):
    report: Report
    json_path: Path
    markdown_path: Path
    program_used: str = Field("", description="Which program file, and from what kind of run.")


# ---------------------------------------------------------------------------------------------
# Statistics


def paired_difference(
    deltas: Sequence[float],
    sessions: Sequence[str],
    *,
    single_unit: str = "examples",
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """The mean of paired differences (agent - baseline, one per scored item) with the
    session-bootstrap interval of `bootstrap_ci`; `single_unit` names what is resampled when
    every item comes from one session."""
    lo, hi = bootstrap_ci(deltas, sessions, resamples=resamples, confidence=confidence, seed=seed)
    return Difference(
        mean=sum(deltas) / len(deltas) if deltas else 0.0,
        ci_low=lo,
        ci_high=hi,
        confidence=confidence,
        resamples=resamples,
        unit="sessions" if len(set(sessions)) > 1 else single_unit,
        significant=bool(deltas) and (lo > 0 or hi < 0),
    )


def bootstrap_ci(
    deltas: Sequence[float],
    groups: Sequence[str] | None = None,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `deltas`.

    With `groups`, whole groups are resampled (cluster bootstrap) and each resample's mean is
    taken over the examples of the groups drawn.
    """
    if not deltas:
        return 0.0, 0.0
    rng = random.Random(seed)
    clusters: list[list[float]]
    if groups is not None and len(set(groups)) > 1:
        by_group: dict[str, list[float]] = {}
        for delta, group in zip(deltas, groups, strict=False):
            by_group.setdefault(group, []).append(delta)
        clusters = list(by_group.values())
    else:
        clusters = [[delta] for delta in deltas]
    sums = [(sum(cluster), len(cluster)) for cluster in clusters]
    k = len(sums)
    means = []
    for _ in range(resamples):
        total = count = 0.0
        for _ in range(k):
            cluster_sum, cluster_size = sums[rng.randrange(k)]
            total += cluster_sum
            count += cluster_size
        means.append(total / count)
    means.sort()
    alpha = (1 - confidence) / 2
    low = means[int(alpha * (resamples - 1))]
    high = means[round((1 - alpha) * (resamples - 1))]
    return low, high


# ---------------------------------------------------------------------------------------------
# Rendering outputs


def _show(obj: Any, plan: bool) -> str:
    if obj is None:
        return "(no prediction)"
    get = obj.get if hasattr(obj, "get") else lambda key, default=None: getattr(obj, key, default)
    if plan:
        calls = "; ".join(f"{c.tool} {c.target}".strip() for c in as_calls(get("plan", [])))
        resp = str(get("response", "") or "")
        return f"{calls or '(no calls)'} | {resp[:160]}"
    return f"{get('tool', '') or '?'} {str(get('target', '') or '')[:160]}".strip()


def resolve_program(settings: Settings, program: str | Path | None) -> Path:
    """A name in programs_dir, a path, or (None) the newest completed program there.

    The best candidate of an interrupted or failed run (`NAME.partial.json`) is used only when
    named (`NAME.partial`), never by default.
    """
    project = Project(settings)
    if program is None:
        return _newest_completed(project)
    given = Path(program)
    for candidate in (given, project.programs_dir / given, project.program(str(given))):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"program {program!r} not found (looked in {project.programs_dir})",
        hint="give a path, or a name from `ls " + str(project.programs_dir) + "`",
    )


def _newest_completed(project: Project) -> Path:
    programs_dir = project.programs_dir
    found = project.saved_programs()
    completed = [p for p in found if not is_partial(p)]
    if completed:
        return completed[-1]
    if found:
        raise DataError(
            f"no completed program in {programs_dir}; {found[-1].name} is the best candidate of "
            "an interrupted or failed run",
            hint=f"name it to use it anyway (`{program_name(found[-1])}`), or re-run "
            "`ocdspy optimize`",
        )
    raise DataError(
        f"no optimized program in {programs_dir}",
        hint="run `ocdspy optimize` first, or name a program file",
    )


def record_for(path: Path) -> RunRecord | None:
    """The run record written with the program at `path`, refused when it names another
    program (a run killed between writing the two, or a file edited since)."""
    record_path = run_record_beside(path)
    if not record_path.is_file():
        return None
    try:
        record = load_record(record_path)
    except ValueError:
        return None
    if record.program_sha256 is not None and record.program_sha256 != file_sha256(path):
        raise DataError(
            f"{path}: does not match its run record {record_path.name} (SHA-256 differs)",
            hint=f"re-run `ocdspy optimize --name {record.name}`",
        )
    return record


def report_for(settings: Settings, program_path: Path) -> Path | None:
    """The evaluation report of the program at `program_path`, if there is one; refused when it
    scored another program (re-optimized since, or a killed run)."""
    path = Project(settings).report_of(program_path).json_path
    if not path.is_file():
        return None
    try:
        scored = Report.load(path).program_sha256
    except DataError:
        scored = None
    if scored != file_sha256(program_path):
        raise DataError(
            f"{path}: this report did not score {program_path} as it is now (its SHA-256 "
            "differs or is not recorded)",
            hint=f"re-run `ocdspy evaluate {program_name(program_path)}`",
        )
    return path


def describe_program(path: Path, record: RunRecord | None) -> str:
    """What the CLI says about the program it uses: the file and what kind of run made it."""
    if record is None:
        kind = "no run record"
    elif record.status == "completed":
        kind = f"completed {record.optimizer} run of {record.started[:19]}"
    else:
        article = "an" if record.status == "interrupted" else "a"
        kind = (
            f"best candidate of {article} {record.status} {record.optimizer} run of "
            f"{record.started[:19]}, not a completed one"
        )
    return f"{path} ({kind})"


# ---------------------------------------------------------------------------------------------
# The stage


class _Failures:
    """Failed program calls of one side: how many, and the last error (for the message)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: BaseException | None = None
        self._lock = threading.Lock()

    def counting(self, program: Any) -> Callable[..., Any]:
        def call(**inputs: Any) -> Any:
            try:
                return program(**inputs)
            except Exception as e:
                with self._lock:
                    self.count += 1
                    self.last = e
                raise

        return call


def endpoint(model: ModelSettings) -> str:
    """Where the model's calls go, for messages (any user:password in the URL left out)."""
    from ocdspy.lm import normalize_ollama_base

    if model.provider == "local":
        return "in process"
    base = normalize_ollama_base(model.api_base) if model.provider == "ollama" else model.api_base
    if not base:
        return f"the {model.provider} default endpoint"
    parts = urlsplit(base.strip())
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def _stopped(e: Exception, failures: _Failures, settings: Settings) -> ModelError:
    """Why the evaluation stopped: the model, its endpoint, the count of failed calls and the
    last error, in our settings' words."""
    from ocdspy.lm.providers import in_our_words

    target = settings.models.target
    last = failures.last or e
    text = str(last).strip().splitlines()[0] if str(last).strip() else ""
    why = in_our_words(f"{type(last).__name__}: {text}".rstrip(": "), "target")
    where = f"target model {target.provider}/{target.model} ({endpoint(target)})"
    if failures.count:
        message = f"evaluation stopped after {failures.count} failed calls to the {where}: {why}"
    else:
        message = f"evaluation stopped ({where}): {why}"
    hints = [
        f"raise optimization.max_errors (now {settings.optimization.max_errors}) to "
        "tolerate more failed calls"
    ]
    if "timeout" in why.lower() or "timed out" in why.lower():
        hints.insert(0, f"raise models.target.timeout (now {target.timeout:g} s)")
    elif failures.count and target.provider != "local":
        hints.insert(0, "check that the endpoint is up and serves this model")
    return ModelError(printable(mask_keys(message)), hint="; ".join(hints))


def _run(
    program: Any,
    devset: list[Any],
    metric: Callable[..., Any],
    settings: Settings,
    tick: Callable[[], None] | None,
) -> list[tuple[Any, Any, float]]:
    import dspy

    def counted(example: Any, pred: Any, trace: Any = None) -> float:
        value = metric(example, pred, trace)
        if tick is not None:
            tick()
        return float(getattr(value, "score", value) or 0.0)

    evaluator = dspy.Evaluate(
        devset=devset,
        metric=counted,
        num_threads=settings.optimization.num_threads,
        display_progress=False,
        display_table=False,
        max_errors=max(settings.optimization.max_errors, 1),
        failure_score=0.0,
        provide_traceback=False,
    )
    failures = _Failures()
    try:
        outcome = evaluator(failures.counting(program))
    except Exception as e:
        raise _stopped(e, failures, settings) from e
    return [(example, pred, float(score)) for example, pred, score in outcome.results]


def evaluate(
    settings: Settings,
    program: str | Path | None = None,
    *,
    lms: LMs | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EvaluateResult:
    """Score the baseline and the optimized program on the validation split (under the
    outputs lock; the report is written as one unit). Logged to MLflow with `tracking.enabled`."""
    with (
        tracking.run(settings, "evaluate") as tracked,
        project_lock(outputs_lock_dir(settings), "evaluate"),
    ):
        remove_stale_temps(settings.outputs.reports_dir)
        result = _evaluate(
            settings,
            program,
            lms=lms,
            resamples=resamples,
            confidence=confidence,
            on_progress=on_progress,
        )
        tracked.evaluated(result)
        return result


def _evaluate(
    settings: Settings,
    program: str | Path | None,
    *,
    lms: LMs | None,
    resamples: int,
    confidence: float,
    on_progress: Callable[[str, int, int], None] | None,
) -> EvaluateResult:
    path = resolve_program(settings, program)
    record = record_for(path)
    subject = _load_subject(settings, path, record)
    metric, _, metric_desc = resolve_metric(settings)
    if lms is None:
        lms = runtime.build_lms(settings, needs_teacher=False)
    scored = _score_sides(subject, metric, lms, settings, on_progress)
    report = _build_report(
        settings,
        path,
        record,
        subject,
        scored,
        metric_desc,
        resamples=resamples,
        confidence=confidence,
    )
    files = _write_report(settings, report)
    return EvaluateResult(
        report=report,
        json_path=files.json_path,
        markdown_path=files.markdown_path,
        program_used=describe_program(path, record),
    )


@dataclass
class _Subject:
    """What is scored: both programs, in one mode, on the validation split's examples."""

    mode: str
    baseline: Any
    optimized: Any
    devset: list[Any]
    val: dict[str, Any]  # the split scored, as the report names it


def _load_subject(settings: Settings, path: Path, record: RunRecord | None) -> _Subject:
    """The saved program at `path` and an unoptimized one built the same way (the run record
    says how), and the validation examples in that program's mode."""
    from ocdspy.program.agent import build_program, to_dspy_examples
    from ocdspy.program.render import available_tools

    splits = load_splits(settings.data.splits_dir)
    mode = record.program if record else settings.optimization.program
    tools = record.tools if record else available_tools(splits.train)
    demos_shown = record.demos_shown if record else settings.optimization.demos_shown
    optimized = build_program(mode, tools, demos_shown=demos_shown)
    try:
        optimized.load(str(path))
    except Exception as e:
        raise DataError(
            f"{path}: not a saved {mode} program ({type(e).__name__}: {e})",
            hint="evaluate a file written by `ocdspy optimize`",
        ) from None
    baseline = build_program(mode, tools, demos_shown=demos_shown)
    devset = to_dspy_examples(splits.val, mode, tools)
    if not devset:
        raise DataError(
            "the validation split gives no examples to score",
            hint="lower data.train_split and re-run `ocdspy split`",
        )
    val = {
        "path": splits.refs["val"].path,
        "sha256": splits.refs["val"].sha256,
        "turns": len(splits.val),
        "examples": len(devset),
    }
    return _Subject(mode, baseline, optimized, devset, val)


@dataclass
class _Scored:
    """Each side's (example, prediction, score) triples, and what scoring them cost."""

    runs: dict[str, list[tuple[Any, Any, float]]]
    usage: list[ModelUsage]
    started: str
    duration_s: float


def _score_sides(
    subject: _Subject,
    metric: Callable[..., Any],
    lms: LMs,
    settings: Settings,
    on_progress: Callable[[str, int, int], None] | None,
) -> _Scored:
    """Run the baseline, then the optimized program, on every validation example."""
    import dspy

    devset = subject.devset
    meter = UsageMeter({"target": lms.target})
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    runs: dict[str, list[tuple[Any, Any, float]]] = {}
    with (
        runtime.quiet(),
        dspy.context(lm=lms.target, adapter=dspy.JSONAdapter(), max_history_size=1_000_000),
    ):
        for side, prog in (("baseline", subject.baseline), ("optimized", subject.optimized)):
            done = [0]

            def tick(side: str = side, done: list[int] = done) -> None:
                done[0] += 1
                if on_progress is not None:
                    on_progress(side, done[0], len(devset))

            runs[side] = _run(prog, devset, metric, settings, tick)
    duration = time.monotonic() - t0
    return _Scored(
        runs=runs,
        usage=meter.usage(),
        started=started.isoformat(),
        duration_s=round(duration, 3),
    )


SIDES = ("baseline", "optimized")


def _compare(
    runs: dict[str, list[tuple[Any, Any, float]]], *, plan: bool
) -> tuple[list[ExampleResult], SideScores, SideScores]:
    """Each example's result on both sides, and each side's mean scores."""
    results: list[ExampleResult] = []
    components: dict[str, dict[str, list[float]]] = {
        side: {c: [] for c in COMPONENTS} for side in SIDES
    }
    errors = dict.fromkeys(SIDES, 0)
    for (example, baseline_pred, baseline_score), (_, optimized_pred, optimized_score) in zip(
        runs["baseline"], runs["optimized"], strict=True
    ):
        example_components = {}
        for side, pred in zip(SIDES, (baseline_pred, optimized_pred), strict=True):
            if pred is None or not dict(pred.items() if hasattr(pred, "items") else {}):
                errors[side] += 1
            scores = score_prediction(example, pred).model_dump()
            example_components[side] = {k: round(100 * v, 2) for k, v in scores.items()}
            for c in COMPONENTS:
                components[side][c].append(100 * scores[c])
        gold = _show(example, plan) if plan else f"{example.tool} {str(example.target)[:160]}"
        results.append(
            ExampleResult(
                id=str(example.get("example_id", "")),
                session_id=str(example.get("session_id", "")),
                expected=gold,
                baseline_output=_show(baseline_pred, plan),
                optimized_output=_show(optimized_pred, plan),
                baseline=round(100 * baseline_score, 2),
                optimized=round(100 * optimized_score, 2),
                delta=round(100 * (optimized_score - baseline_score), 2),
                baseline_components=example_components["baseline"],
                optimized_components=example_components["optimized"],
            )
        )
    baseline, optimized = (
        _side_scores(runs[side], components[side], errors[side]) for side in SIDES
    )
    return results, baseline, optimized


def _side_scores(
    run: list[tuple[Any, Any, float]], components: dict[str, list[float]], errors: int
) -> SideScores:
    scores = [score for _, _, score in run]
    return SideScores(
        score=round(100 * sum(scores) / len(scores), 2),
        components={c: round(sum(v) / len(v), 2) for c, v in components.items()},
        errors=errors,
    )


def _difference(results: list[ExampleResult], *, resamples: int, confidence: float) -> Difference:
    """The mean difference, with its bootstrap interval over sessions."""
    deltas = [r.delta for r in results]
    groups = [r.session_id for r in results]
    low, high = bootstrap_ci(deltas, groups, resamples=resamples, confidence=confidence)
    return Difference(
        mean=round(sum(deltas) / len(deltas), 2),
        ci_low=round(low, 2),
        ci_high=round(high, 2),
        confidence=confidence,
        resamples=resamples,
        unit="sessions" if len(set(groups)) > 1 else "examples",
        significant=low > 0 or high < 0,
    )


def _build_report(
    settings: Settings,
    path: Path,
    record: RunRecord | None,
    subject: _Subject,
    scored: _Scored,
    metric_desc: str,
    *,
    resamples: int,
    confidence: float,
) -> Report:
    results, baseline, optimized = _compare(scored.runs, plan=subject.mode == "plan")
    worse = sorted((r for r in results if r.delta < 0), key=lambda r: r.delta)
    target = settings.models.target
    report = Report(
        name=program_name(path),
        program_path=str(path),
        program_sha256=file_sha256(path),
        program=subject.mode,
        optimizer=record.optimizer if record else None,
        metric=metric_desc,
        model=f"{target.provider}/{target.model}",
        val=subject.val,
        examples_scored=len(results),
        baseline=baseline,
        optimized=optimized,
        difference=_difference(results, resamples=resamples, confidence=confidence),
        components_difference={
            c: round(optimized.components[c] - baseline.components[c], 2) for c in COMPONENTS
        },
        improved=sum(r.delta > 0 for r in results),
        worse=len(worse),
        unchanged=sum(r.delta == 0 for r in results),
        worse_examples=worse[:WORSE_SHOWN],
        results=results,
        lm_usage=scored.usage,
        started=scored.started,
        duration_s=scored.duration_s,
    )
    report.verdict = verdict(report)
    return report


def _write_report(settings: Settings, report: Report) -> ReportFiles:
    """The report as Markdown and JSON, committed as one unit (the JSON last)."""
    files = Project(settings).report(report.name)
    with Staged() as staged:
        staged.text(files.markdown_path, render_markdown(report))
        staged.model(files.json_path, report)
    return files


def errors_note(baseline: SideScores, optimized: SideScores, scored: int) -> str | None:
    """When one side failed more calls than the other, part of the difference is errors (a
    failed call scores 0), not prompting: say so."""
    if baseline.errors == optimized.errors:
        return None

    def side(n: int) -> str:
        return f"{n} error{'' if n == 1 else 's'} ({100 * n / scored:.0f}%)" if n else "0"

    more = "baseline" if baseline.errors > optimized.errors else "optimized"
    return (
        f"baseline had {side(baseline.errors)}, optimized {side(optimized.errors)}: "
        f"the difference is partly errors (a failed call scores 0, here on the {more} side)"
    )


def verdict(report: Report) -> str:
    diff = report.difference
    line = (
        f"{diff.mean:+.1f} points, {int(diff.confidence * 100)}% bootstrap interval "
        f"[{diff.ci_low:+.1f}, {diff.ci_high:+.1f}] "
        f"({diff.resamples} resamples of {diff.unit}); "
        + ("the interval excludes 0" if diff.significant else "the interval includes 0")
    )
    note = errors_note(report.baseline, report.optimized, report.examples_scored)
    return f"{line}; {note}." if note else f"{line}."


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:120]


def render_markdown(report: Report) -> str:
    diff = report.difference
    lines = [
        f"# Evaluation of `{report.name}`",
        "",
        f"- program: `{report.program_path}` ({report.program} mode, optimizer "
        f"{report.optimizer or '?'})",
        f"- model: `{report.model}`",
        f"- validation split: `{report.val['path']}` ({report.val['turns']} turns, "
        f"{report.examples_scored} examples scored)",
        f"- metric: {report.metric}",
        "",
        "| | baseline | optimized | difference |",
        "|---|---:|---:|---:|",
        f"| **score** | {report.baseline.score:.1f} | {report.optimized.score:.1f} | "
        f"{diff.mean:+.1f} [{diff.ci_low:+.1f}, {diff.ci_high:+.1f}] |",
    ]
    for c in COMPONENTS:
        lines.append(
            f"| {c} | {report.baseline.components[c]:.1f} | "
            f"{report.optimized.components[c]:.1f} | {report.components_difference[c]:+.1f} |"
        )
    lines += [
        "",
        f"Difference: {report.verdict or verdict(report)}",
        "",
        f"Examples improved: {report.improved}, worse: {report.worse}, "
        f"unchanged: {report.unchanged}.",
        "",
    ]
    if report.worse_examples:
        lines += [
            "## Examples that got worse",
            "",
            "| example | expected | baseline | optimized | Δ |",
            "|---|---|---|---|---:|",
        ]
        for example in report.worse_examples:
            lines.append(
                f"| `{example.id}` | {_cell(example.expected)} | "
                f"{_cell(example.baseline_output)} | {_cell(example.optimized_output)} | "
                f"{example.delta:+.1f} |"
            )
        lines.append("")
    lines += [
        "## All examples",
        "",
        "| example | expected | optimized | baseline | optimized score |",
        "|---|---|---|---:|---:|",
    ]
    for example in report.results:
        lines.append(
            f"| `{example.id}` | {_cell(example.expected)} | "
            f"{_cell(example.optimized_output)} | {example.baseline:.1f} | "
            f"{example.optimized:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)
