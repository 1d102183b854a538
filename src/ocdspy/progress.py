"""Progress of long work, reported as plain events that the caller draws (the core never draws).

A caller passes a `Reporter`: `stage(name)` says a pipeline stage begins, `step(Step)` says how
far one part of the current stage's work is. `ocdspy.cli` draws these as Rich bars on stderr; a
notebook can pass any object with the two methods.

The stages' own callbacks keep their simple shapes (`optimize(on_progress=...)` takes an event
per scored prediction, `evaluate(on_progress=...)` takes `(side, done, total)`, `collect` takes
`(done, total)`); `on_trials`, `on_examples` and `on_sessions` adapt a `Reporter` to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Step:
    """How far one part of a stage's work is: `done` of `total` `unit`s (`total` is None while
    it is not known). `task` names the part ("baseline", "MIPROv2"); `detail` is a short note
    that changes as it runs ("3 candidate(s) · best 61.0")."""

    task: str
    done: int
    total: int | None
    unit: str = ""
    detail: str = ""


class Reporter(Protocol):
    def stage(self, name: str) -> None:
        """A pipeline stage begins; the steps reported after it belong to it."""

    def step(self, step: Step) -> None:
        """Part of the current stage's work advanced."""


class Silent:
    """A `Reporter` that shows nothing: the default where no one watches."""

    def stage(self, name: str) -> None:
        pass

    def step(self, step: Step) -> None:
        pass


class TrialScores(Protocol):
    """What `ocdspy.optimize` reports per scored prediction (its `ProgressEvent`)."""

    @property
    def metric_calls(self) -> int: ...
    @property
    def planned_metric_calls(self) -> int: ...
    @property
    def candidates(self) -> int: ...
    @property
    def best_score(self) -> float | None: ...


def trials_step(optimizer: str, scores: TrialScores) -> Step:
    """An optimizer's progress: predictions scored of those planned, candidates, best score."""
    best = "" if scores.best_score is None else f" · best {scores.best_score:.1f}"
    return Step(
        task=optimizer,
        done=scores.metric_calls,
        total=scores.planned_metric_calls or None,
        unit="scored",
        detail=f"{scores.candidates} candidate(s){best}",
    )


def on_trials(reporter: Reporter, optimizer: str) -> Callable[[TrialScores], None]:
    """`optimize`'s `on_progress`, reporting each scored prediction to `reporter`."""
    return lambda scores: reporter.step(trials_step(optimizer, scores))


def on_examples(reporter: Reporter) -> Callable[[str, int, int], None]:
    """`evaluate`'s `on_progress`: one part per side (baseline, optimized), examples run."""
    return lambda side, done, total: reporter.step(Step(task=side, done=done, total=total))


def on_sessions(reporter: Reporter, task: str) -> Callable[[int, int], None]:
    """`collect`'s `on_progress`: sessions copied out of the store."""
    return lambda done, total: reporter.step(Step(task=task, done=done, total=total))
