"""The artifact layout: one module names every artifact, and the stages write where it says."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

import ocdspy
from ocdspy.artifacts import write_model_atomic
from ocdspy.config import Settings, load_settings
from ocdspy.errors import DataError
from ocdspy.evaluate import Report, report_for
from ocdspy.layout import (
    Project,
    ReportFiles,
    is_partial,
    partial_name,
    program_name,
    run_record_beside,
)
from ocdspy.pipeline import PipelineState, _Run

# Every artifact file name, or the part of one that says what the file is.
ARTIFACT_NAMES = (
    "examples.jsonl",
    "train.jsonl",
    "val.jsonl",
    "manifest.json",
    ".run.json",
    ".partial",
    ".meta.json",
    "pipeline.json",
    ".ocdspy.lock",
    ".ocdspy-collect.json",
)


def settings_in(root: Path) -> Settings:
    overrides = {
        "data.raw_dir": root / "d" / "raw",
        "data.processed_dir": root / "d" / "proc",
        "data.splits_dir": root / "d" / "sp",
        "outputs.dir": root / "out",
    }
    return load_settings(None, overrides=overrides, environ={}, cwd=root).settings


def test_project_names_every_artifact(tmp_path: Path) -> None:
    project = Project(settings_in(tmp_path))
    out = tmp_path / "out"
    assert project.examples == tmp_path / "d" / "proc" / "examples.jsonl"
    assert project.processed.manifest == tmp_path / "d" / "proc" / "manifest.json"
    splits = project.splits
    assert (splits.train, splits.val, splits.manifest) == (
        tmp_path / "d" / "sp" / "train.jsonl",
        tmp_path / "d" / "sp" / "val.jsonl",
        tmp_path / "d" / "sp" / "manifest.json",
    )
    assert project.program("run") == out / "programs" / "run.json"
    assert project.run_record("run") == out / "programs" / "run.run.json"
    assert project.program(partial_name("run")) == out / "programs" / "run.partial.json"
    assert project.run_record(partial_name("run")) == out / "programs" / "run.partial.run.json"
    assert project.optimizer_logs("run") == out / "logs" / "run"
    report = project.report("run")
    assert (report.json_path, report.markdown_path) == (
        out / "reports" / "run.json",
        out / "reports" / "run.md",
    )
    agent = project.agent("coder")
    assert (agent.agent_path, agent.meta_path) == (
        out / "prompts" / "coder.md",
        out / "prompts" / "coder.meta.json",
    )
    assert project.pipeline_state == out / "pipeline.json"


def test_names_derived_from_a_program_file(tmp_path: Path) -> None:
    project = Project(settings_in(tmp_path))
    partial = project.program(partial_name("run"))
    assert program_name(partial) == "run.partial" and is_partial(partial)
    assert not is_partial(project.program("run"))
    assert run_record_beside(partial) == project.run_record("run.partial")
    assert run_record_beside(project.program("a.b")) == project.run_record("a.b")
    assert project.report_of(partial) == project.report("run.partial")
    assert ReportFiles.beside(project.report("run.partial").json_path) == project.report(
        "run.partial"
    )


def test_saved_programs_leave_run_records_out_oldest_first(tmp_path: Path) -> None:
    project = Project(settings_in(tmp_path))
    assert project.saved_programs() == []
    project.programs_dir.mkdir(parents=True)
    for age, name in enumerate(["new", "old.partial", "old"]):
        for path in (project.program(name), project.run_record(name)):
            path.write_text("{}")
            os.utime(path, (1000 - age, 1000 - age))
    assert project.saved_programs() == [
        project.program("old"),
        project.program("old.partial"),
        project.program("new"),
    ]


def _code_strings(tree: ast.Module) -> list[ast.Constant]:
    """The string constants that code uses: not docstrings, `help=` texts or multi-line
    templates (prose for people, which may name files)."""
    prose = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    prose |= {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "help"
        for inner in ast.walk(node.value)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in prose
        and "\n" not in node.value
    ]


def test_no_other_module_spells_an_artifact_name() -> None:
    package = Path(ocdspy.__file__).parent
    spelled = [
        f"{path.relative_to(package)}:{node.lineno}: {node.value!r}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "layout.py"
        for node in _code_strings(ast.parse(path.read_text(encoding="utf-8")))
        for name in ARTIFACT_NAMES
        if name in node.value
    ]
    assert spelled == []


def test_a_report_that_is_not_one_is_refused_naming_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"baseline": {"score": 21.4}, "optimized": {"score": 48.9}}))
    with pytest.raises(DataError, match=r"run\.json: not a valid Report \(name: Field required"):
        Report.load(path)
    path.write_text("{nope")
    with pytest.raises(DataError, match=r"run\.json: not a valid Report \(Invalid JSON"):
        Report.load(path)
    with pytest.raises(DataError, match=r"missing\.json: cannot read it"):
        Report.load(tmp_path / "missing.json")


def test_report_for_refuses_a_report_of_another_program(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    project = Project(settings)
    program = project.program("run")
    program.parent.mkdir(parents=True)
    program.write_text("{}")
    assert report_for(settings, program) is None
    report = project.report("run").json_path
    report.parent.mkdir(parents=True)
    report.write_text("{}")
    with pytest.raises(DataError, match="did not score"):
        report_for(settings, program)


def test_cached_stage_reuses_only_an_intact_output_of_the_same_inputs(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    runs: list[str] = []
    kept: dict[str, str | None] = {"output": "kept"}

    def stage(fingerprint: str, *, force: bool = False) -> tuple[str, str]:
        run = _Run(settings, force=force, progress=None)
        return run.cached(
            "split",
            fingerprint,
            reuse=lambda: kept["output"],
            run=lambda: runs.append(fingerprint) or "fresh",
        )

    assert stage("a") == ("fresh", "ran")
    assert PipelineState.load(Project(settings).pipeline_state).fingerprints == {"split": "a"}
    assert stage("a") == ("kept", "skipped")
    assert stage("b") == ("fresh", "ran")  # inputs changed
    assert stage("b", force=True) == ("fresh", "ran")
    kept["output"] = None  # the output is gone or broken
    assert stage("b") == ("fresh", "ran")
    assert runs == ["a", "b", "b", "b"]


def test_a_broken_pipeline_state_starts_afresh(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    state = Project(settings).pipeline_state
    state.parent.mkdir(parents=True)
    state.write_text("{nope")
    assert _Run(settings, force=False, progress=None).state == PipelineState()
    write_model_atomic(state, PipelineState(fingerprints={"split": "x"}))
    assert _Run(settings, force=False, progress=None).state.fingerprints == {"split": "x"}
