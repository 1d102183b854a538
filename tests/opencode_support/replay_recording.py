"""A small recording for the replay tests: one session per turn of TURNS, recorded by real
OpenCode 1.18.33 driven by the scripted model server on the invoice-tool project, then
collected, converted and split as a user's project would be.

`record` writes the sessions (OpenCode's store: `opencode.db` and `snapshot/` beside it);
`build_project` turns that store into `data/` of an ocdspy project with the chosen turns in
train and the others held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path

from ocdspy.collect import collect
from ocdspy.convert import convert, load_examples
from ocdspy.split import assign, split

from .fake_openai import FakeOpenAI, Script, call, text, tools
from .opencode_env import MODEL, data_dir, isolated_env, run_opencode
from .record import PERMISSION, make_project

MARKER = "# state-at-recording: 7f3a"
BUG = "return self.quantity + self.unit_price"
FIX = "return self.quantity * self.unit_price"
TESTS = "python3 -m unittest discover -s tests -q"

TURNS = {
    "fixtotal": "Please fixtotal: LineItem.total adds quantity and price instead of multiplying.",
    "loopcase": "loopcase: summarise what README.md says.",
    "hangcase": "hangcase: what does invoice_tool/report.py do?",
    "filler": "filler: show me data/invoices.csv.",
}


def recording_script(project: Path) -> Script:
    p = lambda rel: str(project / rel)  # noqa: E731  absolute, as models send them
    return Script(
        {
            "fixtotal": [
                tools(call("read", filePath=p("invoice_tool/models.py"))),
                tools(
                    call("edit", filePath=p("invoice_tool/models.py"), oldString=BUG, newString=FIX)
                ),
                text("Fixed LineItem.total: it multiplies now."),
            ],
            "loopcase": [tools(call("read", filePath=p("README.md"))), text("A CSV invoice tool.")],
            "hangcase": [
                tools(call("read", filePath=p("invoice_tool/report.py"))),
                text("It loads invoices from CSV and renders totals."),
            ],
            "filler": [tools(call("read", filePath=p("data/invoices.csv"))), text("Four rows.")],
        }
    )


def record(work: Path, binary: Path) -> tuple[Path, Path]:
    """Record one session per turn of TURNS under `work`; returns (project, opencode.db)."""
    project = work / "invoice-tool"
    with FakeOpenAI(recording_script(project)) as server:
        env = isolated_env(work, server.base_url, config={"permission": PERMISSION})
        make_project(project, env)
        models = project / "invoice_tool" / "models.py"
        # Uncommitted: only the snapshot holds this state, not the repository.
        models.write_text(models.read_text() + f"\n{MARKER}\n")
        for message in TURNS.values():
            res = run_opencode(binary, ["run", "--model", MODEL, message], env=env, cwd=project)
            assert res.returncode == 0, res.stderr
    return project, data_dir(env) / "opencode.db"


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def task_name(task: str) -> str:
    """The key of TURNS whose message `task` is (`opencode run` quotes a message given on its
    command line)."""
    return next(k for k, v in TURNS.items() if v == task.strip('"'))


def split_with_train(
    examples: Path, splits: Path, train: Collection[str], *, fraction: float = 0.2
) -> None:
    """Split with the first seed that puts exactly the sessions of `train` (keys of TURNS) in
    the training split and the others in validation."""
    loaded = load_examples(examples)
    for seed in range(200):
        chosen, _ = assign(loaded, train_fraction=fraction, seed=seed)
        if sorted(task_name(e.task) for e in chosen) == sorted(train):
            split(examples, splits, train_fraction=fraction, seed=seed)
            return
    raise AssertionError(f"no seed puts only {sorted(train)} in train")


def build_project(
    root: Path, db: Path, train: Collection[str] = ("filler",), *, fraction: float = 0.2
) -> None:
    """`data/` of an ocdspy project at `root` from the recording's store: collect, convert, and
    a split with the sessions of `train` in train."""
    raw, processed = root / "data" / "raw", root / "data" / "processed"
    collect(raw, db=db)
    convert([raw], processed)
    split_with_train(
        processed / "examples.jsonl", root / "data" / "splits", train, fraction=fraction
    )
