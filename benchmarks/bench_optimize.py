"""Benchmarks of the optimize and evaluate stages (figures for BENCHMARKS.md).

    python benchmarks/bench_optimize.py quality [--optimizers BootstrapFewShot MIPROv2 GEPA]
                                                [--mode next_action] [--train-split 0.5]
    python benchmarks/bench_optimize.py threads [--latency 0.2] [--threads 1 4]
    python benchmarks/bench_optimize.py warm    [--optimizer BootstrapFewShot]

quality: the built-in local model (SmolLM2-135M, llama.cpp) on the recorded sessions in
  examples/data/raw, re-split by session (`--train-split`): for each optimizer, optimize on the
  training sessions, then `evaluate` baseline vs optimized on the held-out sessions. Prints the
  scores, the interval, LM calls and wall time per optimizer.
threads: an OpenAI-compatible scripted server on 127.0.0.1 that answers after `--latency`
  seconds; `evaluate` with num_threads 1 and 4, cache off (a fresh cache each run).
warm: runs `optimize` twice with unchanged inputs and reports the second run's new LM calls.

Each command writes its JSON summary to --out (default: a temp dir) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _settings(out: Path, *, mode: str, optimizer: str, train_split: float, seed: int = 0) -> Any:
    from ocdspy.config import load_settings
    from ocdspy.convert import convert
    from ocdspy.split import split

    s = load_settings(EXAMPLES / "config.yaml").settings
    processed = out / "processed"
    convert([EXAMPLES / "data" / "raw"], processed)
    split(processed / "examples.jsonl", out / "splits", train_fraction=train_split, seed=seed)
    s.data.splits_dir = out / "splits"
    s.outputs.dir = out / "outputs"
    s.outputs.cache_dir = out / "cache"
    s.optimization.program = mode  # type: ignore[assignment]
    s.optimization.optimizer = optimizer  # type: ignore[assignment]
    return s


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from ocdspy.evaluate import evaluate
    from ocdspy.lm.runtime import build_lms
    from ocdspy.optimize import optimize

    rows = []
    for name in args.optimizers:
        s = _settings(args.out, mode=args.mode, optimizer=name, train_split=args.train_split)
        s.optimization.auto_mode = args.auto
        s.optimization.num_trials = args.trials
        s.optimization.max_bootstrapped_demos = args.bootstrapped
        s.optimization.max_labeled_demos = args.labeled
        lms = build_lms(s)
        t0 = time.monotonic()
        res = optimize(s, lms=lms, demos_shown=args.demos_shown)
        t_opt = time.monotonic() - t0
        t0 = time.monotonic()
        ev = evaluate(s, res.name, lms=lms)
        t_eval = time.monotonic() - t0
        r = ev.report
        rec = res.record
        assert rec is not None
        row = {
            "optimizer": name,
            "mode": args.mode,
            "train_examples": rec.train_examples,
            "selection_examples": rec.selection_examples,
            "val_examples": r.examples_scored,
            "baseline": r.baseline.score,
            "optimized": r.optimized.score,
            "difference": r.difference.mean,
            "ci": [r.difference.ci_low, r.difference.ci_high],
            "components_baseline": r.baseline.components,
            "components_optimized": r.optimized.components,
            "optimize_lm_calls": sum(u.calls for u in rec.lm_usage),
            "optimize_new_lm_calls": sum(u.calls - u.cached for u in rec.lm_usage),
            "optimize_wall_s": round(t_opt, 1),
            "evaluate_lm_calls": sum(u.calls for u in r.lm_usage),
            "evaluate_new_lm_calls": sum(u.calls - u.cached for u in r.lm_usage),
            "evaluate_wall_s": round(t_eval, 1),
            "trials": len(rec.trials),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"quality": rows}


def _schema_responder() -> Any:
    sys.path.insert(0, str(REPO / "tests"))
    from lm_fakes import fill  # type: ignore[import-not-found]
    from opencode_support.fake_openai import text  # type: ignore[import-not-found]

    def respond(body: dict[str, Any]) -> Any:
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
        value = (
            fill(schema, schema.get("$defs", {}), lambda v: v[0])
            if schema
            else {"tool": "read", "target": "README.md"}
        )
        return text(json.dumps(value))

    return respond


def threads(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from ocdspy.config import ModelSettings
    from ocdspy.evaluate import evaluate
    from ocdspy.lm.runtime import build_lms
    from ocdspy.optimize import optimize
    from opencode_support.fake_openai import FakeOpenAI, Faults  # type: ignore[import-not-found]

    rows = []
    with FakeOpenAI(_schema_responder(), faults=Faults(latency=args.latency)) as server:
        for n in args.threads:
            out = args.out / f"threads-{n}"
            s = _settings(
                out, mode="next_action", optimizer="BootstrapFewShot", train_split=args.train_split
            )
            model = ModelSettings(
                provider="openai_compatible",
                model="coder",
                api_base=server.base_url,
                timeout=30,
                num_retries=0,
            )
            s.models.target = model
            s.models.teacher = model
            s.optimization.num_threads = n
            lms = build_lms(s)
            optimize(s, lms=lms)
            before = len(server.requests)
            t0 = time.monotonic()
            ev = evaluate(s, lms=lms)
            wall = time.monotonic() - t0
            calls = len(server.requests) - before
            rows.append(
                {
                    "num_threads": n,
                    "requests": calls,
                    "wall_s": round(wall, 2),
                    "examples": ev.report.examples_scored,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup"] = round(base / r["wall_s"], 2) if r["wall_s"] else None
    return {"threads": rows, "latency_s": args.latency}


def warm(args: argparse.Namespace) -> dict[str, Any]:
    from ocdspy.lm.runtime import build_lms
    from ocdspy.optimize import optimize

    s = _settings(args.out, mode=args.mode, optimizer=args.optimizer, train_split=args.train_split)
    rows = []
    for run in (1, 2):
        lms = build_lms(s)
        t0 = time.monotonic()
        res = optimize(s, lms=lms)
        wall = time.monotonic() - t0
        assert res.record is not None
        u = res.record.lm_usage
        rows.append(
            {
                "run": run,
                "lm_calls": sum(x.calls for x in u),
                "new_lm_calls": sum(x.calls - x.cached for x in u),
                "wall_s": round(wall, 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {"warm": rows, "optimizer": args.optimizer}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--train-split", type=float, default=0.5)
    p.add_argument("--mode", default="next_action", choices=["plan", "next_action"])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--optimizers", nargs="+", default=["BootstrapFewShot", "MIPROv2", "GEPA"])
    q.add_argument("--auto", default="light")
    q.add_argument("--trials", type=int, default=6)
    q.add_argument("--bootstrapped", type=int, default=3)
    q.add_argument("--labeled", type=int, default=8)
    q.add_argument("--demos-shown", type=int, default=None)
    t = sub.add_parser("threads")
    t.add_argument("--latency", type=float, default=0.2)
    t.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    w = sub.add_parser("warm")
    w.add_argument("--optimizer", default="BootstrapFewShot")
    args = p.parse_args()
    if getattr(args, "auto", None) == "none":
        args.auto = None
    args.out = args.out or Path(tempfile.mkdtemp(prefix="bench-optimize-"))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"quality": quality, "threads": threads, "warm": warm}[args.cmd](args)
    (args.out / f"{args.cmd}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
