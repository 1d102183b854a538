"""The replay report (`outputs/reports/replay-NAME.json` and `.md`) and the state file that
makes a replay resumable (`replay-NAME.state.json`: every finished run, keyed by what it ran)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from ocdspy import __version__
from ocdspy.artifacts import Artifact, Staged, write_model_atomic
from ocdspy.errors import DataError
from ocdspy.evaluate import Difference
from ocdspy.layout import ReportFiles
from ocdspy.replay.run import RunResult, VerifyResult
from ocdspy.replay.score import RunScore, difference

STATUSES = ("ok", "error", "loop", "step-cap", "timeout")


class AgentRun(BaseModel):
    """One agent on one turn: where its workspace came from, what it did, how it scored."""

    agent: str
    workspace: str = Field(description="snapshot HASH, folder PATH or revision REV.")
    run: RunResult
    score: RunScore
    verify: VerifyResult | None = None
    reused: bool = Field(False, description="Taken from the state file of an earlier replay.")


class TurnReport(BaseModel):
    id: str
    session_id: str
    turn_index: int
    message: str
    problem: str | None = Field(None, description="Why the turn was not replayed.")
    runs: list[AgentRun] = Field(default_factory=list)


class AgentSummary(BaseModel):
    name: str
    path: str | None = Field(None, description="The agent file; None for the untuned agent.")
    sha256: str = Field(description="SHA-256 of the agent file text and its plugin files.")
    plugin: bool = False
    turns: int = 0
    score: float = 0.0
    components: dict[str, float] = Field(default_factory=dict)
    files_f1: float = 0.0
    statuses: dict[str, int] = Field(default_factory=dict)
    verify_passed: int | None = None
    steps: float = 0.0
    tokens: float = 0.0
    wall_s: float = 0.0
    difference: Difference | None = Field(None, description="Score against the baseline.")


class ReplayReport(Artifact):
    producer: str = f"ocdspy {__version__}"
    stage: str = "replay"
    name: str
    model: str
    store: str
    baseline: AgentSummary
    agents: list[AgentSummary]
    turns: list[TurnReport]
    reused: int = 0


class ReplayState(Artifact):
    """Finished runs by key (`run_key`)."""

    runs: dict[str, AgentRun] = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> ReplayState:
        if not path.is_file():
            return cls()
        try:
            return cls.load(path)
        except DataError:
            return cls()  # a damaged state costs a re-run, nothing else

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_model_atomic(path, self)


def run_key(**inputs: object) -> str:
    """The identity of a run: everything that would change what it does."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def summarize(summary: AgentSummary, runs: Sequence[AgentRun], verify: bool) -> AgentSummary:
    """`summary` with the means of its runs filled in."""
    n = len(runs) or 1
    out = summary.model_copy()
    out.turns = len(runs)
    out.score = sum(r.score.score for r in runs) / n
    keys = runs[0].score.components if runs else {}
    out.components = {c: sum(r.score.components[c] for r in runs) / n for c in keys}
    out.files_f1 = 100 * sum(r.score.files.f1 for r in runs) / n
    counts: Counter[str] = Counter(r.run.status for r in runs)
    out.statuses = {s: counts[s] for s in STATUSES if counts[s]}
    if verify:
        out.verify_passed = sum(1 for r in runs if r.verify and r.verify.exit_code == 0)
    out.steps = sum(r.run.steps for r in runs) / n
    out.tokens = sum(r.run.tokens_input + r.run.tokens_output for r in runs) / n
    out.wall_s = sum(r.run.wall_s for r in runs) / n
    return out


def build_report(
    *,
    name: str,
    model: str,
    store: str,
    baseline: AgentSummary,
    agents: Sequence[AgentSummary],
    turns: Sequence[TurnReport],
    verify: bool,
) -> ReplayReport:
    """Per agent: its means over the turns it ran, and its difference to the baseline over the
    turns both ran (session-bootstrap interval, as evaluate)."""

    def runs_of(agent: str) -> dict[str, AgentRun]:
        return {t.id: r for t in turns for r in t.runs if r.agent == agent}

    base_runs = runs_of(baseline.name)
    summaries = []
    for agent in agents:
        mine = runs_of(agent.name)
        both = [t for t in turns if t.id in mine and t.id in base_runs]
        summary = summarize(agent, list(mine.values()), verify)
        if both:
            summary.difference = difference(
                [base_runs[t.id].score.score for t in both],
                [mine[t.id].score.score for t in both],
                [t.session_id for t in both],
            )
        summaries.append(summary)
    return ReplayReport(
        name=name,
        model=model,
        store=store,
        baseline=summarize(baseline, list(base_runs.values()), verify),
        agents=summaries,
        turns=list(turns),
        reused=sum(r.reused for t in turns for r in t.runs),
    )


def write_report(report: ReplayReport, files: ReportFiles) -> None:
    files.dir.mkdir(parents=True, exist_ok=True)
    with Staged() as staged:
        staged.text(files.markdown_path, render_markdown(report))
        staged.model(files.json_path, report)


def render_markdown(report: ReplayReport) -> str:
    replayed = sum(1 for t in report.turns if t.runs)
    lines = [
        f"# Replay of {replayed} held-out turns in OpenCode ({report.model})",
        "",
        "Each agent ran the turn's first user message in real OpenCode, in the workspace",
        "restored as the turn started. score: evaluate's metric on the trajectory (0 for a",
        "run that looped, hit the step cap, timed out or failed); files: F1 of the changed",
        "files against the recorded ones. The difference is against the baseline, with a",
        "session-bootstrap interval.",
        "",
        "| agent | score | files F1 | ok/error/loop/step-cap/timeout | verify | steps | tokens "
        "| wall s | difference [CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        _row(report.baseline, baseline=True),
        *(_row(a) for a in report.agents),
        "",
        "## Turns",
        "",
        "| turn | agent | workspace | status | score | files F1 | verify |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for turn in report.turns:
        if turn.problem:
            lines.append(f"| {turn.id} | - | - | not replayed: {_cell(turn.problem)} | | | |")
        for r in turn.runs:
            code = "-" if r.verify is None else str(r.verify.exit_code)
            lines.append(
                f"| {turn.id} | {r.agent} | {_cell(r.workspace)} | {r.run.status} "
                f"| {r.score.score:.1f} | {100 * r.score.files.f1:.0f} | {code} |"
            )
    return "\n".join(lines) + "\n"


def _row(a: AgentSummary, *, baseline: bool = False) -> str:
    d = a.difference
    diff = (
        "baseline"
        if baseline
        else "-"
        if d is None
        else f"{d.mean:+.1f} [{d.ci_low:+.1f}, {d.ci_high:+.1f}]"
    )
    statuses = "/".join(str(a.statuses.get(s, 0)) for s in STATUSES)
    verify = "-" if a.verify_passed is None else f"{a.verify_passed}/{a.turns}"
    return (
        f"| {a.name} | {a.score:.1f} | {a.files_f1:.0f} | {statuses} | {verify} "
        f"| {a.steps:.1f} | {a.tokens:.0f} | {a.wall_s:.1f} | {diff} |"
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:200]
