"""Record the bench corpus: real OpenCode 1.18.33 sessions on three seed projects.

    python benchmarks/record_corpus.py [--out benchmarks/corpus] [--seed 8] [--limit N]
    python benchmarks/record_corpus.py --check      # seed projects only, no OpenCode

The seed projects (benchmarks/corpus_projects.py: a Python library, a Node.js CLI, bash
scripts with a Makefile) are written into a work folder as git repositories. Every session is a
trajectory built from a task template and parameters (benchmarks/corpus_tasks.py), drawn with a
fixed seed. Before each session the project is reset to its seed commit and, where the task needs
it, a bug is injected and committed. The trajectory is played by the scripted model server of
tests/opencode_support/fake_openai.py while real OpenCode runs its real tools, one session after
the other, each `opencode run` under a timeout. Afterwards every session is exported with
`opencode export` into OUT/exports/<project>/<sessionID>.json, and OUT/manifest.json records what
each session is and whether the exit codes of its bash calls were the ones the trajectory expected.

`--store DIR` also keeps OpenCode's own store: DIR/opencode.db (one self-contained file) and
DIR/snapshot/ (the snapshot git repositories every turn's `step-start` points into), which is
what `ocdspy collect --db` and `ocdspy replay --db` read. `--per-kind N` records at most N
sessions of each task kind per project (with `--limit`: a small corpus of many kinds).

Needs node + npm (OpenCode is installed from npm once into ~/.cache/ocdspy-tests), ripgrep, git,
make and a python3 with pytest on PATH.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import corpus_tasks as ct  # noqa: E402
from corpus_projects import PROJECTS, Project  # noqa: E402
from tests.opencode_support.fake_openai import FakeOpenAI, Script, Step  # noqa: E402
from tests.opencode_support.opencode_env import (  # noqa: E402
    DEFAULT_VERSION,
    MODEL,
    data_dir,
    ensure_opencode,
    isolated_env,
    run_opencode,
)
from tests.opencode_support.record import copy_db  # noqa: E402

#: bash allowed except ``rm`` (denied) and ``git push`` ("ask": auto-rejected headless).
PERMISSION = {"bash": {"*": "allow", "rm *": "deny", "git push *": "ask"}, "edit": "allow"}
STYLES = ["plain", "plain", "plain", "cd", "workdir"]
FIX_VARIANTS = ["test-first", "read-first", "grep-first", "read-test-first", "bad-edit"]


# --------------------------------------------------------------------------- planning


def plan_project(pr: Project, root: Path, rng: random.Random) -> list[ct.Session]:
    """Every session of one project, in recording order."""
    out: list[ct.Session] = []

    def add(fn: Callable[..., ct.Session], *args: object) -> None:
        ctx = ct.Ctx(pr, root, rng, style=rng.choice(STYLES))
        s = fn(ctx, *args)
        s.expect = ctx.expect
        out.append(s)

    bugs = rng.sample(pr.bugs, len(pr.bugs))
    variants = rng.sample(FIX_VARIANTS, len(FIX_VARIANTS))
    funcs = rng.sample(pr.funcs, len(pr.funcs))
    cycle = lambda seq, i: seq[i % len(seq)]  # noqa: E731
    for i in range(9):
        add(ct.fix_bug, cycle(bugs, i), cycle(variants, i + i // len(variants)))
    for i in range(4):
        add(ct.add_test, cycle(funcs, i), "with-existing" if i % 2 else "source-only")
    for i, feat in enumerate(pr.features):
        add(ct.feature, feat, ["todo", "plain", "test-first", "plain"][i % 4])
    for i, (old, new) in enumerate(pr.renames[:3]):
        add(ct.rename, old, new, "parallel" if i % 2 else "sequential")
    for i in range(4):
        add(ct.explain, cycle(funcs, i + 4), ["read", "grep", "with-test", "read"][i])
    for i, variant in enumerate(["todos", "definition", "usages", "tests-for"]):
        add(ct.search, variant, cycle(funcs, i + 2).name)
    for variant in ["read-dir", "glob-source", "ls"]:
        add(ct.list_files, variant)
    add(ct.run_app, "wrong-then-right")
    add(ct.run_app, "direct")
    add(ct.run_tests, "wrong-then-right")
    for lb in pr.lint_bugs[:2]:
        add(ct.lint_fix, lb)
    add(ct.diagnose, cycle(bugs, 3))
    add(ct.fix_then_test_commit, cycle(bugs, 4), cycle(variants, 1))
    add(ct.tests_then_fix, cycle(bugs, 5))
    last = pr.renames[-1]
    add(ct.explain_then_rename, pr.func(last[0]), last[1])
    add(ct.subagent, cycle(funcs, 1), "explore")
    add(ct.subagent, cycle(funcs, 2), "general")
    add(ct.api_error, cycle(bugs, 6))
    add(ct.aborted, cycle(bugs, 7))
    add(ct.denied, "rm" if pr.name != "tally" else "push")
    return out


def plan(work: Path, seed: int) -> list[ct.Session]:
    rng = random.Random(seed)
    per_project = [plan_project(pr, work / pr.name, rng) for pr in PROJECTS]
    return [s for group in per_project for s in group]


# --------------------------------------------------------------------------- projects on disk


def git(root: Path, *args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


def make_project(pr: Project, root: Path, env: dict[str, str] | None = None) -> Path:
    """Write the seed project as a git repository with a tag ``seed``."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for rel, content in pr.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    git(root, "-c", "init.defaultBranch=main", "init", "-q", env=env)
    git(root, "add", "-A", env=env)
    git(root, "commit", "-qm", f"Initial import of {pr.name}", env=env)
    git(root, "tag", "seed", env=env)
    return root


