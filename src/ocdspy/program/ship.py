"""What ships beside the optimized instructions: the agent body's static demos and the plugin's
demo pool, both chosen from the training split (never the validation split), and the small
search that tunes how many of them to show by scoring the shipped forms on training steps.

The rules (each a function below):

- **pool** (`plan_pool`): every step of every training turn (final answers included), the
  program's own demos first; made safe like any pool (`select.build_safe_pool`: redacted,
  sanitized, injections dropped); a demo whose text is identical to an earlier one is kept
  once. Its size, unless `optimization.pool_size` sets it, follows from the data: every
  distinct step, up to `MAX_POOL_DEMOS` demos and `MAX_POOL_CHARS` characters of demo text
  (the pool file stays about a megabyte or less).
- **static demos** (`plan_static`): the steps of the training turns grouped by the point of a
  turn they stand at (`TURN_POINTS`: first call, after a read, after an edit, after a failing
  check, finishing). Within a point, the most representative step first: the one whose state
  the selection rule finds most like the others of its point (`select.score`), a program demo
  first on a tie. Then one per point in turn order, round after round, while the demos fit the
  token budget (characters / 4), a turn not yet shown preferred; shown in turn order.
- **search** (`search_plan`): scores a few choices on a sample of training turns with the
  target model exactly as they ship (`shipped.score_agent`), leave-one-session-out (a turn's own
  session never supplies its demos): the static budget among `BUDGET_FACTORS` of the setting,
  then the plugin's demos per step among `K_CHOICES`. The best wins; a choice within
  `TIE_POINTS` of the best that is cheaper (fewer tokens, fewer demos) wins over it.

Pure Python, no dspy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Final, Literal

from pydantic import BaseModel, Field

from ocdspy.convert import Example
from ocdspy.program.select import (
    DemoPool,
    PoolDemo,
    demo_from_example,
    score,
    state_from_example,
    step_injection,
)

Step = tuple[Example, int]
TURN_POINTS: Final = (
    "first call",
    "after a read",
    "after an edit",
    "after a failing check",
    "finishing",
)
READ_TOOLS: Final = frozenset({"read", "grep", "glob", "list", "codesearch", "webfetch"})
EDIT_TOOLS: Final = frozenset({"edit", "write", "multiedit", "apply_patch"})
MAX_POOL_DEMOS: Final = 400
MAX_POOL_CHARS: Final = 1_000_000
DEFAULT_STATIC_TOKENS: Final = 1200
# Steps compared with each other to find a point's most representative one (pairwise cost).
RANKED_PER_POINT: Final = 200
K_CHOICES: Final = (2, 3, 4)
BUDGET_FACTORS: Final = (0.5, 1.0, 1.5)
TIE_POINTS: Final = 1.0
TRAINING_SIDE: Final = (
    "training-side: scored on training turns, leave-one-session-out; not a held-out score"
)


# ---------------------------------------------------------------------------------------------
# Steps and the points of a turn


def training_steps(train: Sequence[Example]) -> list[Step]:
    """Every step of every training turn: each call, then the final answer."""
    return [(ex, s) for ex in train for s in range(len(ex.actions) + 1)]


def turn_point(example: Example, step: int) -> str | None:
    """Where step `step` stands in its turn (one of `TURN_POINTS`), None for none of them."""
    if step >= len(example.actions):
        return "finishing"
    if step == 0:
        return "first call"
    last = example.actions[step - 1]
    if last.success is False and last.tool == "bash":
        return "after a failing check"
    if last.tool in EDIT_TOOLS:
        return "after an edit"
    if last.tool in READ_TOOLS:
        return "after a read"
    return None


def safe_distinct(steps: Sequence[Step]) -> list[tuple[Step, PoolDemo]]:
    """The steps whose demo is safe to show (no injection), each demo text once, in order."""
    seen: set[str] = set()
    out = []
    for ex, s in steps:
        if step_injection(ex, s) is not None:
            continue
        demo = demo_from_example(ex, s)
        if demo.text not in seen:
            seen.add(demo.text)
            out.append(((ex, s), demo))
    return out


# ---------------------------------------------------------------------------------------------
# The plugin's pool


def pool_cap(demos: Sequence[PoolDemo]) -> int:
    """How many of `demos` (in order) the derived pool keeps: up to `MAX_POOL_DEMOS` demos and
    `MAX_POOL_CHARS` characters of demo text."""
    chars = 0
    for n, demo in enumerate(demos[:MAX_POOL_DEMOS]):
        chars += len(demo.text)
        if chars > MAX_POOL_CHARS:
            return n
    return min(len(demos), MAX_POOL_DEMOS)


def plan_pool(
    agent: str,
    train: Sequence[Example],
    *,
    program_steps: Sequence[Step] = (),
    k: int = 3,
    size: int | None = None,
) -> DemoPool:
    """The plugin's pool from the training turns (module docstring, "pool"); `size` None
    derives it from the data (`pool_cap`)."""
    kept = safe_distinct([*program_steps, *training_steps(train)])
    demos = [demo for _, demo in kept]
    cap = size if size is not None else pool_cap(demos)
    return DemoPool(agent=agent, k=max(1, k), demos=demos[:cap])


# ---------------------------------------------------------------------------------------------
# The static demos


def tokens(text: str) -> int:
    """A token estimate good enough for a budget: four characters a token."""
    return math.ceil(len(text) / 4)


def _ranked(members: list[tuple[Step, PoolDemo, bool]]) -> list[tuple[Step, PoolDemo, bool]]:
    """A point's steps, most representative first (module docstring), program demos first on
    a tie, then in their order."""
    head = members[:RANKED_PER_POINT]
    states = [state_from_example(*step) for step, _, _ in head]

    def likeness(i: int) -> float:
        total = 0.0
        for j, other in enumerate(states):
            if j != i:
                s, inter, union = score(states[i], other)
                total += s + inter / union
        return total

    order = sorted(range(len(head)), key=lambda i: (-likeness(i), not head[i][2], i))
    return [head[i] for i in order] + members[RANKED_PER_POINT:]


def plan_static(
    train: Sequence[Example],
    *,
    program_steps: Sequence[Step] = (),
    budget_tokens: int = DEFAULT_STATIC_TOKENS,
) -> list[Step]:
    """The agent body's demos (module docstring, "static demos"), in turn order."""
    program_ids = {demo_from_example(*s).id for s in program_steps}
    by_point: dict[str, list[tuple[Step, PoolDemo, bool]]] = {p: [] for p in TURN_POINTS}
    for step, demo in safe_distinct([*program_steps, *training_steps(train)]):
        point = turn_point(*step)
        if point is not None:
            by_point[point].append((step, demo, demo.id in program_ids))
    queues = {p: _ranked(members) for p, members in by_point.items()}
    chosen: dict[str, list[Step]] = {p: [] for p in TURN_POINTS}
    shown: set[str] = set()
    left = budget_tokens
    added = True
    while added:
        added = False
        for point in TURN_POINTS:
            fits = [m for m in queues[point] if tokens(m[1].text) <= left]
            pick = next((m for m in fits if m[0][0].id not in shown), fits[0] if fits else None)
            if pick is None:
                continue
            queues[point].remove(pick)
            chosen[point].append(pick[0])
            shown.add(pick[0][0].id)
            left -= tokens(pick[1].text)
            added = True
    return [step for point in TURN_POINTS for step in chosen[point]]


