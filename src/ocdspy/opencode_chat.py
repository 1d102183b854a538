"""What the model sees inside OpenCode: one renderer, for evaluate and for a served model.

`opencode_request` builds the OpenAI chat-completions request OpenCode 1.18.33 sends for the
state of a recorded turn; `render_prompt` turns such a request (ours, or a real one from
OpenCode) into the text a small local model reads plus a JSON schema for its reply;
`parse_reply` reads the reply of either form back as one tool call or a final answer.

The built-in 135M model copies demos and does not follow written rules, so by default
(`open-near`) the turn's state is written as an open demo (`<example>`, `user: …`, the calls and
results so far) at the end of the assistant turn, right after the demos of the system
messages (the body's and the plugin's): the model's next line stands where a demo's `call:` or
`answer:` line stands. `RENDERINGS` keeps the variants that were measured against it.

Shape of OpenCode's request, captured from real OpenCode 1.18.33 with a custom agent and a
scripted model (tests/data/opencode-request/request.json):

- `messages[0]`: `system`, the agent file's body (trimmed), a newline, then the environment:

      You are powered by the model named NAME. The exact model ID is PROVIDER/NAME
      Here is some useful information about the environment you are running in:
      <env>
        Working directory: DIR
        Workspace root folder: DIR
        Is directory a git repo: yes
        Platform: linux
        Today's date: Wed Nov 25 2026
      </env>

  then, when the `skill` tool is offered, a list of the installed skills.
- a plugin's `experimental.chat.system.transform` text arrives as a second `system` message;
- then the conversation: the user's message; per step an `assistant` message with empty
  content and one `tool_calls` entry (arguments as compact JSON), and a `tool` message with
  the tool's output. A failed call's message holds only the error text ("File not found: …");
  a shell command's exit code is not sent at all.
- `tools`: 10 function definitions for a custom agent (bash, edit, glob, grep, read, skill,
  task, todowrite, webfetch, write), `tool_choice: "auto"`, `stream: true`.

Where our rendering differs, knowingly:

- tool definitions carry compact one-line descriptions (OpenCode's are ~21,000 characters in
  all, more than the built-in model's context); parameters are the same names and types;
- the skills list is left out (it depends on what the user installed);
- the date is a parameter (fixed in evaluate, so scores are reproducible);
- earlier turns of the session come from the example's `history` (text only; their tool calls
  were not recorded), and tool output is the recorded output as `convert` clipped it;
- we build a plain request (`stream` false): streaming changes the transport, not the prompt.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, Field

from ocdspy.convert import _MAIN_ARG, Example, ExampleAction, main_argument
from ocdspy.program.render import FINISH, clip_tail
from ocdspy.program.sanitize import clean_text
from ocdspy.program.select import example_cwd, state_lines

OPENCODE_VERSION: Final = "1.18.33"
# What OpenCode 1.18.33 offers a custom agent with default permissions, in its order.
OPENCODE_TOOLS: Final = (
    "bash",
    "edit",
    "glob",
    "grep",
    "read",
    "skill",
    "task",
    "todowrite",
    "webfetch",
    "write",
)
HISTORY_CHARS: Final = 500


def _obj(required: Sequence[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required)}


_S: Final = {"type": "string"}
_I: Final = {"type": "integer"}
_B: Final = {"type": "boolean"}
_TODO: Final = _obj(("content", "status", "priority"), content=_S, status=_S, priority=_S)

# Built-in tools (FORMATS.md section 4; names and types as OpenCode 1.18.33 sends them):
# (one-line description, parameters).
BUILTIN_TOOL_SCHEMAS: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "bash": (
        "Run a shell command in the project directory.",
        _obj(("command",), command=_S, timeout=_I, workdir=_S),
    ),
    "edit": (
        "Replace exact text in a file (read the file first).",
        _obj(
            ("filePath", "oldString", "newString"),
            filePath=_S,
            oldString=_S,
            newString=_S,
            replaceAll=_B,
        ),
    ),
    "glob": ("Find files by name pattern.", _obj(("pattern",), pattern=_S, path=_S)),
    "grep": (
        "Search file contents with a regular expression.",
        _obj(("pattern",), pattern=_S, path=_S, include=_S),
    ),
    "read": ("Read a file or directory.", _obj(("filePath",), filePath=_S, offset=_I, limit=_I)),
    "write": ("Write a whole file.", _obj(("content", "filePath"), content=_S, filePath=_S)),
    "list": ("List a directory.", _obj((), path=_S)),
    "apply_patch": ("Apply a patch to files.", _obj(("patchText",), patchText=_S)),
    "multiedit": (
        "Several edits to one file.",
        _obj(("filePath", "edits"), filePath=_S, edits={"type": "array", "items": {}}),
    ),
    "todowrite": (
        "Write the task list.",
        _obj(("todos",), todos={"type": "array", "items": _TODO}),
    ),
    "webfetch": (
        "Fetch a URL.",
        _obj(
            ("url",),
            url=_S,
            format={"type": "string", "enum": ["text", "markdown", "html"]},
            timeout={"type": "number"},
        ),
    ),
    "websearch": ("Search the web.", _obj(("query",), query=_S)),
    "codesearch": ("Search code on the web.", _obj(("query",), query=_S)),
    "task": (
        "Hand a task to a sub-agent.",
        _obj(
            ("description", "prompt", "subagent_type"),
            description=_S,
            prompt=_S,
            subagent_type=_S,
        ),
    ),
    "skill": ("Load a skill by name.", _obj(("name",), name=_S)),
    "question": (
        "Ask the user questions.",
        _obj(("questions",), questions={"type": "array", "items": {}}),
    ),
    "lsp": ("Ask the language server.", _obj(("operation", "filePath"), operation=_S, filePath=_S)),
}


@dataclass(frozen=True)
class Environment:
    """OpenCode's environment block. `date` is JavaScript's `Date.toDateString()` form."""

    cwd: str = "/"
    model_name: str = "smollm2-135m"
    provider: str = "ocdspy"
    platform: str = "linux"
    is_git: bool = True
    date: str = "Thu Jan 01 2026"

    def render(self) -> str:
        return "\n".join(
            [
                f"You are powered by the model named {self.model_name}. "
                f"The exact model ID is {self.provider}/{self.model_name}",
                "Here is some useful information about the environment you are running in:",
                "<env>",
                f"  Working directory: {self.cwd}",
                f"  Workspace root folder: {self.cwd}",
                f"  Is directory a git repo: {'yes' if self.is_git else 'no'}",
                f"  Platform: {self.platform}",
                f"  Today's date: {self.date}",
                "</env>",
            ]
        )


def js_date(day: dt.date) -> str:
    """`Date.toDateString()`: "Wed Nov 25 2026"."""
    return day.strftime("%a %b %d %Y")


# ---------------------------------------------------------------------------------------------
# The request OpenCode sends


def tool_definitions(tools: Iterable[str]) -> list[dict[str, Any]]:
    """OpenAI function definitions; a tool we do not know gets a free-form object."""
    out = []
    for name in tools:
        desc, params = BUILTIN_TOOL_SCHEMAS.get(name, (f"The {name} tool.", {"type": "object"}))
        fn = {"name": name, "description": desc, "parameters": params}
        out.append({"type": "function", "function": fn})
    return out


def system_prompt(agent_body: str, env: Environment) -> str:
    """The first system message: OpenCode trims the agent body and appends the environment."""
    return agent_body.strip() + "\n" + env.render()


def history_messages(history: str) -> list[dict[str, Any]]:
    """Earlier messages of the session from an example's `history` ("role: text" lines)."""
    out: list[dict[str, Any]] = []
    for line in history.splitlines():
        role, sep, text = line.partition(": ")
        if sep and role in ("user", "assistant"):
            out.append({"role": role, "content": text})
        elif out:
            out[-1]["content"] += "\n" + line
    return out


