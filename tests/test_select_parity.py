"""The Python rule (evaluate) and the JS plugin (OpenCode) choose the same demos.

Both implement docs/demo-selection.md. Node runs the plugin's own functions on the same
states, pools and OpenCode message lists as Python: many random ones (tricky tokens, Unicode,
ties, odd tool names) plus hypothesis-generated batches, and everything must match exactly.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocdspy.plugin import TEMPLATE
from ocdspy.program.select import (
    Call,
    DemoPool,
    PoolDemo,
    TurnState,
    render_selection,
    request_agent,
    select,
    state_from_opencode_messages,
    words,
)

PLUGIN = Path(__file__).resolve().parents[1] / "src" / "ocdspy" / "plugin" / TEMPLATE
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is needed to run the plugin's JS")

RUNNER = """
import fs from "node:fs";
const P = (await import(process.argv[2])).default;
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const out = cases.map((c) => {
  if (c.kind === "select") {
    const chosen = P.selectDemos(c.pool, c.state);
    return {ids: chosen.map((d) => d.id), text: P.renderSelection(c.pool, chosen)};
  }
  if (c.kind === "words") return {words: [...P.words(c.text)].sort()};
  const state = P.stateFromMessages(c.messages);
  const chosen = state ? P.selectDemos(c.pool, state) : [];
  return {state, agent: P.requestAgent(c.messages), ids: chosen.map((d) => d.id)};
});
process.stdout.write(JSON.stringify(out));
"""


def run_node(tmp_path: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    runner = tmp_path / "runner.mjs"
    runner.write_text(RUNNER)
    assert NODE is not None
    proc = subprocess.run(
        [NODE, str(runner), PLUGIN.as_uri()],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(out) == len(cases)
    return out


def python_answer(case: dict[str, Any]) -> dict[str, Any]:
    if case["kind"] == "words":
        return {"words": sorted(words(case["text"]))}
    pool = DemoPool.model_validate(case["pool"])
    if case["kind"] == "select":
        chosen = select(pool, TurnState.model_validate(case["state"]))
        return {"ids": [d.id for d in chosen], "text": render_selection(pool, chosen)}
    state = state_from_opencode_messages(case["messages"])
    chosen = select(pool, state) if state else []
    return {
        "state": None
        if state is None
        else {"task": state.task, "calls": [{"tool": c.tool, "ok": c.ok} for c in state.calls]},
        "agent": request_agent(case["messages"]),
        "ids": [d.id for d in chosen],
    }


def assert_parity(tmp_path: Path, cases: list[dict[str, Any]]) -> None:
    js = run_node(tmp_path, cases)
    for case, got in zip(cases, js, strict=True):
        assert got == python_answer(case), json.dumps(case)[:2000]


# --------------------------------------------------------------------------- random cases

VOCAB = [
    "fix",
    "Fix",
    "FIX",
    "bug",
    "test",
    "tests",
    "src/app.py",
    "SRC/App.py",
    "calc.py",
    "README.md",
    "rename",
    "helper",
    "add",
    "a",
    "the",
    "pytest",
    "-q",
    "--all",
    "v1.2",
    "x_y",
    "a.b/c-d",
    "é",
    "Été",
    "straße",
    "İstanbul",
    "\u212a",
    "ǅ",
    "🙂",
    "日本語",
    "naïve",
    "\ud800",
    "½",
    "K",
    "k",
    "0",
    "00",
    "...",
    "/",
    "-",
    "_",
    "!",
    "?",
    "(x)",
    "[y]",
    "{z}",
    "#",
    "@me",
]
SPACES = [" ", "  ", "\n", "\t", "\u00a0", "\u2028", "\x1c", "\ufeff", "\r\n", ""]
TOOLS = [
    "read",
    "edit",
    "write",
    "bash",
    "grep",
    "glob",
    "list",
    "Read",
    "a>b",
    "x:y",
    "mcp__s__t",
    "",
]


def rand_task(r: random.Random) -> str:
    return "".join(r.choice(VOCAB) + r.choice(SPACES) for _ in range(r.randint(0, 12)))


def rand_calls(r: random.Random, most: int = 7) -> list[dict[str, Any]]:
    return [
        {"tool": r.choice(TOOLS[: r.randint(2, len(TOOLS))]), "ok": r.random() < 0.7}
        for _ in range(r.randint(0, most))
    ]


def rand_pool(r: random.Random) -> dict[str, Any]:
    tasks = [rand_task(r) for _ in range(r.randint(1, 5))]  # few tasks: many ties
    demos = []
    for i in range(r.randint(1, 24)):
        calls = [{"tool": c["tool"], "target": "t", "ok": c["ok"]} for c in rand_calls(r)]
        demos.append({"id": f"d{i}", "task": r.choice(tasks), "calls": calls, "text": f"demo {i}"})
    return {
        "format": "ocdspy-demo-pool",
        "version": 1,
        "agent": "tuned",
        "k": r.randint(1, 5),
        "intro": "Examples:",
        "demos": demos,
    }


def rand_part(r: random.Random) -> dict[str, Any]:
    kind = r.choice(
        ["text", "text", "text", "file", "subtask", "compaction", "agent", "step-start"]
    )
    part: dict[str, Any] = {"type": kind}
    if kind == "text":
        part["text"] = r.choice([rand_task(r), " \t\n", "\u00a0", ""])
    if kind == "subtask":
        part["prompt"] = r.choice([rand_task(r), "  ", 5])
    for flag in ("synthetic", "ignored"):
        if r.random() < 0.25:
            part[flag] = r.choice([True, False, 1, "yes"])
    return part


def rand_tool_part(r: random.Random) -> dict[str, Any]:
    status = r.choice(["completed", "completed", "error", "pending", "running", "weird", None])
    state: dict[str, Any] = {"status": status}
    if r.random() < 0.5:
        state["metadata"] = {
            "exit": r.choice([0, 1, 2, -1, 0.0, 2.0, 2.5, True, False, "1", None, 10**20])
        }
    part: dict[str, Any] = {"type": "tool", "tool": r.choice([*TOOLS, 7, None]), "state": state}
    if r.random() < 0.05:
        part["state"] = r.choice([None, "x", []])
    return part


def rand_messages(r: random.Random) -> list[Any]:
    messages: list[Any] = []
    for _ in range(r.randint(0, 8)):
        role = r.choice(["user", "assistant", "assistant", "assistant", "system"])
        info: dict[str, Any] = {"role": role, "sessionID": "ses_1"}
        if r.random() < 0.9:
            info["agent"] = r.choice(["tuned", "build", "title", 3])
        if role == "assistant" and r.random() < 0.15:
            info["summary"] = r.choice([True, False, 1])
        if role == "assistant":
            parts = [r.choice([rand_tool_part(r), rand_part(r)]) for _ in range(r.randint(0, 3))]
        else:
            parts = [rand_part(r) for _ in range(r.randint(0, 3))]
        messages.append({"info": info, "parts": parts})
    if r.random() < 0.05:
        messages.append(r.choice([None, "junk", {"info": None, "parts": None}]))
    return messages


def random_cases(seed: int, n: int) -> list[dict[str, Any]]:
    r = random.Random(seed)
    cases: list[dict[str, Any]] = []
    for _ in range(n):
        pool = rand_pool(r)
        cases.append({"kind": "words", "text": rand_task(r)})
        state = {"task": rand_task(r), "calls": rand_calls(r)}
        if r.random() < 0.3:  # the state of one of the demos: exact matches and ties
            d = r.choice(pool["demos"])
            state = {
                "task": d["task"],
                "calls": [{"tool": c["tool"], "ok": c["ok"]} for c in d["calls"]],
            }
        cases.append({"kind": "select", "pool": pool, "state": state})
        cases.append({"kind": "messages", "pool": pool, "messages": rand_messages(r)})
    return cases


def test_python_and_js_agree_on_many_random_states(tmp_path: Path) -> None:
    cases = random_cases(seed=8, n=1500)
    assert_parity(tmp_path, cases)
    # The cases do exercise the rule: varied choices, ties and failed calls.
    chosen = {tuple(python_answer(c)["ids"]) for c in cases if c["kind"] == "select"}
    assert len(chosen) > 500


def test_python_and_js_agree_on_a_realistic_session(tmp_path: Path) -> None:
    def user(text: str) -> dict[str, Any]:
        return {
            "info": {"role": "user", "agent": "tuned", "sessionID": "s"},
            "parts": [{"type": "text", "text": text}],
        }

    def tool(name: str, status: str = "completed", code: int | None = None) -> dict[str, Any]:
        state: dict[str, Any] = {
            "status": status,
            "input": {},
            "metadata": {"exit": code} if code is not None else {},
        }
        return {
            "info": {"role": "assistant", "agent": "tuned", "sessionID": "s"},
            "parts": [{"type": "step-start"}, {"type": "tool", "tool": name, "state": state}],
        }

    pool = rand_pool(random.Random(1))
    steps = [
        user("Fix the failing test in calc.py"),
        tool("read"),
        tool("bash", code=1),
        tool("edit"),
        tool("bash", code=0),
    ]
    cases = [
        {"kind": "messages", "pool": pool, "messages": steps[: i + 1]} for i in range(len(steps))
    ]
    assert_parity(tmp_path, cases)
    last = python_answer(cases[-1])["state"]
    assert last["calls"] == [
        {"tool": "read", "ok": True},
        {"tool": "bash", "ok": False},
        {"tool": "edit", "ok": True},
        {"tool": "bash", "ok": True},
    ]


# --------------------------------------------------------------------------- hypothesis batches

tool_st = st.sampled_from(["read", "edit", "bash", "grep", "glob"])
call_st = st.builds(Call, tool=tool_st, target=st.just(""), ok=st.booleans())
task_st = st.text(max_size=60) | st.lists(st.sampled_from(VOCAB), max_size=10).map(" ".join)
state_st = st.builds(TurnState, task=task_st, calls=st.lists(call_st, max_size=6))


@st.composite
def pool_st(draw: st.DrawFn) -> DemoPool:
    states = draw(st.lists(state_st, min_size=1, max_size=15))
    return DemoPool(
        agent="tuned",
        k=draw(st.integers(1, 6)),
        demos=[
            PoolDemo(id=f"d{i}", task=s.task, calls=s.calls, text=f"t{i}")
            for i, s in enumerate(states)
        ],
    )


@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(pool_st(), state_st), min_size=20, max_size=40))
def test_python_and_js_agree_on_hypothesis_batches(
    tmp_path_factory: pytest.TempPathFactory, batch: list[tuple[DemoPool, TurnState]]
) -> None:
    cases = [{"kind": "select", "pool": p.model_dump(), "state": s.model_dump()} for p, s in batch]
    cases += [{"kind": "words", "text": s.task} for _, s in batch]
    assert_parity(tmp_path_factory.mktemp("node"), cases)
