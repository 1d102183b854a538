"""Per-step demo selection: which demos of a pool to show for the current state of a turn.

The rule is specified in docs/demo-selection.md and implemented twice, here (for evaluate) and
in `ocdspy/plugin/ocdspy-demos.js` (for OpenCode); tests/test_select_parity.py holds the two
together. Pure Python, no dspy: evaluate, export and the tests import it cheaply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocdspy.convert import _MAIN_ARG, Example, ExampleAction
from ocdspy.errors import DataError
from ocdspy.program.render import RESPONSE_CHARS, TARGET_CHARS, TASK_CHARS, outcome
from ocdspy.program.sanitize import demo_injection, excerpt
from ocdspy.redact import redact_text

POOL_FORMAT: Final = "ocdspy-demo-pool"
POOL_VERSION: Final = 1
DEFAULT_INTRO = (
    "Examples of similar steps from past sessions. Each shows the user's request, the tool "
    "calls made so far with their results, and on its last line what the assistant did next."
)
# The most earlier calls a demo's text writes out; older ones become one "(N earlier calls)".
DEMO_CALLS = 8

_TOKEN = re.compile(r"[A-Za-z0-9_./-]+")
# Not `str.strip`/`\s`: Python and JavaScript disagree on exotic whitespace.
_VISIBLE = re.compile(r"[^ \t\r\n]")
N_CAP = 4
WEIGHTS: dict[str, int] = {"n": 1, "last": 3, "lastout": 2, "prev": 1, "last2": 2}


# ---------------------------------------------------------------------------------------------
# Models


class Call(BaseModel):
    """One tool call of a turn: the tool, its main argument, and whether it worked."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    target: str = ""
    ok: bool = True


class TurnState(BaseModel):
    """Where a turn stands: the user's request and the tool calls made so far."""

    task: str = ""
    calls: list[Call] = Field(default_factory=list)


class PoolDemo(BaseModel):
    """One demo: its state (task + calls before the step) and its text as the model reads it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    task: str
    calls: list[Call] = Field(default_factory=list)
    text: str


class DemoPool(BaseModel):
    """The pool the plugin and evaluate choose from (docs/demo-selection.md section 6)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["ocdspy-demo-pool"] = POOL_FORMAT
    version: Literal[1] = POOL_VERSION
    agent: str
    k: int = Field(default=3, ge=1)
    intro: str = DEFAULT_INTRO
    demos: list[PoolDemo] = Field(default_factory=list)

    def state_of(self, demo: PoolDemo) -> TurnState:
        return TurnState(task=demo.task, calls=demo.calls)


# ---------------------------------------------------------------------------------------------
# The rule


def words(text: str) -> set[str]:
    """Spec section 2: the lowercased matches of `[A-Za-z0-9_./-]+` (ASCII only)."""
    return {w.lower() for w in _TOKEN.findall(text)}


def state_features(calls: Sequence[Call]) -> dict[str, tuple[str, ...]]:
    """Spec section 3: where the turn stands (call count, last tools, last outcome)."""
    n = len(calls)
    feats: dict[str, tuple[str, ...]] = {"n": (str(min(n, N_CAP)),)}
    if n >= 1:
        last = calls[-1]
        feats["last"] = (last.tool,)
        feats["lastout"] = (last.tool, "ok" if last.ok else "failed")
    if n >= 2:
        feats["prev"] = (calls[-2].tool,)
        feats["last2"] = (calls[-2].tool, calls[-1].tool)
    return feats


def score(state: TurnState, demo: TurnState) -> tuple[int, int, int]:
    """Spec section 4: `(s, i, u)`; the score is the rational `s + i/u`."""
    q, d = state_features(state.calls), state_features(demo.calls)
    s = sum(WEIGHTS[name] for name, value in q.items() if d.get(name) == value)
    a, b = words(state.task), words(demo.task)
    union = len(a | b)
    return (s, len(a & b), union) if union else (s, 0, 1)


def score_value(sc: tuple[int, int, int]) -> Fraction:
    s, i, u = sc
    return Fraction(s * u + i, u)


