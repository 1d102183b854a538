"""`ocdspy collect` over a large OpenCode database, against a bare `SELECT data FROM part`.

    python benchmarks/bench_collect.py [--sessions 5000] [--parts 500000] [--runs 3]

Builds benchmarks/.work/opencode-<sessions>x<parts>.db (reused when present) by cloning the
rows of the real recorded database in tests/data/opencode/opencode.db: each generated session
strings together whole recorded turns (a user message and the assistant messages answering it,
with their parts) under fresh ids until it holds its share of the parts. Every measured stage
runs in a fresh process; peak memory is that process's max RSS.

Stages: `floor` reads every part's `data` column and nothing else (`SELECT data FROM part`);
`floor+parse` also decodes each one with `json.loads`; `collect` is a first collect into an empty
folder (read, map, write one file per session); `re-collect` runs it again with nothing new.
Memory is also measured on a database of a fifth of the size, to show it stays flat as the
database grows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
WORK = HERE / ".work"
RECORDED = HERE.parent / "tests" / "data" / "opencode" / "opencode.db"

STAGE = r"""
import json, resource, sqlite3, sys, time
from pathlib import Path
stage, db, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t = time.perf_counter()
rows = 0
if stage in ("floor", "floor+parse"):
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    cur = conn.execute("SELECT data FROM part")
    while batch := cur.fetchmany(1000):
        rows += len(batch)
        if stage == "floor+parse":
            for (data,) in batch:
                json.loads(data)
elif stage in ("collect", "re-collect"):
    from ocdspy.collect import collect
    res = collect(out, db=db)
    rows = len(res.written) if stage == "collect" else res.unchanged
