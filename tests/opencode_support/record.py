"""Record real OpenCode sessions against the scripted model server.

    python -m tests.opencode_support.record OUT_DIR [--no-legacy] [--work-dir DIR]

Produces in OUT_DIR:

- ``legacy-storage/``: the pre-1.2 JSON ``storage/`` tree written by ``opencode-ai@1.1.65``
  (sessions marked ``legacy`` below);
- ``opencode.db``: the SQLite database of ``opencode-ai@1.18.33``. The legacy tree is first
  migrated into a database by ``opencode-ai@1.2.27`` (1.18.33 no longer migrates JSON storage;
  1.2.x does it once, on its first start, when no ``opencode.db`` exists), then 1.18.33 opens
  that database (upgrading its schema) and records the remaining sessions. The copy checked in
  is checkpointed and switched to ``journal_mode=DELETE``: one self-contained file;
- ``exports/<sessionID>.json``: ``opencode export`` (1.18.33) of every session in the database;
- ``manifest.json``: each session with its scenario, the OpenCode version that recorded it and
  what it exercises.

With ``legacy=False`` every scenario is recorded by 1.18.33 directly (faster; used by the
integration test).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fake_openai import FakeOpenAI, Script, Step, call, error, text, tools
from .opencode_env import (
    DEFAULT_VERSION,
    MODEL,
    data_dir,
    ensure_opencode,
    isolated_env,
    run_opencode,
)

LEGACY_VERSION = "1.1.65"
MIGRATE_VERSION = "1.2.27"

#: Permission rules for every recording: bash allowed, except ``rm`` (denied by rule) and
#: ``git push`` ("ask": a headless ``opencode run`` auto-rejects it).
PERMISSION = {"bash": {"*": "allow", "rm *": "deny", "git push *": "ask"}, "edit": "allow"}


# --------------------------------------------------------------------------- the project

MODELS_PY = '''\
"""Invoice data model."""

from dataclasses import dataclass, field


@dataclass
class LineItem:
    description: str
    quantity: int
    unit_price: float

    def total(self) -> float:
        return self.quantity + self.unit_price


@dataclass
class Invoice:
    number: str
    customer: str
    items: list[LineItem] = field(default_factory=list)

    def total(self) -> float:
        return round(sum(item.total() for item in self.items), 2)
'''

REPORT_PY = '''\
"""Read invoices from a CSV file and print a summary."""

import csv
from collections import defaultdict

from .models import Invoice, LineItem


def load(path: str) -> list[Invoice]:
    invoices: dict[str, Invoice] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            inv = invoices.setdefault(row["invoice"], Invoice(row["invoice"], row["customer"]))
            item = LineItem(row["description"], int(row["quantity"]), float(row["unit_price"]))
            inv.items.append(item)
    return list(invoices.values())


def totals_by_customer(invoices: list[Invoice]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for inv in invoices:
        totals[inv.customer] += inv.total()
    return dict(totals)


def render(invoices: list[Invoice]) -> str:
    lines = [f"{inv.number}  {inv.customer:<12} {inv.total():>10.2f}" for inv in invoices]
    lines.append(f"{'TOTAL':<18} {sum(inv.total() for inv in invoices):>10.2f}")
    return "\\n".join(lines)
'''

MAIN_PY = """\
import sys

from .report import load, render

if __name__ == "__main__":
    print(render(load(sys.argv[1] if len(sys.argv) > 1 else "data/invoices.csv")))
"""

TEST_MODELS_PY = """\
import unittest

from invoice_tool.models import Invoice, LineItem


class LineItemTest(unittest.TestCase):
    def test_total_multiplies_quantity_by_price(self):
        self.assertEqual(LineItem("pens", 3, 2.5).total(), 7.5)

    def test_invoice_total_sums_items(self):
        inv = Invoice("A-1", "acme", [LineItem("pens", 2, 1.25), LineItem("paper", 1, 4.0)])
        self.assertEqual(inv.total(), 6.5)


if __name__ == "__main__":
    unittest.main()
"""

README_MD = """\
# invoice-tool

Small command-line tool that totals invoices exported as CSV.

## Usage

    python3 -m invoice_tool data/invoices.csv

## Development

    python3 -m unittest discover -s tests
