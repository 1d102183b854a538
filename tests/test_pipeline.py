"""The whole pipeline over examples/, with a scripted engine standing in for the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLES
from lm_fakes import SchemaEngine, schema_lm
from ocdspy.config import load_settings
from ocdspy.layout import Project
from ocdspy.lm.runtime import LMs
from ocdspy.pipeline import run_pipeline


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from ocdspy.lm import configure_cache

    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy_cache"))
    configure_cache(tmp_path / "dspy_cache")
    shutil.copytree(
        EXAMPLES,
        tmp_path / "examples",
        ignore=shutil.ignore_patterns("processed", "splits", "outputs", ".dspy_cache"),
    )
    return tmp_path / "examples"


def lms(engine: SchemaEngine) -> LMs:
    lm = schema_lm(engine)
    return LMs(target=lm, teacher=lm)


class Shipped:
    """The target model as the shipped-form scoring calls it: it reads the first demo's call
    when the prompt shows one, else answers; it counts the requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.systems: list[str] = []

    def __call__(self, request: dict[str, object]) -> str:
        self.requests += 1
        messages = request["messages"]
        assert isinstance(messages, list)
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        self.systems.append(system)
        return 'call: read {"filePath": "invoice.py"}' if "<example>" in system else "answer: ok"


def test_pipeline_runs_every_stage_then_skips_what_is_current(project: Path) -> None:
    settings = load_settings(project / "config.yaml", environ={}).settings
    settings.optimization.score_program = True
    agents = project / "home" / ".config" / "opencode" / "agents"
    engine = SchemaEngine()
    shipped = Shipped()
    first = run_pipeline(settings, lms=lms(engine), lm_call=shipped, install_to=agents)
    assert [(s.stage, s.status) for s in first.stages] == [
        ("validate", "ran"),
        ("convert", "ran"),
        ("split", "ran"),
        ("optimize", "ran"),
        ("evaluate", "ran"),
        ("ship", "ran"),
        ("score", "ran"),
        ("export", "ran"),
    ]
    # The ship stage chose the demos on training turns; the export records it as training-side.
    plan = first.ship
    assert plan is not None and plan.searched and plan.candidates
    assert {c.form for c in plan.candidates} == {"static", "plugin"}
    meta = json.loads(first.agent_path.with_suffix(".meta.json").read_text())  # type: ignore[union-attr]
    assert meta["ship"]["k"] == plan.k and "training-side" in meta["ship"]["note"]
    # What ships is what was scored: the installed agent's description carries the score of
    # its installed form, measured on exactly its body (and the plugin's pool).
    assert first.installed_form == "plugin" and set(first.shipped) == {"static", "plugin"}
    text = first.agent_path.read_text()  # type: ignore[union-attr]
    plugin = first.shipped["plugin"]
    assert f"score {plugin.baseline:.0f} → {plugin.score:.0f} as installed" in text
    body = text.split("---", 2)[2].strip()
    assert any(body in system for system in shipped.systems)
    installed_plugins = sorted(p.name for p in (agents.parent / "plugins").iterdir())
    assert installed_plugins == [
        f"ocdspy-{first.agent_name}.js",
        f"ocdspy-{first.agent_name}.pool.json",
    ]
    assert first.examples == 13 and first.train_examples + first.val_examples == 13
    assert first.baseline_score is not None and first.optimized_score is not None
    assert first.agent_path is not None and first.agent_path.is_file()
    assert first.installed_path == agents / f"{first.agent_name}.md"
    report = json.loads(first.report_path.read_text())  # type: ignore[union-attr]
    assert report["optimized"]["score"] == first.optimized_score
    calls = engine.calls

    requests = shipped.requests
    again = run_pipeline(
        settings, lms=lms(SchemaEngine()), lm_call=shipped, install_to=agents, overwrite=True
    )
    assert [(s.stage, s.status) for s in again.stages] == [
        ("validate", "ran"),
        ("convert", "skipped"),
        ("split", "skipped"),
        ("optimize", "skipped"),
        ("evaluate", "skipped"),
        ("ship", "skipped"),
        ("score", "skipped"),
        ("export", "ran"),
    ]
    assert shipped.requests == requests and again.shipped == first.shipped
    assert again.lm_calls == 0 and calls > 0
    assert list(agents.glob("*.bak"))  # the installed agent was replaced with a backup

    # A changed setting redoes what depends on it, and only that.
    settings.data.seed = 5
    third = run_pipeline(settings, lms=lms(SchemaEngine()), lm_call=shipped)
    assert [s.status for s in third.stages][1:7] == ["skipped", "ran", "ran", "ran", "ran", "ran"]

    # A setting of the shipped files only redoes the ship and score stages.
    settings.optimization.ship_search_steps = 0
    settings.optimization.static_demo_tokens = 300
    before = shipped.requests
    fourth = run_pipeline(settings, lms=lms(SchemaEngine()), lm_call=shipped)
    # Only the score stage called a model: the run's summary counts its requests.
    assert fourth.lm_calls == shipped.requests - before > 0
    statuses = {s.stage: s.status for s in fourth.stages}
    assert statuses["optimize"] == statuses["evaluate"] == "skipped"
    assert statuses["ship"] == statuses["score"] == "ran"
    assert fourth.ship is not None and not fourth.ship.searched
    assert fourth.ship.static_tokens == 300
    # A later `ocdspy export` takes this run's plan, not the earlier search's.
    from ocdspy.pipeline import searched_plan

    assert fourth.program_path is not None
    assert searched_plan(settings, fourth.program_path) == fourth.ship


