"""The agent program: renderings, example conversion, signatures, demo selection, save/load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocdspy.convert import Example, ExampleAction
from ocdspy.program.render import (
    BUILTIN_TOOLS,
    CORE_TOOLS,
    FINISH,
    available_tools,
    next_action_inputs,
    outcome,
    plan_inputs,
    render_progress,
)


@pytest.fixture(autouse=True)
def _dspy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy_cache"))


def make_example(
    i: int = 0,
    *,
    tools: list[tuple[str, str]] | None = None,
    task: str = "Fix the failing test",
    response: str = "Fixed it.",
) -> Example:
    calls = (
        tools
        if tools is not None
        else [("read", "src/a.py"), ("edit", "src/a.py"), ("bash", "pytest -q")]
    )
    return Example(
        id=f"ses_{i}/0",
        session_id=f"ses_{i}",
        turn_index=0,
        source="x.json",
        source_format="plugin",
        task=task,
        context="project: /p (python, 3 files)",
        history="user: hello\nassistant: hi",
        actions=[
            ExampleAction(
                step=k + 1,
                tool=t,
                target=x,
                args={},
                success=True,
                result=f"line one of {x}\nline two",
            )
            for k, (t, x) in enumerate(calls)
        ],
        response=response,
        success=True,
    )


def test_available_tools_adds_custom_tools_once() -> None:
    ex = make_example(
        tools=[("read", "a"), ("mcp_search", "q"), ("mcp_search", "r"), ("webfetch", "u")]
    )
    tools = available_tools([ex])
    assert tools[: len(CORE_TOOLS)] == list(CORE_TOOLS)
    assert tools[len(CORE_TOOLS) :] == ["mcp_search", "webfetch"]
    assert "todowrite" not in tools and "todowrite" in BUILTIN_TOOLS
    assert FINISH not in tools


def test_progress_shows_outcome_and_files_read() -> None:
    ex = make_example()
    text = render_progress(ex.actions[:2])
    assert "1. read src/a.py -> ok: line one of src/a.py (2 lines)" in text
    assert "files read: src/a.py" in text
    assert "files changed: src/a.py" in text
    assert render_progress([]) == "no tool calls yet"
    failed = ExampleAction(step=1, tool="bash", target="pytest", success=False, result="")
    assert outcome(failed) == "failed"


def test_inputs_are_clipped() -> None:
    ex = make_example(task="x" * 5000)
    inputs = plan_inputs(ex, ["read"])
    assert len(inputs["task"]) <= 600
    assert inputs["tools"] == "read"
    assert next_action_inputs(ex, 0, ["read"])["progress"] == "no tool calls yet"


def test_next_action_examples_one_per_step_plus_finish() -> None:
    from ocdspy.program.agent import NEXT_ACTION_INPUTS, to_dspy_examples

    ex = make_example()
    items = to_dspy_examples([ex], "next_action", available_tools())
    assert [(d.tool, d.target) for d in items] == [
        ("read", "src/a.py"),
        ("edit", "src/a.py"),
        ("bash", "pytest -q"),
        (FINISH, "Fixed it."),
    ]
    assert set(items[0].inputs().keys()) == set(NEXT_ACTION_INPUTS)
    assert [c["target"] for c in items[2].done] == ["src/a.py", "src/a.py"]
    assert "2. edit src/a.py" in items[2].progress
    assert items[3].example_id == "ses_0/0#4"


def test_plan_examples_carry_labels() -> None:
    from ocdspy.program.agent import PLAN_INPUTS, to_dspy_examples

    (d,) = to_dspy_examples([make_example()], "plan", ["read", "edit", "bash"])
    assert set(d.inputs().keys()) == set(PLAN_INPUTS)
    assert d.plan[1] == {"tool": "edit", "target": "src/a.py"}
    assert d.response == "Fixed it."
    with pytest.raises(ValueError, match="unknown program mode"):
        to_dspy_examples([], "chat", [])


def test_signature_constrains_tools_to_an_enum() -> None:
    import pydantic

    from ocdspy.program.agent import next_action_signature, plan_signature

    sig = next_action_signature(["read", "edit"])
    model = pydantic.create_model(
        "Out", **{n: (f.annotation, ...) for n, f in sig.output_fields.items()}
    )
    schema = model.model_json_schema()
    assert schema["properties"]["tool"]["enum"] == ["read", "edit", FINISH]
    plan = plan_signature(["read"])
    assert list(plan.output_fields) == ["plan", "response"]
    assert list(plan.input_fields) == ["task", "context", "history", "tools"]


def test_program_runs_with_dummy_lm_and_round_trips(tmp_path: Path) -> None:
    import dspy
    from dspy.utils import DummyLM

    from ocdspy.program.agent import build_program, to_dspy_examples

    tools = available_tools()
    lm = DummyLM([{"tool": "edit", "target": "src/a.py"}], adapter=dspy.JSONAdapter())
    prog = build_program("next_action", tools)
    ex = to_dspy_examples([make_example()], "next_action", tools)[1]
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        pred = prog(**ex.inputs())
    assert (pred.tool, pred.target) == ("edit", "src/a.py")

    prog.step.demos = to_dspy_examples([make_example(1)], "next_action", tools)
    prog.step.signature = prog.step.signature.with_instructions("Be brief.")
    path = tmp_path / "p.json"
    prog.save(str(path))
    again = build_program("next_action", tools)
    again.load(str(path))
    assert again.step.signature.instructions == "Be brief."
    assert len(again.step.demos) == 4
    assert os.path.getsize(path) > 0


def test_demo_pool_shows_the_most_similar_demos() -> None:
    import dspy

    from ocdspy.program.agent import build_program, to_dspy_examples

    tools = available_tools()
    pool = (
        to_dspy_examples([make_example(1, task="Bump the version in pyproject")], "plan", tools)
        + to_dspy_examples([make_example(2, task="Write a changelog")], "plan", tools)
        + to_dspy_examples([make_example(3, task="Fix the failing test in totals")], "plan", tools)
    )
    prog = build_program("plan", tools, demos_shown=2)
    prog.step.demos = pool
    query = to_dspy_examples([make_example(9, task="Fix the failing totals test")], "plan", tools)[
        0
    ]
    picked = prog._pick_demos(query.inputs())
    assert len(picked) == 2
    assert picked[-1].task == "Fix the failing test in totals"
    order = [pool.index(d) for d in picked]
    assert order == sorted(order)  # pool order is kept
    assert all(isinstance(d, dspy.Example) for d in picked)
    prog.demos_shown = 0
    assert len(prog._pick_demos(query.inputs())) == 3


def test_build_program_rejects_unknown_mode() -> None:
    from ocdspy.program.agent import build_program

    with pytest.raises(ValueError, match="next_action"):
        build_program("chat")


def test_next_action_demos_are_chosen_by_state() -> None:
    from ocdspy.program.agent import build_program, similarity

    tools = available_tools()
    prog = build_program("next_action", tools, demos_shown=1)
    after_read = {"task": "Rename foo", "progress": "1. grep foo -> ok\n2. read a.py -> ok"}
    after_edit = {"task": "Fix the totals test", "progress": "1. read t.py -> ok\n2. edit t.py"}
    fresh = {"task": "Fix the totals test", "progress": "no tool calls yet"}
    query = {"task": "Fix the totals test", "progress": "1. grep x -> ok\n2. read b.py -> ok"}
    # Same last two tools beats the same task words.
    assert similarity(query, after_read) > similarity(query, after_edit)
    assert similarity(query, after_edit) > similarity(query, fresh)
    import dspy

    prog.step.demos = [
        dspy.Example(**d, context="", tools="", tool="edit", target="x")
        for d in (fresh, after_edit, after_read)
    ]
    (picked,) = prog._pick_demos(query)
    assert picked.task == "Rename foo"
