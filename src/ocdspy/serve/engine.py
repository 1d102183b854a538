"""The model side of `ocdspy serve`: one OpenAI chat request in, one reply (a call or text) out.

The built-in model answers through `shipped.LocalModelCall`, the same path offline `evaluate`
scores: `opencode_chat.render_prompt` turns the request into the prompt, and the reply is
decoded under `reply_grammar` of the request's tools, so it is `call: TOOL {json}` with valid
arguments or `answer: TEXT`. `read_reply` turns that line into what OpenCode expects.

How big OpenCode's requests get (OpenCode 1.18.33, counted with the built-in model's tokenizer):
with a custom agent of about 330 characters, the real first request of a turn (system message
of about 1,400 characters: the body, the environment block, the skills list; 10 tool definitions
of about 21,000 characters) rendered to 424 prompt tokens, and the title request to 593
(tests/test_serve.py's integration test prints the first figure and bounds it). A system message
of about 4,300 characters, the size an exported agent reaches, renders to about 820 tokens. The
renderer leaves the tool definitions out of the prompt (they become the reply grammar), so a turn
starts well inside the 8,192-token context; each tool step adds its call line and a short
outcome line. When the prompt plus the reply budget outgrows the context, `check_context` raises
`ContextOverflow` and the server answers HTTP 400 `context_length_exceeded` (the served
`limit.context` also lets OpenCode compact the session first).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from ocdspy.opencode_chat import (
    DEFAULT_RENDERING,
    parse_reply,
    render_prompt,
    reply_grammar,
    reply_schema,
)
from ocdspy.program.render import FINISH
from ocdspy.shipped import check_context

# The id the built-in model is served under: the local provider's model name in ocdspy's config,
# and the name OpenCode then writes into its environment block (as evaluate renders it).
DEFAULT_MODEL_ID: Final = "smollm2-135m"
# The provider id in opencode.json: OpenCode's model string is `ocdspy/<model id>`.
PROVIDER_ID: Final = "ocdspy"
DEFAULT_N_CTX: Final = 8192
# A reply's default budget and its cap: a call line or a short answer fits (the built-in model
# repeats itself to the end of any budget); OpenCode asks for the provider's `limit.output`,
# which the printed snippet sets to this.
REPLY_TOKENS: Final = 256
# The arguments that name a file or folder in OpenCode's tools.
PATH_ARGUMENTS: Final = ("filePath", "path")
# Deeper tool schemas than this are refused (a grammar rule per level).
MAX_SCHEMA_DEPTH: Final = 16


@dataclass(frozen=True)
class Completion:
    """The model's raw reply and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "length" when cut at the reply budget


class Engine(Protocol):
    """What the server drives. `complete` raises `shipped.ContextOverflow` when the prompt and
    `max_tokens` outgrow `n_ctx`."""

    n_ctx: int

    def complete(self, request: dict[str, Any], max_tokens: int) -> Completion: ...


class LocalEngine:
    """The built-in model (or any ChatML GGUF) through `shipped.LocalModelCall`."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        rendering: str = DEFAULT_RENDERING,
    ) -> None:
        from ocdspy.shipped import LocalModelCall

        self.call = LocalModelCall(
            model_path, n_ctx=n_ctx, n_threads=n_threads, rendering=rendering
        )
        self.n_ctx = self.call.n_ctx
        self.model_id = model_id_for(model_path)

    def load(self) -> float:
        """Load the weights now (a bad file fails at start, not on the first request)."""
        from ocdspy.lm.local import _load

        c = self.call
        return _load(c.model_path, c.n_ctx, c.n_threads, c.seed).load_seconds

    def complete(self, request: dict[str, Any], max_tokens: int) -> Completion:
        r = self.call.complete(request, max_tokens=max_tokens)
        return Completion(r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason)


def estimate_tokens(text: str) -> int:
    """About four characters a token: the count an engine without a tokenizer reports."""
    return -(-len(text) // 4)


class CallableEngine:
    """A `request -> reply text` function as an engine (scripted replies, tests). The prompt is
    rendered as for the real model and its tokens estimated (`estimate_tokens`), so the context
    rule applies the same way."""

    def __init__(
        self,
        fn: Callable[[dict[str, Any]], str],
        *,
        n_ctx: int = DEFAULT_N_CTX,
        model_id: str = DEFAULT_MODEL_ID,
    ) -> None:
        self.fn = fn
        self.n_ctx = n_ctx
        self.model_id = model_id

    def complete(self, request: dict[str, Any], max_tokens: int) -> Completion:
        prompt, _ = render_prompt(request)
        tokens = estimate_tokens(prompt)
        check_context(tokens, max_tokens, self.n_ctx)
        text = str(self.fn(request))
        return Completion(text, tokens, estimate_tokens(text))


def as_engine(engine: Any, n_ctx: int | None) -> Engine:
    """An object with `complete` as it is; a plain callable wrapped in `CallableEngine`."""
    if callable(getattr(engine, "complete", None)):
        return engine
    if callable(engine):
        return CallableEngine(engine, n_ctx=n_ctx or DEFAULT_N_CTX)
    raise TypeError(f"an engine has a complete() method or is callable, not {type(engine)}")


def model_id_for(model_path: Path | None) -> str:
    """The served id: `smollm2-135m` for the built-in model, else the GGUF's file stem."""
    return DEFAULT_MODEL_ID if model_path is None else Path(model_path).stem.lower()


