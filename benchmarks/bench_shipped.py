"""Shipped forms scored as they reach the built-in model (issue 8).

    PYTHONPATH=src python benchmarks/bench_shipped.py [--threads 1] [--rendering open-near]
        [--corpus benchmarks/corpus/exports] [--max-steps 120] [--k 3]
        [--static-tokens 1200 | --static-demos 6] [--pool-size N]
        [--forms neutral,static,plugin] [--json out.json]

Converts the sessions (default `examples/data/raw`; `--corpus DIR` for another tree of
sessions, e.g. the bench corpus) and splits them (val fraction 0.5, seed 0) into a temp dir,
then scores every held-out step through `ocdspy.shipped.score_agent` with `LocalModelCall`
(`opencode_chat.render_prompt` with `--rendering` + the reply grammar), for three agents:

  (i)   neutral: a one-line agent body;
  (ii)  static: that body + the training demos `ship.plan_static` chooses within
        `--static-tokens` (what export ships), or with `--static-demos N` the earlier rule,
        N fixed demos (step i of training example i);
  (iii) plugin: the neutral body + per step the plugin's demos from `ship.plan_pool` (every
        distinct training step, or `--pool-size`), k per step.

`--max-steps N` keeps whole held-out sessions, in an order fixed by a hash of their id, until
N steps are reached (the same steps for every form and rendering).

Prints each score with its components, and the difference of (ii) and (iii) against (i) with
the 95% session-bootstrap interval (`shipped.compare`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ocdspy.convert import Example, convert
from ocdspy.opencode_chat import DEFAULT_RENDERING, RENDERINGS
from ocdspy.program.select import DEFAULT_INTRO, DemoPool, render_demo
from ocdspy.program.ship import plan_pool, plan_static
from ocdspy.shipped import LocalModelCall, ShippedScore, compare, default_tools, score_agent
from ocdspy.split import load_split, split

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL = "You are a coding agent. Use the tools to do the user's task, then answer briefly."
FORMS = ("neutral", "static", "plugin")


def steps_of(examples: Sequence[Example]) -> int:
    return sum(len(e.actions) + 1 for e in examples)


def cap_sessions(val: Sequence[Example], max_steps: int | None) -> list[Example]:
    """Whole sessions, in the order of a hash of their id, until `max_steps` steps are reached;
    the examples kept stay in their split order."""
    if max_steps is None:
        return list(val)
    sessions = sorted(
        {e.session_id for e in val}, key=lambda s: hashlib.sha256(s.encode()).digest()
    )
    kept: set[str] = set()
    total = 0
    for sid in sessions:
        n = steps_of([e for e in val if e.session_id == sid])
        if total and total + n > max_steps:
            continue
        kept.add(sid)
        total += n
    return [e for e in val if e.session_id in kept]


def load_data(corpus: Path, max_steps: int | None) -> tuple[list[Example], list[Example]]:
    with tempfile.TemporaryDirectory() as tmp:
        conv = convert([corpus], Path(tmp) / "p")
        split(conv.examples_path, Path(tmp) / "s", train_fraction=0.5, seed=0)
        data = load_split(Path(tmp) / "s")
    return list(data.train), cap_sessions(data.val, max_steps)


def agents(
    train: Sequence[Example],
    k: int,
    static_demos: int | None,
    static_tokens: int,
    pool_size: int | None,
) -> dict[str, tuple[str, DemoPool | None]]:
    if static_demos is not None:
        fixed = [(ex, min(i, len(ex.actions))) for i, ex in enumerate(train[:static_demos])]
    else:
        fixed = plan_static(train, budget_tokens=static_tokens)
    static_body = (
        NEUTRAL + "\n\n" + DEFAULT_INTRO + "\n\n" + "\n\n".join(render_demo(e, s) for e, s in fixed)
    )
    pool = plan_pool("bench", train, k=k, size=pool_size)
    return {
        "neutral": (NEUTRAL, None),
        "static": (static_body, None),
        "plugin": (NEUTRAL, pool),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rendering", choices=list(RENDERINGS), default=DEFAULT_RENDERING)
    ap.add_argument("--corpus", type=Path, default=ROOT / "examples" / "data" / "raw")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--k", type=int, default=3, help="plugin demos per step")
    ap.add_argument("--static-demos", type=int, default=None, help="fixed demos (old rule)")
    ap.add_argument("--static-tokens", type=int, default=1200, help="plan_static's budget")
    ap.add_argument("--pool-size", type=int, default=None, help="default: derived")
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    forms = [f for f in args.forms.split(",") if f]
    if "neutral" not in forms or any(f not in FORMS for f in forms):
        ap.error(f"--forms: a comma list of {', '.join(FORMS)}, with neutral")

    train, val = load_data(args.corpus, args.max_steps)
    tools = default_tools([*train, *val])
    built = agents(train, args.k, args.static_demos, args.static_tokens, args.pool_size)
    static = (
        f"{args.static_demos} fixed static demos"
        if args.static_demos is not None
        else f"static demos within {args.static_tokens} tokens "
        f"({built['static'][0].count('<example>')} demos)"
    )
    pool = built["plugin"][1]
    print(
        f"{args.corpus.name}: {len(train)} train turns ({steps_of(train)} steps in the pool), "
        f"{len(val)} held-out turns in {len({e.session_id for e in val})} sessions, "
        f"{steps_of(val)} held-out steps; rendering {args.rendering}, k={args.k}, "
        f"pool {len(pool.demos) if pool else 0} demos, {static}; tools offered: {', '.join(tools)}"
    )
    model = LocalModelCall(n_threads=args.threads, rendering=args.rendering)
    scores: dict[str, ShippedScore] = {}
    for name in forms:
        body, plugin = built[name]
        start = time.perf_counter()
        scores[name] = s = score_agent(body, val, lm_call=model, plugin_pool=plugin, tools=tools)
        comps = ", ".join(f"{k} {v:.1f}" for k, v in s.components.items())
        answers = sum(r.output.startswith("finish") for r in s.results)
        print(
            f"{name:8} score {s.score:5.1f}  ({comps}; answers {answers}/{s.steps}; "
            f"errors {s.errors}; {time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    out: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    out["scores"] = {k: v.model_dump() for k, v in scores.items()}
    diffs = {}
    for name in forms[1:]:
        d = compare(scores["neutral"], scores[name])
        diffs[name] = d.model_dump()
        print(
            f"{name} - neutral: {d.mean:+.1f} points, 95% CI {d.ci_low:+.1f} to {d.ci_high:+.1f} "
            f"({d.unit} bootstrap, {'significant' if d.significant else 'not significant'})"
        )
    out["differences"] = diffs
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
