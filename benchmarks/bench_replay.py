"""The closed loop on the built-in model (issue 9): held-out turns of a recorded corpus re-run
in real OpenCode 1.18.33 through `ocdspy serve`, for the untuned agent, the tuned agent's static
form and its plugin form.

    PYTHONPATH=src python benchmarks/bench_replay.py [--store benchmarks/corpus/replay-store]
        [--record] [--limit 10] [--max-steps 6] [--timeout 60] [--threads 1] [--out DIR]

1. The store: OpenCode's own store (`opencode.db` + `snapshot/`) of 24 single-turn sessions
   on the three seed projects (one of each of 8 task kinds per project), recorded by
   `record_corpus.py --kinds ... --per-kind 1 --store DIR` with real OpenCode and the scripted
   model server. The checked-in copy is used unless `--record` (or it is missing).
2. The project, as a user builds it: `ocdspy init` with both providers switched to `local`
   (the built-in model as target and teacher), then `collect --db STORE/opencode.db`,
   `convert`, `split --train-split 0.5`, `optimize --optimizer BootstrapFewShot`, and `export`
   twice: `--name tuned-static --no-plugin` (the agent file alone) and `--name tuned-plugin`
   (the agent file with its demo plugin and pool beside it).
   When export wrote no plugin (it could not trace the program's demos to recorded steps),
   the plugin form gets a pool of every training step instead, and the summary says so.
3. `ocdspy.replay.replay` with no model, so it starts `ocdspy serve` with the built-in model
   itself (with `--threads` llama.cpp threads), on the first `--limit` held-out turns, with
   the untuned agent as the baseline (replay's default) and both tuned forms as agents.

Prints per agent: score, files F1, statuses, steps, wall time per turn, and the difference to
the untuned agent with its session-bootstrap 95% interval; writes the replay report under the
project's outputs/reports/ and a summary to `--out/summary.json`.
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO), str(REPO / "src")]

from tests.opencode_support.opencode_env import ensure_opencode  # noqa: E402
from tests.opencode_support.serve_threads import serve_threads  # noqa: E402

STORE = HERE / "corpus" / "replay-store"
KINDS = {"fix-bug", "explain", "search", "list-files", "run", "run-tests", "add-test", "diagnose"}
WORK_DIR = Path("/tmp/ocdspy-replay-work")  # the recorded sessions' folder (in the store)
_PROVIDER = re.compile(r"^(\s+provider:\s*)\S+(.*)$", re.M)


def record_store(store: Path) -> None:
    """Record the sessions and keep OpenCode's store in `store` (about 5 minutes)."""
    import record_corpus

    with tempfile.TemporaryDirectory(prefix="ocdspy-replay-corpus-") as tmp:
        out = Path(tmp)
        if WORK_DIR.exists():
            shutil.rmtree(WORK_DIR)
        WORK_DIR.mkdir(parents=True)
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        record_corpus.record(out, WORK_DIR, 8, None, 120, log, KINDS, per_kind=1, store=store)
        shutil.copy2(out / "manifest.json", store / "manifest.json")


