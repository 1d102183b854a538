"""From `ModelSettings` to a `dspy.LM`: model strings, endpoints, keys, timeouts and retries."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ocdspy.config import ModelSettings
from ocdspy.errors import ModelError

DEFAULT_OLLAMA_BASE = "http://localhost:11434/v1"

# The variable read when `api_key_env` is not set. Ollama, local models and OpenAI-compatible
# servers need no key unless `api_key_env` names one.
DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

# DSPy 3.4 model-string prefixes. `ollama_chat/` and `ollama/` both route natively to lm15's
# "ollama" provider (Ollama's OpenAI-compatible /v1 endpoint); DSPy's fallback check looks for
# `<PREFIX>_API_BASE`, and we force the native engine for Ollama anyway (see `build_lm`).
_PREFIX: dict[str, str] = {
    "ollama": "ollama_chat",
    "openai": "openai",
    "anthropic": "anthropic",
    "openai_compatible": "openai",
}
_STRIP_PREFIXES: dict[str, tuple[str, ...]] = {
    "ollama": ("ollama_chat/", "ollama/"),
    "openai": ("openai/",),
    "anthropic": ("anthropic/",),
    "openai_compatible": ("openai/",),
}

# Sent to an OpenAI-compatible server that needs no key: without it DSPy would send the
# ambient OPENAI_API_KEY to whatever address api_base names.
_NO_KEY = "not-needed"


# Every key value this process has read, so any text can be masked before it is printed or
# stored: an HTTP library's error may quote the header that carried it.
_KEYS: set[str] = set()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def mask_key(key: str) -> str:
    """`sk-…abcd`: enough to tell keys apart, never enough to use one."""
    return f"{key[:3]}…{key[-4:]}" if len(key) >= 16 else "***"


def _key_forms(key: str) -> list[str]:
    # The raw value, its escaped forms (`repr`, bytes in an httpx error) and, for a key broken
    # by control characters, each long piece, longest first so a piece never unmasks a whole.
    forms = {key, repr(key)[1:-1], key.encode("unicode_escape").decode("ascii")}
    forms.update(p for p in _CONTROL.split(key) if len(p.strip()) >= 8)
    return sorted((f for f in forms if len(f) >= 8), key=len, reverse=True)


def remember_key(key: str) -> None:
    if key and len(key) >= 8:
        _KEYS.add(key)


def mask_keys(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every known API key value masked: the keys read so far and the values of the
    usual key variables (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`) in the environment."""
    env = os.environ if environ is None else environ
    keys = set(_KEYS)
    keys.update(v for n in DEFAULT_KEY_ENV.values() if len(v := env.get(n, "")) >= 8)
    for key in keys:
        for form in _key_forms(key):
            if form in text:
                text = text.replace(form, mask_key(key.strip()))
    return text


class KeyMaskFilter(logging.Filter):
    """Masks key values in log records (DSPy logs each failed call with its exception)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_keys(msg)
        if masked != msg:
            record.msg, record.args = masked, ()
        return True


_FILTER = KeyMaskFilter()


def _install_log_masking() -> None:
    for name in ("", "dspy", "LiteLLM", "litellm", "httpx"):
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def header_safe_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value (None: it can)."""
    if value != value.strip():
        return "has leading or trailing whitespace"
    if _CONTROL.search(value):
        return "contains a control character (a newline?)"
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return "contains characters that are not allowed in an HTTP header"
    return None


def key_env_for(settings: ModelSettings) -> str | None:
    """Name of the environment variable that holds this model's API key (None: no key)."""
    if settings.provider == "local":
        return None  # runs in process: any api_key_env is unused (config warns about it)
    if settings.api_key_env:
        return settings.api_key_env
    return DEFAULT_KEY_ENV.get(settings.provider)


