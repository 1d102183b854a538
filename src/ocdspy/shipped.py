"""Scoring what ships: an OpenCode agent file (and its demo plugin), as it reaches the model.

Every held-out step (one per recorded action, plus the final answer) becomes the request
OpenCode would send at that point (`opencode_chat.opencode_request`), the model answers it, and
its call is scored against the recorded one with the metric's components.

- **static form**: the agent file's body is the first system message, nothing else;
- **plugin form**: the same body plus, as a second system message, exactly the text the demo
  plugin adds for that state (`select.render_selection(pool, select.select(pool, state))`).

`lm_call` is any `request -> reply` function: `LocalModelCall` (the built-in model, through
`render_prompt` and a grammar) or `ApiModelCall` (any OpenAI-compatible endpoint via DSPy, with
the request's tools). dspy-free unless `ApiModelCall` is used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from ocdspy.config import MetricWeights, ModelSettings
from ocdspy.convert import Example, main_argument
from ocdspy.errors import ModelError
from ocdspy.evaluate import Difference, paired_difference
from ocdspy.lm.providers import mask_keys
from ocdspy.metric import COMPONENTS, MetricScores, score_prediction
from ocdspy.opencode_chat import (
    DEFAULT_RENDERING,
    OPENCODE_TOOLS,
    Environment,
    ModelReply,
    example_cwd,
    opencode_request,
    parse_reply,
    render_prompt,
    rendering_named,
    reply_grammar,
)
from ocdspy.program.render import FINISH, RESPONSE_CHARS, TARGET_CHARS, clip
from ocdspy.program.select import DemoPool, render_selection, select, state_from_example

Form = Literal["static", "plugin"]
# The date in the environment block: fixed, so a score does not change with the calendar.
EVAL_DATE = "Thu Jan 01 2026"
# A call line fits easily; an answer is cut there (the line form stays readable when cut).
DEFAULT_REPLY_TOKENS = 128


class LmCall(Protocol):
    """One model request (an OpenAI chat-completions body) -> the model's reply."""

    def __call__(self, request: dict[str, Any]) -> Any: ...


class ShippedStep(BaseModel):
    id: str = Field(description="example id # step (1-based; the last is the final answer)")
    session_id: str
    expected: str
    output: str
    score: float = Field(description="The weighted metric, 0-100.")
    components: dict[str, float]
    demos: list[str] = Field(default_factory=list, description="Pool demo ids shown (plugin).")
    error: str | None = None


class ShippedScore(BaseModel):
    form: Form
    score: float = Field(description="Mean of the weighted metric over the steps, 0-100.")
    components: dict[str, float] = Field(description="Mean of each component, 0-100.")
    errors: int = Field(description="Steps whose request or reply failed (scored 0).")
    steps: int
    results: list[ShippedStep]


def agent_body(agent: str) -> str:
    """The body of an agent file (front matter off, as OpenCode reads it), or `agent` itself
    when it has no front matter."""
    from ocdspy.export import parse_agent_file

    if not agent.startswith("---"):
        return agent
    try:
        return parse_agent_file(agent)[1]
    except ValueError:
        return agent


def plugin_text(pool: DemoPool, example: Example, step: int) -> tuple[str, list[str]]:
    """What the demo plugin adds for this state, and the ids of the demos it chose."""
    chosen = select(pool, state_from_example(example, step))
    return render_selection(pool, chosen), [d.id for d in chosen]


def expected(example: Example, step: int) -> dict[str, Any]:
    """The recorded next call of `step`, labelled as `program.agent.next_action_examples` does."""
    if step < len(example.actions):
        a = example.actions[step]
        tool, target = a.tool, clip(a.target, TARGET_CHARS)
    else:
        tool, target = FINISH, clip(example.response, RESPONSE_CHARS)
    done = [
        {"tool": a.tool, "target": a.target}
        for a in example.actions[:step]
        if a.success is not False
    ]
    return {"tool": tool, "target": target, "done": done}


def predicted(reply: ModelReply, cwd: str) -> dict[str, str]:
    """The reply as the metric reads a prediction: the tool and its main argument."""
    if reply.is_answer:
        return {"tool": FINISH, "target": reply.text}
    target = main_argument(reply.tool, reply.arguments, cwd)
    return {"tool": reply.tool, "target": clip(target, TARGET_CHARS)}


def _pct(scores: Sequence[MetricScores], weights: MetricWeights) -> tuple[float, dict[str, float]]:
    n = len(scores) or 1
    overall = 100 * sum(s.weighted(weights) for s in scores) / n
    comps = {c: 100 * sum(getattr(s, c) for s in scores) / n for c in COMPONENTS}
    return overall, comps


