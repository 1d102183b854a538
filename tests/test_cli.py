"""Wiring of each command: exit codes, messages, what goes to stdout and stderr."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ocdspy import __version__
from ocdspy.cli import _Bars, app
from ocdspy.progress import Step, on_examples, on_trials

runner = CliRunner()


def run(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path, examples_raw: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project made by `ocdspy init`, with the example sessions as its raw data."""
    monkeypatch.chdir(tmp_path)
    assert run("init").exit_code == 0
    shutil.rmtree(tmp_path / "data" / "raw")
    shutil.copytree(examples_raw, tmp_path / "data" / "raw")
    return tmp_path


def test_version_and_help() -> None:
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"ocdspy {__version__}"
    for cmd in ("validate", "convert", "split", "init", "config"):
        h = run(cmd, "--help")
        assert h.exit_code == 0 and "Usage" in h.stdout, cmd


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    r = run("init", str(tmp_path))
    assert r.exit_code == 0
    for d in ("data/raw", "data/processed", "data/splits", "outputs/prompts", "outputs/logs"):
        assert (tmp_path / d).is_dir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text("data:\n  seed: 5\n")
    r = run("init", str(tmp_path))
    assert cfg.read_text() == "data:\n  seed: 5\n" and "--force" in r.stdout
    r = run("init", str(tmp_path), "--force")
    assert "train_split" in cfg.read_text()
    backups = list(tmp_path.glob("config.yaml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == "data:\n  seed: 5\n"


def test_validate_examples_ok(project: Path) -> None:
    r = run("validate")
    assert r.exit_code == 0, r.stdout
    assert "01-fix-empty-invoice.json" in r.stdout.replace("\n", "").replace("│", "")
    assert "13 successful examples" in r.stdout


def test_validate_invalid_file_exit_1_with_path_message(project: Path) -> None:
    (project / "data" / "raw" / "zz-bad.json").write_text(
        '{"session": "s", "examples": [{"input": {}}]}'
    )
    r = run("validate")
    assert r.exit_code == 1
    assert "data/raw/zz-bad.json: examples[0].input.task: required field is missing" in r.stdout


def test_validate_json_report(project: Path) -> None:
    r = run("validate", "--json", "--min-examples", "100")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["valid"] is False and len(report["files"]) == 12
    assert report["files"][0]["status"] == "ok"
    assert any("need at least 100" in c["message"] for c in report["requirements"])


def test_validate_usage_error_exit_2(project: Path) -> None:
    assert run("validate", "--min-examples", "lots").exit_code == 2


def test_bad_config_is_one_red_line_exit_2(project: Path) -> None:
    (project / "config.yaml").write_text("data:\n  nope: 1\n")
    r = run("convert")
    assert r.exit_code == 2
    assert "config.yaml: data.nope: unknown setting" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_convert_then_split_then_cached(project: Path) -> None:
    r = run("convert")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "wrote 13 examples" in r.stdout and "redacted" in r.stdout
    r2 = run("convert")
    assert "up to date" in r2.stdout
    r3 = run("split")
    assert r3.exit_code == 0
    assert (project / "data" / "splits" / "train.jsonl").is_file()
    assert (project / "data" / "splits" / "val.jsonl").is_file()


def test_no_redact_warns(project: Path) -> None:
    r = run("convert", "--no-redact")
    assert r.exit_code == 0 and "redaction is off" in r.stderr


def test_missing_data_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run("convert")
    assert r.exit_code == 1 and "No session logs found" in r.stderr
    r = run("split")
    assert r.exit_code == 1 and "run `ocdspy convert` first" in r.stderr


def test_config_show_sources(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "config.yaml").write_text("data:\n  seed: 3\n")
    monkeypatch.setenv("OCDSPY_DATA__MIN_EXAMPLES", "4")
    r = run("config", "show", "--json")
    rows = json.loads(r.stdout)
    assert rows["data.seed"]["source"].endswith("config.yaml")
    assert rows["data.min_examples"] == {"value": "4", "source": "env OCDSPY_DATA__MIN_EXAMPLES"}
    assert rows["models.teacher.api_key_env"]["value"] == "ANTHROPIC_API_KEY"


def test_installed_command_starts_without_heavy_imports() -> None:
    exe = Path(sys.executable).parent / "ocdspy"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ocdspy"]
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "validate" in r.stdout
    probe = (
        "import sys, ocdspy.cli, ocdspy.validate, ocdspy.convert, ocdspy.split; "
        "print(sorted(m for m in ('dspy', 'litellm', 'llama_cpp') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]"


def test_a_multi_line_error_keeps_its_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our own line breaks stay line breaks; only control characters from outside are escaped."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OCDSPY_OPTIMIZATION__MAX_ERRORS", "-5")
    r = runner.invoke(app, ["config", "show"])
    assert r.exit_code == 2  # a configuration error
    assert "invalid settings:\n  env OCDSPY_OPTIMIZATION__MAX_ERRORS" in r.stderr
    assert "\\n" not in r.stderr


# ---------------------------------------------------------------------------------------------
# Progress on stderr


def terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=150), screen


@dataclass
class Scores:
    metric_calls: int
    planned_metric_calls: int
    candidates: int
    best_score: float | None


def test_bars_show_each_stage_with_its_own_counts() -> None:
    console, screen = terminal()
    with _Bars(console=console) as bars:
        bars.stage("validate")
        bars.stage("optimize")
        trials = on_trials(bars, "MIPROv2")
        trials(Scores(1, 10, 1, None))
        trials(Scores(3, 10, 2, 50.0))
        bars.stage("evaluate")
        examples = on_examples(bars)
        for done in (1, 2, 3, 4):
            examples("baseline", done, 4)
        examples("optimized", 1, 4)
    shown = screen.getvalue()
    assert "validate…" in shown and "optimize…" in shown
    # The optimizer's trials as they score, then evaluate's two sides, each with its count.
    assert "optimize · MIPROv2 · 2 candidate(s) · best 50.0" in shown and "3/10 scored" in shown
    assert "evaluate · baseline" in shown and "4/4" in shown
    assert "evaluate · optimized" in shown and "1/4" in shown
    # A finished stage's bars go: the last drawing holds evaluate's bars only.
    last = shown.rsplit("evaluate…", 1)[1]
    assert "MIPROv2" not in last


def test_bars_draw_nothing_off_a_terminal_or_when_disabled() -> None:
    for console, screen, enabled in (
        (Console(file=(pipe := io.StringIO())), pipe, True),
        (*terminal(), False),
    ):
        with _Bars(console=console, enabled=enabled) as bars:
            bars.stage("optimize")
            bars.step(Step("MIPROv2", 1, 4, unit="scored"))
        assert screen.getvalue() == ""


def test_pipeline_shows_its_stages_on_a_terminal_only(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocdspy.cli
    import ocdspy.pipeline
    from ocdspy.pipeline import PipelineResult, StageOutcome

    stages = ("validate", "convert", "split", "optimize", "evaluate", "export")

    def fake_run(settings: object, **options: Any) -> PipelineResult:
        for stage in stages:
            options["progress"].stage(stage)
        return PipelineResult(
            stages=[StageOutcome(stage=s, status="ran", detail="d", seconds=0.5) for s in stages],
            sessions=12,
            examples=13,
            seconds=3.0,
        )

    monkeypatch.setattr(ocdspy.pipeline, "run_pipeline", fake_run)
    r = run("pipeline")
    assert r.exit_code == 0, r.stderr
    assert "│ optimize │ ran" in r.stdout and "data: 12 sessions -> 13 examples" in r.stdout
    assert "done in 3 s" in r.stdout and "optimize…" not in r.stderr
    console, screen = terminal()
    monkeypatch.setattr(ocdspy.cli, "err", console)
    assert run("pipeline").exit_code == 0
    assert all(f"{stage}…" in screen.getvalue() for stage in stages)
