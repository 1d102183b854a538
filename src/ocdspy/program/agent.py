"""The DSPy program that plays the OpenCode agent (imports dspy: load it only when needed).

No `from __future__ import annotations` here: signatures are built at run time from the tool
list, and pydantic must see real types, not strings.
"""

import json
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

import dspy
from pydantic import BaseModel, Field

from ocdspy.convert import Example
from ocdspy.program.render import (
    FINISH,
    RESPONSE_CHARS,
    TARGET_CHARS,
    available_tools,
    clip,
    next_action_inputs,
    plan_inputs,
    words,
)
from ocdspy.program.sanitize import split_demos

Mode = Literal["plan", "next_action"]
MODES: tuple[str, ...] = ("plan", "next_action")
PLAN_INPUTS = ("task", "context", "history", "tools")
NEXT_ACTION_INPUTS = ("task", "context", "progress", "tools")

PLAN_INSTRUCTIONS = (
    "You are a coding agent working in a repository. Plan the tool calls that complete the task, "
    "in order, each with its main argument (the file path, shell command or search pattern), "
    "then write the short final message you will send the user. Read a file before editing it; "
    "use no more calls than needed."
)
NEXT_ACTION_INSTRUCTIONS = (
    "You are a coding agent working in a repository. Given the task and the tool calls made so "
    "far with their results, choose the next tool call and its main argument (the file path, "
    "shell command or search pattern). Do not repeat a call that already succeeded. When the "
    f"task is done, choose `{FINISH}` and put the final message to the user in `target`."
)

# Which program instance produced the prediction the metric is about to score, per thread:
# the optimizer's trial tracker uses it to keep the best program seen so far.
_current = threading.local()


def current_program() -> "dspy.Module | None":
    return getattr(_current, "program", None)


def _tool_literal(tools: Sequence[str]) -> Any:
    return Literal[tuple(tools)]


def plan_signature(tools: Sequence[str]) -> type[dspy.Signature]:
    tool_type = _tool_literal(tools)

    class ToolCall(BaseModel):
        tool: tool_type  # type: ignore[valid-type]
        target: str = Field(max_length=TARGET_CHARS)

    class AgentPlan(dspy.Signature):
        __doc__ = PLAN_INSTRUCTIONS
        task: str = dspy.InputField(desc="what the user asked for")
        context: str = dspy.InputField(desc="project, git status, relevant files, diagnostics")
        history: str = dspy.InputField(desc="earlier messages of the conversation")
        tools: str = dspy.InputField(desc="available tools")
        plan: list[ToolCall] = dspy.OutputField(desc="ordered tool calls")
        response: str = dspy.OutputField(desc="final message to the user, one or two sentences")

    return AgentPlan


def next_action_signature(tools: Sequence[str]) -> type[dspy.Signature]:
    tool_type = _tool_literal([*tools, FINISH])

    class AgentStep(dspy.Signature):
        __doc__ = NEXT_ACTION_INSTRUCTIONS
        task: str = dspy.InputField(desc="what the user asked for")
        context: str = dspy.InputField(desc="project, git status, relevant files, diagnostics")
        progress: str = dspy.InputField(desc="tool calls so far with their outcome")
        tools: str = dspy.InputField(desc="available tools")
        tool: tool_type = dspy.OutputField(desc=f"next tool, or {FINISH}")  # type: ignore[valid-type]
        target: str = dspy.OutputField(desc="its main argument, or the final message")

    return AgentStep


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / (len(a | b) or 1)


_STEP_LINE = re.compile(r"^\d+\. (\S+)", re.MULTILINE)


def _state_features(progress: str) -> set[str]:
    """Where a turn stands: the last two tools and how many calls so far.

    What comes next depends mostly on this (read -> edit -> run the tests -> finish), so a demo
    in the same state is the one worth copying.
    """
    tools = _STEP_LINE.findall(progress)
    feats = {f"n={min(len(tools), 4)}"}
    if tools:
        feats.add(f"last={tools[-1]}")
    if len(tools) > 1:
        feats.add(f"prev={tools[-2]}")
        feats.add(f"last2={tools[-2]}>{tools[-1]}")
    return feats


def similarity(query: dict[str, Any], demo: Any) -> float:
    """How much a demo is like the current input: same state first, then the same words."""

    def get(obj: Any, key: str) -> str:
        return str(obj.get(key, "") if hasattr(obj, "get") else "")

    text_sim = _overlap(
        set(words(get(query, "task") + " " + get(query, "history"))),
        set(words(get(demo, "task") + " " + get(demo, "history"))),
    )
    if "progress" not in query:
        return text_sim + 0.5 * _overlap(
            set(words(get(query, "context"))), set(words(get(demo, "context")))
        )
    q, d = _state_features(get(query, "progress")), _state_features(get(demo, "progress"))
    weights = {"last": 3.0, "last2": 2.0, "prev": 1.0, "n": 1.0}
    state = sum(weights[f.split("=")[0]] for f in q & d)
    return state + text_sim


