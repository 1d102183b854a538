"""Scoring OpenCode agent files as they ship: `ocdspy evaluate --agent FILE.md`.

Any agent file (the tuned one, a hand-written one, the one a user runs today) is scored on the
held-out split with the target model, exactly as OpenCode would put it in front of the model
(`ocdspy.shipped`): its body as the system prompt, and with `--pool` also the demos the
ocdspy plugin would add for each state. The baseline is another agent file, or by default the
untuned agent: the program's starting instructions, with no demos and no guidance.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import Artifact, Staged
from ocdspy.config import Settings
from ocdspy.convert import Example
from ocdspy.display import show_path
from ocdspy.errors import DataError
from ocdspy.evaluate import Difference
from ocdspy.layout import Project, ReportFiles
from ocdspy.program.select import DemoPool, load_pool, pool_sha256
from ocdspy.program.ship import ShipPlan, Step
from ocdspy.shipped import LmCall, ShippedScore, ShippedStep, compare, score_agent

UNTUNED = "untuned"


class AgentScore(BaseModel):
    name: str = Field(description="The agent file's name without .md, or `untuned`.")
    path: str | None = None
    body_sha256: str = Field(description="SHA-256 of the body the model was shown.")
    form: str = Field(description="static (the file alone) or plugin (file + demo pool).")
    pool: str | None = Field(None, description="Plugin form: the agent its demo pool is for.")
    pool_sha256: str | None = Field(None, description="Plugin form: the pool's content hash.")
    score: float
    components: dict[str, float]
    errors: int
    steps: int
    difference: Difference | None = Field(None, description="This agent - the baseline.")


class AgentsReport(Artifact):
    producer: str = f"ocdspy {__version__}"
    stage: str = "evaluate --agent"
    model: str
    val_path: str
    val_examples: int = Field(description="Held-out turns.")
    steps: int = Field(description="Held-out steps scored per agent.")
    baseline: AgentScore
    agents: list[AgentScore]
    started: str
    duration_s: float
    json_name: str = Field("", description="This report's file name.")


class AgentsResult(BaseModel):
    report: AgentsReport
    json_path: Path
    markdown_path: Path


def untuned_body() -> str:
    """The untuned agent: the program's starting instructions as an agent prompt."""
    from ocdspy.export import for_opencode
    from ocdspy.program.agent import NEXT_ACTION_INSTRUCTIONS

    return for_opencode(NEXT_ACTION_INSTRUCTIONS) + "\n"


def read_agent(path: Path) -> str:
    """An agent file's text; only a readable regular file is read."""
    if not path.is_file():
        raise DataError(f"{show_path(path)}: no such agent file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{show_path(path)}: cannot read the agent file ({e})") from None


def lm_call_for(settings: Settings) -> LmCall:
    """The target model as `shipped` calls it: the local GGUF in process, or the endpoint."""
    from ocdspy.shipped import ApiModelCall, LocalModelCall

    target = settings.models.target
    if target.provider == "local":
        # The same llama.cpp threads as the DSPy engine (`optimization.num_threads` counts
        # parallel examples, not llama threads).
        return LocalModelCall(target.model_path)
    return ApiModelCall.from_settings(target)


def score_agents(
    settings: Settings,
    agents: Sequence[Path],
    *,
    baseline: Path | None = None,
    pool: Path | None = None,
    lm_call: LmCall | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
) -> AgentsResult:
    """Score each agent file (with `pool`: in the plugin form) and the baseline on the
    held-out split; write `outputs/reports/agents-NAME.json` and `.md`."""
    demo_pool = load_pool(pool) if pool is not None else None
    return score_forms(
        settings,
        [(path, demo_pool) for path in agents],
        baseline=baseline,
        lm_call=lm_call,
        on_step=on_step,
    )


def score_forms(
    settings: Settings,
    forms: Sequence[tuple[Path, DemoPool | None]],
    *,
    baseline: Path | None = None,
    lm_call: LmCall | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
) -> AgentsResult:
    """Score agent files, each alone (static form) or with a demo pool (plugin form), and the
    baseline (default: the untuned agent) on the held-out split; write the report."""
    from ocdspy.split import load_splits

    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    val = load_splits(settings.data.splits_dir).val
    call = lm_call if lm_call is not None else lm_call_for(settings)
    score = _Scorer(settings, val, call, on_step)
    base_text = read_agent(baseline) if baseline else untuned_body()
    base_result = score(base_text, None, "baseline")
    base = _agent_score(baseline, base_text, None, base_result)
    scored = []
    for path, demo_pool in forms:
        text = read_agent(path)
        result = score(text, demo_pool, f"{path.stem} ({'plugin' if demo_pool else 'static'})")
        entry = _agent_score(path, text, demo_pool, result)
        entry.difference = compare(base_result, result)
        scored.append(entry)
    files = Project(settings).agents_report("-".join(sorted({p.stem for p, _ in forms})))
    report = AgentsReport(
        model=f"{settings.models.target.provider}/{settings.models.target.model}",
        val_path=str(Project(settings).splits.val),
        val_examples=len(val),
        steps=base.steps,
        baseline=base,
        agents=scored,
        started=started.isoformat(),
        duration_s=round(time.monotonic() - t0, 3),
        json_name=files.json_path.name,
    )
    _write(report, files)
    return AgentsResult(report=report, json_path=files.json_path, markdown_path=files.markdown_path)


