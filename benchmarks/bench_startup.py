"""Start-up cost of the light commands against the bare imports they cannot avoid.

    python benchmarks/bench_startup.py [--runs 15]

Target (issue 2): `ocdspy --help` and `ocdspy validate examples/…` within 1.5× of
`python -c "import typer, rich, pydantic, yaml"`, measured in the same run; medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_time(cmd: list[str], runs: int) -> float:
    env = {**os.environ, "NO_COLOR": "1"}
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    runs = ap.parse_args().runs
    py = sys.executable
    exe = str(Path(py).parent / "ocdspy")
    cases = {
        "baseline: import typer, rich, pydantic, yaml": [
            py,
            "-c",
            "import typer, rich, pydantic, yaml",
        ],
        "ocdspy --help": [exe, "--help"],
        "ocdspy validate examples/data/raw": [exe, "validate", "examples/data/raw"],
    }
    for cmd in cases.values():  # warm the OS file cache
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
    results = {name: median_time(cmd, runs) for name, cmd in cases.items()}
    base = next(iter(results.values()))
    print(f"| command | median of {runs} | ratio to baseline |")
    print("| --- | --- | --- |")
    for name, t in results.items():
        print(f"| `{name}` | {t * 1000:.0f} ms | {t / base:.2f}× |")
    heavy = subprocess.run(
        [py, "-X", "importtime", "-m", "ocdspy", "validate", "examples/data/raw"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    loaded = sorted(
        {
            line.rsplit("|", 1)[-1].strip()
            for line in heavy.splitlines()
            if line.rsplit("|", 1)[-1].strip() in ("dspy", "litellm", "llama_cpp")
        }
    )
    print(f"\nheavy modules imported by validate: {loaded or 'none'}")


if __name__ == "__main__":
    main()
