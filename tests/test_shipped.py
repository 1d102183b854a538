"""The shipped forms, scored as they reach the model (opencode_chat + shipped)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ocdspy.config import MetricWeights
from ocdspy.convert import Example, ExampleAction, convert
from ocdspy.export import ProgramParts, learn_guidance, parse_agent_file, render_body
from ocdspy.opencode_chat import (
    OPENCODE_TOOLS,
    RENDERINGS,
    Environment,
    opencode_request,
    parse_reply,
    render_prompt,
    reply_grammar,
    reply_schema,
    tool_definitions,
)
from ocdspy.program.render import FINISH
from ocdspy.program.select import (
    build_pool,
    render_demo,
    render_selection,
    select,
    state_from_example,
)
from ocdspy.shipped import compare, default_tools, predicted, score_agent
from ocdspy.split import load_split, split

CAPTURED = Path(__file__).parent / "data" / "opencode-request" / "request.json"


def _action(step: int, tool: str, target: str, args: dict[str, Any], result: str, ok: bool = True):
    return ExampleAction(step=step, tool=tool, target=target, args=args, success=ok, result=result)


def example(sid: str = "ses_a", task: str = "fix the failing test in calc") -> Example:
    return Example(
        id=f"{sid}/0",
        session_id=sid,
        turn_index=0,
        source="t.json",
        source_format="plugin",
        task=task,
        context="project: /w/proj (python, 3 files)\ngit: main, 0 uncommitted",
        history="",
        actions=[
            _action(1, "read", "calc.py", {"filePath": "/w/proj/calc.py"}, "def add(a, b):\n"),
            _action(
                2,
                "edit",
                "calc.py",
                {"filePath": "/w/proj/calc.py", "oldString": "a", "newString": "b"},
                "Edit applied successfully.",
            ),
            _action(
                3,
                "bash",
                "pytest -q",
                {"command": "pytest -q", "description": "run"},
                "1 passed",
            ),
        ],
        response="Fixed add() in calc.py; tests pass.",
        success=True,
    )


def test_request_has_opencodes_structure() -> None:
    """Roles, system layout, tool-call shape and tool names as real OpenCode 1.18.33 sent them."""
    real = json.loads(CAPTURED.read_text())
    ex = example()
    ours = opencode_request("BODY", ex, 2, tools=OPENCODE_TOOLS)
    assert [m["role"] for m in ours["messages"]] == [m["role"] for m in real["messages"]]
    real_sys, our_sys = real["messages"][0]["content"], ours["messages"][0]["content"]
    # The body, a newline, then the environment block: with the capture's values, the same text.
    assert our_sys.startswith("BODY\nYou are powered by the model named ")
    env = Environment(
        cwd="/tmp/shipped_probe/run/project",
        model_name="coder",
        provider="scripted",
        date="Wed Nov 25 2026",
    )
    assert real_sys.startswith("TUNED-AGENT-BODY line one.\n\nSecond paragraph.\n" + env.render())
    call = ours["messages"][2]["tool_calls"][0]
    assert set(call) == set(real["messages"][2]["tool_calls"][0])
    assert json.loads(call["function"]["arguments"]) == {"filePath": "/w/proj/calc.py"}
    assert ours["messages"][3] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "def add(a, b):\n",
    }
    assert [t["function"]["name"] for t in ours["tools"]] == [
        t["function"]["name"] for t in real["tools"]
    ]
    for ours_t, real_t in zip(ours["tools"], real["tools"], strict=True):
        real_params = real_t["function"]["parameters"]
        assert ours_t["function"]["parameters"]["required"] == real_params["required"]
        assert set(ours_t["function"]["parameters"]["properties"]) <= set(real_params["properties"])


def test_render_prompt_of_a_real_request_writes_the_demo_form() -> None:
    real = json.loads(CAPTURED.read_text())
    text, schema = render_prompt(real, "user")
    assert text.startswith("<|im_start|>system\nTUNED-AGENT-BODY")
    assert text.endswith("<|im_start|>assistant\n")
    user = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    assert user.splitlines() == [
        'user: "fixbug please"',
        'call: read {"filePath": "app.py"}',  # relative to the env block's directory
        "result: ok: <path>app.py</path> (7 lines)",
        'call: bash {"command": "python3 app.py"}',
        "result: ok: hi (2 lines)",
    ]
    tools = [o["properties"]["tool"]["const"] for o in schema["anyOf"][:-1]]
    assert tools == list(OPENCODE_TOOLS)


def test_live_state_and_demo_share_one_form() -> None:
    """The user block of the live request is the demo of the same step, minus its last line."""
    ex = example()
    text, _ = render_prompt(opencode_request("B", ex, 2), "user")
    user = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    demo = render_demo(ex, 2).splitlines()
    assert user.splitlines() == demo[1:-2]


def test_failed_call_reads_as_failed() -> None:
    ex = example()
    ex.actions[0].result = "File not found: /w/proj/calc.py"
    text, _ = render_prompt(opencode_request("B", ex, 1))
    assert "result: failed: File not found" in text


def test_reply_grammar_and_parse_round_trip() -> None:
    from llama_cpp import LlamaGrammar

    schema = reply_schema(tool_definitions(["read", "bash", "mcp_thing"]))
    grammar = reply_grammar(schema)
    LlamaGrammar.from_string(grammar, verbose=False)  # raises on a malformed grammar
    assert 'root ::= "answer: "' in grammar
    assert '"call: read " args0' in grammar
    assert parse_reply('call: read {"filePath": "a.py"}').arguments == {"filePath": "a.py"}
    assert parse_reply("answer: done").tool == FINISH
    assert parse_reply('{"tool": "bash", "arguments": {"command": "ls"}}').tool == "bash"
    openai = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"function": {"name": "grep", "arguments": '{"pattern": "x"}'}}],
                }
            }
        ]
    }
    assert parse_reply(openai).arguments == {"pattern": "x"}
    assert parse_reply({"content": "All done."}).text == "All done."
    with pytest.raises(ValueError):
        parse_reply("I think so")


class Scripted:
    """A model that answers each request from a list, and keeps the requests."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> Any:
        self.requests.append(request)
        return self.replies.pop(0)