def reset_project(root: Path, setup: dict[str, str], message: str, env: dict[str, str]) -> None:
    git(root, "reset", "-q", "--hard", "seed", env=env)
    git(root, "clean", "-qfdx", env=env)
    if setup:
        for rel, content in setup.items():
            (root / rel).write_text(content)
        git(root, "commit", "-qam", message or "Update", env=env)


# --------------------------------------------------------------------------- checking the seeds


def sh(cmd: str, cwd: Path) -> int:
    return subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True).returncode


def check_projects(work: Path) -> list[str]:
    """Run every project's commands against each catalogue entry; return the problems."""
    problems: list[str] = []
    for pr in PROJECTS:
        problems += check_project(pr, make_project(pr, work / pr.name))
    return problems


def check_project(pr: Project, root: Path) -> list[str]:
    problems: list[str] = []

    def expect(root: Path, cmd: str, ok: bool, what: str) -> None:
        rc = sh(cmd, root)
        if (rc == 0) != ok:
            problems.append(f"{root.name}: {what}: `{cmd}` exit {rc}")

    def variant(files: dict[str, str], cmd: str, ok: bool, what: str) -> None:
        for rel, content in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(content)
        expect(root, cmd, ok, what)
        git(root, "reset", "-q", "--hard", "seed")
        git(root, "clean", "-qfdx")

    expect(root, pr.test_cmd, True, "seed tests")
    expect(root, pr.run_cmd, True, "run command")
    expect(root, pr.wrong_run_cmd, False, "wrong run command")
    expect(root, pr.wrong_test_cmd, False, "wrong test command")
    if pr.lint_cmd:
        expect(root, pr.lint_cmd, True, "seed lint")
    for bug in pr.bugs:
        variant(ct.bug_setup(pr, bug), pr.test_cmd, False, f"bug in {bug.func}")
    for f in pr.funcs:
        variant({ct.new_test_path(pr, f): f.new_test}, pr.test_cmd, True, f"test {f.name}")
    for feat in pr.features:
        files = ct.apply(pr.files, feat.file, feat.anchor, feat.new_text)
        variant({feat.test_file: feat.test}, pr.test_cmd, False, f"test-first {feat.ask[:30]}")
        variant(
            {feat.file: files[feat.file], feat.test_file: feat.test},
            pr.test_cmd,
            True,
            f"feature {feat.ask[:30]}",
        )
    for old, new in pr.renames:
        files = {r: pr.files[r].replace(old, new) for r in ct.rename_files(pr, old)}
        variant(files, pr.test_cmd, True, f"rename {old}")
    for lb in pr.lint_bugs:
        bad = ct.apply(pr.files, lb.file, lb.good, lb.bad)
        variant({lb.file: bad[lb.file]}, pr.lint_cmd or "false", False, f"lint {lb.file}")
    return problems


# --------------------------------------------------------------------------- recording


