"""Pure helpers of benchmarks/record_corpus.py (the bench-corpus recorder); nothing is recorded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import record_corpus as rc  # noqa: E402


def _messages(sessions: list) -> list[list[str]]:
    return [[t.message for t in s.turns] for s in sessions]


def test_plan_is_reproducible_varied_and_consistent() -> None:
    work = Path("/tmp/ocdspy-bench-plan")
    a, b = rc.plan(work, 8), rc.plan(work, 8)
    assert _messages(a) == _messages(b)
    assert _messages(rc.plan(work, 9)) != _messages(a)
    assert len(a) >= 100
    assert {s.project for s in a} == {"ledger", "tally", "relkit"}
    kinds = {s.kind for s in a}
    assert {"fix-bug", "add-test", "feature", "rename", "explain", "search"} <= kinds
    assert {"multi-turn", "subagent", "failed"} <= kinds
    for s in a:
        bash_calls = [
            c for t in s.turns for step in t.steps for c in step.tool_calls if c.name == "bash"
        ]
        assert len(bash_calls) == len(s.expect), (s.kind, s.variant)
        assert len({t.message for t in s.turns}) == len(s.turns)


def test_bash_outcomes_reads_exit_codes_and_refusals() -> None:
    def bash(status: str, exit_code: int | None) -> dict:
        state = {"status": status, "input": {"command": "make test"}}
        if exit_code is not None:
            state["metadata"] = {"exit": exit_code}
        return {"type": "tool", "tool": "bash", "state": state}

    doc = {
        "messages": [
            {"parts": [{"type": "text", "text": "hi"}, bash("completed", 2)]},
            {"parts": [bash("completed", 0), {"type": "tool", "tool": "read", "state": {}}]},
            {"parts": [bash("error", None)]},
        ]
    }
    assert rc.bash_outcomes(doc) == [
        ("make test", False),
        ("make test", True),
        ("make test", False),
    ]


def test_apply_replaces_exactly_one_occurrence() -> None:
    files = {"a.py": "x = 1\ny = 2\n"}
    assert rc.ct.apply(files, "a.py", "y = 2", "y = 3")["a.py"] == "x = 1\ny = 3\n"
    with pytest.raises(ValueError, match=r"a\.py"):
        rc.ct.apply({"a.py": "z\nz\n"}, "a.py", "z", "w")


def test_choose_takes_at_most_n_of_a_kind_per_project_in_plan_order() -> None:
    planned = rc.plan(Path("/tmp/ocdspy-bench-plan"), 8)
    kinds = {"fix-bug", "explain", "search"}
    chosen = rc.choose(planned, kinds, per_kind=1)
    assert sorted((s.project, s.kind) for s in chosen) == sorted(
        (p, k) for p in ("ledger", "tally", "relkit") for k in kinds
    )
    firsts = [
        next(s for s in planned if (s.project, s.kind) == (c.project, c.kind)) for c in chosen
    ]
    assert [s.title for s in chosen] == [s.title for s in firsts]
    assert len(rc.choose(planned, None, limit=2)) == 6


def _git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def test_a_kept_snapshot_repository_no_longer_needs_the_project(tmp_path: Path) -> None:
    """OpenCode's snapshot repository links the project's objects (alternates); the kept copy
    holds them itself, so a tree that only the project had still reads after it is gone."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "a.txt").write_text("only in the project's repository\n")
    _git("init", "-q", cwd=project)
    _git("add", "-A", cwd=project)
    tree = _git("write-tree", cwd=project)
    snap = tmp_path / "snap.git"
    _git("init", "-q", "--bare", str(snap))
    (snap / "objects" / "info" / "alternates").write_text(str(project / ".git" / "objects") + "\n")
    assert _git("--git-dir", str(snap), "cat-file", "-t", tree) == "tree"

    rc.self_contained(snap)
    shutil.rmtree(project)
    assert not (snap / "objects" / "info" / "alternates").exists()
    assert _git("--git-dir", str(snap), "ls-tree", "-r", "--name-only", tree) == "a.txt"
    blob = _git("--git-dir", str(snap), "rev-parse", f"{tree}:a.txt")
    assert "only in the project" in _git("--git-dir", str(snap), "cat-file", "-p", blob)
