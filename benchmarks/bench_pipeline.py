"""The whole pipeline as a new user runs it (issue 8's targets; figures for BENCHMARKS.md).

    PYTHONPATH=src python benchmarks/bench_pipeline.py [--source corpus|examples]
        [--sessions 50] [--optimizer NAME] [--program plan] [--set KEY=VALUE ...]
        [--out DIR]

The setup the issue names for every figure:

- a fresh project from `ocdspy init`, with only the two `provider:` lines switched to `local`
  (the built-in model as target and teacher; every other setting is init's default unless a
  `--optimizer`, `--program` or `--set` says otherwise, and the output says so);
- the sessions copied into `data/raw`: `--source corpus` takes `--sessions` of the bench
  corpus's exported sessions (benchmarks/corpus/exports, every project, chosen by a hash of
  the file name so the choice is stable), `--source examples` takes examples/data/raw;
- `ocdspy pipeline` run once, cold (a fresh DSPy cache), in a subprocess; wall time and the
  maximum resident memory of the process tree come from `/usr/bin/time -v` when present;
- the scores are read back from what the pipeline wrote: the program's evaluate report and
  the agents report (untuned agent, static form, plugin form on the held-out steps, 95%
  session-bootstrap intervals).

Prints one JSON summary and one Markdown row; writes the summary to `--out/summary.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "benchmarks" / "corpus" / "exports"
EXAMPLES = REPO / "examples" / "data" / "raw"
_PROVIDER = re.compile(r"^(\s+provider:\s*)\S+(.*)$", re.M)


def _ocdspy() -> list[str]:
    return [sys.executable, "-m", "ocdspy"]


def pick_sessions(count: int) -> list[Path]:
    """`count` corpus session files spread over the projects, in a stable hashed order."""
    files = sorted(CORPUS.glob("*/*.json"), key=lambda p: hashlib.sha256(p.name.encode()).digest())
    return sorted(files[:count])


def make_project(root: Path, source: str, sessions: int) -> int:
    """`ocdspy init` + the two provider lines switched to local + the sessions. Returns how
    many session files were copied."""
    subprocess.run([*_ocdspy(), "init", str(root)], check=True, capture_output=True)
    config = root / "config.yaml"
    text, switched = _PROVIDER.subn(r"\g<1>local\g<2>", config.read_text())
    if switched != 2:
        raise SystemExit(f"expected two provider lines in {config}, found {switched}")
    config.write_text(text)
    raw = root / "data" / "raw"
    files = pick_sessions(sessions) if source == "corpus" else sorted(EXAMPLES.iterdir())
    for path in files:
        target = raw / (path.parent.name + "-" + path.name if source == "corpus" else path.name)
        shutil.copy2(path, target)
    return len(files)


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if args.program:
        env["OCDSPY_OPTIMIZATION__PROGRAM"] = args.program
    for item in args.set:
        key, _, value = item.partition("=")
        env["OCDSPY_" + key.upper().replace(".", "__")] = value
    return env


def run_pipeline(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, **_overrides(args)}
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [*_ocdspy(), "pipeline", "--config", str(root / "config.yaml")]
    if args.optimizer:
        cmd += ["--optimizer", args.optimizer]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    start = time.perf_counter()
    proc = subprocess.run([*timer, *cmd], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    (root / "pipeline.out").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return {
        "exit": proc.returncode,
        "seconds": round(seconds, 1),
        "max_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
        "stdout_tail": proc.stdout[-3000:],
        # Without the time report: what the pipeline said on stderr (warnings, the error).
        "stderr_tail": proc.stderr.split("\tCommand being timed")[0][-1500:],
    }


def _one(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_scores(root: Path) -> dict[str, Any]:
    reports = root / "outputs" / "reports"
    scores: dict[str, Any] = {}
    agents = sorted(reports.glob("agents-*.json"), key=lambda p: p.stat().st_mtime)
    if agents:
        report = json.loads(agents[-1].read_text())
        scores["held_out_steps"] = report["steps"]
        scores["held_out_turns"] = report["val_examples"]
        scores["untuned"] = report["baseline"]["score"]
        for agent in report["agents"]:
            diff = agent.get("difference") or {}
            scores[agent["form"]] = {
                "score": agent["score"],
                "difference": diff.get("mean"),
                "ci": [diff.get("ci_low"), diff.get("ci_high")],
                "components": agent["components"],
            }
    evaluations = [
        p for p in reports.glob("*.json") if not p.name.startswith(("agents-", "replay-"))
    ]
    if evaluations:
        ev = json.loads(max(evaluations, key=lambda p: p.stat().st_mtime).read_text())
        diff = ev.get("difference") or {}
        scores["program"] = {
            "baseline": (ev.get("baseline") or {}).get("score"),
            "optimized": (ev.get("optimized") or {}).get("score"),
            "difference": diff.get("mean"),
            "ci": [diff.get("ci_low"), diff.get("ci_high")],
            "steps": ev.get("examples_scored"),
            "seconds": ev.get("duration_s"),
        }
    meta = sorted((root / "outputs" / "prompts").glob("*.meta.json"))
    if meta:
        scores["export_meta"] = _one(meta[0])
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("corpus", "examples"), default="corpus")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--optimizer", default=None, help="default: init's (MIPROv2)")
    parser.add_argument("--program", choices=("plan", "next_action"), default=None)
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="ocdspy-bench-pipeline-"))
    out.mkdir(parents=True, exist_ok=True)
    root = out / "project"
    copied = make_project(root, args.source, args.sessions)
    run = run_pipeline(root, args)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "source": args.source,
        "session_files": copied,
        "optimizer": args.optimizer or "init default",
        "program": args.program or "init default",
        "set": args.set,
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
        **run,
        **read_scores(root),
        "project": str(root),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "export_meta"}, indent=2))
    return 0 if run["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