class _Agent(dspy.Module):
    """Shared part of both modes: one predictor whose demos are a pool.

    When an optimizer leaves more demos than `demos_shown`, each call shows the ones most like the
    current input (`similarity`: the same point in a turn, then shared words): a tiny model
    copies what it is shown, so what it is shown should be relevant. With `demos_shown=0` every
    demo is shown, as plain DSPy does.
    """

    input_names: tuple[str, ...] = ()

    def __init__(
        self, signature: type[dspy.Signature], tools: Sequence[str], demos_shown: int = 3
    ) -> None:
        super().__init__()
        self.tools = list(tools)
        self.demos_shown = demos_shown
        self.step = dspy.Predict(signature)

    def _pick_demos(self, inputs: dict[str, Any]) -> list[Any]:
        # A demo whose recorded text reads as instructions to the agent is never shown.
        pool = split_demos(self.step.demos)[0]
        if self.demos_shown <= 0 or len(pool) <= self.demos_shown:
            return pool
        scored = [(similarity(inputs, d), -i, d) for i, d in enumerate(pool)]
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        # Shown in pool order, not by similarity: consecutive calls that pick the same demos
        # then send the same prompt prefix, which a local server (llama.cpp) does not recompute.
        chosen = {id(d) for _, _, d in scored[: self.demos_shown]}
        return [d for d in pool if id(d) in chosen]

    def forward(self, **inputs: Any) -> dspy.Prediction:
        _current.program = self
        return self.step(demos=self._pick_demos(inputs), **inputs)


class PlanAgent(_Agent):
    input_names = PLAN_INPUTS

    def __init__(self, tools: Sequence[str], demos_shown: int = 3) -> None:
        super().__init__(plan_signature(tools), tools, demos_shown)


class NextActionAgent(_Agent):
    input_names = NEXT_ACTION_INPUTS

    def __init__(self, tools: Sequence[str], demos_shown: int = 3) -> None:
        super().__init__(next_action_signature(tools), tools, demos_shown)


def build_program(mode: str, tools: Sequence[str] | None = None, *, demos_shown: int = 3) -> _Agent:
    tools = list(tools) if tools is not None else available_tools()
    if mode == "plan":
        return PlanAgent(tools, demos_shown)
    if mode == "next_action":
        return NextActionAgent(tools, demos_shown)
    raise ValueError(f"unknown program mode {mode!r}; expected one of {', '.join(MODES)}")


# ---------------------------------------------------------------------------------------------
# Examples


def plan_example(ex: Example, tools: Sequence[str]) -> dspy.Example:
    d = dspy.Example(
        **plan_inputs(ex, tools),
        plan=[{"tool": a.tool, "target": clip(a.target, TARGET_CHARS)} for a in ex.actions],
        response=clip(ex.response, RESPONSE_CHARS),
        example_id=ex.id,
        session_id=ex.session_id,
        recorded_success=ex.success,
        done=[],
    )
    return d.with_inputs(*PLAN_INPUTS)


def next_action_examples(ex: Example, tools: Sequence[str]) -> list[dspy.Example]:
    """One example per recorded step, plus one for the final answer."""
    out = []
    for k in range(len(ex.actions) + 1):
        if k < len(ex.actions):
            a = ex.actions[k]
            tool, target = a.tool, clip(a.target, TARGET_CHARS)
        else:
            tool, target = FINISH, clip(ex.response, RESPONSE_CHARS)
        d = dspy.Example(
            **next_action_inputs(ex, k, tools),
            tool=tool,
            target=target,
            example_id=f"{ex.id}#{k + 1}",
            session_id=ex.session_id,
            recorded_success=ex.success,
            done=[
                {"tool": a.tool, "target": a.target}
                for a in ex.actions[:k]
                if a.success is not False
            ],
        )
        out.append(d.with_inputs(*NEXT_ACTION_INPUTS))
    return out


def to_dspy_examples(
    examples: Sequence[Example], mode: str, tools: Sequence[str]
) -> list[dspy.Example]:
    if mode == "plan":
        return [plan_example(e, tools) for e in examples]
    if mode == "next_action":
        return [d for e in examples for d in next_action_examples(e, tools)]
    raise ValueError(f"unknown program mode {mode!r}")


def program_instructions(program: dspy.Module) -> str:
    return "\n\n".join(p.signature.instructions for _, p in program.named_predictors())


def state_key(program: dspy.Module) -> str:
    """A stable identity of a program's learned state (instructions + demos)."""
    state = program.dump_state()
    return json.dumps(state, sort_keys=True, default=str)