def test_scoring_a_static_agent() -> None:
    ex = example()
    model = Scripted(
        [
            'call: read {"filePath": "/w/proj/calc.py"}',  # right
            'call: read {"filePath": "/w/proj/calc.py"}',  # repeats a done call
            "not a reply",  # error: scored 0
            "answer: Fixed add() in calc.py; tests pass.",  # right
        ]
    )
    score = score_agent("BODY", [ex], lm_call=model, weights=MetricWeights())
    assert score.form == "static" and score.steps == 4 and score.errors == 1
    first, second, third, last = score.results
    assert first.score == 100 and first.output == "read calc.py"
    assert second.components["efficiency"] == 0 and second.components["success"] == 0
    assert third.score == 0 and third.error
    assert last.expected.startswith(FINISH) and last.score == 100
    assert score.score == pytest.approx(sum(r.score for r in score.results) / 4)
    assert all(
        len([m for m in r["messages"] if m["role"] == "system"]) == 1 for r in model.requests
    )


def test_plugin_form_shows_what_select_chooses_per_step() -> None:
    train = [example("ses_t1"), example("ses_t2", task="where is config loaded")]
    pool = build_pool("tuned", [(e, k) for e in train for k in range(4)], k=2)
    held = example("ses_v", task="fix the calc test")
    model = Scripted(["answer: x"] * 4)
    score = score_agent("BODY", [held], lm_call=model, plugin_pool=pool)
    assert score.form == "plugin"
    for step, (request, result) in enumerate(zip(model.requests, score.results, strict=True)):
        chosen = select(pool, state_from_example(held, step))
        assert request["messages"][1] == {
            "role": "system",
            "content": render_selection(pool, chosen),
        }
        assert result.demos == [d.id for d in chosen]