class Responder:
    """The server's responder: the current session's script; notes when a step hangs."""

    def __init__(self) -> None:
        self.script = Script()
        self.hung = threading.Event()

    def load(self, session: ct.Session) -> None:
        steps: dict[str, list[Step]] = {t.message: t.steps for t in session.turns}
        steps.update(session.subagent)
        self.script = Script(steps, title=session.title)
        self.hung.clear()

    def __call__(self, body: dict) -> Step:
        step = self.script(body)
        if step.hang_seconds:
            self.hung.set()
        return step


@dataclass
class Run:
    returncode: int
    seconds: float


def run_interrupted(
    binary: Path, args: list[str], env: dict, cwd: Path, resp: Responder, timeout: float
) -> Run:
    """Run OpenCode until the model server holds a request, then interrupt it (Ctrl-C)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [str(binary), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        resp.hung.wait(timeout)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return Run(proc.returncode, time.monotonic() - start)


def session_ids(db: Path) -> dict[str, str | None]:
    """id -> parent id of every session in the database."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(con.execute("select id, parent_id from session").fetchall())
    finally:
        con.close()


@dataclass
class Recorded:
    session: ct.Session
    ids: list[str] = field(default_factory=list)  # root first, then sub-agent children
    runs: list[dict] = field(default_factory=list)


def record_session(
    s: ct.Session, binary: Path, env: dict, root: Path, resp: Responder, db: Path, timeout: float
) -> Recorded:
    reset_project(root, s.setup, s.setup_message, env)
    resp.load(s)
    before = session_ids(db)
    rec = Recorded(s)
    for i, turn in enumerate(s.turns):
        args = ["run", "--model", MODEL]
        if i:
            args += ["--session", rec.ids[0]]
        args.append(turn.message)
        if turn.outcome == "aborted":
            r = run_interrupted(binary, args, env, root, resp, timeout)
        else:
            res = run_opencode(binary, args, env=env, cwd=root, timeout=timeout)
            r = Run(res.returncode, res.seconds)
        rec.runs.append({"turn": i + 1, "returncode": r.returncode, "seconds": round(r.seconds, 1)})
        if i == 0:
            new = {k: v for k, v in session_ids(db).items() if k not in before}
            rec.ids = [k for k, v in new.items() if not v] + [k for k, v in new.items() if v]
            if not rec.ids:
                break
    after = session_ids(db)
    rec.ids += sorted(k for k, v in after.items() if k not in before and k not in rec.ids)
    return rec


# --------------------------------------------------------------------------- export and checks


def bash_outcomes(doc: dict) -> list[tuple[str, bool]]:
    """(command, succeeded) for every bash call of an exported session, in order."""
    out = []
    for msg in doc.get("messages", []):
        for part in msg.get("parts", []):
            if part.get("type") != "tool" or part.get("tool") != "bash":
                continue
            state = part.get("state", {})
            ok = state.get("status") == "completed" and (state.get("metadata") or {}).get(
                "exit"
            ) in (0, None)
            out.append((str(state.get("input", {}).get("command", "")), ok))
    return out


def export(binary: Path, sid: str, env: dict, cwd: Path, dest: Path, timeout: float) -> dict:
    res = run_opencode(binary, ["export", sid], env=env, cwd=cwd, timeout=timeout)
    doc = json.loads(res.stdout[res.stdout.index("{") :])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")
    return doc


def tools_used(doc: dict) -> Counter[str]:
    return Counter(
        p.get("tool", "?")
        for m in doc.get("messages", [])
        for p in m.get("parts", [])
        if p.get("type") == "tool"
    )


def manifest_entry(rec: Recorded, docs: dict[str, dict]) -> dict:
    s = rec.session
    root_doc = docs.get(rec.ids[0], {}) if rec.ids else {}
    got = bash_outcomes(root_doc)
    expected = [ok for _, ok in s.expect]
    return {
        "id": rec.ids[0] if rec.ids else None,
        "children": rec.ids[1:],
        "project": s.project,
        "kind": s.kind,
        "variant": s.variant,
        "title": s.title,
        "turns": len(s.turns),
        "outcomes": [t.outcome for t in s.turns],
        "returncodes": [r["returncode"] for r in rec.runs],
        "seconds": round(sum(r["seconds"] for r in rec.runs), 1),
        "bash_expected": expected,
        "bash_got": [ok for _, ok in got],
        "as_expected": expected == [ok for _, ok in got],
        "tools": dict(sorted(tools_used(root_doc).items())),
    }


