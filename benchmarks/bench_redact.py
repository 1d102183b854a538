"""Secret redaction: kinds covered, leaks through the pipeline, false positives on ordinary text,
and throughput, each against the redaction of an earlier commit measured in the same run.

    python benchmarks/bench_redact.py [--baseline 8b39315] [--mb 20] [--runs 5]

- kinds: planted secrets of tests/secrets_corpus.py found by `find_secrets`.
- leaks: every planted value, once in tool arguments and once in a tool result of a session
  file, through convert -> split -> program JSON -> export; every file written is searched for
  every raw value (the check tests/test_secrets_corpus.py asserts).
- false positives: spans found in text that holds no secret: this project's Python files (less
  the few that plant secrets on purpose), `git log -p` of its sources, pytest output and the
  example sessions (less the one with a planted `.env`), per MB.
- throughput: redacting what `convert` redacts (tool results cut to 2,000 characters, as
  `result_max_chars` does, from a gen_sessions.py corpus of --mb MB), MB/s, median of --runs;
  and `convert` itself on that corpus with each redaction.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from gen_sessions import generate  # noqa: E402

from ocdspy import convert as convert_module  # noqa: E402
from ocdspy import redact  # noqa: E402
from ocdspy.export import export_agent  # noqa: E402
from ocdspy.split import split  # noqa: E402
from secrets_corpus import corpus, program_from, session_file  # noqa: E402

# Files that hold secrets on purpose (tests of redaction, fixtures): not ordinary text.
PLANTED = {
    "src/ocdspy/redact.py",
    "tests/test_redact.py",
    "tests/test_secrets_corpus.py",
    "tests/secrets_corpus.py",
    "tests/test_key_masking.py",
    "tests/test_convert.py",
    "tests/test_config.py",
    "tests/test_lm.py",
    "tests/test_export.py",
    "tests/test_evaluate.py",
    "tests/test_integrity.py",
    "benchmarks/gen_sessions.py",
    "examples/data/raw/07-check-mail-config.json",
}


def load_baseline(commit: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{commit}:src/ocdspy/redact.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "redact_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("redact_baseline", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["redact_baseline"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def ordinary_text() -> list[str]:
    texts = []
    for pattern in ("src/**/*.py", "tests/**/*.py", "benchmarks/*.py", "examples/data/raw/*.json"):
        for f in sorted(ROOT.glob(pattern)):
            if str(f.relative_to(ROOT)) not in PLANTED:
                texts.append(f.read_text(encoding="utf-8"))
    git = ["git", "log", "-p", "-n", "200", "--", "src", "README.md", "docs", "Makefile"]
    git += [f":!{p}" for p in PLANTED]
    texts.append(subprocess.run(git, cwd=ROOT, capture_output=True, text=True).stdout)
    pytest_out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-rA",
            "tests/test_split.py",
            "tests/test_metric.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    ).stdout
    texts.append(pytest_out)
    return texts


# Third-party code none of the rules were tuned on (a session that reads library code sees
# text like this), taken from the installed environment.
THIRD_PARTY = (
    "numpy",
    "jsonschema",
    "alembic",
    "mako",
    "s3transfer",
    "fsspec",
    "diskcache",
    "pygments",
    "aiohttp",
    "jinja2",
    "markdown_it",
    "packaging",
    "attr",
    "anyio",
    "h11",
)


def third_party_text() -> list[str]:
    site = Path(sysconfig.get_paths()["purelib"])
    return [
        f.read_text(encoding="utf-8", errors="replace")
        for name in THIRD_PARTY
        for f in sorted((site / name).rglob("*.py"))
    ]


def count_spans(mod: ModuleType, texts: list[str]) -> int:
    return sum(len(mod.find_secrets(t)) for t in texts)


def pipeline_leaks(work: Path, funcs: tuple[Any, Any]) -> tuple[int, int]:
    """(leaks, files written) with convert using these redaction functions."""
    planted = corpus()
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    for i, p in enumerate(planted):
        session_file(raw / f"s{i:03d}.json", i, p)
    convert_module.redact_text, convert_module.redact_value = funcs
    try:
        convert_module.convert([raw], work / "data" / "processed")
        split(work / "data/processed/examples.jsonl", work / "data/splits", train_fraction=0.5)
        program = program_from(work / "data/splits/train.jsonl", work / "program.json")
        try:
            export_agent(program, work / "prompts", target_provider="ollama", target_model="m")
        except Exception as e:  # the old check may refuse; what was written still counts
            print(f"  (export refused: {str(e)[:80]})")
    finally:
        convert_module.redact_text, convert_module.redact_value = (
            redact.redact_text,
            redact.redact_value,
        )
    files = [f for f in work.rglob("*") if f.is_file() and raw not in f.parents]
    leaks = sum(
        1
        for f in files
        for p in planted
        if p.secret in (text := f.read_text(encoding="utf-8")) or json.dumps(p.secret)[1:-1] in text
    )
    return leaks, len(files)


def redaction_sample(mb: float) -> tuple[list[str], Path]:
    d = ROOT / "benchmarks" / ".work" / f"corpus-{int(mb)}mb"
    if not (d / ".done").exists():
        generate(d, mb, 0)
        (d / ".done").write_text("ok")
    strings: list[str] = []
    for f in sorted(d.glob("*.json")):
        for turn in json.loads(f.read_text())["examples"]:
            strings.append(turn["input"]["task"])
            for a in turn["actions"]:
                strings.extend(v for v in a["args"].values() if isinstance(v, str))
                strings.append(str(a.get("result") or "")[:2256])
    return strings, d


def time_redaction(mod: ModuleType, strings: list[str], runs: int) -> float:
    size = sum(len(s) for s in strings) / 1e6
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for s in strings:
            mod.redact_text(s)
        times.append(time.perf_counter() - t)
    return size / statistics.median(times)


def time_convert(corpus_dir: Path, funcs: tuple[Any, Any], runs: int) -> float:
    size = sum(f.stat().st_size for f in corpus_dir.glob("*.json")) / 1e6
    convert_module.redact_text, convert_module.redact_value = funcs
    times = []
    try:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as out:
                t = time.perf_counter()
                convert_module.convert([corpus_dir], Path(out), force=True)
                times.append(time.perf_counter() - t)
    finally:
        convert_module.redact_text, convert_module.redact_value = (
            redact.redact_text,
            redact.redact_value,
        )
    return size / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="8b39315", help="commit whose redaction is compared")
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    old = load_baseline(a.baseline)
    sides = {"baseline": old, "current": redact}
    planted = corpus()
    kinds = len({p.kind for p in planted})
    texts = ordinary_text()
    text_mb = sum(len(t.encode()) for t in texts) / 1e6
    strings, corpus_dir = redaction_sample(a.mb)
    sample_mb = sum(len(s) for s in strings) / 1e6
    print(f"corpus: {kinds} kinds; ordinary text: {text_mb:.2f} MB; redaction sample: "
          f"{sample_mb:.1f} MB, {len(strings)} strings, from {a.mb:g} MB of sessions")  # fmt: skip
    library = third_party_text()
    library_mb = sum(len(t.encode()) for t in library) / 1e6
    print(f"third-party code: {library_mb:.1f} MB from {len(THIRD_PARTY)} installed packages")
    print("| redaction | kinds found | leaks (files) | false positives (per MB) "
          "| on third-party code (per MB) | redaction MB/s | convert MB/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, mod in sides.items():
        found = sum(1 for p in planted if p.secret not in mod.redact_text(p.text))
        with tempfile.TemporaryDirectory() as work:
            leaks, files = pipeline_leaks(Path(work), (mod.redact_text, mod.redact_value))
        fp = count_spans(mod, texts)
        lib_fp = count_spans(mod, library)
        speed = time_redaction(mod, strings, a.runs)
        conv = time_convert(corpus_dir, (mod.redact_text, mod.redact_value), max(1, a.runs // 2))
        print(f"| {name} | {found}/{kinds} | {leaks} ({files}) | {fp} ({fp / text_mb:.1f}) "
              f"| {lib_fp} ({lib_fp / library_mb:.1f}) | {speed:.1f} | {conv:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