def test_evaluated_prompt_holds_the_exported_body_byte_for_byte(tmp_path: Path) -> None:
    parts = ProgramParts(
        instructions=["You are a coding agent. Read a file before editing it."],
        demos=[{"task": "Where is config loaded?", "tool": "grep", "target": "load_config"}],
    )
    body = render_body(parts, learn_guidance(None))
    agent_file = f"---\ndescription: tuned\nmode: primary\n---\n{body}"
    assert parse_agent_file(agent_file)[1] == body
    model = Scripted(["answer: x"] * 4)
    score_agent(agent_file, [example()], lm_call=model)
    for request in model.requests:
        assert body in request["messages"][0]["content"]
        assert body in render_prompt(request)[0]


def test_compare_is_session_bootstrapped() -> None:
    exs = [example("ses_1"), example("ses_2"), example("ses_3")]
    good = Scripted(["answer: Fixed add() in calc.py; tests pass."] * 12)
    bad = Scripted(["not a reply"] * 12)
    better = compare(score_agent("B", exs, lm_call=bad), score_agent("B", exs, lm_call=good))
    assert better.unit == "sessions" and better.mean > 0 and better.ci_low <= better.mean


def test_environment_date_is_fixed_unless_given() -> None:
    ex = example()
    request = opencode_request("B", ex, 0, env=Environment(cwd="/x", date="Wed Nov 25 2026"))
    assert "Today's date: Wed Nov 25 2026" in request["messages"][0]["content"]
    assert "Working directory: /x" in request["messages"][0]["content"]


@pytest.mark.integration
def test_local_model_answers_real_steps_with_valid_calls(
    examples_raw: Path, tmp_path: Path
) -> None:
    from ocdspy.shipped import LocalModelCall

    conv = convert([examples_raw], tmp_path / "p")
    split(conv.examples_path, tmp_path / "s", train_fraction=0.5, seed=0)
    val = load_split(tmp_path / "s").val
    held = val[0].model_copy(update={"actions": val[0].actions[:2]})
    model = LocalModelCall(n_threads=1)
    replies: list[str] = []

    def record(request: dict[str, Any]) -> str:
        replies.append(model(request))
        return replies[-1]

    score = score_agent("You are a coding agent.", [held], lm_call=record)
    assert score.steps == 3 and score.errors == 0
    offered = {"answer", *OPENCODE_TOOLS}
    for reply in replies:
        parsed = parse_reply(reply)
        assert (parsed.tool if parsed.tool != FINISH else "answer") in offered


def test_api_model_call_sends_the_tools_and_reads_the_call() -> None:
    import dspy
    from tests.opencode_support.fake_openai import FakeOpenAI, Sequence, call, tools

    from ocdspy.shipped import ApiModelCall

    with FakeOpenAI(Sequence([tools(call("read", filePath="/w/proj/calc.py"))])) as server:
        lm = dspy.LM(
            "openai/coder", api_base=server.base_url, api_key="k", cache=False, num_retries=0
        )
        score = score_agent("BODY", [example()], lm_call=ApiModelCall(lm))
        sent = server.requests[0]
    assert score.results[0].score == 100 and score.errors == 0
    assert [t["function"]["name"] for t in sent["tools"]] == list(OPENCODE_TOOLS)
    assert sent["messages"][0]["content"].startswith("BODY\nYou are powered")


def _assistant_text(text: str) -> str:
    return text.split("<|im_start|>assistant\n")[1]


def test_open_rendering_leaves_the_demo_of_the_same_step_open() -> None:
    """The live state is the demo of the same step without its last two lines (the call and
    `</example>`), and the prompt ends there: the model's next line is the demo's `call:` line."""
    ex = example()
    for step in range(len(ex.actions) + 1):
        text, _ = render_prompt(opencode_request("B", ex, step), "open")
        demo = render_demo(ex, step).splitlines()
        assert text.endswith("\n".join(demo[:-2]) + "\n")
        assert "<|im_start|>user" not in text
        raw, _ = render_prompt(opencode_request("B", ex, step), "raw")
        assert raw.endswith("\n".join(demo[:-2]) + "\n") and "<|im_start|>" not in raw