"""

INVOICES_CSV = """\
invoice,customer,description,quantity,unit_price
A-1,acme,pens,2,1.25
A-1,acme,paper,1,4.00
B-7,globex,stapler,1,12.90
B-7,globex,staples,5,0.80
"""

PROJECT_FILES = {
    "README.md": README_MD,
    ".gitignore": "__pycache__/\n*.pyc\nbuild/\ndist/\n",
    "invoice_tool/__init__.py": '__version__ = "0.1.0"\n',
    "invoice_tool/__main__.py": MAIN_PY,
    "invoice_tool/models.py": MODELS_PY,
    "invoice_tool/report.py": REPORT_PY,
    "tests/__init__.py": "",
    "tests/test_models.py": TEST_MODELS_PY,
    "data/invoices.csv": INVOICES_CSV,
}


def make_project(root: Path, env: dict[str, str]) -> Path:
    """A small git project (``invoice-tool``) with a bug in ``LineItem.total``."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in PROJECT_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    git = ["git", "-c", "init.defaultBranch=main"]
    for cmd in (
        ["init", "-q"],
        ["add", "-A"],
        ["commit", "-q", "-m", "Initial import of invoice-tool"],
    ):
        subprocess.run([*git, *cmd], cwd=root, env=env, check=True, capture_output=True)
    return root


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """One recorded session: its turns (one ``opencode run`` each) and the model's script."""

    name: str
    turns: list[str]  # user messages; turn 2+ are sent with --continue
    steps: dict[str, list[Step]]  # marker phrase (found in a user message) -> steps
    title: str
    exercises: list[str]
    legacy: bool = False  # recorded by the legacy OpenCode when legacy recording is on
    expect_failure: bool = False


def scenarios(project: Path) -> list[Scenario]:
    p = lambda rel: str(project / rel)  # noqa: E731  absolute paths, as models send them
    run_tests = "python3 -m unittest discover -s tests -q"
    return [
        Scenario(
            name="fix-total",
            turns=[
                "The unit tests fail: LineItem.total in invoice_tool/models.py returns the "
                "wrong value. Please fix it and make sure the tests pass."
            ],
            steps={
                "LineItem.total in invoice_tool": [
                    tools(call("bash", command=run_tests, description="Run the unit tests")),
                    tools(call("read", filePath=p("invoice_tool/models.py"))),
                    tools(
                        call(
                            "edit",
                            filePath=p("invoice_tool/models.py"),
                            oldString="return self.quantity + self.unit_price",
                            newString="return self.quantity * self.unit_price",
                        ),
                        text="The total adds quantity and price instead of multiplying them.",
                    ),
                    tools(call("bash", command=run_tests, description="Run the unit tests again")),
                    text(
                        "Fixed `LineItem.total`: it added the quantity to the unit price "
                        "instead of "
                        "multiplying them. All tests pass now."
                    ),
                ]
            },
            title="Fix LineItem.total calculation",
            exercises=[
                "bash exit 1 (failing tests)",
                "read",
                "edit",
                "bash exit 0",
                "text before tool call",
            ],
            legacy=True,
        ),
        Scenario(
            name="missing-script",
            turns=["Please run the database migration script before the release."],
            steps={
                "database migration script": [
                    tools(
                        call(
                            "bash",
                            command="python3 scripts/migrate.py",
                            description="Run the migration script",
                        )
                    ),
                    text(
                        "The migration script `scripts/migrate.py` does not exist in this "
                        "repository, so nothing was migrated."
                    ),
                ]
            },
            title="Run database migration script",
            exercises=["bash exit 2 (failed command, status completed)"],
            legacy=True,
        ),
        Scenario(
            name="changelog-two-turns",
            turns=[
                "Add a CHANGELOG.md that records the fix to invoice totals.",
                "Thanks. Also link the changelog from the README.",
            ],
            steps={
                "Add a CHANGELOG.md": [
                    tools(
                        call(
                            "write",
                            filePath=p("CHANGELOG.md"),
                            content="# Changelog\n\n## 0.1.1\n\n- Fix `LineItem.total`, "
                            "which added quantity and unit price.\n",
                        )
                    ),
                    text("Created CHANGELOG.md with an entry for the total fix."),
                ],
                "link the changelog": [
                    tools(call("read", filePath=p("README.md"))),
                    tools(
                        call(
                            "edit",
                            filePath=p("README.md"),
                            oldString="## Development",
                            newString="See [CHANGELOG.md](CHANGELOG.md) for changes.\n\n"
                            "## Development",
                        )
                    ),
                    text("The README now links to CHANGELOG.md."),
                ],
            },
            title="Add changelog for totals fix",
            exercises=["write", "two user turns (--continue)", "read", "edit"],
            legacy=True,
        ),
        Scenario(
            name="find-totals",
            turns=["Where are invoice totals computed? List every function that sums amounts."],
            steps={
                "Where are invoice totals computed": [
                    tools(call("glob", pattern="**/*.py")),
                    tools(call("grep", pattern=r"def (total|totals_by_customer)", include="*.py")),
                    tools(call("read", filePath=p("invoice_tool/report.py"), offset=1, limit=40)),
                    text(
                        "Totals are computed in `LineItem.total` and `Invoice.total` "
                        "(invoice_tool/models.py) and in `totals_by_customer` and `render` "
                        "(invoice_tool/report.py)."
                    ),
                ]
            },
            title="Find where invoice totals are computed",
            exercises=["glob", "grep", "read with offset/limit"],
        ),
        Scenario(
            name="refused-cleanup",
            turns=["Clean up the build artifacts in the project before I package it."],
            steps={
                "Clean up the build artifacts": [
                    tools(
                        call(
                            "bash",
                            command="rm -rf build dist",
                            description="Remove build artifacts",
                        )
                    ),
                    text(
                        "I am not allowed to run `rm` in this project, so the build artifacts were "
                        "left in place. You can delete `build/` and `dist/` yourself."
                    ),
                ]
            },
            title="Clean up build artifacts",
            exercises=["bash refused by permission rule (rm * deny): tool status error"],
        ),
        Scenario(
            name="rejected-push",
            turns=["Push the release branch to origin so CI can pick it up."],
            steps={
                "Push the release branch": [
                    tools(
                        call(
                            "bash",
                            command="git push origin main",
                            description="Push main to origin",
                        )
                    ),
                    text("The push needs your approval and was rejected, so nothing was pushed."),
                ]
            },
            title="Push release branch",
            exercises=["bash needing approval (ask), auto-rejected headless: tool status error"],
        ),
        Scenario(
            name="subagent-review",
            turns=[
                "Use a subagent to review invoice_tool/report.py for edge cases, then "
                "summarise what it found."
            ],
            steps={
                "review invoice_tool/report.py": [
                    tools(
                        call(
                            "task",
                            description="Review report.py edge cases",
                            prompt="Review invoice_tool/report.py for unhandled edge cases "
                            "(empty files, malformed numbers). Report findings only.",
                            subagent_type="general",
                        )
                    ),
                    text(
                        "The review found two gaps: `load` crashes on malformed numbers, and "
                        "`render` prints only a TOTAL line for an empty file."
                    ),
                ],
                "unhandled edge cases": [
                    tools(call("read", filePath=p("invoice_tool/report.py"))),
                    text(
                        "1. `int()`/`float()` in `load` raise ValueError on malformed numbers.\n"
                        "2. An empty CSV yields an empty report with a 0.00 TOTAL line."
                    ),
                ],
            },
            title="Review report.py edge cases",
            exercises=["task tool", "sub-agent child session (parent_id set)"],
        ),
        Scenario(
            name="api-error",
            turns=["Summarise the recent git history of this project."],
            steps={
                "recent git history": [
                    error(400, "Invalid request: the scripted model rejected this conversation."),
                ]
            },
            title="Summarise git history",
            exercises=["assistant message with error (APIError, HTTP 400)"],
            expect_failure=True,
        ),
    ]