# ---------------------------------------------------------------------------------------------
# The tools a request offers


def _depth(schema: Any, level: int = 0) -> int:
    if not isinstance(schema, Mapping) or level > MAX_SCHEMA_DEPTH:
        return level
    subs = (
        list((schema.get("properties") or {}).values())
        if isinstance(schema.get("properties"), Mapping)
        else []
    )
    if isinstance(schema.get("items"), Mapping):
        subs.append(schema["items"])
    return max([_depth(s, level + 1) for s in subs], default=level)


_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,128}$")


def tool_problem(tool: Any) -> str | None:
    """Why a tool definition cannot become part of the reply grammar (None when it can)."""
    fn = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(fn, Mapping) or tool.get("type", "function") != "function":
        return "is not a function tool"
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        return "has a name that a call line cannot hold (1-128 characters, no spaces)"
    params = fn.get("parameters")
    if params is None:
        return None
    if not isinstance(params, Mapping) or params.get("type", "object") != "object":
        return "has parameters that are not an object schema"
    if "properties" in params and not isinstance(params["properties"], Mapping):
        return "has properties that are not an object"
    if _depth(params) > MAX_SCHEMA_DEPTH:
        return f"has parameters nested deeper than {MAX_SCHEMA_DEPTH} levels"
    try:
        reply_grammar({"anyOf": [_one_tool_schema(tool)]})
    except (TypeError, ValueError, RecursionError) as e:
        return f"cannot become a grammar ({e})"
    return None


def _one_tool_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    return reply_schema([tool])


def tool_name(tool: Any) -> str:
    fn = tool.get("function") if isinstance(tool, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    return name if isinstance(name, str) else "?"


# ---------------------------------------------------------------------------------------------
# The reply as OpenCode reads it


@dataclass(frozen=True)
class Reply:
    """A call (`tool`, `arguments`) or text (`content`), with the OpenAI finish reason."""

    content: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"


_ENV_CWD = re.compile(r"^\s*Working directory: (.+?)\s*$", re.M)


def working_directory(request: Mapping[str, Any]) -> str | None:
    """The working directory OpenCode states in its environment block (first system message
    that has one; see `opencode_chat.Environment`), or None."""
    for m in request.get("messages") or ():
        if isinstance(m, Mapping) and m.get("role") == "system":
            content = m.get("content")
            found = _ENV_CWD.search(content) if isinstance(content, str) else None
            if found:
                return found.group(1)
    return None


def resolve_paths(arguments: dict[str, Any], cwd: str | None) -> dict[str, Any]:
    """Relative `filePath`/`path` arguments made absolute against `cwd`: OpenCode's tools
    resolve a relative path against their own process directory, not the project."""
    if not cwd:
        return arguments
    out = dict(arguments)
    for key in PATH_ARGUMENTS:
        value = out.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            out[key] = os.path.normpath(os.path.join(cwd, value))
    return out


def _call_arguments(line: str) -> dict[str, Any] | None:
    """The JSON object after `call: TOOL `, or None when it is cut or not an object."""
    _, _, rest = line.partition(" ")
    _, _, raw = rest.partition(" ")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def read_reply(completion: Completion, request: Mapping[str, Any]) -> Reply:
    """The model's line as OpenCode reads it. `answer: TEXT` (or any text not in the line form)
    is text; `call: TOOL {json}` is a tool call with its paths resolved. A call cut at the reply
    budget is returned as text with finish reason `length` (its arguments are not valid)."""
    line = completion.text.strip()
    try:
        reply = parse_reply(line)
    except ValueError:
        return Reply(content=completion.text, finish_reason=completion.finish_reason)
    if reply.tool == FINISH:
        return Reply(content=reply.text, finish_reason=completion.finish_reason)
    arguments = _call_arguments(line) if line.startswith("call: ") else reply.arguments
    if arguments is None:
        return Reply(content=line, finish_reason="length")
    cwd = working_directory(request)
    return Reply(
        tool=reply.tool, arguments=resolve_paths(arguments, cwd), finish_reason="tool_calls"
    )
