"""Shipped forms scored as they reach the built-in model (issue 8), on `examples/`.

    PYTHONPATH=src python benchmarks/bench_shipped.py [--threads 1] [--json out.json]

Converts `examples/data/raw` and splits it (val fraction 0.5, seed 0) into a temp dir, then
scores every held-out step through `ocdspy.shipped.score_agent` with `LocalModelCall`
(`opencode_chat.render_prompt` + the reply grammar), for three agents:

  (i)   neutral: a one-line agent body;
  (ii)  static: that body + 6 fixed training demos written by `select.render_demo`
        (step i of training example i, so they cover first call ... final answer);
  (iii) plugin: the neutral body + per step the plugin's demos, pool = every training step,
        k = 3.

Prints each score with its components, and the difference of (ii) and (iii) against (i) with
the 95% session-bootstrap interval (`shipped.compare`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ocdspy.convert import convert
from ocdspy.program.select import DEFAULT_INTRO, build_pool, render_demo
from ocdspy.shipped import LocalModelCall, ShippedScore, compare, default_tools, score_agent
from ocdspy.split import load_split, split

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL = "You are a coding agent. Use the tools to do the user's task, then answer briefly."


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        conv = convert([ROOT / "examples" / "data" / "raw"], Path(tmp) / "p")
        split(conv.examples_path, Path(tmp) / "s", train_fraction=0.5, seed=0)
        data = load_split(Path(tmp) / "s")
    train, val = data.train, data.val
    tools = default_tools([*train, *val])
    fixed = [(ex, min(i, len(ex.actions))) for i, ex in enumerate(train[:6])]
    static_body = (
        NEUTRAL + "\n\n" + DEFAULT_INTRO + "\n\n" + "\n\n".join(render_demo(e, s) for e, s in fixed)
    )
    pool = build_pool("bench", [(e, s) for e in train for s in range(len(e.actions) + 1)], k=3)
    steps = sum(len(e.actions) + 1 for e in val)
    print(
        f"examples/: {len(train)} train turns ({len(pool.demos)} steps in the pool), "
        f"{len(val)} held-out turns, {steps} held-out steps; tools offered: {', '.join(tools)}"
    )
    model = LocalModelCall(n_threads=args.threads)
    forms: dict[str, tuple[str, object]] = {
        "neutral": (NEUTRAL, None),
        "static (6 fixed demos)": (static_body, None),
        "plugin (pool, k=3)": (NEUTRAL, pool),
    }
    scores: dict[str, ShippedScore] = {}
    for name, (body, plugin) in forms.items():
        start = time.perf_counter()
        scores[name] = score_agent(
            body,
            val,
            lm_call=model,
            plugin_pool=plugin,  # type: ignore[arg-type]
            tools=tools,
        )
        s = scores[name]
        comps = ", ".join(f"{k} {v:.1f}" for k, v in s.components.items())
        print(
            f"{name:24} score {s.score:5.1f}  ({comps}; errors {s.errors}/{s.steps}; "
            f"{time.perf_counter() - start:.0f} s)"
        )
    base = scores["neutral"]
    out = {"scores": {k: v.model_dump() for k, v in scores.items()}, "differences": {}}
    for name in list(forms)[1:]:
        d = compare(base, scores[name])
        out["differences"][name] = d.model_dump()
        print(
            f"{name} - neutral: {d.mean:+.1f} points, 95% CI {d.ci_low:+.1f} to {d.ci_high:+.1f} "
            f"({d.unit} bootstrap, {'significant' if d.significant else 'not significant'})"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