def build_script(items: list[Scenario]) -> Script:
    steps: dict[str, list[Step]] = {}
    titles: dict[str, str] = {}
    for sc in items:
        steps.update(sc.steps)
        titles[sc.turns[0]] = sc.title

    def title(body: dict) -> str:
        blob = json.dumps(body.get("messages", []))
        for first_turn, t in titles.items():
            if json.dumps(first_turn)[1:40] in blob:
                return t
        return "Scripted session"

    return Script(steps, title=title)


# --------------------------------------------------------------------------- recording


@dataclass
class Recorded:
    id: str
    scenario: str
    version: str
    title: str
    exercises: list[str]
    parent_id: str | None = None
    turns: int = 1


@dataclass
class Recording:
    out_dir: Path
    sessions: list[Recorded] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    runs: list[dict] = field(default_factory=list)


def _legacy_session_ids(storage: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((storage / "session").glob("*/*.json")):
        info = json.loads(f.read_text())
        out[info["id"]] = info
    return out


def _db_sessions(db: Path) -> dict[str, dict]:
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("select id, parent_id, version, title from session").fetchall()
    finally:
        con.close()
    return {r[0]: {"id": r[0], "parentID": r[1], "version": r[2], "title": r[3]} for r in rows}


def record(
    out_dir: Path,
    *,
    version: str = DEFAULT_VERSION,
    legacy_version: str | None = LEGACY_VERSION,
    migrate_version: str = MIGRATE_VERSION,
    work_dir: Path | None = None,
    timeout: float = 180,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> Recording:
    """Record every scenario into ``out_dir`` (see the module docstring for the layout).

    ``legacy_version=None`` records everything with ``version`` (no JSON tree, no migration).
    Raises ``RuntimeError`` if OpenCode cannot be installed or a run fails unexpectedly.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    binary = ensure_opencode(version)
    if binary is None:
        raise RuntimeError("node/npm not found")
    legacy_bin = migrate_bin = None
    if legacy_version:
        legacy_bin = ensure_opencode(legacy_version)
        migrate_bin = ensure_opencode(migrate_version)
    rec = Recording(out_dir, versions={"current": version})
    if legacy_version:
        rec.versions.update(legacy=legacy_version, migrate=migrate_version)

    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ocdspy-rec-"))
    work.mkdir(parents=True, exist_ok=True)
    project = work / "invoice-tool"
    items = scenarios(project)
    server = FakeOpenAI(build_script(items)).start()
    try:
        env = isolated_env(work, server.base_url, config={"permission": PERMISSION})
        make_project(project, env)
        data = data_dir(env)
        storage, db = data / "storage", data / "opencode.db"

        def run(bin_: Path, ver: str, sc: Scenario) -> None:
            for i, message in enumerate(sc.turns):
                args = ["run", "--model", MODEL, *(["--continue"] if i else []), message]
                res = run_opencode(bin_, args, env=env, cwd=project, timeout=timeout)
                rec.runs.append(
                    {
                        "scenario": sc.name,
                        "version": ver,
                        "turn": i + 1,
                        "returncode": res.returncode,
                        "seconds": round(res.seconds, 1),
                    }
                )
                log(f"[{ver}] {sc.name} turn {i + 1}: rc={res.returncode} {res.seconds:.1f}s")
                if res.returncode != 0 and not sc.expect_failure:
                    raise RuntimeError(
                        f"opencode {ver} failed on {sc.name}:\n{res.stdout}\n{res.stderr}"
                    )

        def collect(before: dict, after: dict, sc: Scenario, ver: str) -> None:
            for sid, info in after.items():
                if sid in before:
                    continue
                rec.sessions.append(
                    Recorded(
                        sid,
                        sc.name,
                        ver,
                        sc.title,
                        sc.exercises if not info.get("parentID") else ["sub-agent child session"],
                        parent_id=info.get("parentID"),
                        turns=len(sc.turns) if not info.get("parentID") else 1,
                    )
                )

        # 1. legacy JSON storage
        if legacy_bin and migrate_bin and legacy_version:
            for sc in (s for s in items if s.legacy):
                before = _legacy_session_ids(storage)
                run(legacy_bin, legacy_version, sc)
                collect(before, _legacy_session_ids(storage), sc, legacy_version)
            target = out_dir / "legacy-storage"
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(storage, target)
            # 2. migrate JSON -> SQLite (1.2.x does it on first start when there is no db)
            res = run_opencode(
                migrate_bin, ["session", "list"], env=env, cwd=project, timeout=timeout
            )
            log(f"[{migrate_version}] migration: rc={res.returncode} {res.stderr.strip()[-200:]!r}")
            if res.returncode != 0 or not db.exists():
                raise RuntimeError(f"migration by {migrate_version} failed:\n{res.stderr}")

        # 3. current version
        for sc in (s for s in items if not (legacy_version and s.legacy)):
            before = _db_sessions(db)
            run(binary, version, sc)
            collect(before, _db_sessions(db), sc, version)
        # one more start so that the current version has upgraded the schema in every case
        run_opencode(binary, ["session", "list"], env=env, cwd=project, timeout=timeout)

        # 4. exports of every session in the db
        exports = out_dir / "exports"
        if exports.exists():
            shutil.rmtree(exports)
        exports.mkdir(parents=True)
        for sid in sorted(_db_sessions(db)):
            res = run_opencode(binary, ["export", sid], env=env, cwd=project, timeout=timeout)
            doc = json.loads(res.stdout[res.stdout.index("{") :])
            (exports / f"{sid}.json").write_text(json.dumps(doc, indent=2) + "\n")

        # 5. self-contained copy of the db
        copy_db(db, out_dir / "opencode.db")
    finally:
        server.stop()

    rec.seconds = round(time.monotonic() - started, 1)
    (out_dir / "manifest.json").write_text(
        json.dumps(
            {
                "versions": rec.versions,
                "recorded": time.strftime("%Y-%m-%d"),
                "project": str(project),
                "model": MODEL,
                "sessions": [asdict(s) for s in rec.sessions],
            },
            indent=2,
        )
        + "\n"
    )
    write_readme(out_dir, rec, project)
    return rec


def write_readme(out_dir: Path, rec: Recording, project: Path) -> None:
    v = rec.versions
    legacy = "legacy" in v
    rows = "\n".join(
        f"| `{s.id}` | {s.version} | {'yes' if s.version == v.get('legacy') else 'no'} "
        f"| {f'`{s.parent_id}`' if s.parent_id else '-'} | {s.scenario} "
        f"| {'; '.join(s.exercises)} |"
        for s in rec.sessions
    )
    how = (
        f"1. `opencode-ai@{v['legacy']}` records the `legacy` scenarios into the JSON tree\n"
        f"   `~/.local/share/opencode/storage/`, copied to `legacy-storage/`.\n"
        f"2. `opencode-ai@{v['migrate']}` starts once (`opencode session list`): with no\n"
        f'   `opencode.db` present it migrates `storage/` into a new database ("Performing one\n'
        f'   time database migration"). 1.18.33 itself no longer migrates JSON storage.\n'
        f"3. `opencode-ai@{v['current']}` opens that database (upgrading its schema) and records\n"
        f"   the other scenarios.\n"
        if legacy
        else f"1. `opencode-ai@{v['current']}` records every scenario (no legacy tree).\n"
    )
    text_ = f"""# Real OpenCode storage (recorded fixtures)

Recorded on {time.strftime("%Y-%m-%d")} by driving the real OpenCode CLI (npm `opencode-ai`)
against the scripted model server of `tests/opencode_support/fake_openai.py` (provider
`scripted`, npm type `@ai-sdk/openai-compatible`, model `{MODEL}`). HOME and XDG dirs were
temporary; the project is a throwaway git repository `{project}` (all paths are fake).
Token counts are the fake server's estimates; costs are 0.

Re-record (needs node + npm and network access to the npm registry; ripgrep on PATH):

    python -m tests.opencode_support.record tests/data/opencode --work-dir /tmp/opencode-demo

How:

{how}4. `opencode export ID` ({v["current"]}) writes `exports/<ID>.json` for every session
   in the db.
5. The db is copied with SQLite's backup API, then set to `journal_mode=DELETE` and vacuumed:
   one self-contained `opencode.db` (OpenCode's own file is in WAL mode).

Files: `legacy-storage/` (the `storage/` tree: `session/<projectID>/`, `message/<sessionID>/`,
`part/<messageID>/`, `project/`, `session_diff/`, `migration`), `opencode.db`,
`exports/<sessionID>.json`, `manifest.json` (the table below, machine-readable).

| session | recorded by | in legacy-storage | parent | scenario | exercises |
|---|---|---|---|---|---|
{rows}

Observed behaviour worth knowing when reading these files:

- `opencode run "msg"` stores the user text wrapped in double quotes (`"msg"`); 1.1.65 also
  appends a newline.
- A command that fails is still a *completed* `bash` part: look at `state.metadata.exit`.
- A call refused by a `deny` rule is a tool part with `state.status == "error"` and
  `state.error` starting "The user has specified a rule which prevents you from using this
  specific tool call."; an `ask` rule in a headless run is auto-rejected: "The user rejected
  permission to use this specific tool call."
- An HTTP 400 from the model ends the assistant message with `error.name == "APIError"`
  (`data.message`, `data.statusCode`, `data.isRetryable`, `data.responseHeaders`,
  `data.responseBody`); `opencode run` exits 1.
- The `task` tool's child session has `parent_id` set and the title
  "<description> (@general subagent)"; the parent's tool output is
  `<task id="ses_…" state="completed"><task_result>…`.
- Migrated sessions keep their ids, `version` "{v.get("legacy", "-")}", and the same
  message/part JSON.
"""
    (out_dir / "README.md").write_text(text_)


def copy_db(src: Path, dst: Path) -> None:
    """Copy a (WAL-mode) SQLite db into one self-contained file in rollback-journal mode."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(dst) + suffix).unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
        target.execute("VACUUM")
    finally:
        target.close()
        source.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument(
        "--no-legacy", action="store_true", help="record everything with the current version"
    )
    ap.add_argument("--version", default=DEFAULT_VERSION)
    ap.add_argument("--work-dir", type=Path, help="where the temp HOME and project go")
    args = ap.parse_args(argv)
    rec = record(
        args.out_dir,
        version=args.version,
        legacy_version=None if args.no_legacy else LEGACY_VERSION,
        work_dir=args.work_dir,
    )
    for s in rec.sessions:
        print(f"{s.id}  {s.version:<8} {s.scenario:<20} parent={s.parent_id or '-'}")
    print(f"recorded {len(rec.sessions)} sessions in {rec.seconds}s -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
