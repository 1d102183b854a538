"""replay: the validation split's turns re-run in real OpenCode, baseline and agents alike,
each scored by what happened (`ocdspy.replay.score`) and reported with the difference to the
baseline (`ocdspy.replay.report`).

Nothing of the user's is written: the workspace is a temp folder (restored from OpenCode's
snapshot store with a private index, or copied), OpenCode runs under a temp HOME, and the
store is opened read-only. Each finished run is saved in the state file at once, so an
interrupted replay goes on where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from ocdspy.collect import StoreLocation, find_store
from ocdspy.config import MetricWeights, Settings
from ocdspy.convert import Example
from ocdspy.errors import DataError, Interrupted
from ocdspy.layout import Project
from ocdspy.lock import outputs_lock_dir, project_lock
from ocdspy.replay import workspace as ws
from ocdspy.replay.inputs import ReplayAgent, endpoint, find_opencode, load_agents
from ocdspy.replay.report import (
    AgentRun,
    AgentSummary,
    ReplayReport,
    ReplayState,
    TurnReport,
    build_report,
    run_key,
    write_report,
)
from ocdspy.replay.run import DEFAULT_TIMEOUT, RunSpec, permission_policy, prepare_home, run_agent
from ocdspy.replay.run import verify as run_verify
from ocdspy.replay.score import score_run
from ocdspy.replay.turns import ReplayTurn, base_turn, held_out, recorded_turns, store_data_dir
from ocdspy.split import load_split

VERIFY_TIMEOUT = 600.0


class ReplayResult(BaseModel):
    report: ReplayReport
    json_path: Path
    markdown_path: Path
    state_path: Path
    ran: int
    reused: int


@dataclass
class Fallback:
    """Where a workspace comes from when the snapshot cannot give it."""

    folder: Path | None = None
    revision: str | None = None
    repo: Path | None = None

    def describe(self) -> str | None:
        if self.folder is not None:
            return f"folder {self.folder}"
        if self.revision is not None:
            return f"revision {self.revision}"
        return None

    def restore(self, dest: Path) -> None:
        if self.folder is not None:
            ws.copy_folder(self.folder, dest)
        elif self.revision is not None:
            ws.export_revision(self.repo or Path.cwd(), self.revision, dest)


@dataclass
class _Context:
    opencode: Path
    model: str
    provider: dict[str, object]
    location: StoreLocation | None
    fallback: Fallback
    max_steps: int | None
    timeout: float
    verify: str | None
    verify_timeout: float
    weights: MetricWeights
    state: ReplayState
    state_path: Path
    say: Callable[[str], None]


def replay(
    settings: Settings,
    *,
    agents: Sequence[Path] = (),
    baseline: Path | None = None,
    model: str | None = None,
    opencode_config: Path | None = None,
    limit: int | None = None,
    verify: str | None = None,
    verify_timeout: float = VERIFY_TIMEOUT,
    timeout: float = DEFAULT_TIMEOUT,
    max_steps: int | None = None,
    workspace: Path | None = None,
    revision: str | None = None,
    repo: Path | None = None,
    opencode: Path | None = None,
    db: Path | None = None,
    storage: Path | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> ReplayResult:
    """Replay the validation split's turns (at most `limit`) with the baseline and each agent."""
    if workspace is not None and revision is not None:
        raise DataError("give either --workspace or --revision, not both")
    project = Project(settings)
    loaded = load_agents(baseline, agents)
    stem = "-".join(a.name for a in loaded[1:]) or loaded[0].name
    files, state_path = project.replay_report(stem), project.replay_state(stem)
    examples = held_out(load_split(project.splits.dir).val, limit=limit)
    if not examples:
        raise DataError(f"{project.splits.val}: no held-out turns to replay")
    binary = find_opencode(opencode)
    try:
        location: StoreLocation | None = find_store(db=db, storage=storage)
    except DataError as e:
        if db is not None or storage is not None:
            raise
        location = None
        say(e.message)
    turns = recorded_turns(examples, location) if location else _without_store(examples)
    with project_lock(outputs_lock_dir(settings), "replay"), endpoint(model, opencode_config) as ep:
        ctx = _Context(
            opencode=binary,
            model=ep.model,
            provider=ep.provider,
            location=location,
            fallback=Fallback(workspace, revision, repo),
            max_steps=max_steps,
            timeout=float(timeout),
            verify=verify,
            verify_timeout=float(verify_timeout),
            weights=settings.optimization.metric_weights,
            state=ReplayState.read(state_path),
            state_path=state_path,
            say=say,
        )
        reports = _replay_turns(ctx, turns, loaded)
        report = build_report(
            name=stem,
            model=ep.model,
            store=str(location.path) if location else "",
            baseline=_summary(loaded[0]),
            agents=[_summary(a) for a in loaded[1:]],
            turns=reports,
            verify=verify is not None,
        )
        write_report(report, files)
    ran = sum(1 for t in reports for r in t.runs if not r.reused)
    return ReplayResult(
        report=report,
        json_path=files.json_path,
        markdown_path=files.markdown_path,
        state_path=state_path,
        ran=ran,
        reused=report.reused,
    )


