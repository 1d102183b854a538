from __future__ import annotations

from collections import Counter

import pytest

from ocdspy.redact import find_secrets, redact_text, redact_value

SECRETS = [
    ("OPENAI_API_KEY=sk-proj-Qw3rTy7uI9oP1aS5dF6gH8jK0lZx", "openai-key", "Qw3rTy7u"),
    ("key: sk-abcdefghijklmnopqrstuvwxyz0123", "openai-key", "abcdefghij"),
    ('ANTHROPIC_API_KEY="sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv"', "anthropic-key", "AbCdEfGh"),
    ("aws AKIAIOSFODNN7EXAMPLE creds", "aws-access-key", "IOSFODNN7"),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "secret-assignment",
        "wJalrXUtn",
    ),
    ("GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "github-token", "abcdefghijkl"),
    (
        "token github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "github-token",
        "11ABCDEFG",
    ),
    ("slack xoxb-1234567890-0987654321-AbCdEfGhIjKl", "slack-token", "1234567890"),
    ("-H 'Authorization: Bearer eyJhbGciOi.payload12345678.sig'", "bearer-token", "payload123"),
    ("DB_PASSWORD=hunter2hunter2", "secret-assignment", "hunter2"),
    ('{"password": "correct horse"}', "secret-assignment", "correct"),
    ("postgres://app:s3cr3tpw@db:5432/app", "url-password", "s3cr3tpw"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
        "private-key",
        "b3BlbnNz",
    ),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "private-key", "MIIEvQ"),
    ("STRIPE=sk_live_51Hc9abcdefghijklmnopqrstu", "stripe-key", "51Hc9abc"),
    # Names with the word glued on, and values that contain a secret word themselves.
    ("PGPASSWORD=Xk93mfPq2z psql -h db", "secret-assignment", "Xk93mfPq2z"),
    ("REDISPASSWORD=Xk93mfPq2z", "secret-assignment", "Xk93mfPq2z"),
    ("DB_PASSWORD=Password123!", "secret-assignment", "Password123"),
    ("password: Password123!", "secret-assignment", "Password123"),
    ("DB_PASSWORD=lowerSecret42x", "secret-assignment", "lowerSecret42x"),
    ("export DB_PASS=hunter2", "secret-assignment", "hunter2"),
    ("machine api.example.com\n  login bob\n  password s3cr3tPass", "netrc-password", "s3cr3t"),
]


@pytest.mark.parametrize(("text", "kind", "secret_part"), SECRETS)
def test_secret_is_replaced_with_a_typed_placeholder(
    text: str, kind: str, secret_part: str
) -> None:
    counts: Counter[str] = Counter()
    out = redact_text(text, counts)
    assert secret_part not in out
    assert f"[REDACTED:{kind}]" in out
    assert counts[kind] == 1
    assert find_secrets(text) and not find_secrets(out)


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=1000",
        "const key = cacheKey(x)",
        "password: true",
        "SECRET_KEY: ${SECRET_KEY}",
        "the task is to read src/tokenizer.py",
        "git commit -m 'rotate keys'",
        "https://example.com/path",
        'password = os.environ["SMTP_PASSWORD"]',
        "api_key = settings.api_key",
        "token = get_token(session)",
        "commit 3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345\nAuthor: dana",
        "request_id=123e4567-e89b-12d3-a456-426614174000 token ok",
        "tests/test_invoice.py::test_round_half_even_with_negative_totals PASSED",
        'apiKey: "sk-scripted-test"',
        "mkdir -p build && cp -p a b",
        "--password-stdin < file",
        "docker login --password $REGISTRY_PASSWORD",
        "the secret: keys live in the vault",
        # Code from libraries a session may read (seen as false positives in httpx, openai,
        # pydantic and dspy sources).
        "f(api_key=api_key, base_url=url)",
        "    api_key: Credential | None = None",
        "    api_key: _AzureApiKeyT,",
        '_CTX_KEY = "ctx"',
        'CACHE_KEY = "user_profile"',
        "refresh(access_token=access, scope=s)",
        "Client(credential=self.credential)",
        "self._sigv4_auth_cls = sigv4_auth_cls",
        '{"api-key": api_key}',
        "credential_identity: object",
        "expected_authorization=self._expected_authorization,",
        "from auth import SyncX509WorkloadIdentityAuth as AsyncX509WorkloadIdentityAuth",
        'help="Optional password used for the proxy"',
        "const TOKEN = /[A-Za-z0-9_./-]+/g;",
    ],
)
def test_harmless_text_is_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_names_are_kept_so_the_prompt_still_makes_sense() -> None:
    out = redact_text("export OPENAI_API_KEY=sk-proj-Qw3rTy7uI9oP1aS5dF6gH8jK0lZx")
    assert out == "export OPENAI_API_KEY=[REDACTED:openai-key]"


def test_redact_value_walks_nested_structures() -> None:
    counts: Counter[str] = Counter()
    value = {
        "args": {"command": "curl -H 'Authorization: Bearer abcdefghijklmnopqrstuv'"},
        "list": ["ok", "AKIAIOSFODNN7EXAMPLE"],
        "n": 3,
    }
    out = redact_value(value, counts)
    assert "abcdefghijklmnop" not in str(out) and "AKIAIOSFODNN7EXAMPLE" not in str(out)
    assert out["n"] == 3
    assert counts == Counter({"bearer-token": 1, "aws-access-key": 1})


def test_a_random_token_after_a_credential_word_is_redacted() -> None:
    out = redact_text("service credential is Zq8vR2mT9xL4kP7wN3bY6cF1hJ5dG0sA")
    assert "Zq8vR2mT9xL4" not in out and "[REDACTED:high-entropy-secret]" in out
    # The same token with no credential word before it is left alone.
    assert redact_text("build Zq8vR2mT9xL4kP7wN3bY6cF1hJ5dG0sA done").endswith("done")


def test_a_secret_under_a_secret_key_in_arguments_is_redacted() -> None:
    counts: Counter[str] = Counter()
    out = redact_value({"env": {"DB_PASS": "swordfish"}, "command": "run"}, counts)
    assert out["env"]["DB_PASS"] == "[REDACTED:secret-assignment]" and out["command"] == "run"
    assert counts["secret-assignment"] == 1
