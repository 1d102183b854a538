"""The artifact layout: the one module that knows where every artifact of a project lives.

    data/raw/.ocdspy-collect.json        collect's state (which sessions it copied, and when)
    data/processed/examples.jsonl        convert: one example per turn
    data/processed/manifest.json         convert: its sources, settings and the examples' hash
    data/splits/train.jsonl, val.jsonl   split: both sides
    data/splits/manifest.json            split: both sides' hashes and sessions
    data/.ocdspy.lock                    the data lock (collect, convert, split)
    outputs/programs/NAME.json           optimize: the program (DSPy's saved JSON)
    outputs/programs/NAME.run.json       optimize: its run record
    outputs/programs/NAME.partial.json   the best candidate of an interrupted or failed run,
    outputs/programs/NAME.partial.run.json   and its record, never over a completed NAME
    outputs/logs/NAME/                   the optimizer's own logs (GEPA)
    outputs/reports/NAME.json, NAME.md   evaluate: the report of program NAME
    outputs/reports/replay-NAME.json, .md   replay: agents re-run in OpenCode on held-out turns
    outputs/reports/replay-NAME.state.json  replay: its finished runs (a re-run resumes there)
    outputs/prompts/AGENT.md             export: the agent file
    outputs/prompts/AGENT.meta.json      export: its provenance
    outputs/pipeline.json                pipeline: what each stage last ran on
    outputs/mlflow.db, outputs/mlartifacts/   tracked runs (`--track`), when tracking.uri is unset
    outputs/.ocdspy.lock                 the outputs lock (optimize, evaluate, export, pipeline)

The folders come from the settings (`data.*_dir`, `outputs.dir`); the names inside them are
spelled here and nowhere else. `Project(settings)` gives every path of one project, the way
sqlite-utils' `Database` owns its tables' names. Each artifact's typed reader lives on its model
(`Report.load`, `PipelineState.load`, ...; see `ocdspy.artifacts.Artifact`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocdspy.config import Settings

EXAMPLES_FILE = "examples.jsonl"
MANIFEST_FILE = "manifest.json"  # convert's and split's, each in its own folder
TRAIN_FILE = "train.jsonl"
VAL_FILE = "val.jsonl"
COLLECT_STATE_FILE = ".ocdspy-collect.json"
LOCK_FILE = ".ocdspy.lock"
PIPELINE_STATE_FILE = "pipeline.json"
TRACKING_STORE_FILE = "mlflow.db"
TRACKING_ARTIFACTS_DIR = "mlartifacts"
JSON_SUFFIX = ".json"
AGENTS_REPORT_PREFIX = "agents-"
REPLAY_REPORT_PREFIX = "replay-"
STATE_SUFFIX = ".state.json"
# Where OpenCode loads plugins, beside its `agents/` folder; export writes the demo plugin there
# under outputs/prompts too.
PLUGINS_DIR = "plugins"
RUN_SUFFIX = ".run.json"
PARTIAL = ".partial"
MARKDOWN_SUFFIX = ".md"
META_SUFFIX = ".meta.json"


# ---------------------------------------------------------------------------------------------
# Names derived from names


def program_name(program_file: Path) -> str:
    """The name a program file was saved under: `run.partial.json` -> `run.partial`."""
    name = program_file.name
    return name[: -len(JSON_SUFFIX)] if name.endswith(JSON_SUFFIX) else program_file.stem


def partial_name(name: str) -> str:
    """The name an interrupted or failed run saves under, beside the completed `name`."""
    return f"{name}{PARTIAL}"


def is_partial(program_file: Path) -> bool:
    return program_name(program_file).endswith(PARTIAL)


def run_record_beside(program_file: Path) -> Path:
    """The run record optimize wrote with the program at `program_file`."""
    return program_file.with_name(program_name(program_file) + RUN_SUFFIX)


def program_file_name(name: str) -> str:
    return f"{name}{JSON_SUFFIX}"


# ---------------------------------------------------------------------------------------------
# The files of one artifact


@dataclass(frozen=True)
class ProcessedFiles:
    """convert's output folder."""

    dir: Path

    @property
    def examples(self) -> Path:
        return self.dir / EXAMPLES_FILE

    @property
    def manifest(self) -> Path:
        return self.dir / MANIFEST_FILE


