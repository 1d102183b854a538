"""What the model sees: compact, dspy-free renderings of an example's state.

Kept apart from the DSPy signatures so the metric, the CLI and tests can use them without
importing dspy. Everything here is session text, hence untrusted: it goes through
`ocdspy.program.sanitize` (no control characters, role tags or front-matter fences; tool output
only as a short excerpt). A tiny model copies what is in front of it, so the renderings put the
useful facts (the last tool's outcome, the files already read or changed) in a few short lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ocdspy.convert import Example, ExampleAction
from ocdspy.program.sanitize import clean_text, excerpt

# OpenCode's built-in tools and their main argument (FORMATS.md section 4), in the order
# the prompt lists them.
BUILTIN_TOOLS: dict[str, str] = {
    "read": "file path",
    "edit": "file path",
    "write": "file path",
    "bash": "shell command",
    "grep": "search pattern",
    "glob": "file pattern",
    "list": "directory",
    "apply_patch": "file path",
    "todowrite": "todo list",
    "webfetch": "url",
    "websearch": "query",
    "task": "sub-agent",
    "skill": "skill name",
    "question": "question",
}
# The pseudo-tool that ends a turn in `next_action` mode; its target is the final answer.
FINISH = "finish"

TASK_CHARS = 600
CONTEXT_CHARS = 600
HISTORY_CHARS = 500
RESULT_CHARS = 160
TARGET_CHARS = 120
RESPONSE_CHARS = 300


# Offered whatever the sessions used: the everyday tools of a coding agent. The rest of the
# built-ins join only when the recorded sessions used them: every extra choice is one more way
# for a small model to go wrong, and one more word in every prompt.
CORE_TOOLS = ("read", "edit", "write", "bash", "grep", "glob", "list")


def available_tools(examples: Sequence[Example] = ()) -> list[str]:
    """The core tools plus every other tool the recorded sessions used (built-in, custom, MCP)."""
    tools = list(CORE_TOOLS)
    for ex in examples:
        for a in ex.actions:
            if a.tool and a.tool not in tools and a.tool != FINISH:
                tools.append(a.tool)
    return tools


def render_tools(tools: Sequence[str]) -> str:
    return ", ".join(tools)


def clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def clip_tail(text: str, limit: int) -> str:
    """Keep the end: the most recent messages matter most."""
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :].lstrip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def outcome(action: ExampleAction) -> str:
    """One short phrase for what a call produced: the fact the next step depends on. Tool output
    is untrusted: only a short sanitized excerpt of its first line is shown."""
    status = "failed" if action.success is False else "ok"
    first = excerpt(_first_line(action.result), RESULT_CHARS)
    if not first:
        return status
    lines = action.result.count("\n") + 1
    more = f" ({lines} lines)" if lines > 1 else ""
    return f"{status}: {first}{more}"


def render_call(tool: str, target: str) -> str:
    return f"{excerpt(tool, 40)} {excerpt(target, TARGET_CHARS)}".strip()


def render_progress(actions: Sequence[ExampleAction]) -> str:
    """The steps so far, one line each, plus the files already read and changed."""
    if not actions:
        return "no tool calls yet"
    lines = [
        f"{i}. {render_call(a.tool, a.target)} -> {outcome(a)}" for i, a in enumerate(actions, 1)
    ]
    read = _unique(a.target for a in actions if a.tool == "read")
    changed = _unique(a.target for a in actions if a.tool in ("edit", "write", "apply_patch"))
    if read:
        lines.append("files read: " + ", ".join(read))
    if changed:
        lines.append("files changed: " + ", ".join(changed))
    return "\n".join(lines)


def _unique(items: Any) -> list[str]:
    seen: list[str] = []
    for x in items:
        if x and x not in seen:
            seen.append(x)
    return seen


def plan_inputs(ex: Example, tools: Sequence[str]) -> dict[str, str]:
    return {
        "task": clip(clean_text(ex.task), TASK_CHARS),
        "context": clip(clean_text(ex.context), CONTEXT_CHARS) or "none",
        "history": clip_tail(clean_text(ex.history), HISTORY_CHARS) or "none",
        "tools": render_tools(tools),
    }


def next_action_inputs(ex: Example, step: int, tools: Sequence[str]) -> dict[str, str]:
    """Inputs for predicting action `step` (0-based; == len(actions) means the final answer)."""
    return {
        "task": clip(clean_text(ex.task), TASK_CHARS),
        "context": clip(clean_text(ex.context), CONTEXT_CHARS) or "none",
        "progress": render_progress(ex.actions[:step]),
        "tools": render_tools(tools),
    }


_WORD = re.compile(r"[A-Za-z0-9_./-]+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]