def select_indices(candidates: Sequence[TurnState], state: TurnState, k: int) -> list[int]:
    """Spec section 5: the positions of the chosen candidates, in pool order.

    For callers whose demos are not a `DemoPool` (evaluate's DSPy demos): give each demo's
    state in pool order.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(candidates) <= k:
        return list(range(len(candidates)))
    ranked = sorted(
        range(len(candidates)),
        key=lambda i: (-score_value(score(state, candidates[i])), i),
    )
    return sorted(ranked[:k])


def select(pool: DemoPool, state: TurnState) -> list[PoolDemo]:
    """The demos of `pool` to show for `state`, in pool order."""
    chosen = select_indices([pool.state_of(d) for d in pool.demos], state, pool.k)
    return [pool.demos[i] for i in chosen]


def render_selection(pool: DemoPool, demos: Sequence[PoolDemo]) -> str:
    """The exact text added to the system prompt for the chosen demos ("" for none)."""
    if not demos:
        return ""
    return pool.intro + "\n\n" + "\n\n".join(d.text for d in demos)


# ---------------------------------------------------------------------------------------------
# States from a recorded example and from OpenCode's messages


def state_from_example(example: Example, step: int) -> TurnState:
    """The state before action `step` (0-based) of a recorded turn; an unknown outcome is ok."""
    return TurnState(
        task=example.task,
        calls=[
            Call(tool=a.tool, target=a.target, ok=a.success is not False)
            for a in example.actions[:step]
        ],
    )


def _parts(message: Any) -> list[Mapping[str, Any]]:
    parts = message.get("parts") if isinstance(message, Mapping) else None
    return [p for p in parts if isinstance(p, Mapping)] if isinstance(parts, list) else []


def _info(message: Any) -> Mapping[str, Any]:
    info = message.get("info") if isinstance(message, Mapping) else None
    return info if isinstance(info, Mapping) else {}


def _visible(text: Any) -> bool:
    return isinstance(text, str) and bool(_VISIBLE.search(text))


def _is_automatic(parts: Sequence[Mapping[str, Any]]) -> bool:
    if not parts:
        return False
    for p in parts:
        kind = p.get("type")
        if kind == "text" and p.get("synthetic") is not True and p.get("ignored") is not True:
            return False
        if kind in ("file", "subtask", "agent"):
            return False
    return any(p.get("type") == "compaction" or p.get("synthetic") is True for p in parts)


def _texts(parts: Sequence[Mapping[str, Any]], synthetic: bool) -> list[str]:
    return [
        p["text"]
        for p in parts
        if p.get("type") == "text"
        and (p.get("synthetic") is True) == synthetic
        and p.get("ignored") is not True
        and _visible(p.get("text"))
    ]


def _task(parts: Sequence[Mapping[str, Any]]) -> str:
    """Typed text, else the sub-task's prompt, else OpenCode's synthetic text."""
    found = (
        _texts(parts, synthetic=False)
        or [p["prompt"] for p in parts if p.get("type") == "subtask" and _visible(p.get("prompt"))]
        or _texts(parts, synthetic=True)
    )
    return "\n\n".join(found)


def _call_ok(state: Any) -> bool:
    if not isinstance(state, Mapping):
        return True
    status = state.get("status")
    if status in ("error", "pending", "running"):
        return False
    metadata = state.get("metadata")
    code = metadata.get("exit") if isinstance(metadata, Mapping) else None
    if status != "completed" or isinstance(code, bool) or code == 0:
        return True
    # JSON has one number type: 2 and 2.0 are the same exit code (JS `Number.isInteger`).
    return not (isinstance(code, int) or (isinstance(code, float) and code.is_integer()))


def _turn_start(messages: Sequence[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if _info(messages[i]).get("role") == "user" and not _is_automatic(_parts(messages[i])):
            return i
    return None


def state_from_opencode_messages(messages: Sequence[Any]) -> TurnState | None:
    """Spec section 1: the state OpenCode's plugin sees in `experimental.chat.messages.transform`
    (`output.messages`, each `{info, parts}`); None when there is no user request."""
    start = _turn_start(messages)
    if start is None:
        return None
    calls = []
    for message in messages[start + 1 :]:
        info = _info(message)
        if info.get("role") != "assistant" or info.get("summary") is True:
            continue
        for p in _parts(message):
            if p.get("type") != "tool":
                continue
            tool = p.get("tool")
            calls.append(
                Call(tool=tool if isinstance(tool, str) else "unknown", ok=_call_ok(p.get("state")))
            )
    return TurnState(task=_task(_parts(messages[start])), calls=calls)


def request_agent(messages: Sequence[Any]) -> str | None:
    """The agent the user talks to now: `info.agent` of the last user message."""
    for message in reversed(messages):
        info = _info(message)
        if info.get("role") == "user":
            agent = info.get("agent")
            return agent if isinstance(agent, str) else None
    return None


# ---------------------------------------------------------------------------------------------
# Demos: one rendering of a recorded step, as the model reads it


def main_args(action: ExampleAction, cwd: str | None = None) -> dict[str, str]:
    """The call's main arguments (the file, command, pattern...), clipped, as JSON-ready strings;
    with `cwd`, paths inside the project are written relative to it (`project_relative`)."""
    keys = _MAIN_ARG.get(action.tool, ())
    out = {
        k: _shown(project_relative(str(action.args[k]), cwd), TARGET_CHARS)
        for k in keys
        if action.args.get(k) not in (None, "")
    }
    if out or not action.target:
        return out
    target = _shown(project_relative(action.target, cwd), TARGET_CHARS)
    for key, value in action.args.items():
        if str(value) == action.target:
            return {key: target}
    return {"input": target}


def project_relative(text: str, cwd: str | None) -> str:
    """`text` with the working directory taken out of its paths: `/home/dev/app/app.py` ->
    `app.py`, the directory itself -> `.`. Demos and the live state then look alike whichever
    checkout a session ran in; the model may answer with either form (`main_argument` makes
    both relative before scoring)."""
    root = (cwd or "").rstrip("/")
    if not root or root not in text:
        return text
    return re.sub(re.escape(root) + r"(?:/|(?![A-Za-z0-9_.-]))", _relative_piece, text)


def _relative_piece(match: re.Match[str]) -> str:
    return "" if match.group(0).endswith("/") else "."


_PROJECT = re.compile(r"^project: (.+?)(?: \([^()]*\))?$", re.M)


def example_cwd(example: Example) -> str:
    """The working directory `convert` wrote into the example's context ("/" when unknown)."""
    m = _PROJECT.search(example.context)
    return m.group(1) if m and m.group(1) != "?" else "/"