def _call_messages(action: ExampleAction, call_id: str) -> list[dict[str, Any]]:
    args = json.dumps(action.args, ensure_ascii=False, separators=(",", ":"))
    call = {"id": call_id, "type": "function", "function": {"name": action.tool, "arguments": args}}
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": action.result},
    ]


def opencode_request(
    agent_body: str,
    state_example: Example,
    step: int | None = None,
    *,
    plugin_text: str | None = None,
    tools: Sequence[str] = OPENCODE_TOOLS,
    env: Environment | None = None,
    model: str = "smollm2-135m",
) -> dict[str, Any]:
    """The chat request OpenCode sends before action `step` (0-based; default: after all the
    example's actions, i.e. before the final answer) of a recorded turn."""
    step = len(state_example.actions) if step is None else step
    env = env or Environment(cwd=example_cwd(state_example), model_name=model)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt(agent_body, env)}]
    if plugin_text:
        messages.append({"role": "system", "content": plugin_text})
    messages += history_messages(state_example.history)
    messages.append({"role": "user", "content": state_example.task})
    for i, action in enumerate(state_example.actions[:step]):
        messages += _call_messages(action, f"call_{i + 1}")
    request: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
    if tools:
        request["tools"] = tool_definitions(tools)
        request["tool_choice"] = "auto"
    return request


