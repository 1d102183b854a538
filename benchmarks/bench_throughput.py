"""validate + convert throughput against bare `orjson.loads` (the parse floor), and peak memory
as the corpus doubles.

    python benchmarks/bench_throughput.py [--mb 200] [--runs 3]

Writes corpora with gen_sessions.py under benchmarks/.work/ (reused when present). Each timed
stage runs in a fresh process, as a user runs it; peak memory is that process's max RSS.
Targets (issue 2): throughput of validate+convert ≥ 50% of orjson's; peak memory of the
doubled corpus within 20% of the single one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gen_sessions import generate

WORK = Path(__file__).parent / ".work"

STAGE = r"""
import json, resource, sys, time
from pathlib import Path
stage, corpus, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t = time.perf_counter()
if stage == "orjson":
    import orjson
    for f in sorted(corpus.glob("*.json")):
        orjson.loads(f.read_bytes())
elif stage == "validate":
    from ocdspy.validate import validate
    validate([corpus], min_examples=1)
elif stage == "convert":
    from ocdspy.convert import convert
    convert([corpus], out, force=True)
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_stage(stage: str, corpus: Path) -> dict[str, float]:
    r = subprocess.run(
        [sys.executable, "-c", STAGE, stage, str(corpus), str(WORK / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout)


def corpus(mb: float, seed: int) -> tuple[Path, int]:
    d = WORK / f"corpus-{int(mb)}mb"
    marker = d / ".done"
    if not marker.exists():
        generate(d, mb, seed)
        marker.write_text("ok")
    size = sum(f.stat().st_size for f in d.glob("*.json"))
    return d, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    big, big_size = corpus(a.mb, 0)
    half, half_size = corpus(a.mb / 2, 0)
    rows = {}
    for stage in ("orjson", "validate", "convert"):
        runs = [run_stage(stage, big) for _ in range(a.runs)]
        rows[stage] = (
            statistics.median(r["seconds"] for r in runs),
            max(r["peak_mb"] for r in runs),
        )
    mb = big_size / 1e6
    floor = rows["orjson"][0]
    print(f"corpus: {mb:.0f} MB, {len(list(big.glob('*.json')))} files; median of {a.runs}")
    print("| stage | seconds | MB/s | throughput vs orjson | peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    for stage, (sec, peak) in rows.items():
        print(f"| {stage} | {sec:.2f} | {mb / sec:.0f} | {floor / sec:.0%} | {peak:.0f} MB |")
    both = rows["validate"][0] + rows["convert"][0]
    print(f"| validate + convert | {both:.2f} | {mb / both:.0f} | {floor / both:.0%} | |")

    peaks = {}
    for name, d in (("half", half), ("full", big)):
        peaks[name] = max(run_stage("convert", d)["peak_mb"] for _ in range(2))
    print(
        f"\npeak RSS of convert: {half_size / 1e6:.0f} MB corpus {peaks['half']:.0f} MB, "
        f"{big_size / 1e6:.0f} MB corpus {peaks['full']:.0f} MB "
        f"(growth {peaks['full'] / peaks['half'] - 1:+.0%} for 2× the data)"
    )


if __name__ == "__main__":
    main()