def ocdspy(root: Path, *args: str) -> float:
    """Run `ocdspy ARGS` in `root` (this checkout's sources); its seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ocdspy", *args], cwd=root, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"ocdspy {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return round(time.perf_counter() - start, 1)


def usable_store(store: Path, copy: Path) -> Path:
    """A copy of `store` whose snapshot repositories git opens again. Git keeps no empty
    folder, so a checkout of the checked-in store lacks each snapshot repository's empty
    `refs/`, and without it git does not take the folder for a repository."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    for head in copy.glob("snapshot/*/*/HEAD"):
        (head.parent / "refs" / "heads").mkdir(parents=True, exist_ok=True)
        (head.parent / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    return copy


def build_project(root: Path, store: Path) -> dict[str, float]:
    """The project from the store to the exported agents; seconds per stage."""
    ocdspy(REPO, "init", str(root))
    config = root / "config.yaml"
    text, switched = _PROVIDER.subn(r"\g<1>local\g<2>", config.read_text())
    if switched != 2:
        raise SystemExit(f"expected two provider lines in {config}, found {switched}")
    config.write_text(text)
    return {
        "collect": ocdspy(root, "collect", "--db", str(store / "opencode.db")),
        "convert": ocdspy(root, "convert"),
        "split": ocdspy(root, "split", "--train-split", "0.5"),
        "optimize": ocdspy(root, "optimize", "--optimizer", "BootstrapFewShot"),
        "export": ocdspy(root, "export", "--name", "tuned-static", "--no-plugin")
        + ocdspy(root, "export", "--name", "tuned-plugin"),
    }


def ensure_plugin(root: Path) -> str:
    """Where the plugin form's pool comes from: export's (every distinct training step, paths
    relative to the project), or, when an older export wrote none, every training step as
    bench_shipped's plugin form has it, beside the same agent file."""
    from ocdspy.config import load_settings
    from ocdspy.layout import PLUGINS_DIR
    from ocdspy.plugin import write_plugin
    from ocdspy.program.select import build_pool
    from ocdspy.split import load_split

    plugins = root / "outputs" / "prompts" / PLUGINS_DIR
    if (plugins / "ocdspy-tuned-plugin.pool.json").is_file():
        pool = json.loads((plugins / "ocdspy-tuned-plugin.pool.json").read_text())
        return f"export's ({len(pool['demos'])} demos, {pool['k']} per step)"
    settings = load_settings(root / "config.yaml", cwd=root).settings
    train = load_split(root / "data" / "splits").train
    steps = [(ex, i) for ex in train for i in range(len(ex.actions) + 1)]
    pool = build_pool("tuned-plugin", steps, k=settings.optimization.demos_shown)
    write_plugin(plugins, "tuned-plugin", pool)
    return f"every training step ({len(pool.demos)} demos): export wrote no plugin"


def run_replay(root: Path, store: Path, args: argparse.Namespace) -> tuple[Any, float, int]:
    """(the replay result, its seconds, how many requests serve answered)."""
    from ocdspy.config import load_settings
    from ocdspy.replay import replay

    prompts = root / "outputs" / "prompts"
    binary = ensure_opencode()
    if binary is None:
        raise SystemExit("node/npm not found: cannot install OpenCode")
    settings = load_settings(root / "config.yaml", cwd=root).settings
    start = time.perf_counter()
    with serve_threads(args.threads) as served:
        result = replay(
            settings,
            agents=[prompts / "tuned-static.md", prompts / "tuned-plugin.md"],
            opencode=binary,
            db=store / "opencode.db",
            limit=args.limit,
            max_steps=args.max_steps,
            timeout=args.timeout,
            say=lambda line: print(line, file=sys.stderr, flush=True),
        )
    requests = sum(len(s.log) for s in served)
    return result, round(time.perf_counter() - start, 1), requests


def table(report: Any) -> str:
    lines = [
        "| agent | score | files F1 | ok/error/loop/step-cap/timeout | steps | wall s per turn "
        "| vs untuned, 95% CI |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    statuses = ("ok", "error", "loop", "step-cap", "timeout")
    for a in [report.baseline, *report.agents]:
        d = a.difference
        diff = "" if d is None else f"{d.mean:+.1f} ({d.ci_low:+.1f} to {d.ci_high:+.1f})"
        counts = "/".join(str(a.statuses.get(s, 0)) for s in statuses)
        lines.append(
            f"| {a.name} | {a.score:.1f} | {a.files_f1:.0f} | {counts} | {a.steps:.1f} "
            f"| {a.wall_s:.1f} | {diff} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--record", action="store_true", help="record the store again")
    parser.add_argument("--limit", type=int, default=10, help="held-out turns to replay")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=60, help="seconds per run")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads of serve")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.record or not (args.store / "opencode.db").is_file():
        record_store(args.store)
    out = args.out or Path(tempfile.mkdtemp(prefix="ocdspy-bench-replay-"))
    out.mkdir(parents=True, exist_ok=True)
    args.store = usable_store(args.store, out / "store")
    root = out / "project"
    load_before = os.getloadavg()
    stages = build_project(root, args.store)
    pool = ensure_plugin(root)
    result, seconds, requests = run_replay(root, args.store, args)
    report = result.report
    replayed = [t for t in report.turns if t.runs]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "stages_s": stages,
        "plugin_pool": pool,
        "replay_s": seconds,
        "turns": len(replayed),
        "not_replayed": [t.problem for t in report.turns if not t.runs],
        "runs": sum(len(t.runs) for t in replayed),
        "serve_requests": requests,
        "settings": {k: getattr(args, k) for k in ("limit", "max_steps", "timeout", "threads")},
        "agents": [a.model_dump(mode="json") for a in [report.baseline, *report.agents]],
        "report": str(result.markdown_path),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "agents"}, indent=2))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
