"""validate: read every input, report per file, and check the data requirements of training."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ocdspy.sessions.read import Problem, discover, iter_sessions


class FileReport(BaseModel):
    file: str
    format: str
    sessions: int = 0
    examples: int = 0
    successful: int = 0
    actions: int = 0
    errors: int = 0
    warnings: int = 0

    @property
    def status(self) -> Literal["ok", "warnings", "invalid"]:
        if self.errors:
            return "invalid"
        return "warnings" if self.warnings else "ok"


class ProblemOut(BaseModel):
    file: str
    path: str
    message: str
    severity: str


class RequirementCheck(BaseModel):
    name: str
    ok: bool
    message: str
    fix: str | None = None


class ValidateReport(BaseModel):
    files: list[FileReport] = Field(default_factory=list)
    problems: list[ProblemOut] = Field(default_factory=list)
    requirements: list[RequirementCheck] = Field(default_factory=list)
    total_sessions: int = 0
    total_examples: int = 0
    successful_examples: int = 0
    successful_sessions: int = 0

    @property
    def valid(self) -> bool:
        return (
            all(f.errors == 0 for f in self.files)
            and all(r.ok for r in self.requirements)
            and not any(p.severity == "error" and not p.file for p in self.problems)
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.valid else 1


def validate(
    paths: list[Path], *, min_examples: int = 10, require_success: bool = True
) -> ValidateReport:
    found = discover(paths)
    report = ValidateReport()
    rows: dict[str, FileReport] = {}
    for src in found.sources:
        rows[str(src.path)] = FileReport(file=str(src.path), format=src.format)

    def note(p: Problem) -> None:
        report.problems.append(
            ProblemOut(file=p.file, path=p.where, message=p.message, severity=p.severity)
        )
        row = rows.get(p.file)
        if row is None:
            row = rows[p.file] = FileReport(file=p.file, format="-")
        if p.severity == "error":
            row.errors += 1
        else:
            row.warnings += 1

    for p in found.problems:
        note(p)
    for item in iter_sessions(found.sources):
        if isinstance(item, Problem):
            note(item)
            continue
        row = rows[str(item.file)]
        # A JSON file's format is only certain once parsed.
        if row.format in ("json", "plugin", "opencode-export"):
            row.format = item.format
        s = item.session
        row.sessions += 1
        report.total_sessions += 1
        ok_turns = 0
        for i, turn in enumerate(s.examples):
            row.examples += 1
            row.actions += len(turn.actions)
            if s.turn_success(i):
                ok_turns += 1
        row.successful += ok_turns
        report.total_examples += len(s.examples)
        report.successful_examples += ok_turns
        if ok_turns:
            report.successful_sessions += 1
    report.files = list(rows.values())
    report.requirements = _requirements(report, paths, min_examples, require_success)
    return report


def _requirements(
    report: ValidateReport, paths: list[Path], min_examples: int, require_success: bool
) -> list[RequirementCheck]:
    where = ", ".join(str(p) for p in paths)
    checks = []
    if report.total_sessions == 0:
        checks.append(
            RequirementCheck(
                name="sessions",
                ok=False,
                message=f"No session logs found in {where}",
                fix="record sessions with the logging plugin, export them with `opencode export`, "
                "or copy them from OpenCode's own store with `ocdspy collect`; then point "
                "data.raw_dir (or the PATH argument) at them",
            )
        )
        return checks
    checks.append(
        RequirementCheck(name="sessions", ok=True, message=f"{report.total_sessions} sessions read")
    )
    if require_success:
        ok = report.successful_sessions > 0
        checks.append(
            RequirementCheck(
                name="successful sessions",
                ok=ok,
                message=f"{report.successful_sessions} sessions with successful turns"
                if ok
                else "No successful sessions found",
                fix=None
                if ok
                else "the optimizer learns from successful turns: record sessions "
                "where the agent finished the task, or set data.require_success: false to learn "
                "from every turn",
            )
        )
    usable = report.successful_examples if require_success else report.total_examples
    ok = usable >= min_examples
    kind = "successful examples" if require_success else "examples"
    checks.append(
        RequirementCheck(
            name="enough examples",
            ok=ok,
            message=f"{usable} {kind} (need at least {min_examples})"
            if ok
            else f"Not enough examples: found {usable} {kind}, need at least {min_examples}",
            fix=None
            if ok
            else "record more sessions, or lower data.min_examples (fewer examples "
            "give the optimizer less to learn from)",
        )
    )
    return checks
