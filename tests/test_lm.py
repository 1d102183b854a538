"""The language-model layer against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

# Before dspy/litellm are imported (by this module or any other): no price-map fetch, and no
# cache in the developer's home even if something reads dspy.cache before a fixture runs.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="ocdspy-test-dspy-"))

import pytest

dspy = pytest.importorskip("dspy")

from dspy.lm15 import Message, Response, Usage  # noqa: E402
from dspy.utils.exceptions import (  # noqa: E402
    LMError,
    LMInvalidRequestError,
    LMProviderError,
    LMServerError,
)

from ocdspy.config import ModelSettings  # noqa: E402
from ocdspy.errors import ModelError  # noqa: E402
from ocdspy.lm import (  # noqa: E402
    build_lm,
    check_lm_settings,
    configure_cache,
    lm_usage_summary,
    model_error,
    model_string,
    normalize_ollama_base,
)
from ocdspy.lm.local import _llama_response_format  # noqa: E402

try:
    from tests.opencode_support.fake_openai import FakeOpenAI, Faults, Sequence
except ImportError:  # pragma: no cover - tests/ on sys.path instead of the repo root
    from opencode_support.fake_openai import (  # type: ignore[no-redef]
        FakeOpenAI,
        Faults,
        Sequence,
    )

SECRET = "sk-test-secret-value-0123456789"


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider variables from the developer's shell."""
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "OLLAMA_API_BASE",
        "OLLAMA_BASE_URL",
        "OPENAI_API_BASE",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def lm_env(tmp_path: Path) -> Path:
    """A fresh DSPy cache (memory and disk) per test that calls a model."""
    return configure_cache(tmp_path / "dspy-cache")


@pytest.fixture
def server(lm_env: Path):
    with FakeOpenAI(Sequence(['{"answer": "hi"}'])) as s:
        yield s


def chat_paths(server: FakeOpenAI) -> list[str]:
    return [r.path for r in server.log if r.number]


# ---------------------------------------------------------------------------------------------
# Routing


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "http://localhost:11434/v1"),
        ("http://localhost:11434", "http://localhost:11434/v1"),
        ("http://localhost:11434/", "http://localhost:11434/v1"),
        ("http://gpu:11434/v1", "http://gpu:11434/v1"),
        ("http://gpu:11434/v1/", "http://gpu:11434/v1"),
        ("http://gpu:11434/api/chat", "http://gpu:11434/v1"),
        ("https://proxy.example/ollama", "https://proxy.example/ollama/v1"),
    ],
)
def test_normalize_ollama_base(given: str | None, expected: str) -> None:
    assert normalize_ollama_base(given) == expected


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("ollama", "qwen2.5-coder:7b", "ollama_chat/qwen2.5-coder:7b"),
        ("ollama", "ollama/llama3.2", "ollama_chat/llama3.2"),
        ("openai", "gpt-4o-mini", "openai/gpt-4o-mini"),
        ("openai", "openai/gpt-4o-mini", "openai/gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5"),
        ("openai_compatible", "Qwen/Qwen2.5-7B", "openai/Qwen/Qwen2.5-7B"),
    ],
)
def test_model_string(provider: str, model: str, expected: str) -> None:
    settings = ModelSettings(provider=provider, model=model, api_base="http://h:1/v1")  # type: ignore[arg-type]
    assert model_string(settings) == expected