def choose(
    sessions: list[ct.Session],
    kinds: set[str] | None = None,
    limit: int | None = None,
    per_kind: int | None = None,
) -> list[ct.Session]:
    """The sessions of ``kinds``, at most ``per_kind`` of a kind and ``limit`` per project,
    in plan order."""
    chosen: list[ct.Session] = []
    for pr in PROJECTS:
        seen: Counter[str] = Counter()
        mine: list[ct.Session] = []
        for s in sessions:
            if s.project != pr.name or (kinds and s.kind not in kinds):
                continue
            if per_kind is not None and seen[s.kind] >= per_kind:
                continue
            seen[s.kind] += 1
            mine.append(s)
        chosen += mine[:limit] if limit is not None else mine
    return chosen


def keep_store(env: dict, dest: Path) -> int:
    """Copy OpenCode's store (opencode.db and snapshot/) into ``dest``; returns its bytes."""
    src = data_dir(env)
    if (dest / "snapshot").exists():
        shutil.rmtree(dest / "snapshot")
    copy_db(src / "opencode.db", dest / "opencode.db")
    # Git's sample hooks are most of the files and none of the content.
    skip = shutil.ignore_patterns("*.sample")
    shutil.copytree(src / "snapshot", dest / "snapshot", symlinks=True, ignore=skip)
    for alternates in (dest / "snapshot").glob("*/*/objects/info/alternates"):
        self_contained(alternates.parents[2])
    kept = [dest / "opencode.db", *(dest / "snapshot").rglob("*")]
    return sum(p.stat().st_size for p in kept if p.is_file())


def self_contained(git_dir: Path) -> None:
    """OpenCode's snapshot repository borrows the project's own objects (git alternates to
    `<project>/.git/objects`), and its trees are reachable from no ref: copy the borrowed
    objects in (content-addressed files, so nothing is overwritten with other content) and drop
    the link, so the copy restores without the project folder."""
    alternates = git_dir / "objects" / "info" / "alternates"
    for line in alternates.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            skip = shutil.ignore_patterns("info", "*.sample")
            shutil.copytree(line.strip(), git_dir / "objects", ignore=skip, dirs_exist_ok=True)
    alternates.unlink()