# ---------------------------------------------------------------------------------------------
# The search


class ShipCandidate(BaseModel):
    form: Literal["static", "plugin"]
    setting: str = Field(description="static_demo_tokens or demos_shown (k).")
    value: int
    score: float = Field(description="Training-side score, 0-100.")
    steps: int


class ShipPlan(BaseModel):
    """How the shipped forms are built: the static budget, the plugin's k and pool size, and,
    when searched, the training-side scores the choice was made on."""

    k: int = Field(3, ge=1, description="Plugin demos shown per step.")
    static_tokens: int = Field(DEFAULT_STATIC_TOKENS, ge=0)
    pool_size: int | None = Field(None, description="None: derived from the data.")
    searched: bool = False
    sample_turns: int = 0
    sample_steps: int = 0
    candidates: list[ShipCandidate] = Field(default_factory=list)
    note: str = ""


# (agent body for these static demos, held-out turns, pool or None) -> one score per step
Scorer = Callable[[str, Sequence[Example], DemoPool | None], list[float]]


def search_sample(train: Sequence[Example], max_steps: int) -> list[Example]:
    """Whole training turns, sessions in the order of a hash of their id, until `max_steps`
    steps (at least one turn); empty when the training split holds fewer than 2 sessions."""
    sessions = sorted(
        {e.session_id for e in train}, key=lambda s: hashlib.sha256(s.encode()).digest()
    )
    if len(sessions) < 2 or max_steps <= 0:
        return []
    kept: list[Example] = []
    total = 0
    for sid in sessions:
        for ex in (e for e in train if e.session_id == sid):
            n = len(ex.actions) + 1
            if kept and total + n > max_steps:
                continue
            kept.append(ex)
            total += n
    return kept