def _without_store(examples: Sequence[Example]) -> list[ReplayTurn]:
    turns = [base_turn(ex) for ex in examples]
    for turn in turns:
        turn.problem = "no OpenCode store, so no snapshot"
    return turns


def _summary(agent: ReplayAgent) -> AgentSummary:
    return AgentSummary(
        name=agent.name,
        path=str(agent.path) if agent.path else None,
        sha256=agent.sha256,
        plugin=bool(agent.setup.plugin_files),
    )


def _replay_turns(
    ctx: _Context, turns: Sequence[ReplayTurn], agents: Sequence[ReplayAgent]
) -> list[TurnReport]:
    reports: list[TurnReport] = []
    done = 0
    try:
        for turn in turns:
            report = TurnReport(
                id=turn.id,
                session_id=turn.session_id,
                turn_index=turn.turn_index,
                message=turn.message,
            )
            reports.append(report)
            for agent in agents:
                try:
                    run = _one_run(ctx, turn, agent)
                except DataError as e:
                    where = f"session {turn.session_id} turn {turn.turn_index}"
                    report.problem = f"{where}: {e.message}"
                    ctx.say(f"{turn.id}: not replayed: {report.problem}")
                    break
                report.runs.append(run)
                done += 1
                ctx.say(_progress(turn, run))
    except KeyboardInterrupt as e:
        raise Interrupted(
            f"{done} runs finished and saved in {ctx.state_path}; run the same command to go on"
        ) from e
    return reports


def _progress(turn: ReplayTurn, run: AgentRun) -> str:
    how = "reused" if run.reused else f"{run.run.wall_s:.1f} s"
    return (
        f"{turn.id} {run.agent}: {run.run.status}, {run.run.steps} steps, score "
        f"{run.score.score:.1f}, files F1 {100 * run.score.files.f1:.0f} ({how})"
    )


def _one_run(ctx: _Context, turn: ReplayTurn, agent: ReplayAgent) -> AgentRun:
    """One agent on one turn, from the state file when it already ran with the same inputs."""
    limit = agent.max_steps(ctx.max_steps)
    key = run_key(
        turn=turn.id,
        message=turn.message,
        snapshot=turn.snapshot,
        fallback=ctx.fallback.describe(),
        agent=agent.sha256,
        name=agent.name,
        model=ctx.model,
        max_steps=limit,
        timeout=ctx.timeout,
        verify=ctx.verify,
    )
    saved = ctx.state.runs.get(key)
    if saved is not None:
        return saved.model_copy(update={"reused": True})
    if not turn.message.strip():
        raise DataError("no user message to send")
    with ws.temp_workspace() as root, ws.temp_workspace() as home:
        source = _restore(ctx, turn, root)
        ws.make_repo(root)
        before = ws.fingerprint(root)
        env = prepare_home(
            home,
            agent=agent.setup,
            model=ctx.model,
            provider=ctx.provider,
            policy=permission_policy(turn.tools),
        )
        spec = RunSpec(ctx.opencode, agent.name, ctx.model, turn.message, root, env, limit)
        spec.timeout = ctx.timeout
        result = run_agent(spec)
        changed = ws.changed_files(before, ws.fingerprint(root))
        checked = run_verify(ctx.verify, root, timeout=ctx.verify_timeout) if ctx.verify else None
    run = AgentRun(
        agent=agent.name,
        workspace=source,
        run=result,
        score=score_run(turn, result, changed, ctx.weights),
        verify=checked,
    )
    ctx.state.runs[key] = run
    ctx.state.save(ctx.state_path)
    return run


def _restore(ctx: _Context, turn: ReplayTurn, root: Path) -> str:
    """Fill `root` with the turn's starting files; say where they came from."""
    why = turn.problem
    if why is None and turn.snapshot is None:
        why = "the recording has no snapshot"
    if why is None and ctx.location is not None:
        try:
            data_dir = store_data_dir(ctx.location)
            tree = turn.snapshot or ""
            git_dir = ws.find_snapshot(data_dir, turn.project_id, turn.directory, tree)
            ws.restore_snapshot(git_dir, tree, root)
            return f"snapshot {turn.snapshot}"
        except DataError as e:
            why = e.message
    fallback = ctx.fallback.describe()
    if fallback is None:
        raise DataError(f"{why}; pass --workspace DIR or --revision REV to replay it anyway")
    ctx.fallback.restore(root)
    return f"{fallback} ({why})"