@dataclass(frozen=True)
class SplitFiles:
    """split's output folder."""

    dir: Path

    @property
    def train(self) -> Path:
        return self.dir / TRAIN_FILE

    @property
    def val(self) -> Path:
        return self.dir / VAL_FILE

    @property
    def manifest(self) -> Path:
        return self.dir / MANIFEST_FILE

    def exists(self) -> bool:
        """Whether a split was written here (checked or not: `load_split` checks it)."""
        return self.manifest.is_file() or self.train.is_file()


@dataclass(frozen=True)
class ReportFiles:
    """evaluate's report of one program, as JSON and as Markdown."""

    dir: Path
    name: str

    @classmethod
    def beside(cls, json_path: Path) -> ReportFiles:
        """The report whose JSON file is `json_path`."""
        return cls(json_path.parent, program_name(json_path))

    @property
    def json_path(self) -> Path:
        return self.dir / f"{self.name}{JSON_SUFFIX}"

    @property
    def markdown_path(self) -> Path:
        return self.dir / f"{self.name}{MARKDOWN_SUFFIX}"


@dataclass(frozen=True)
class AgentFiles:
    """export's agent file and its provenance sidecar."""

    dir: Path
    name: str

    @property
    def agent_path(self) -> Path:
        return self.dir / f"{self.name}{MARKDOWN_SUFFIX}"

    @property
    def meta_path(self) -> Path:
        return self.dir / f"{self.name}{META_SUFFIX}"


def installed_agent(agents_dir: Path, name: str) -> Path:
    """Where an agent file goes in an OpenCode agent folder."""
    return AgentFiles(agents_dir, name).agent_path


# ---------------------------------------------------------------------------------------------
# A project


class Project:
    """Every artifact path of the project that `settings` describe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def processed(self) -> ProcessedFiles:
        return ProcessedFiles(self.settings.data.processed_dir)

    @property
    def examples(self) -> Path:
        return self.processed.examples

    @property
    def splits(self) -> SplitFiles:
        return SplitFiles(self.settings.data.splits_dir)

    @property
    def programs_dir(self) -> Path:
        return self.settings.outputs.programs_dir

    def program(self, name: str) -> Path:
        return self.programs_dir / program_file_name(name)

    def run_record(self, name: str) -> Path:
        return self.programs_dir / f"{name}{RUN_SUFFIX}"

    def saved_programs(self) -> list[Path]:
        """The program files in programs_dir (run records left out), oldest first."""
        if not self.programs_dir.is_dir():
            return []
        found = (
            p for p in self.programs_dir.glob(f"*{JSON_SUFFIX}") if not p.name.endswith(RUN_SUFFIX)
        )
        return sorted(found, key=lambda p: p.stat().st_mtime)

    def optimizer_logs(self, name: str) -> Path:
        return self.settings.outputs.logs_dir / name

    def report(self, name: str) -> ReportFiles:
        return ReportFiles(self.settings.outputs.reports_dir, name)

    def agents_report(self, stem: str) -> ReportFiles:
        """`evaluate --agent`'s report on agent files (`stem`: their names joined)."""
        return self.report(f"{AGENTS_REPORT_PREFIX}{stem}")

    def replay_report(self, stem: str) -> ReportFiles:
        """`replay`'s report (`stem`: the replayed agents' names joined)."""
        return self.report(f"{REPLAY_REPORT_PREFIX}{stem}")

    def replay_state(self, stem: str) -> Path:
        """The finished runs of `replay_report(stem)`, so that a re-run skips them."""
        return self.settings.outputs.reports_dir / f"{REPLAY_REPORT_PREFIX}{stem}{STATE_SUFFIX}"

    def report_of(self, program_file: Path) -> ReportFiles:
        """The report evaluate writes for the program at `program_file`."""
        return self.report(program_name(program_file))

    def agent(self, name: str) -> AgentFiles:
        return AgentFiles(self.settings.outputs.prompts_dir, name)

    @property
    def pipeline_state(self) -> Path:
        return self.settings.outputs.dir / PIPELINE_STATE_FILE

    @property
    def tracking_store(self) -> Path:
        """MLflow's SQLite store of tracked runs (the default `tracking.uri`)."""
        return self.settings.outputs.dir / TRACKING_STORE_FILE

    @property
    def tracking_artifacts(self) -> Path:
        """Where the runs in `tracking_store` keep their files."""
        return self.settings.outputs.dir / TRACKING_ARTIFACTS_DIR