def record(
    out: Path,
    work: Path,
    seed: int,
    limit: int | None,
    timeout: float,
    log: Callable[[str], None],
    kinds: set[str] | None = None,
    *,
    per_kind: int | None = None,
    store: Path | None = None,
) -> dict:
    """Record the planned sessions (see `choose`) into ``out``; with ``store``, keep
    OpenCode's store there too."""
    started = time.monotonic()
    binary = ensure_opencode(DEFAULT_VERSION)
    if binary is None:
        raise SystemExit("node/npm not found: cannot install OpenCode")
    sessions = choose(plan(work, seed), kinds, limit, per_kind)
    resp = Responder()
    server = FakeOpenAI(resp).start()
    recs: list[Recorded] = []
    try:
        env = isolated_env(work, server.base_url, config={"permission": PERMISSION})
        for pr in PROJECTS:
            make_project(pr, work / pr.name, env)
        db = data_dir(env) / "opencode.db"
        for n, s in enumerate(sessions, 1):
            rec = record_session(s, binary, env, work / s.project, resp, db, timeout)
            recs.append(rec)
            rcs = ",".join(str(r["returncode"]) for r in rec.runs)
            log(
                f"[{n}/{len(sessions)}] {s.project:<7} {s.kind:<10} {s.variant:<24} rc={rcs} "
                f"{sum(r['seconds'] for r in rec.runs):.1f}s"
            )
        recorded_s = time.monotonic() - started
        exports = out / "exports"
        if exports.exists():
            shutil.rmtree(exports)
        docs: dict[str, dict] = {}
        for rec in recs:
            for sid in rec.ids:
                dest = exports / rec.session.project / f"{sid}.json"
                docs[sid] = export(binary, sid, env, work / rec.session.project, dest, timeout)
        if store is not None:
            size = keep_store(env, store)
            log(f"kept OpenCode's store in {store} ({size / 1e6:.1f} MB)")
    finally:
        server.stop()
    manifest = {
        "opencode": DEFAULT_VERSION,
        "model": MODEL,
        "seed": seed,
        "recorded": time.strftime("%Y-%m-%d"),
        "work_dir": str(work),
        "recording_seconds": round(recorded_s, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "sessions": [manifest_entry(r, docs) for r in recs],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def summary(manifest: dict) -> str:
    """Counts by project and kind, tools used, and the sessions that went off-script."""
    rows = manifest["sessions"]
    kinds = Counter((r["project"], r["kind"]) for r in rows)
    tools: Counter[str] = Counter()
    for r in rows:
        tools.update(r["tools"])
    lines = [
        f"{len(rows)} sessions ({sum(len(r['children']) for r in rows)} sub-agent children), "
        f"{sum(r['turns'] for r in rows)} turns, recorded in {manifest['recording_seconds']}s "
        f"(with exports {manifest['total_seconds']}s)",
        "by project/kind: " + ", ".join(f"{p}/{k}={n}" for (p, k), n in sorted(kinds.items())),
        "tool calls (root sessions): " + ", ".join(f"{t}={n}" for t, n in tools.most_common()),
    ]
    off = [r for r in rows if not r["as_expected"]]
    lines.append(f"bash exit codes as scripted: {len(rows) - len(off)}/{len(rows)}")
    lines += [
        f"  off-script: {r['id']} {r['project']} {r['kind']}/{r['variant']}: "
        f"expected {r['bash_expected']} got {r['bash_got']}"
        for r in off
    ]
    return "\n".join(lines)


KIND_NOTES = {
    "fix-bug": "a bug injected and committed; variants: test-first, read-first, grep-first, "
    "read-test-first, bad-edit (an edit whose oldString is not found, then re-read and fix)",
    "add-test": "read the source (and the existing tests), write a new test file, run it",
    "feature": "read, edit, write a test, run; variants with todowrite and test-first",
    "rename": "grep, read every file, edit with replaceAll (sequential or parallel), test, grep",
    "explain": "read (or grep then read with offset/limit, or source + test) and answer",
    "search": "grep / glob for TODOs, a definition, usages, tests; answer with file:line",
    "list-files": "read a directory, glob the sources, or `ls -la`",
    "run": "run the program; once after a failing first command",
    "run-tests": "a wrong test command (fails), then the right one",
    "lint-fix": "lint fails, read, edit, lint and tests pass",
    "diagnose": "tests fail, read the test and the source, explain without editing",
    "multi-turn": "fix + test + commit (3 turns), run tests + fix, explain + rename",
    "subagent": "task tool with the explore or general sub-agent (child session exported too)",
    "failed": "HTTP 400 from the model mid-turn; a turn interrupted with Ctrl-C then "
    "continued; `rm` denied by permission; `git push` auto-rejected",
}


def write_readme(out: Path, manifest: dict) -> None:
    rows = manifest["sessions"]
    names = [pr.name for pr in PROJECTS]
    kinds = Counter((r["kind"], r["project"]) for r in rows)
    kind_rows = "\n".join(
        f"| {k} | "
        + " | ".join(str(kinds[(k, n)]) for n in names)
        + f" | {sum(kinds[(k, n)] for n in names)} | {KIND_NOTES.get(k, '')} |"
        for k in KIND_NOTES
    )
    project_rows = "\n".join(
        f"| {pr.name} | {pr.kind} | `{pr.test_cmd}` | `{pr.lint_cmd or '-'}` | `{pr.run_cmd}` |"
        for pr in PROJECTS
    )
    tools: Counter[str] = Counter()
    for r in rows:
        tools.update(r["tools"])
    turns = Counter(o for r in rows for o in r["outcomes"])
    children = sum(len(r["children"]) for r in rows)
    text = README.format(
        n=len(rows) + children,
        roots=len(rows),
        children=children,
        turns=sum(r["turns"] for r in rows),
        multi=sum(r["turns"] > 1 for r in rows),
        outcomes=", ".join(f"{k} {v}" for k, v in sorted(turns.items())),
        tools=", ".join(f"{t} {n}" for t, n in tools.most_common()),
        expected=sum(r["as_expected"] for r in rows),
        project_rows=project_rows,
        names=" | ".join(names),
        sep="|---" * len(names),
        kind_rows=kind_rows,
        **manifest,
    )
    (out / "README.md").write_text(text)


README = """\
# Bench corpus: {n} real OpenCode {opencode} sessions

Recorded on {recorded} by `benchmarks/record_corpus.py` (seed {seed}): real `opencode-ai@{opencode}`
(npm) ran headless (`opencode run`, `--session ID` for follow-up turns) against the scripted
model server of `tests/opencode_support/fake_openai.py` (model `{model}`). OpenCode's own
tools (read, edit, write, bash, grep, glob, task, todowrite) ran for real on three seed projects
under `{work_dir}`, so every tool result, exit code and diff is real. Token counts are the fake
server's estimates; costs are 0. This is a benchmark corpus to measure and tune with, not a test
fixture.

- {roots} top-level sessions + {children} sub-agent child sessions = {n} exported sessions;
- {turns} user turns ({multi} multi-turn sessions); turn outcomes: {outcomes};
- tool calls in top-level sessions: {tools};
- bash exit codes as the trajectory expected: {expected}/{roots} sessions
  (`bash_expected` / `bash_got` in manifest.json).

## Projects

Written by the recorder into temporary git repositories (`benchmarks/corpus_projects.py`);
before every session the project is reset to its seed commit, and a bug or lint problem is
injected and committed where the task needs one.

| project | kind | test | lint | run |
|---|---|---|---|---|
{project_rows}

## Task kinds (top-level sessions)

| kind | {names} | total | what the agent does |
|---{sep}|---|---|
{kind_rows}

Trajectories come from templates x parameters (`benchmarks/corpus_tasks.py`: which bug,
function, feature, rename; how the request is phrased; whether bash is called plainly, with a
leading `cd DIR &&`, or with `workdir`), drawn with a fixed seed. The next call depends on the
real state: a bug-fix session starts from a failing suite, an edit is followed by the project's
own test command, a failing command by the right one.

## Files

- `exports/<project>/<sessionID>.json`: `opencode export` of every session (compact JSON);
- `manifest.json`: per session its project, kind, variant, turns, turn outcomes, return codes
  of `opencode run`, seconds, expected and recorded bash outcomes, tool counts.

Use it with ocdspy:

    ocdspy validate benchmarks/corpus/exports
    ocdspy convert benchmarks/corpus/exports --out /tmp/bench-data

## Re-record

Needs node + npm (OpenCode is installed from npm once into `~/.cache/ocdspy-tests`), ripgrep,
git, make and a `python3` with pytest on PATH. Sequential; each `opencode run` has a timeout
(120 s by default).

    python benchmarks/record_corpus.py --check      # the seed projects' commands, no OpenCode
    python benchmarks/record_corpus.py              # writes benchmarks/corpus/

This recording took {recording_seconds} s for the sessions and {total_seconds} s with the
exports (2 shared CPU cores). Session ids and timestamps differ between recordings; the
trajectories are the same for the same seed.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "corpus")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/ocdspy-bench"),
        help="where the temp HOME and the projects go (paths appear in the corpus)",
    )
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--limit", type=int, help="record only the first N sessions per project")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per opencode run")
    ap.add_argument("--kinds", help="comma-separated task kinds to record (default: all)")
    ap.add_argument("--per-kind", type=int, help="at most N sessions of a kind per project")
    ap.add_argument(
        "--store", type=Path, help="also keep OpenCode's store (opencode.db, snapshot/) here"
    )
    ap.add_argument("--check", action="store_true", help="check the seed projects and exit")
    ap.add_argument("--readme", action="store_true", help="rewrite OUT/README.md from the manifest")
    args = ap.parse_args(argv)
    if args.readme:
        manifest = json.loads((args.out / "manifest.json").read_text())
        write_readme(args.out, manifest)
        print(summary(manifest))
        return 0
    if args.check:
        with tempfile.TemporaryDirectory(prefix="ocdspy-seed-") as tmp:
            problems = check_projects(Path(tmp))
        print("\n".join(problems) or "seed projects ok")
        return 1 if problems else 0
    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)
    args.work_dir.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    kinds = set(args.kinds.split(",")) if args.kinds else None
    manifest = record(
        args.out,
        args.work_dir,
        args.seed,
        args.limit,
        args.timeout,
        log,
        kinds,
        per_kind=args.per_kind,
        store=args.store,
    )
    write_readme(args.out, manifest)
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