class _Scorer:
    """Scores agents over one held-out split, reporting each step to `on_step`."""

    def __init__(
        self,
        settings: Settings,
        val: Sequence[Example],
        call: LmCall,
        on_step: Callable[[str, int, int], None] | None,
    ) -> None:
        self.settings, self.val, self.call, self.on_step = settings, val, call, on_step
        self.total = sum(len(ex.actions) + 1 for ex in val)

    def __call__(self, text: str, pool: DemoPool | None, label: str) -> ShippedScore:
        done = [0]

        def tick(_: ShippedStep) -> None:
            done[0] += 1
            if self.on_step is not None:
                self.on_step(label, done[0], self.total)

        result = score_agent(
            text,
            self.val,
            lm_call=self.call,
            plugin_pool=pool,
            weights=self.settings.optimization.metric_weights,
            model=self.settings.models.target.model,
            on_step=tick,
        )
        return result


def search_ship(
    settings: Settings,
    program_file: Path,
    base: ShipPlan,
    *,
    lm_call: LmCall | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
) -> ShipPlan:
    """`base` with the static demos' budget and the plugin's demos per step chosen by scoring
    the shipped forms with the target model on training turns only (`ship.search_plan`:
    `optimization.ship_search_steps` steps, leave-one-session-out). The validation split is
    never read."""
    from ocdspy.convert import load_examples
    from ocdspy.export import learn_guidance, program_steps, read_program, render_body
    from ocdspy.program.ship import BUDGET_FACTORS, K_CHOICES, search_plan, search_sample
    from ocdspy.shipped import default_tools

    train_path = Project(settings).splits.train
    train = load_examples(train_path)
    parts = read_program(program_file)
    guidance = learn_guidance(train_path)
    call = lm_call if lm_call is not None else lm_call_for(settings)
    tools = default_tools(train)
    steps = settings.optimization.ship_search_steps
    choices = len(BUDGET_FACTORS) + len(K_CHOICES)
    total = sum(len(e.actions) + 1 for e in search_sample(train, steps)) * choices
    done = [0]

    def body_for(static: list[Step]) -> str:
        return render_body(parts, guidance, examples=train, static_steps=static)

    def tick(_: ShippedStep) -> None:
        done[0] += 1
        if on_step is not None:
            on_step("ship search (training turns)", done[0], total)

    def scorer(body: str, turns: Sequence[Example], pool: DemoPool | None) -> list[float]:
        result = score_agent(
            body,
            turns,
            lm_call=call,
            plugin_pool=pool,
            tools=tools,
            weights=settings.optimization.metric_weights,
            model=settings.models.target.model,
            on_step=tick,
        )
        return [r.score for r in result.results]

    return search_plan(
        train,
        base,
        body_for=body_for,
        scorer=scorer,
        max_steps=steps,
        program_steps=program_steps(parts, train),
    )


def _agent_score(
    path: Path | None, text: str, pool: DemoPool | None, result: ShippedScore
) -> AgentScore:
    from ocdspy.export import body_sha256
    from ocdspy.shipped import agent_body

    return AgentScore(
        name=path.stem if path else UNTUNED,
        path=str(path) if path else None,
        body_sha256=body_sha256(agent_body(text)),
        form=result.form,
        pool=pool.agent if pool else None,
        pool_sha256=pool_sha256(pool) if pool else None,
        score=round(result.score, 2),
        components={k: round(v, 2) for k, v in result.components.items()},
        errors=result.errors,
        steps=result.steps,
    )


def _write(report: AgentsReport, files: ReportFiles) -> None:
    with Staged() as staged:
        staged.text(files.markdown_path, render_markdown(report))
        staged.model(files.json_path, report)


def render_markdown(report: AgentsReport) -> str:
    lines = [
        f"# Agent files on {report.steps} held-out steps ({report.model})",
        "",
        "Each agent scored as OpenCode puts it in front of the model (`ocdspy.shipped`); the",
        "difference is against the baseline, with a session-bootstrap interval.",
        "",
        "| agent | form | score | errors | difference [CI] |",
        "| --- | --- | --- | --- | --- |",
        _row(report.baseline, baseline=True),
        *(_row(a) for a in report.agents),
    ]
    return "\n".join(lines) + "\n"


def _row(agent: AgentScore, *, baseline: bool = False) -> str:
    d = agent.difference
    diff = (
        "baseline"
        if baseline or d is None
        else f"{d.mean:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]"
    )
    return (
        f"| {agent.name} | {agent.form} | {agent.score:.1f} | {agent.errors}/{agent.steps} "
        f"| {diff} |"
    )
