"""The agent metric on crafted cases: each component, partial credit, GEPA feedback, loader."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from ocdspy.config import MetricWeights
from ocdspy.errors import ConfigError
from ocdspy.metric import (
    AgentMetric,
    MetricScores,
    align,
    as_calls,
    feedback_text,
    load_metric,
    score_prediction,
    target_similarity,
    text_f1,
)

GOLD_PLAN = {
    "plan": [
        {"tool": "read", "target": "src/x.py"},
        {"tool": "edit", "target": "src/x.py"},
        {"tool": "bash", "target": "pytest -q"},
    ],
    "response": "Fixed the rounding bug in src/x.py; the tests pass.",
}


def pred_plan(calls: list[tuple[str, str]], response: str = "") -> dict:
    return {"plan": [{"tool": t, "target": x} for t, x in calls], "response": response}


def test_exact_plan_scores_one_everywhere() -> None:
    s = score_prediction(
        GOLD_PLAN,
        pred_plan(
            [("read", "src/x.py"), ("edit", "src/x.py"), ("bash", "pytest -q")],
            "Fixed the rounding bug in src/x.py; the tests pass.",
        ),
    )
    assert s == MetricScores(success=1.0, efficiency=1.0, correctness=1.0)


def test_order_matters_for_success_not_for_correctness() -> None:
    swapped = score_prediction(
        GOLD_PLAN, pred_plan([("edit", "src/x.py"), ("read", "src/x.py"), ("bash", "pytest -q")])
    )
    # LCS keeps two of the three calls aligned.
    assert swapped.success == pytest.approx(2 / 3)
    assert swapped.efficiency == 1.0
    # Same files and command: the target half of correctness is perfect; no response given.
    assert swapped.correctness == pytest.approx(0.5)


def test_right_tool_wrong_target_gets_half_credit() -> None:
    s = score_prediction(
        {"plan": [{"tool": "read", "target": "src/x.py"}], "response": ""},
        pred_plan([("read", "docs/other.md")]),
    )
    assert s.success == pytest.approx(0.5)
    assert s.correctness == 0.0


def test_extra_and_repeated_calls_cost_efficiency() -> None:
    gold = {"plan": [{"tool": "read", "target": "a.py"}], "response": ""}
    two_extra = score_prediction(gold, pred_plan([("read", "a.py"), ("grep", "x"), ("glob", "*")]))
    assert two_extra.efficiency == pytest.approx(1 / 3)
    assert two_extra.success == pytest.approx(1 / 3)  # divided by the longer sequence
    repeat = score_prediction(
        {"plan": GOLD_PLAN["plan"], "response": ""},
        pred_plan([("read", "src/x.py"), ("read", "src/x.py")]),
    )
    assert repeat.efficiency == pytest.approx(3 / 4)  # 3 needed, 1 wasted (a repeat)
    assert score_prediction(gold, pred_plan([])).efficiency == 1.0  # fewer is never wasteful


def test_empty_gold_plan() -> None:
    gold = {"plan": [], "response": "It is in store.py."}
    assert score_prediction(gold, pred_plan([], "It is in store.py.")).success == 1.0
    s = score_prediction(gold, pred_plan([("read", "a")], "It is in store.py."))
    assert s.success == 0.0
    assert s.efficiency == pytest.approx(0.5)


def test_weighted_uses_weights() -> None:
    s = MetricScores(success=1.0, efficiency=0.0, correctness=0.5)
    assert s.weighted(MetricWeights(success=0.5, efficiency=0.3, correctness=0.2)) == pytest.approx(
        0.6
    )
    assert s.weighted(MetricWeights(success=0, efficiency=1, correctness=0)) == 0.0
    assert s.weighted(MetricWeights(success=2, efficiency=0, correctness=2)) == pytest.approx(0.75)


def test_target_similarity_paths_and_commands() -> None:
    assert target_similarity("read", "src/x.py", "./src/x.py") == 1.0
    assert target_similarity("read", "/home/u/p/src/x.py", "src/x.py") == 0.9
    assert target_similarity("read", "src/x.py", "lib/x.py") == 0.6
    assert target_similarity("read", "src/x.py", "README.md") == 0.0
    assert target_similarity("bash", "pytest -q tests/test_a.py", "pytest -q") > 0.5
    assert target_similarity("bash", "pytest -q", "ls -la") < 0.3
    assert target_similarity("grep", "", "x") == 0.0


def test_align_pairs_are_in_order() -> None:
    gold = as_calls(GOLD_PLAN["plan"])
    pred = as_calls(["read src/x.py", "bash pytest -q"])
    total, pairs = align(gold, pred)
    assert pairs == [(0, 0), (2, 1)]
    assert total == pytest.approx(2.0)


def test_text_f1_ignores_stopwords_and_case() -> None:
    assert text_f1("The tests pass", "tests PASS") == 1.0
    assert text_f1("rounding fixed", "") == 0.0
    assert 0 < text_f1("fixed rounding in totals", "fixed the totals") < 1


def test_as_calls_accepts_models_dicts_and_strings() -> None:
    class Obj:
        def __init__(self, tool: str, target: str) -> None:
            self.tool, self.target = tool, target

    calls = as_calls([Obj("Read", "a.py"), {"tool": "edit", "target": "a.py"}, "bash  ls", None])
    assert [(c.tool, c.target) for c in calls] == [
        ("read", "a.py"),
        ("edit", "a.py"),
        ("bash", "ls"),
    ]
    assert as_calls("read a\nedit b")[1].tool == "edit"
    assert as_calls(42) == []


# next_action mode


def step(tool: str, target: str, done: list[tuple[str, str]] | None = None) -> dict:
    return {
        "tool": tool,
        "target": target,
        "done": [{"tool": t, "target": x} for t, x in done or []],
    }


def test_next_action_exact_and_partial() -> None:
    gold = step("edit", "src/x.py", [("read", "src/x.py")])
    assert score_prediction(gold, {"tool": "edit", "target": "src/x.py"}) == MetricScores(
        success=1, efficiency=1, correctness=1
    )
    wrong_tool = score_prediction(gold, {"tool": "read", "target": "src/x.py"})
    assert wrong_tool.success == 0.0
    assert wrong_tool.correctness == 1.0  # right file
    assert wrong_tool.efficiency == 0.0  # re-reading a file already read


def test_next_action_finish() -> None:
    gold = step("finish", "Bumped the version to 0.4.0 in pyproject.toml.")
    ok = score_prediction(gold, {"tool": "finish", "target": "Version bumped to 0.4.0"})
    assert ok.success == 1.0 and ok.efficiency == 1.0 and 0.3 < ok.correctness < 1
    late = score_prediction(gold, {"tool": "bash", "target": "pytest"})
    assert late == MetricScores(success=0, efficiency=0, correctness=0)
    early = score_prediction(step("bash", "pytest -q"), {"tool": "finish", "target": "done"})
    assert early == MetricScores(success=0, efficiency=1, correctness=0)


def test_next_action_missing_prediction() -> None:
    s = score_prediction(step("read", "a.py"), {"tool": None, "target": None})
    assert s.success == 0 and s.correctness == 0


def test_agent_metric_threshold_when_bootstrapping() -> None:
    m = AgentMetric(MetricWeights())
    gold = step("edit", "src/x.py")
    assert m(gold, {"tool": "edit", "target": "src/x.py"}) == pytest.approx(1.0)
    assert m(gold, {"tool": "edit", "target": "src/x.py"}, trace=[]) is True
    assert m(gold, {"tool": "read", "target": "src/x.py"}, trace=[]) is False


def test_gepa_feedback_names_expected_and_got() -> None:
    m = AgentMetric()
    fb = m.feedback(
        step("edit", "src/x.py"),
        {"tool": "bash", "target": "sed -i s/a/b/ src/x.py"},
        None,
        "step",
        None,
    )
    assert fb.score == pytest.approx(
        m(step("edit", "src/x.py"), {"tool": "bash", "target": "sed -i s/a/b/ src/x.py"})
    )
    assert "expected `edit` on `src/x.py`, got `bash` `sed -i s/a/b/ src/x.py`" in fb.feedback
    text = feedback_text(GOLD_PLAN, pred_plan([("read", "src/x.py"), ("bash", "sed -i x")]))
    assert "step 2: expected `edit` on `src/x.py`" in text
    assert "final response should say" in text
    assert feedback_text(step("finish", "ok"), {"tool": "finish", "target": "ok"}).startswith(
        "correct"
    )


def test_load_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymetrics.py").write_text(
        textwrap.dedent("""
        def exact(example, prediction, trace=None):
            return float(example["tool"] == prediction["tool"])
        def two_args(example, prediction):
            return 1.0
        NOT_CALLABLE = 3
    """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mymetrics", raising=False)
    fn = load_metric("mymetrics:exact")
    assert fn({"tool": "a"}, {"tool": "a"}) == 1.0
    with pytest.raises(ConfigError, match="must accept"):
        load_metric("mymetrics:two_args")
    with pytest.raises(ConfigError, match="has no 'nope'"):
        load_metric("mymetrics:nope")
    with pytest.raises(ConfigError, match="not a function"):
        load_metric("mymetrics:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="cannot import"):
        load_metric("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        load_metric("mymetrics.exact")


def test_resolve_metric_ours_or_the_custom_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocdspy.config import Settings
    from ocdspy.metric import resolve_metric

    s = Settings()
    s.optimization.metric_weights = MetricWeights(success=1.0, efficiency=0.0, correctness=0.0)
    ours = resolve_metric(s)
    assert isinstance(ours.metric, AgentMetric) and ours.gepa == ours.metric.feedback
    assert ours.description == (
        "ocdspy agent metric (success 1.0, efficiency 0.0, correctness 0.0)"
    )
    gold = {"tool": "read", "target": "a.py"}
    assert ours.metric(gold, {"tool": "read", "target": "a.py"}) == 1.0

    (tmp_path / "custom_metric_mod.py").write_text(
        "def half(example, prediction, trace=None):\n    return 0.5\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "custom_metric_mod", raising=False)
    s.optimization.metric = "custom_metric_mod:half"
    metric, gepa, description = resolve_metric(s)
    assert description == "custom_metric_mod:half"
    assert metric(gold, gold) == 0.5
    assert gepa(gold, gold, None, "step", None) == 0.5  # GEPA's five-argument form
