"""Scoring one replayed run against its recorded turn.

- **trajectory**: evaluate's metric in plan mode (`metric.score_prediction`): the recorded
  calls (tool, main argument) and answer against the replayed ones, the same three components
  (success, efficiency, correctness) with the configured weights. A run that looped, hit the
  step cap, timed out or failed scores 0 (its components are still shown).
- **outcome**: the files the run changed against the files the recording changed (precision,
  recall, F1), and the `--verify` command's exit status.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from ocdspy.config import MetricWeights
from ocdspy.evaluate import Difference, paired_difference
from ocdspy.metric import COMPONENTS, score_prediction
from ocdspy.replay.run import RunResult
from ocdspy.replay.turns import ReplayTurn


class FilesScore(BaseModel):
    changed: list[str] = Field(default_factory=list, description="Files the run changed.")
    precision: float
    recall: float
    f1: float


class RunScore(BaseModel):
    score: float = Field(description="The weighted metric, 0-100; 0 unless the run was ok.")
    components: dict[str, float] = Field(description="Each component, 0-100.")
    files: FilesScore


def files_score(recorded: Sequence[str], changed: Sequence[str]) -> FilesScore:
    """Precision and recall of the changed files; both empty counts as a perfect match."""
    gold, got = set(recorded), set(changed)
    if not gold and not got:
        return FilesScore(changed=[], precision=1.0, recall=1.0, f1=1.0)
    hit = len(gold & got)
    precision = hit / len(got) if got else 0.0
    recall = hit / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    return FilesScore(changed=sorted(got), precision=precision, recall=recall, f1=f1)


def score_run(
    turn: ReplayTurn, run: RunResult, changed: Sequence[str], weights: MetricWeights
) -> RunScore:
    gold = {"plan": [c.model_dump() for c in turn.calls], "response": turn.response}
    pred = {"plan": [c.model_dump() for c in run.calls], "response": run.response}
    scores = score_prediction(gold, pred)
    weighted = 100 * scores.weighted(weights) if run.status == "ok" else 0.0
    return RunScore(
        score=weighted,
        components={c: 100 * getattr(scores, c) for c in COMPONENTS},
        files=files_score(turn.changed_files, changed),
    )


def difference(
    baseline: Sequence[float],
    agent: Sequence[float],
    sessions: Sequence[str],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """agent - baseline over the same turns, with evaluate's session-bootstrap interval."""
    deltas = [a - b for a, b in zip(agent, baseline, strict=True)]
    return paired_difference(
        deltas, sessions, single_unit="turns", resamples=resamples, confidence=confidence, seed=seed
    )