def score_step(
    example: Example,
    step: int,
    lm_call: LmCall,
    request: dict[str, Any],
    weights: MetricWeights,
) -> tuple[ShippedStep, MetricScores]:
    """Ask the model one step and score its call; a failed call or reply scores 0."""
    gold = expected(example, step)
    error = None
    try:
        pred = predicted(parse_reply(lm_call(request)), example_cwd(example))
        scores = score_prediction(gold, pred)
        output = f"{pred['tool']} {pred['target']}".strip()
    except (ModelError, ValueError) as e:
        scores = MetricScores(success=0.0, efficiency=0.0, correctness=0.0)
        error = output = str(e).splitlines()[0] if str(e) else type(e).__name__
    result = ShippedStep(
        id=f"{example.id}#{step + 1}",
        session_id=example.session_id,
        expected=f"{gold['tool']} {gold['target']}".strip(),
        output=output,
        score=100 * scores.weighted(weights),
        components={c: 100 * getattr(scores, c) for c in COMPONENTS},
        error=error,
    )
    return result, scores


def score_agent(
    agent: str,
    examples: Sequence[Example],
    *,
    lm_call: LmCall,
    plugin_pool: DemoPool | None = None,
    tools: Sequence[str] | None = None,
    weights: MetricWeights | None = None,
    model: str = "smollm2-135m",
    date: str = EVAL_DATE,
    on_step: Callable[[ShippedStep], None] | None = None,
) -> ShippedScore:
    """Score an agent (file text or bare body) on every step of the held-out `examples`.

    With `plugin_pool`, each request also carries the demos the plugin picks for that state
    (the plugin form); without it, the body alone (the static form). `tools` defaults to what
    OpenCode offers a custom agent plus any other tool the recordings used.
    """
    body = agent_body(agent)
    weights = weights or MetricWeights()
    offered = list(tools) if tools is not None else default_tools(examples)
    results: list[ShippedStep] = []
    all_scores: list[MetricScores] = []
    for example in examples:
        env = Environment(cwd=example_cwd(example), model_name=model, date=date)
        for step in range(len(example.actions) + 1):
            text, demo_ids = plugin_text(plugin_pool, example, step) if plugin_pool else ("", [])
            request = opencode_request(
                body, example, step, plugin_text=text or None, tools=offered, env=env, model=model
            )
            result, scores = score_step(example, step, lm_call, request, weights)
            result.demos = demo_ids
            results.append(result)
            all_scores.append(scores)
            if on_step is not None:
                on_step(result)
    overall, comps = _pct(all_scores, weights)
    return ShippedScore(
        form="plugin" if plugin_pool else "static",
        score=overall,
        components=comps,
        errors=sum(r.error is not None for r in results),
        steps=len(results),
        results=results,
    )


def default_tools(examples: Sequence[Example]) -> list[str]:
    """OpenCode's tools for a custom agent, plus every other tool the recordings used."""
    tools = list(OPENCODE_TOOLS)
    for ex in examples:
        tools += [a.tool for a in ex.actions if a.tool not in tools and a.tool != FINISH]
    return tools