def _shown(text: Any, limit: int) -> str:
    """Session text as a demo shows it: redacted, one clean line (no control characters, role
    tags or front-matter fences), clipped. Session text is untrusted."""
    return excerpt(redact_text(str(text)), limit)


def render_call_line(action: ExampleAction, cwd: str | None = None) -> str:
    args = json.dumps(main_args(action, cwd), ensure_ascii=False)
    return f"call: {action.tool} {args}"


def state_lines(task: str, actions: Sequence[ExampleAction], cwd: str | None = None) -> list[str]:
    """The state of a turn as a demo writes it, and as the live conversation is rendered for a
    local model (`opencode_chat`): the request, then each call with its short outcome. Paths
    under `cwd` (the recorded or live working directory) are written relative to it."""
    lines = [f"user: {_shown(task, TASK_CHARS)}"]
    hidden = max(0, len(actions) - DEMO_CALLS)
    if hidden:
        lines.append(f"({hidden} earlier calls)")
    for action in actions[hidden:]:
        lines.append(render_call_line(action, cwd))
        result = project_relative(outcome(action), cwd)
        lines.append(f"result: {_shown(result, 2 * TARGET_CHARS)}")
    return lines


def render_demo(example: Example, step: int) -> str:
    """A recorded step as the model reads it: the request, the calls so far with their
    outcomes, then what the assistant did next (the next call, or its short answer).

    Every piece of session text in it is redacted and sanitized (`_shown`); tool output appears
    only as the short outcome line.
    """
    cwd = example_cwd(example)
    lines = ["<example>", *state_lines(example.task, example.actions[:step], cwd)]
    if step < len(example.actions):
        lines.append(render_call_line(example.actions[step], cwd))
    else:
        lines.append(f"answer: {_shown(example.response, RESPONSE_CHARS)}")
    lines.append("</example>")
    return "\n".join(lines)


def demo_from_example(example: Example, step: int, *, demo_id: str | None = None) -> PoolDemo:
    """One pool demo for step `step` (0-based; `len(actions)` is the final answer)."""
    if not 0 <= step <= len(example.actions):
        raise ValueError(f"example {example.id}: no step {step}")
    state = state_from_example(example, step)
    return PoolDemo(
        id=demo_id or f"{example.id}#{step + 1}",
        task=_shown(example.task, TASK_CHARS),
        calls=[
            c.model_copy(update={"target": _shown(c.target, TARGET_CHARS)}) for c in state.calls
        ],
        text=render_demo(example, step),
    )


def build_pool(
    agent: str, steps: Sequence[tuple[Example, int]], *, k: int = 3, intro: str = DEFAULT_INTRO
) -> DemoPool:
    """A pool from chosen (example, step) pairs, in the order given (the order shown).

    Steps whose session text reads as instructions to the agent are left out; `build_safe_pool`
    also says how many.
    """
    return build_safe_pool(agent, steps, k=k, intro=intro)[0]


def build_safe_pool(
    agent: str, steps: Sequence[tuple[Example, int]], *, k: int = 3, intro: str = DEFAULT_INTRO
) -> tuple[DemoPool, int]:
    """(the pool, how many steps were dropped because their text looks like a prompt injection)."""
    kept = [(ex, s) for ex, s in steps if step_injection(ex, s) is None]
    demos = [demo_from_example(ex, s) for ex, s in kept]
    return DemoPool(agent=agent, k=k, intro=intro, demos=demos), len(steps) - len(kept)


def step_injection(example: Example, step: int) -> str | None:
    """What a demo of this step would show (task, calls, results, answer) that reads as an
    instruction to the agent, or None."""
    shown: list[Any] = [example.task]
    for action in example.actions[: step + 1]:
        shown += [action.args, action.target, action.result]
    if step >= len(example.actions):
        shown.append(example.response)
    return demo_injection(shown)


def pool_sha256(pool: DemoPool) -> str:
    """The identity of a pool's content (what a score of the plugin form was measured with)."""
    import hashlib

    return hashlib.sha256(pool.model_dump_json().encode("utf-8")).hexdigest()


def load_pool(path: Path) -> DemoPool:
    """Read a pool file; a bad one raises DataError naming the file and the field."""
    try:
        return DemoPool.model_validate_json(path.read_bytes())
    except OSError as e:
        raise DataError(f"{path}: cannot read the demo pool: {e.strerror or e}") from e
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(file)"
        raise DataError(f"{path}: {where}: {err['msg']}") from e