def normalize_ollama_base(api_base: str | None) -> str:
    """Ollama's OpenAI-compatible endpoint: `http://host:11434` -> `http://host:11434/v1`."""
    base = (api_base or DEFAULT_OLLAMA_BASE).strip().rstrip("/")
    for suffix in ("/api/chat", "/api", "/v1/chat/completions"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if not base.endswith("/v1"):
        base += "/v1"
    return base


def model_string(settings: ModelSettings) -> str:
    """The DSPy model string for an HTTP provider (`ollama_chat/qwen2.5-coder:7b`, ...)."""
    name = settings.model.strip()
    for prefix in _STRIP_PREFIXES.get(settings.provider, ()):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return f"{_PREFIX[settings.provider]}/{name}"


def _where(settings: ModelSettings, role: str) -> str:
    return f"{role} model ({settings.provider}: {settings.model})"


def check_lm_settings(
    settings: ModelSettings, role: str, *, environ: Mapping[str, str] | None = None
) -> None:
    """Fail fast, before any work: missing key, missing endpoint, missing local model.

    Raises `ModelError` naming the role, the provider and (for keys) the variable. Reads only
    the environment and the filesystem; never prints a key.
    """
    env = os.environ if environ is None else environ
    where = _where(settings, role)
    if not settings.model.strip() and settings.provider != "local":
        raise ModelError(f"{where}: no model name given")

    if settings.api_base is not None:
        parts = urlsplit(settings.api_base.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ModelError(f"{where}: api_base must be an http(s) URL, got {settings.api_base!r}")
    if settings.provider == "openai_compatible" and not settings.api_base:
        raise ModelError(
            f"{where}: provider openai_compatible needs api_base",
            hint="set api_base to the server's OpenAI-compatible URL, e.g. http://host:8000/v1",
        )

    if settings.provider == "local":
        from ocdspy.lm.local import llama_cpp_available, resolve_gguf

        try:
            resolve_gguf(settings.model_path, settings.model)
        except ModelError as e:
            raise ModelError(f"{role} model (local): {e.message}", hint=e.hint) from None
        if not llama_cpp_available():
            raise ModelError(
                f"{role} model (local): llama-cpp-python is not installed",
                hint="install the local extra: pip install 'ocdspy[local]'",
            )

    var = key_env_for(settings)
    if var is not None and not env.get(var, "").strip():
        raise ModelError(
            f"{where}: the API key variable {var} is not set",
            hint=f"export {var}=... (or set api_key_env to the variable that holds the key)",
        )
    if var is not None:
        remember_key(env[var])
        problem = header_safe_problem(env[var])
        if problem:
            # Named, never shown: the value is a secret even when it is malformed.
            raise ModelError(
                f"{where}: the API key in {var} {problem}; it cannot be sent",
                hint=f"set {var} to the key alone, on one line",
            )


def _api_key(settings: ModelSettings) -> str | None:
    var = key_env_for(settings)
    if var is None:
        return None
    return os.environ.get(var) or None


def build_lm(settings: ModelSettings, *, role: str, cache: bool = True) -> Any:
    """A configured `dspy.LM` for these settings (checks them first; see `check_lm_settings`)."""
    check_lm_settings(settings, role)

    if settings.provider == "local":
        from ocdspy.lm.local import build_local_lm

        return build_local_lm(
            settings.model_path,
            settings.model,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            cache=cache,
            num_retries=settings.num_retries,
        )

    import dspy

    _install_log_masking()
    client: dict[str, Any] = {"timeout": settings.timeout}
    key = _api_key(settings)
    engine = "auto"
    if settings.provider == "ollama":
        client["api_base"] = normalize_ollama_base(settings.api_base)
        # Native only: DSPy's LiteLLM fallback would post to <api_base>/api/chat, which does not
        # exist under /v1, and an ambient OLLAMA_API_BASE would silently re-route `ollama/`.
        engine = "lm15"
    elif settings.api_base:
        client["api_base"] = settings.api_base.strip().rstrip("/")
    if settings.provider == "openai_compatible" and key is None:
        key = _NO_KEY
    if key is not None:
        client["api_key"] = key

    try:
        return dspy.LM(
            model_string(settings),
            engine=engine,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            cache=cache,
            num_retries=settings.num_retries,
            **client,
        )
    except (ValueError, TypeError) as e:
        raise ModelError(mask_keys(f"{_where(settings, role)}: {e}")) from None
    except Exception as e:  # dspy's LMConfigurationError and friends
        if type(e).__module__.startswith("dspy"):
            raise ModelError(mask_keys(f"{_where(settings, role)}: {e}")) from None
        raise


_LIB_TIMEOUT_FIX = re.compile(r"raise it with Timeouts\(\w+=[^)]*\)")
_LIB_TIMEOUT = re.compile(r"(?:RouterConfig\(timeouts=)?Timeouts\(\w+=[^)]*\)\)?")


def in_our_words(text: str, role: str) -> str:
    """A library's error text with its own knobs (`Timeouts(read=...)`, lm15's names) replaced
    by the setting a user of ocdspy changes: `models.<role>.timeout`."""
    text = text.replace("lm15's read timeout", f"the request timeout (models.{role}.timeout)")
    text = _LIB_TIMEOUT_FIX.sub(f"raise models.{role}.timeout in config.yaml", text)
    return _LIB_TIMEOUT.sub(f"models.{role}.timeout", text)


def model_error(exc: BaseException, settings: ModelSettings, *, role: str) -> ModelError:
    """A `ModelError` for a failed LM call (DSPy's `LMError` family), for one-line reporting."""
    kind = type(exc).__name__
    text = mask_keys(str(exc)).strip()
    text = text.splitlines()[0] if text else kind
    return ModelError(f"{_where(settings, role)}: {kind}: {in_our_words(text, role)}")