def test_near_rendering_moves_the_demos_right_before_the_open_state() -> None:
    train = [example("ses_t1"), example("ses_t2", task="where is config loaded")]
    pool = build_pool("tuned", [(e, k) for e in train for k in range(4)], k=2)
    held = example("ses_v", task="fix the calc test")
    chosen = select(pool, state_from_example(held, 1))
    static = "BODY\n\nIntro.\n\n" + render_demo(train[1], 0)
    request = opencode_request(static, held, 1, plugin_text=render_selection(pool, chosen))
    text, _ = render_prompt(request, "open-near")
    demos = [render_demo(train[1], 0), *(d.text for d in chosen)]
    state = "\n".join(render_demo(held, 1).splitlines()[:-2]) + "\n"
    # body demos first, then the plugin's, then the open state, all in the assistant turn
    assert _assistant_text(text) == "".join(d + "\n\n" for d in demos) + state
    system = text.split("<|im_start|>assistant\n")[0]
    assert "<example>" not in system and "BODY\n\nIntro." in system and pool.intro in system
    assert "<env>" in system
    noenv, _ = render_prompt(request, "open-near-noenv")
    assert "<env>" not in noenv and "powered by" not in noenv
    assert noenv.endswith(_assistant_text(text))


def test_every_rendering_keeps_the_body_and_is_a_function_of_the_request() -> None:
    real = json.loads(CAPTURED.read_text())
    for name in RENDERINGS:
        text, schema = render_prompt(real, name)
        assert "TUNED-AGENT-BODY line one.\n\nSecond paragraph." in text
        assert render_prompt(json.loads(CAPTURED.read_text()), name) == (text, schema)
        assert 'call: bash {"command": "python3 app.py"}\nresult: ok: hi (2 lines)' in text
    with pytest.raises(ValueError, match="unknown rendering"):
        render_prompt(real, "nope")


def test_earlier_turns_stand_before_the_open_block() -> None:
    ex = example().model_copy(update={"history": "user: run the tests\nassistant: 1 failed"})
    text, _ = render_prompt(opencode_request("B", ex, 0), "open")
    assert text.endswith(
        "Earlier in this session:\nuser: run the tests\nassistant: 1 failed\n\n"
        "<example>\nuser: fix the failing test in calc\n"
    )


def test_reply_grammar_compiles_in_llama_cpp_for_the_offered_tools() -> None:
    from llama_cpp import LlamaGrammar

    schema = render_prompt(opencode_request("B", example(), 0, tools=default_tools([])), "open")[1]
    LlamaGrammar.from_string(reply_grammar(schema), verbose=False)


def test_a_body_with_demos_reaches_the_model_whole_in_every_rendering() -> None:
    """The request holds the body byte for byte; a rendering that moves the body's demos next
    to the state still shows its prose and every demo verbatim, and one that does not shows
    the body byte for byte."""
    demos = [render_demo(example("ses_t1"), k) for k in (0, 3)]
    body = "You are a coding agent.\n\nExamples of similar steps.\n\n" + "\n\n".join(demos)
    request = opencode_request(body, example("ses_v"), 1)
    assert request["messages"][0]["content"].startswith(body + "\n")
    for name in RENDERINGS:
        text, _ = render_prompt(request, name)
        if RENDERINGS[name].demos_near:
            assert "You are a coding agent.\n\nExamples of similar steps." in text
            assert all(d in text for d in demos)
        else:
            assert body in text


def test_live_state_paths_are_relative_and_a_relative_reply_scores_as_an_absolute_one() -> None:
    ex = example()
    text, _ = render_prompt(opencode_request("B", ex, 1), "open-near")
    assert 'call: read {"filePath": "calc.py"}' in text.split("<|im_start|>assistant\n")[1]
    relative = parse_reply('call: edit {"filePath": "calc.py"}')
    absolute = parse_reply('call: edit {"filePath": "/w/proj/calc.py"}')
    assert predicted(relative, "/w/proj") == predicted(absolute, "/w/proj")
    assert predicted(relative, "/w/proj")["target"] == ex.actions[1].target