def compare(
    baseline: ShippedScore,
    agent: ShippedScore,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """agent - baseline over the same steps, with a session-bootstrap interval (evaluate's)."""
    if [r.id for r in baseline.results] != [r.id for r in agent.results]:
        raise ValueError("the two scores are not over the same steps")
    deltas = [a.score - b.score for a, b in zip(agent.results, baseline.results, strict=True)]
    groups = [r.session_id for r in agent.results]
    return paired_difference(deltas, groups, resamples=resamples, confidence=confidence, seed=seed)


# ---------------------------------------------------------------------------------------------
# Models


class ContextOverflow(ModelError):
    """The rendered prompt plus the reply budget does not fit the model's context."""

    def __init__(self, prompt_tokens: int, reply_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens; with {reply_tokens} for the reply "
            f"it outgrows the model's context of {n_ctx}"
        )
        self.prompt_tokens = prompt_tokens
        self.reply_tokens = reply_tokens
        self.n_ctx = n_ctx


def check_context(prompt_tokens: int, reply_tokens: int, n_ctx: int) -> None:
    """Raise ContextOverflow when the prompt and the reply budget outgrow `n_ctx`."""
    if prompt_tokens + reply_tokens > n_ctx:
        raise ContextOverflow(prompt_tokens, reply_tokens, n_ctx)


class GrammarError(ModelError):
    """llama.cpp cannot parse the grammar of a reply schema (it would crash on sampling)."""


@dataclass(frozen=True)
class LocalReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop", or "length" when the reply was cut at its budget


class LocalModelCall:
    """The built-in model (or any GGUF with a ChatML template): `render_prompt`'s text,
    decoded under a grammar built from its reply schema. Returns the reply's text: with
    `reply_form="line"` (default) in the demos' form, `call: TOOL {json}` or `answer: TEXT`
    (`reply_grammar`); with `"json"`, the schema's JSON object. `rendering` picks the layout
    (`opencode_chat.RENDERINGS`).

    A prompt that outgrows the context raises ModelError (the step scores 0) instead of being
    cut: a cut prompt is not what OpenCode would send.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        seed: int = 0,
        max_tokens: int = DEFAULT_REPLY_TOKENS,
        reply_form: Literal["line", "json"] = "line",
        rendering: str = DEFAULT_RENDERING,
    ) -> None:
        from ocdspy.lm.local import (
            DEFAULT_N_CTX,
            default_threads,
            llama_cpp_available,
            resolve_gguf,
        )

        if not llama_cpp_available():
            raise ModelError(
                "llama-cpp-python is not installed", hint="pip install 'ocdspy[local]'"
            )
        self.model_path = str(resolve_gguf(model_path))
        self.n_ctx = n_ctx or DEFAULT_N_CTX
        self.n_threads = n_threads or default_threads()
        self.seed = seed
        self.max_tokens = max_tokens
        self.reply_form = reply_form
        rendering_named(rendering)
        self.rendering = rendering
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _grammar(self, schema: dict[str, Any], llama: Any) -> Any:
        from llama_cpp import LlamaGrammar
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        from ocdspy.lm.local import grammar_parses

        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            if key not in self._grammars:
                text = (
                    reply_grammar(schema) if self.reply_form == "line" else json_schema_to_gbnf(key)
                )
                # llama.cpp crashes the process when it samples under a grammar it cannot parse.
                if not grammar_parses(llama, text):
                    raise GrammarError("llama.cpp cannot parse the grammar of the reply schema")
                self._grammars[key] = LlamaGrammar.from_string(text, verbose=False)
            return self._grammars[key]

    def __call__(self, request: dict[str, Any]) -> str:
        return self.complete(request).text

    def complete(self, request: dict[str, Any], *, max_tokens: int | None = None) -> LocalReply:
        """The reply to `request` with its token counts; `max_tokens` overrides the budget."""
        from llama_cpp import StoppingCriteriaList

        from ocdspy.lm.local import _load

        budget = max_tokens or self.max_tokens
        prompt, schema = render_prompt(request, self.rendering)
        model = _load(self.model_path, self.n_ctx, self.n_threads, self.seed)
        grammar = self._grammar(schema, model.llama)
        with model.lock:
            tokens = model.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            check_context(len(tokens), budget, self.n_ctx)
            looped = _LoopStop(len(tokens))
            out = model.llama.create_completion(
                prompt=tokens,
                grammar=grammar,
                max_tokens=budget,
                temperature=0.0,
                seed=self.seed,
                stopping_criteria=StoppingCriteriaList([looped]),
            )
        choice = out["choices"][0]
        cut = looped.cut or choice.get("finish_reason") == "length"
        return LocalReply(
            text=str(choice["text"]),
            prompt_tokens=len(tokens),
            completion_tokens=int((out.get("usage") or {}).get("completion_tokens", 0)),
            finish_reason="length" if cut else "stop",
        )


class _LoopStop:
    """A llama.cpp stopping criterion: true once the reply's tokens end in a loop
    (`lm.loops.loop_period`), so a degenerate reply stops there instead of at its budget."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.cut = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        from ocdspy.lm.loops import loop_period

        self.cut = self.cut or loop_period(input_ids[self.prompt_tokens :].tolist()) > 0
        return self.cut


class ApiModelCall:
    """Any model DSPy reaches (an OpenAI-compatible endpoint, Ollama, a provider API), sent the
    request's messages and tools as they are. Returns `{"content", "tool_calls"}`."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm

    @classmethod
    def from_settings(cls, settings: ModelSettings, *, role: str = "target") -> ApiModelCall:
        from ocdspy.lm.providers import build_lm

        return cls(build_lm(settings, role=role, cache=False))

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.get("tools"):
            options = {"tools": request["tools"], "tool_choice": request.get("tool_choice", "auto")}
        try:
            outputs = self.lm(messages=request["messages"], **options)
        except Exception as e:  # DSPy's LMError family and the providers' own
            raise ModelError(mask_keys(f"the model call failed: {e}")) from None
        out = outputs[0] if outputs else ""
        if isinstance(out, str):
            return {"content": out}
        return {"content": out.get("text"), "tool_calls": out.get("tool_calls")}