elapsed = time.perf_counter() - t
print(json.dumps({"seconds": elapsed, "rows": rows,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


# ---------------------------------------------------------------------------------------------
# Building the database


def _recorded_turns(src: sqlite3.Connection) -> list[list[tuple[dict, list[str]]]]:
    """Every recorded turn: [(message data, [part data, ...]), ...], user message first."""
    turns: list[list[tuple[dict, list[str]]]] = []
    by_user: dict[str, list[tuple[dict, list[str]]]] = {}
    sessions = [r[0] for r in src.execute("SELECT id FROM session ORDER BY time_created, id")]
    for sid in sessions:
        for mid, data in src.execute(
            "SELECT id, data FROM message WHERE session_id = ? ORDER BY time_created, id", (sid,)
        ):
            info = json.loads(data)
            parts = [
                r[0]
                for r in src.execute(
                    "SELECT data FROM part WHERE message_id = ? ORDER BY id", (mid,)
                )
            ]
            if info.get("role") == "user":
                turn: list[tuple[dict, list[str]]] = [(info, parts)]
                turns.append(turn)
                by_user[mid] = turn
            elif info.get("parentID") in by_user:
                by_user[info["parentID"]].append((info, parts))
    return turns


def build_db(path: Path, sessions: int, parts: int) -> None:
    """A copy of the recorded database grown to `sessions` sessions holding `parts` parts."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(RECORDED)
    dst = sqlite3.connect(tmp)
    src.backup(dst)
    turns = _recorded_turns(src)
    template = dst.execute("SELECT * FROM session ORDER BY time_created LIMIT 1").fetchone()
    columns = [d[0] for d in dst.execute("SELECT * FROM session LIMIT 0").description]
    dst.execute("DELETE FROM part")
    dst.execute("DELETE FROM message")
    dst.execute("DELETE FROM session")
    dst.commit()
    dst.execute("PRAGMA journal_mode = WAL")
    dst.execute("PRAGMA synchronous = OFF")

    counter = 0
    t0 = 1_700_000_000_000
    per_session, extra = divmod(parts, sessions)
    placeholders = ", ".join("?" * len(columns))
    k = 0
    for s in range(sessions):
        sid = f"ses_bench{s:08d}"
        created = t0 + s * 60_000
        row = dict(zip(columns, template, strict=True))
        row.update(
            id=sid,
            slug=f"bench-{s}",
            title=f"Benchmark session {s}",
            time_created=created,
            time_updated=created + 30_000,
            parent_id=None,
        )
        dst.execute(f"INSERT INTO session VALUES ({placeholders})", [row[c] for c in columns])
        want = per_session + (1 if s < extra else 0)
        have = 0
        stamp = created
        msg_rows, part_rows = [], []
        while have < want:
            turn = turns[k % len(turns)]
            k += 1
            user_id = None
            for info, pdata in turn:
                counter += 1
                mid = f"msg_bench{counter:012d}"
                info = dict(info)
                if info.get("role") == "user":
                    user_id = mid
                else:
                    info["parentID"] = user_id
                stamp += 1  # messages in the order they were written
                msg_rows.append((mid, sid, stamp, stamp, json.dumps(info)))
                for data in pdata[: want - have]:
                    counter += 1
                    part_rows.append((f"prt_bench{counter:012d}", mid, sid, stamp, stamp, data))
                    have += 1
                if have >= want:
                    break
        dst.executemany(
            "INSERT INTO message (id, session_id, time_created, time_updated, data) "
            "VALUES (?, ?, ?, ?, ?)",
            msg_rows,
        )
        dst.executemany(
            "INSERT INTO part (id, message_id, session_id, time_created, "
            "time_updated, data) VALUES (?, ?, ?, ?, ?, ?)",
            part_rows,
        )
        if s % 500 == 499:
            dst.commit()
    dst.commit()
    dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    dst.execute("PRAGMA journal_mode = DELETE")
    dst.close()
    src.close()
    tmp.rename(path)


def database(sessions: int, parts: int) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"opencode-{sessions}x{parts}.db"
    if not path.exists():
        print(f"building {path.name} …", file=sys.stderr)
        build_db(path, sessions, parts)
    return path


# ---------------------------------------------------------------------------------------------
# Measuring


def run_stage(stage: str, db: Path, out: Path) -> dict[str, float]:
    r = subprocess.run(
        [sys.executable, "-c", STAGE, stage, str(db), str(out)], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{r.stderr}")
    return json.loads(r.stdout)


def measure(db: Path, runs: int) -> dict[str, tuple[float, float, int]]:
    out = WORK / "collect-out"
    rows: dict[str, tuple[float, float, int]] = {}
    results: dict[str, list[dict[str, float]]] = {
        "floor": [],
        "floor+parse": [],
        "collect": [],
        "re-collect": [],
    }
    for _ in range(runs):
        results["floor"].append(run_stage("floor", db, out))
        results["floor+parse"].append(run_stage("floor+parse", db, out))
        shutil.rmtree(out, ignore_errors=True)
        results["collect"].append(run_stage("collect", db, out))
        results["re-collect"].append(run_stage("re-collect", db, out))
    for stage, rs in results.items():
        rows[stage] = (
            statistics.median(r["seconds"] for r in rs),
            max(r["peak_mb"] for r in rs),
            int(rs[0]["rows"]),
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--parts", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    db = database(a.sessions, a.parts)
    small = database(a.sessions // 5, a.parts // 5)
    rows = measure(db, a.runs)
    size = db.stat().st_size / 1e6
    floor = rows["floor"][0]
    print(f"database: {a.sessions} sessions, {a.parts} parts, {size:.0f} MB; median of {a.runs}")
    print("| stage | rows | seconds | parts/s | vs floor | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for stage, (sec, peak, n) in rows.items():
        print(
            f"| {stage} | {n} | {sec:.2f} | {a.parts / sec:,.0f} | {sec / floor:.1f}× | "
            f"{peak:.0f} MB |"
        )
    small_rows = measure(small, 1)
    print(
        f"\npeak RSS of collect: {a.sessions // 5} sessions {small_rows['collect'][1]:.0f} MB, "
        f"{a.sessions} sessions {rows['collect'][1]:.0f} MB "
        f"(growth {rows['collect'][1] / small_rows['collect'][1] - 1:+.0%} for 5× the data)"
    )


if __name__ == "__main__":
    main()
