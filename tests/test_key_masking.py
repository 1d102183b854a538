"""API keys never reach a message, a log line or a run record (issue 11 §2)."""

from __future__ import annotations

import logging

import pytest

from ocdspy.cli import handle_errors
from ocdspy.config import ModelSettings
from ocdspy.errors import ModelError, OcdspyError
from ocdspy.lm.providers import (
    KeyMaskFilter,
    check_lm_settings,
    mask_key,
    mask_keys,
    model_error,
    remember_key,
)

KEY = "sk-proj-AbCdEf0123456789GhIjKlMnOpQrSt"
OPENAI = ModelSettings(provider="openai", model="gpt-4o-mini")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (KEY[:12] + "\n" + KEY[12:], "control character"),
        (KEY + "\n", "whitespace"),
        (" " + KEY, "whitespace"),
        (KEY[:12] + "\u2013" + KEY[12:], "not allowed in an HTTP header"),
    ],
)
def test_a_key_that_cannot_be_a_header_is_refused_by_name(value: str, problem: str) -> None:
    with pytest.raises(ModelError) as info:
        check_lm_settings(OPENAI, "target", environ={"OPENAI_API_KEY": value})
    text = str(info.value)
    assert "OPENAI_API_KEY" in text and problem in text
    assert "\n" not in info.value.message
    for piece in (KEY[:12], KEY[12:], KEY):
        assert piece not in text


def test_a_good_key_passes() -> None:
    check_lm_settings(OPENAI, "target", environ={"OPENAI_API_KEY": KEY})


def test_mask_keys_hides_raw_escaped_and_split_forms() -> None:
    broken = KEY[:12] + "\n" + KEY[12:]
    remember_key(broken)
    header_error = f"Illegal header value b'Bearer {broken!r}'"  # how httpx quotes it
    for text in (f"failed: {broken}", header_error, f"parts {KEY[12:]} and more"):
        masked = mask_keys(text, environ={})
        assert KEY[12:] not in masked and broken not in masked
    assert mask_key(KEY) == "sk-…QrSt"
    assert mask_key("short-secret") == "***"


def test_mask_keys_reads_the_usual_key_variables() -> None:
    other = "sk-ant-api03-ZyXwVu9876543210TsRqPo"
    assert other not in mask_keys(f"x {other} y", environ={"ANTHROPIC_API_KEY": other})


def test_model_error_masks_the_key() -> None:
    remember_key(KEY)
    err = model_error(RuntimeError(f"401: bad key {KEY}"), OPENAI, role="target")
    assert KEY not in err.message and "sk-…QrSt" in err.message


def test_log_records_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    remember_key(KEY)
    logger = logging.getLogger("ocdspy-test-masking")
    caplog.handler.addFilter(KeyMaskFilter())
    with caplog.at_level(logging.ERROR):
        logger.error("call failed: %s", f"Bearer {KEY}")
    assert KEY not in caplog.text and "sk-…QrSt" in caplog.text


def test_cli_never_prints_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    remember_key(KEY)

    @handle_errors
    def command() -> None:
        raise OcdspyError(f"the server said: invalid key {KEY}")

    with pytest.raises(typer.Exit):
        command()
    err = capsys.readouterr().err
    assert KEY not in err and "sk-…QrSt" in err