def _best(candidates: Sequence[ShipCandidate]) -> ShipCandidate:
    """The best score; among those within `TIE_POINTS` of it, the cheapest (smallest value)."""
    top = max(c.score for c in candidates)
    return min((c for c in candidates if c.score >= top - TIE_POINTS), key=lambda c: c.value)


def search_plan(
    train: Sequence[Example],
    base: ShipPlan,
    *,
    body_for: Callable[[list[Step]], str],
    scorer: Scorer,
    max_steps: int,
    program_steps: Sequence[Step] = (),
) -> ShipPlan:
    """`base` with the static budget and the plugin's k chosen on training turns (module
    docstring, "search"); `base` unchanged (with a note) when there is nothing to search on."""
    sample = search_sample(train, max_steps)
    if not sample:
        return base.model_copy(update={"note": "no search: fewer than 2 training sessions"})
    loo = _LeaveOneOut(train, sample, program_steps, body_for, scorer, base.pool_size)
    budgets = sorted({max(0, round(base.static_tokens * f)) for f in BUDGET_FACTORS})
    statics = [loo.candidate("static", "static_demo_tokens", b, b, None) for b in budgets]
    budget = _best(statics).value
    plugins = [loo.candidate("plugin", "demos_shown", k, budget, k) for k in K_CHOICES]
    return base.model_copy(
        update={
            "static_tokens": budget,
            "k": _best(plugins).value,
            "searched": True,
            "sample_turns": len(sample),
            "sample_steps": sum(len(e.actions) + 1 for e in sample),
            "candidates": [*statics, *plugins],
            "note": TRAINING_SIDE,
        }
    )


class _LeaveOneOut:
    """Scores a choice on the sample, each session's turns with demos from the others only."""

    def __init__(
        self,
        train: Sequence[Example],
        sample: Sequence[Example],
        program_steps: Sequence[Step],
        body_for: Callable[[list[Step]], str],
        scorer: Scorer,
        pool_size: int | None,
    ) -> None:
        self.train, self.program_steps = train, program_steps
        self.body_for, self.scorer, self.pool_size = body_for, scorer, pool_size
        self.sessions: dict[str, list[Example]] = {}
        for ex in sample:
            self.sessions.setdefault(ex.session_id, []).append(ex)
        self._pools: dict[str, DemoPool] = {}

    def _others(self, sid: str) -> tuple[list[Example], list[Step]]:
        others = [e for e in self.train if e.session_id != sid]
        return others, [s for s in self.program_steps if s[0].session_id != sid]

    def candidate(
        self,
        form: Literal["static", "plugin"],
        setting: str,
        value: int,
        budget: int,
        k: int | None,
    ) -> ShipCandidate:
        scores: list[float] = []
        for sid, turns in self.sessions.items():
            others, program = self._others(sid)
            body = self.body_for(plan_static(others, program_steps=program, budget_tokens=budget))
            pool = None
            if k is not None:
                if sid not in self._pools:
                    self._pools[sid] = plan_pool(
                        "search", others, program_steps=program, size=self.pool_size
                    )
                pool = self._pools[sid].model_copy(update={"k": k})
            scores += self.scorer(body, turns, pool)
        mean = sum(scores) / len(scores) if scores else 0.0
        return ShipCandidate(
            form=form, setting=setting, value=value, score=round(mean, 2), steps=len(scores)
        )