def test_ollama_uses_native_v1_route(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # An ambient OLLAMA_API_BASE makes DSPy's "auto" engine hand `ollama/` models to LiteLLM
    # (/api/chat); our LM must stay on the native route at the configured address.
    monkeypatch.setenv("OLLAMA_API_BASE", "http://127.0.0.1:9")
    base_without_v1 = server.base_url.removesuffix("/v1")
    settings = ModelSettings(provider="ollama", model="qwen2.5-coder:7b", api_base=base_without_v1)
    lm = build_lm(settings, role="target")

    assert lm.model == "ollama_chat/qwen2.5-coder:7b"
    assert lm("hello") == ['{"answer": "hi"}']
    assert chat_paths(server) == ["/v1/chat/completions"]
    assert server.requests[0]["model"] == "qwen2.5-coder:7b"
    assert server.requests[0]["messages"][-1]["content"] == "hello"


def test_ollama_sends_key_only_when_configured(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_KEY", SECRET)
    settings = ModelSettings(
        provider="ollama", model="llama3.2", api_base=server.base_url, api_key_env="OLLAMA_KEY"
    )
    build_lm(settings, role="target")("hello")
    assert server.log[-1].headers.get("Authorization") == f"Bearer {SECRET}"


def test_openai_compatible_route_never_sends_ambient_openai_key(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    settings = ModelSettings(provider="openai_compatible", model="coder", api_base=server.base_url)
    lm = build_lm(settings, role="teacher")

    assert lm("hello") == ['{"answer": "hi"}']
    assert chat_paths(server) == ["/v1/chat/completions"]
    assert server.requests[0]["model"] == "coder"
    assert SECRET not in str(server.log[-1].headers)


def test_openai_compatible_key_from_named_variable(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_TOKEN", SECRET)
    settings = ModelSettings(
        provider="openai_compatible",
        model="coder",
        api_base=server.base_url,
        api_key_env="VLLM_TOKEN",
    )
    build_lm(settings, role="teacher")("hello")
    assert server.log[-1].headers.get("Authorization") == f"Bearer {SECRET}"


def test_openai_provider_with_api_base_sends_its_key(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    settings = ModelSettings(
        provider="openai",
        model="gpt-4o-mini",
        api_base=server.base_url,
        temperature=0.3,
        max_tokens=50,
    )
    lm = build_lm(settings, role="teacher")
    lm("hello")
    body = server.requests[0]
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0.3
    assert 50 in (body.get("max_tokens"), body.get("max_completion_tokens"))
    assert server.log[-1].headers.get("Authorization") == f"Bearer {SECRET}"
    # The key lives in the LM object but never in its saved state or its history.
    assert SECRET not in repr(lm.dump_state())
    assert SECRET not in repr(lm.history)


# ---------------------------------------------------------------------------------------------
# Failing fast


@pytest.mark.parametrize(
    ("provider", "key_env", "variable"),
    [
        ("openai", None, "OPENAI_API_KEY"),
        ("anthropic", None, "ANTHROPIC_API_KEY"),
        ("ollama", "MY_OLLAMA_KEY", "MY_OLLAMA_KEY"),
        ("openai_compatible", "VLLM_TOKEN", "VLLM_TOKEN"),
    ],
)
def test_missing_key_fails_before_any_request(
    server: FakeOpenAI, provider: str, key_env: str | None, variable: str
) -> None:
    settings = ModelSettings(
        provider=provider,  # type: ignore[arg-type]
        model="m",
        api_base=server.base_url,
        api_key_env=key_env,
    )
    with pytest.raises(ModelError) as info:
        check_lm_settings(settings, "teacher")
    message = str(info.value)
    assert "teacher" in message and provider in message and variable in message
    with pytest.raises(ModelError):
        build_lm(settings, role="teacher")
    assert server.log == []


def test_blank_key_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "  ")
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        check_lm_settings(ModelSettings(provider="openai", model="gpt-4o"), "target")


def test_check_reads_the_given_environment() -> None:
    settings = ModelSettings(provider="anthropic", model="claude-sonnet-4-5")
    check_lm_settings(settings, "teacher", environ={"ANTHROPIC_API_KEY": SECRET})
    with pytest.raises(ModelError) as info:
        check_lm_settings(settings, "teacher", environ={})
    assert SECRET not in str(info.value)


def test_keyless_providers_need_no_variable() -> None:
    check_lm_settings(ModelSettings(provider="ollama", model="llama3.2"), "target", environ={})
    check_lm_settings(
        ModelSettings(provider="openai_compatible", model="m", api_base="http://h:8000/v1"),
        "target",
        environ={},
    )


def test_openai_compatible_requires_api_base() -> None:
    with pytest.raises(ModelError, match="api_base"):
        check_lm_settings(ModelSettings(provider="openai_compatible", model="m"), "target")


def test_api_base_must_be_a_url() -> None:
    with pytest.raises(ModelError, match="http"):
        check_lm_settings(
            ModelSettings(provider="ollama", model="m", api_base="localhost:11434"), "target"
        )


def test_local_model_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    settings = ModelSettings(provider="local", model="x", model_path=missing)
    with pytest.raises(ModelError) as info:
        check_lm_settings(settings, "target")
    assert "target" in str(info.value) and str(missing) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Retries, timeouts, bad replies


def compat_lm(server: FakeOpenAI, **overrides: object):
    settings = ModelSettings(
        provider="openai_compatible", model="coder", api_base=server.base_url, **overrides
    )
    return build_lm(settings, role="target", cache=False)


@pytest.mark.usefixtures("lm_env")
def test_server_error_is_retried() -> None:
    with FakeOpenAI(Sequence(["ok"]), faults=Faults(fail={1: 500})) as server:
        lm = compat_lm(server, num_retries=2)
        assert lm("hello") == ["ok"]
        assert len(server.requests) == 2


@pytest.mark.usefixtures("lm_env")
def test_server_error_without_retries_raises() -> None:
    with FakeOpenAI(Sequence(["ok"]), faults=Faults(fail_always=503)) as server:
        lm = compat_lm(server, num_retries=0)
        with pytest.raises(LMServerError):
            lm("hello")
        assert len(server.requests) == 1


@pytest.mark.usefixtures("lm_env")
def test_client_error_is_not_retried() -> None:
    with FakeOpenAI(Sequence(["ok"]), faults=Faults(fail={1: 400})) as server:
        lm = compat_lm(server, num_retries=3)
        with pytest.raises(LMInvalidRequestError):
            lm("hello")
        assert len(server.requests) == 1


@pytest.mark.usefixtures("lm_env")
def test_timeout_is_honoured() -> None:
    faults = Faults(hang={1}, hang_seconds=30)
    with FakeOpenAI(Sequence(["ok"]), faults=faults) as server:
        lm = compat_lm(server, timeout=1.0, num_retries=0)
        start = time.monotonic()
        with pytest.raises(LMError, match="timed out"):
            lm("hello")
        # Without the timeout the call would wait for the 30 s hang.
        assert time.monotonic() - start < 15


@pytest.mark.usefixtures("lm_env")
def test_timeout_then_retry_succeeds() -> None:
    faults = Faults(hang={1}, hang_seconds=30)
    with FakeOpenAI(Sequence(["ok"]), faults=faults) as server:
        lm = compat_lm(server, timeout=1.0, num_retries=1)
        assert lm("hello") == ["ok"]
        assert len(server.requests) == 2


@pytest.mark.usefixtures("lm_env")
def test_malformed_reply_is_a_clean_lm_error() -> None:
    with FakeOpenAI(Sequence(["ok"]), faults=Faults(malformed={1})) as server:
        lm = compat_lm(server, num_retries=0)
        with pytest.raises(LMProviderError) as info:
            lm("hello")
        settings = ModelSettings(
            provider="openai_compatible", model="coder", api_base="http://x/v1"
        )
        err = model_error(info.value, settings, role="target")
        assert isinstance(err, ModelError)
        assert "target model (openai_compatible: coder)" in str(err)
        assert "\n" not in err.message


# ---------------------------------------------------------------------------------------------
# Cache


def test_second_identical_call_is_served_from_cache(server: FakeOpenAI, lm_env: Path) -> None:
    settings = ModelSettings(provider="ollama", model="llama3.2", api_base=server.base_url)
    lm = build_lm(settings, role="target")
    first = lm("same question")
    assert lm("same question") == first
    assert len(server.requests) == 1

    # A new process: memory level gone, the disk level in the project directory remains.
    configure_cache(lm_env)
    assert build_lm(settings, role="target")("same question") == first
    assert len(server.requests) == 1
    assert any(lm_env.iterdir())

    lm("another question")
    assert len(server.requests) == 2


def test_cache_false_always_calls(server: FakeOpenAI) -> None:
    settings = ModelSettings(provider="ollama", model="llama3.2", api_base=server.base_url)
    lm = build_lm(settings, role="target", cache=False)
    lm("same")
    lm("same")
    assert len(server.requests) == 2


def test_disabled_cache_always_calls(server: FakeOpenAI, tmp_path: Path) -> None:
    configure_cache(tmp_path / "off", enabled=False)
    settings = ModelSettings(provider="ollama", model="llama3.2", api_base=server.base_url)
    lm = build_lm(settings, role="target")
    lm("same")
    lm("same")
    assert len(server.requests) == 2


class CountingEngine:
    """A custom DSPy engine that answers "pong" and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, request):  # type: ignore[no-untyped-def]
        self.calls += 1
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant("pong"),
            finish_reason="stop",
            usage=Usage(input_tokens=3, output_tokens=1),
        )

    def close(self) -> None:
        pass


@pytest.mark.usefixtures("lm_env")
def test_custom_engine_calls_are_cached_by_model_string() -> None:
    """Why the local model string carries a weights fingerprint: the engine is not in the key."""
    engine_a, engine_b, engine_c = CountingEngine(), CountingEngine(), CountingEngine()
    a = dspy.LM("local/m@aaaa", engine=engine_a, temperature=0.0)
    assert a("ping") == a("ping") == ["pong"]
    assert engine_a.calls == 1
    assert a.history[0]["usage"]["prompt_tokens"] == 3

    dspy.LM("local/m@aaaa", engine=engine_b, temperature=0.0)("ping")
    assert engine_b.calls == 0  # same model string: answered from the cache
    dspy.LM("local/m@bbbb", engine=engine_c, temperature=0.0)("ping")
    assert engine_c.calls == 1


# ---------------------------------------------------------------------------------------------
# Usage summary


def test_lm_usage_summary(server: FakeOpenAI) -> None:
    target = build_lm(
        ModelSettings(provider="ollama", model="llama3.2", api_base=server.base_url), role="target"
    )
    teacher = build_lm(
        ModelSettings(provider="openai_compatible", model="big", api_base=server.base_url),
        role="teacher",
    )
    target("one")
    target("one")  # cache hit
    target("two")
    teacher("three")

    summary = lm_usage_summary({"target": target, "teacher": teacher, "again": target})
    assert set(summary) == {"ollama_chat/llama3.2", "openai/big"}
    row = summary["ollama_chat/llama3.2"]
    assert row["calls"] == 3 and row["cache_hits"] == 1
    sent = [r["usage"] for r in target.history if r["usage"]]
    assert row["input_tokens"] == sum(u["prompt_tokens"] for u in sent) > 0
    assert row["output_tokens"] == sum(u["completion_tokens"] for u in sent) > 0
    assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"]
    assert row["cost"] is None and row["seconds"] is None
    assert summary["openai/big"]["calls"] == 1
    assert lm_usage_summary([]) == {}


# ---------------------------------------------------------------------------------------------
# Local engine pieces that need no model


def test_response_format_mapping() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert _llama_response_format(None) is None
    assert _llama_response_format({"type": "text"}) is None
    assert _llama_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert _llama_response_format({"type": "json_schema", "schema": schema, "name": "X"}) == {
        "type": "json_object",
        "schema": schema,
    }


def test_settings_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    settings = ModelSettings(
        provider="anthropic",
        model="claude-sonnet-4-5",
        temperature=0.5,
        max_tokens=2000,
        timeout=42.0,
        num_retries=5,
    )
    lm = build_lm(settings, role="teacher", cache=False)
    assert lm.model == "anthropic/claude-sonnet-4-5"
    assert lm.num_retries == 5 and lm.cache is False
    assert lm.kwargs["timeout"] == 42.0
    assert lm.kwargs["temperature"] == 0.5 and lm.kwargs["max_tokens"] == 2000


def test_importing_the_package_does_not_import_dspy() -> None:
    import subprocess
    import sys

    code = "import sys, ocdspy.lm; print('dspy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Typed usage per role, and the sum over stages


def _history_entry(prompt: int, completion: int, cost: float | None = None) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion} if prompt else {}
    return {"usage": usage, "cost": cost, "model": "m"}


def test_usage_meter_counts_only_calls_after_it_started() -> None:
    from types import SimpleNamespace

    from ocdspy.lm.usage import UsageMeter

    target = SimpleNamespace(model="local/t", history=[_history_entry(5, 1)])
    teacher = SimpleNamespace(model="openai/big", history=[])
    meter = UsageMeter({"target": target, "teacher": teacher, "again": target})
    target.history += [_history_entry(10, 2), _history_entry(0, 0)]  # the second: a cache hit
    teacher.history += [_history_entry(7, 3, cost=0.25), _history_entry(1, 1, cost=0.5)]
    used_target, used_teacher = meter.usage()  # an LM named twice counts once
    assert used_target.model_dump() == {
        "role": "target",
        "model": "local/t",
        "calls": 2,
        "cached": 1,
        "input_tokens": 10,
        "output_tokens": 2,
        "cost": None,  # no price known, not 0
    }
    assert used_target.new_calls == 1
    assert (used_teacher.role, used_teacher.calls, used_teacher.cost) == ("teacher", 2, 0.75)


def test_total_usage_sums_every_role_of_every_stage() -> None:
    from ocdspy.lm.usage import ModelUsage, UsageTotals, total_usage

    free = ModelUsage(role="target", model="local/t", calls=4, cached=1)
    priced = ModelUsage(role="teacher", model="openai/big", calls=2, cost=0.5)
    assert total_usage([free, priced, free]) == UsageTotals(calls=10, new_calls=8, cost=0.5)
    assert total_usage([free]).cost is None
    assert total_usage([]) == UsageTotals(calls=0, new_calls=0, cost=None)


def test_quiet_keeps_optimizer_chatter_off_stdout_and_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import logging

    from ocdspy.lm.runtime import NOISY_LOGGERS, quiet

    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    with quiet():
        # What BootstrapFewShot prints, and what a teleprompter logs at INFO.
        print("Bootstrapped 0 full traces after 3 examples")
        logging.getLogger("dspy.teleprompt.bootstrap").info("Starting batch 1 of 8.")
        import tqdm

        for _ in tqdm.tqdm(range(3), desc="bar-drawn"):
            pass
    out, err = capfd.readouterr()
    assert "Bootstrapped" not in out + err
    assert "Starting batch" not in out + err
    assert "bar-drawn" not in err
    assert {name: logging.getLogger(name).level for name in NOISY_LOGGERS} == levels
    print("after")
    assert capfd.readouterr().out == "after\n"
