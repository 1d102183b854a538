"""validate: read every input, report per file, and check the data requirements of training.

The requirements are checked against `DataCounts`: `validate` counts them by parsing the inputs;
`check_converted` takes them from what `convert` kept, so a run that converts anyway (the
pipeline) need not parse every input twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, computed_field

from ocdspy.sessions.read import Problem, SessionRead, discover, iter_sessions

if TYPE_CHECKING:
    from ocdspy.convert import ConvertResult


class FileReport(BaseModel):
    file: str
    format: str
    sessions: int = 0
    examples: int = 0
    successful: int = 0
    actions: int = 0
    errors: int = 0
    warnings: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Literal["ok", "warnings", "invalid"]:
        if self.errors:
            return "invalid"
        return "warnings" if self.warnings else "ok"


class ProblemOut(BaseModel):
    """A problem as reports show it: `path` is where in the file (a JSON path)."""

    file: str
    path: str
    message: str
    severity: str

    @classmethod
    def of(cls, problem: Problem) -> ProblemOut:
        return cls(
            file=problem.file,
            path=problem.where,
            message=problem.message,
            severity=problem.severity,
        )


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

    @computed_field  # type: ignore[prop-decorator]
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
    """Parse every input under `paths`: one row per file, every problem, and the data
    requirements of training checked against what was read."""
    found = discover(paths)
    report = ValidateReport()
    rows = {
        str(source.path): FileReport(file=str(source.path), format=source.format)
        for source in found.sources
    }
    for problem in found.problems:
        _note(report, rows, problem)
    for item in iter_sessions(found.sources):
        if isinstance(item, Problem):
            _note(report, rows, item)
        else:
            _count(report, rows[str(item.file)], item)
    report.files = list(rows.values())
    counts = DataCounts(
        sessions=report.total_sessions,
        usable=report.successful_examples if require_success else report.total_examples,
        usable_sessions=report.successful_sessions if require_success else None,
    )
    report.requirements = requirements(
        counts, paths, min_examples=min_examples, require_success=require_success
    )
    return report


def _note(report: ValidateReport, rows: dict[str, FileReport], problem: Problem) -> None:
    report.problems.append(ProblemOut.of(problem))
    row = rows.get(problem.file)
    if row is None:
        row = rows[problem.file] = FileReport(file=problem.file, format="-")
    if problem.severity == "error":
        row.errors += 1
    else:
        row.warnings += 1


def _count(report: ValidateReport, row: FileReport, read: SessionRead) -> None:
    # A JSON file's format is only certain once parsed.
    if row.format in ("json", "plugin", "opencode-export"):
        row.format = read.format
    session = read.session
    successful = sum(session.turn_success(i) for i in range(len(session.examples)))
    row.sessions += 1
    row.examples += len(session.examples)
    row.actions += sum(len(turn.actions) for turn in session.examples)
    row.successful += successful
    report.total_sessions += 1
    report.total_examples += len(session.examples)
    report.successful_examples += successful
    if successful:
        report.successful_sessions += 1


class DataCounts(BaseModel):
    """What the data requirements are checked against."""

    sessions: int
    # Examples training can use: successful turns under require_success, else every turn.
    usable: int
    # Sessions with a usable example, where known (None: only whether any exists is known).
    usable_sessions: int | None = None


def check_converted(
    result: ConvertResult, paths: list[Path], *, min_examples: int
) -> list[RequirementCheck]:
    """The data requirements checked against what `convert` kept (its manifest, fresh or
    cached), without parsing the inputs again. `paths` are the inputs convert read (named when
    no session was found); require_success is the one convert ran with. The usable count is the
    examples kept, so turns convert drops (an empty task) do not count, as they cannot train."""
    manifest = result.manifest
    counts = DataCounts(sessions=manifest.sessions_read, usable=manifest.examples_kept)
    return requirements(
        counts,
        paths,
        min_examples=min_examples,
        require_success=manifest.settings.require_success,
    )


def requirements(
    counts: DataCounts, paths: list[Path], *, min_examples: int, require_success: bool
) -> list[RequirementCheck]:
    """The checks, in order: any sessions; (under require_success) any successful session;
    enough usable examples. The first that fails is what the pipeline stops on."""
    if counts.sessions == 0:
        return [_no_sessions(paths)]
    checks = [
        RequirementCheck(name="sessions", ok=True, message=f"{counts.sessions} sessions read")
    ]
    if require_success:
        checks.append(_successful_sessions(counts))
    ok = counts.usable >= min_examples
    kind = "successful examples" if require_success else "examples"
    checks.append(
        RequirementCheck(
            name="enough examples",
            ok=ok,
            message=f"{counts.usable} {kind} (need at least {min_examples})"
            if ok
            else f"Not enough examples: found {counts.usable} {kind}, need at least {min_examples}",
            fix=None
            if ok
            else "record more sessions, or lower data.min_examples (fewer examples "
            "give the optimizer less to learn from)",
        )
    )
    return checks


def _no_sessions(paths: list[Path]) -> RequirementCheck:
    where = ", ".join(str(p) for p in paths)
    return RequirementCheck(
        name="sessions",
        ok=False,
        message=f"No session logs found in {where}",
        fix="record sessions with the logging plugin, export them with `opencode export`, "
        "or copy them from OpenCode's own store with `ocdspy collect`; then point "
        "data.raw_dir (or the PATH argument) at them",
    )


def _successful_sessions(counts: DataCounts) -> RequirementCheck:
    if counts.usable == 0:
        return RequirementCheck(
            name="successful sessions",
            ok=False,
            message="No successful sessions found",
            fix="the optimizer learns from successful turns: record sessions "
            "where the agent finished the task, or set data.require_success: false to learn "
            "from every turn",
        )
    found = (
        f"{counts.usable_sessions} sessions with successful turns"
        if counts.usable_sessions is not None
        else "sessions with successful turns found"
    )
    return RequirementCheck(name="successful sessions", ok=True, message=found)