def test_pipeline_scores_the_agent_file_not_the_program_by_default(project: Path) -> None:
    settings = load_settings(project / "config.yaml", environ={}).settings
    assert settings.optimization.score_program is False
    engine, shipped = SchemaEngine(), Shipped()
    result = run_pipeline(settings, lms=lms(engine), lm_call=shipped)
    evaluate = next(s for s in result.stages if s.stage == "evaluate")
    assert evaluate.status == "skipped" and "score_program" in evaluate.detail
    assert result.baseline_score is None and result.report_path is None
    assert result.program_path is not None
    assert not Project(settings).report_of(result.program_path).json_path.exists()
    # The forms the user installs are scored all the same, on every held-out step.
    assert set(result.shipped) == {"static", "plugin"}
    assert shipped.requests > 0
    optimize_calls = engine.calls

    # Asking for the program's score later runs only that stage (and export).
    settings.optimization.score_program = True
    again = run_pipeline(settings, lms=lms(engine), lm_call=shipped)
    statuses = {s.stage: s.status for s in again.stages}
    assert statuses["optimize"] == statuses["ship"] == statuses["score"] == "skipped"
    assert statuses["evaluate"] == "ran" and engine.calls > optimize_calls
    assert again.baseline_score is not None and again.report_path is not None

    # `ocdspy export` alone writes what the pipeline scored: its searched plan, not the
    # settings' defaults, so the installed form's score still applies.
    from ocdspy.export import default_plan, export_program

    assert again.ship is not None and again.ship.searched and again.agent_path is not None
    plain = default_plan(settings)
    assert (again.ship.k, again.ship.static_tokens) != (plain.k, plain.static_tokens)
    pipeline_text = again.agent_path.read_text()
    alone = export_program(settings, again.program_path)
    assert alone.agent_path.read_text() == pipeline_text
    assert "as installed" in pipeline_text
    # Once a setting the search depended on changes, the plan is the settings' own, unscored.
    settings.optimization.static_demo_tokens = 100
    changed = export_program(settings, again.program_path).agent_path.read_text()
    assert "not scored as installed" in changed


def test_pipeline_stops_on_unmet_data_requirements(project: Path) -> None:
    settings = load_settings(project / "config.yaml", environ={}).settings
    settings.data.min_examples = 500
    from ocdspy.errors import DataError

    with pytest.raises(DataError, match="Not enough examples"):
        run_pipeline(settings, lms=lms(SchemaEngine()), lm_call=Shipped())
    assert not (project / "outputs").exists()