# ---------------------------------------------------------------------------------------------
# The same request as a small model reads it


_FAILED = re.compile(r"^\s*(error\b|file not found\b)", re.I)


def result_failed(content: str) -> bool:
    """Whether a tool message reads as a failure. OpenCode sends only the error text of a
    failed call and never a command's exit code, so this is all a served model can know; evaluate
    uses the same rule so that it shows the same thing."""
    return bool(_FAILED.match(content))


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _turn_start(messages: Sequence[Mapping[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return len(messages)


def _turn_actions(messages: Sequence[Mapping[str, Any]], cwd: str | None) -> list[ExampleAction]:
    """The tool calls after the turn's user message, with their results, as actions."""
    results = {
        m.get("tool_call_id"): _text(m.get("content")) for m in messages if m.get("role") == "tool"
    }
    actions: list[ExampleAction] = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            tool = str(fn.get("name") or "unknown")
            args = _arguments(fn.get("arguments"))
            result = results.get(call.get("id"), "")
            actions.append(
                ExampleAction(
                    step=len(actions) + 1,
                    tool=tool,
                    target=main_argument(tool, args, cwd),
                    args=args,
                    success=not result_failed(result),
                    result=result,
                )
            )
    return actions


def _chatml(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


def _earlier(messages: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"{m['role']}: {' '.join(_text(m.get('content')).split())}"
        for m in messages
        if m.get("role") in ("user", "assistant") and _text(m.get("content")).strip()
    ]
    return clip_tail(clean_text("\n".join(lines)), HISTORY_CHARS)


@dataclass(frozen=True)
class Rendering:
    """How `render_prompt` lays a request out for a small model.

    - `open`: the live state is an open `<example>` block (the demos' own first lines, without
      the closing line), so the model's next line stands where a demo's `call:` line stands;
      otherwise it is a user message and the model starts a new assistant turn.
    - `chat`: ChatML turns (system messages, then the state); otherwise one raw completion text.
    - `demos_near`: the `<example>` blocks of the system messages move to just before the
      state (after the rest of the system text), instead of staying where the body put them.
    - `env`: keep OpenCode's environment block (model name, `<env>`) in the system text.
    """

    open: bool = True
    chat: bool = True
    demos_near: bool = False
    env: bool = True


RENDERINGS: Final[dict[str, Rendering]] = {
    "user": Rendering(open=False),
    "open": Rendering(),
    "open-near": Rendering(demos_near=True),
    "open-near-noenv": Rendering(demos_near=True, env=False),
    "raw": Rendering(chat=False),
    "raw-near": Rendering(chat=False, demos_near=True),
    "raw-near-noenv": Rendering(chat=False, demos_near=True, env=False),
}
# Measured with benchmarks/bench_shipped.py (BENCHMARKS.md, "Shipped forms"): with the state as
# an open demo and the demos right before it, the plugin form's demos transfer (examples/:
# 40.4 -> 55.8); with the state as a user message the model mostly answered at once.
DEFAULT_RENDERING: Final = "open-near"


def rendering_named(name: str) -> Rendering:
    """The rendering called `name`; an unknown name raises ValueError naming the known ones."""
    try:
        return RENDERINGS[name]
    except KeyError:
        raise ValueError(f"unknown rendering {name!r}; one of {', '.join(RENDERINGS)}") from None


_WORKING_DIR = re.compile(r"^\s*Working directory: (\S.*?)\s*$", re.M)


def live_cwd(systems: Sequence[str]) -> str | None:
    """The working directory OpenCode's environment block names (None when there is none), so
    the live state writes paths relative to it, as demos do."""
    for text in systems:
        m = _WORKING_DIR.search(text)
        if m:
            return m.group(1)
    return None


_EXAMPLE_BLOCK = re.compile(r"^<example>\n.*?^</example>$", re.M | re.S)
_ENV_BLOCK = re.compile(r"^You are powered by the model named .*?^</env>$\n?", re.M | re.S)


def _split_demos(text: str) -> tuple[str, list[str]]:
    """(the text without its `<example>` blocks, the blocks in order)."""
    blocks = _EXAMPLE_BLOCK.findall(text)
    rest = re.sub(r"\n{3,}", "\n\n", _EXAMPLE_BLOCK.sub("", text)).strip()
    return rest, blocks


def _layout(systems: Sequence[str], rendering: Rendering) -> tuple[list[str], list[str]]:
    """(the system texts to show, the demo blocks to put right before the state)."""
    if not rendering.env:
        systems = [_ENV_BLOCK.sub("", s).strip() for s in systems]
    if not rendering.demos_near:
        return [s for s in systems if s], []
    shown: list[str] = []
    demos: list[str] = []
    for text in systems:
        rest, blocks = _split_demos(text)
        demos += blocks
        if rest:
            shown.append(rest)
    return shown, demos


def render_prompt(
    request: Mapping[str, Any], rendering: str = DEFAULT_RENDERING
) -> tuple[str, dict[str, Any]]:
    """(prompt text, reply schema) for a local model with a ChatML template (SmolLM2).

    The turn (the last user message and the tool calls after it) is written exactly like a
    demo's state (`user: …`, `call: TOOL {json}` / `result: …` lines), so the demos and the live
    conversation share one form; `rendering` (a key of `RENDERINGS`) says where it stands and
    where the demos stand. The model answers under the schema (`reply_schema`), in the line
    form with `reply_grammar`. A pure function of the request.
    """
    how = rendering_named(rendering)
    messages = [m for m in request.get("messages") or () if isinstance(m, Mapping)]
    systems = [_text(m.get("content")) for m in messages if m.get("role") == "system"]
    convo = [m for m in messages if m.get("role") != "system"]
    start = _turn_start(convo)
    task = _text(convo[start].get("content")) if start < len(convo) else ""
    cwd = live_cwd(systems)
    lines = state_lines(clean_text(task), _turn_actions(convo[start:], cwd), cwd)
    earlier = _earlier(convo[:start])
    shown, demos = _layout(systems, how)
    schema = reply_schema(request.get("tools") or ())
    if not how.open:
        if earlier:
            lines.insert(0, "Earlier in this session:\n" + earlier + "\n")
        text = "".join(_chatml("system", s) for s in shown)
        text += _chatml("user", "\n\n".join([*demos, "\n".join(lines)]))
        return text + "<|im_start|>assistant\n", schema
    state = "\n".join(["<example>", *lines]) + "\n"
    before = "".join(b + "\n\n" for b in demos)
    if earlier:
        before += "Earlier in this session:\n" + earlier + "\n\n"
    if how.chat:
        text = "".join(_chatml("system", s) for s in shown)
        return text + "<|im_start|>assistant\n" + before + state, schema
    head = "".join(s + "\n\n" for s in shown)
    return head + before + state, schema


def _simple(schema: Any) -> dict[str, Any]:
    """A parameter schema reduced to what a grammar needs (type, enum, items, properties)."""
    if not isinstance(schema, Mapping):
        return {}
    out: dict[str, Any] = {k: schema[k] for k in ("type", "enum", "const") if k in schema}
    if isinstance(schema.get("items"), Mapping):
        out["items"] = _simple(schema["items"])
    if isinstance(schema.get("properties"), Mapping):
        required = [k for k in schema.get("required") or () if k in schema["properties"]]
        out["properties"] = {k: _simple(schema["properties"][k]) for k in required}
        out["required"] = required
        out["additionalProperties"] = False
    return out


def _call_schema(tool: Mapping[str, Any]) -> dict[str, Any] | None:
    fn = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        return None
    name = fn["name"]
    params = _simple(fn.get("parameters")) or {"type": "object"}
    if params.get("type") != "object":
        params = {"type": "object"}
    if "properties" in params:
        # The main argument first, as a demo's `call:` line writes it: the model copies it.
        main = [k for k in _MAIN_ARG.get(name, ()) if k in params["properties"]]
        order = main + [k for k in params["properties"] if k not in main]
        params["properties"] = {k: params["properties"][k] for k in order}
        params["required"] = order
    return {
        "type": "object",
        "properties": {"tool": {"const": name}, "arguments": params},
        "required": ["tool", "arguments"],
        "additionalProperties": False,
    }


ANSWER_SCHEMA: Final = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def reply_schema(tools: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Either `{"tool": NAME, "arguments": {its required arguments}}` for one offered tool, or
    `{"answer": TEXT}`. Optional arguments are left out: a call without them is valid, and
    every extra choice is one more way for a small model to wander."""
    calls = [s for s in (_call_schema(t) for t in tools) if s is not None]
    return {"anyOf": [*calls, ANSWER_SCHEMA]} if calls else dict(ANSWER_SCHEMA)


# ---------------------------------------------------------------------------------------------
# The reply in the demos' form, as a llama.cpp grammar


_GBNF_BASE: Final = r"""
char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
string ::= "\"" char* "\""
integer ::= "-"? [0-9] [0-9]*
number ::= integer ("." [0-9]+)?
boolean ::= "true" | "false"
value ::= string | number | boolean | "null"
freeobject ::= "{" (string ": " value (", " string ": " value)*)? "}"
"""


def _lit(text: str) -> str:
    """A GBNF string literal for `text`."""
    return json.dumps(text, ensure_ascii=False)


def _gbnf(schema: Mapping[str, Any], rules: dict[str, str], name: str) -> str:
    """The GBNF expression for a value of `schema`, written as `json.dumps` writes it (", " and
    ": " separators, keys in schema order). Sub-rules go into `rules`."""
    options = schema.get("enum") or ([schema["const"]] if "const" in schema else None)
    if options:
        return "(" + " | ".join(_lit(json.dumps(o, ensure_ascii=False)) for o in options) + ")"
    kind = schema.get("type")
    if kind in ("string", "integer", "number", "boolean"):
        return kind
    if kind == "array":
        item = _gbnf(schema.get("items") or {}, rules, name + "-item")
        return f'"[" ({item} (", " {item})*)? "]"'
    if kind == "object" and "properties" in schema:
        parts = [
            _lit(("" if i == 0 else ", ") + json.dumps(key) + ": ")
            + " "
            + _gbnf(sub, rules, f"{name}-{i}")
            for i, (key, sub) in enumerate(schema["properties"].items())
        ]
        rules[name] = " ".join(['"{"', *parts, '"}"'])
        return name
    return "freeobject" if kind == "object" else "value"


def reply_grammar(schema: Mapping[str, Any]) -> str:
    """A GBNF grammar for a reply to `reply_schema`'s schema in the form demos are written in:
    `call: TOOL {"arg": ...}` (compact JSON as `json.dumps` writes it) or `answer: TEXT`."""
    rules: dict[str, str] = {}
    alternatives = ['"answer: " [^\\n]+']
    for i, option in enumerate(schema.get("anyOf") or ()):
        props = option.get("properties") or {}
        tool = (props.get("tool") or {}).get("const")
        if isinstance(tool, str):
            args = _gbnf(props.get("arguments") or {"type": "object"}, rules, f"args{i}")
            alternatives.append(_lit(f"call: {tool} ") + " " + args)
    lines = ["root ::= " + " | ".join(alternatives)]
    lines += [f"{k} ::= {v}" for k, v in rules.items()]
    return "\n".join(lines) + _GBNF_BASE


# ---------------------------------------------------------------------------------------------
# Reading the reply


class ModelReply(BaseModel):
    """One model reply: a tool call (`tool`, `arguments`) or the final answer (`tool` is
    `finish`, the text in `text`)."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    text: str = ""

    @property
    def is_answer(self) -> bool:
        return self.tool == FINISH


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


_REPLY_LINE = re.compile(r"^(call|answer): (.*)$", re.S)


def parse_reply(reply: Any) -> ModelReply:
    """The local form (`call: TOOL {json}` / `answer: TEXT` as `reply_grammar` allows, or JSON
    text under `render_prompt`'s schema) or an OpenAI-style reply
    (a chat completion, its `message`, or DSPy's `{"text", "tool_calls"}` output).

    A reply that is neither raises ValueError. Only the first tool call counts: one step is
    scored against one recorded call.
    """
    if isinstance(reply, str):
        line = _REPLY_LINE.match(reply.strip())
        if line and line.group(1) == "answer":
            return ModelReply(tool=FINISH, text=line.group(2).strip())
        if line:
            tool, _, args = line.group(2).partition(" ")
            return ModelReply(tool=tool, arguments=_arguments(args))
        try:
            data = json.loads(reply)
        except json.JSONDecodeError as e:
            raise ValueError(f"the reply is not JSON: {e.msg}") from None
        if isinstance(data, dict) and isinstance(data.get("tool"), str) and data["tool"]:
            return ModelReply(tool=data["tool"], arguments=_arguments(data.get("arguments")))
        if isinstance(data, dict) and isinstance(data.get("answer"), str):
            return ModelReply(tool=FINISH, text=data["answer"])
        raise ValueError("the reply is neither a tool call nor an answer")
    choices = _field(reply, "choices")
    message = _field(choices[0], "message") if choices else reply
    calls = _field(message, "tool_calls") or ()
    for call in calls:
        fn = _field(call, "function")
        name = _field(fn, "name")
        if isinstance(name, str) and name:
            return ModelReply(tool=name, arguments=_arguments(_field(fn, "arguments")))
    text = _field(message, "content")
    if text is None:
        text = _field(message, "text")
    if isinstance(text, str):
        return ModelReply(tool=FINISH, text=text.strip())
    raise ValueError("the reply has neither a tool call nor text")
