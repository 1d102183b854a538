"""The DSPy runtime the optimize and evaluate stages share: the two LMs, and quiet DSPy.

Tests replace the models in one place: `monkeypatch.setattr(runtime, "build_lms", ...)`. The
stages call `runtime.build_lms` through the module for that reason. `dspy` is imported only
inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from ocdspy.config import Settings
from ocdspy.errors import ModelError
from ocdspy.lm.usage import UsageMeter

# Loggers that report every step of an optimizer or a request; inside a CLI with its own
# progress display that is noise. DSPy's print() output is sent to the first one.
NOISY_LOGGERS = ("dspy", "optuna", "gepa", "LiteLLM", "litellm", "httpx")


class LMs(BaseModel):
    """The two roles; the same object when teacher and target are the same model."""

    model_config = {"arbitrary_types_allowed": True}
    target: Any
    teacher: Any

    def meter(self) -> UsageMeter:
        """Counts what each role spends from now on (a shared LM counts once, as target)."""
        return UsageMeter({"target": self.target, "teacher": self.teacher})


def build_lms(settings: Settings, *, needs_teacher: bool = True) -> LMs:
    """Check then build the target and teacher LMs (ocdspy.lm), with the project's cache."""
    try:
        from ocdspy.lm import build_lm, check_lm_settings, configure_cache
    except ImportError as e:  # pragma: no cover - only before the LM layer is installed
        raise ModelError(
            f"the language-model layer is not available: {e}", hint="pip install 'ocdspy[optimize]'"
        ) from e
    target_settings, teacher_settings = settings.models.target, settings.models.teacher
    check_lm_settings(target_settings, "target")
    if needs_teacher:
        check_lm_settings(teacher_settings, "teacher")
    configure_cache(settings.outputs.cache_dir)
    target = build_lm(target_settings, role="target")
    if not needs_teacher or teacher_settings == target_settings:
        return LMs(target=target, teacher=target)
    return LMs(target=target, teacher=build_lm(teacher_settings, role="teacher"))


class _PrintsToLog(io.TextIOBase):
    """A stdout that turns each printed line into a DEBUG record of a logger.

    Optimizers print() their progress ("Bootstrapped 0 full traces..."): on stdout it would mix
    with results (`--json`), on stderr it would tear the progress display. As log records, the
    logger's level decides, like for everything else DSPy says.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            if line.strip():
                self._logger.debug("%s", line)
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self._logger.debug("%s", self._pending)
        self._pending = ""


@contextlib.contextmanager
def _loggers_at(level: int, names: tuple[str, ...]) -> Iterator[None]:
    old = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, old_level in old.items():
            logging.getLogger(name).setLevel(old_level)


@contextlib.contextmanager
def _tqdm_disabled() -> Iterator[None]:
    """tqdm bars (BootstrapFewShot draws one) would interleave with our own progress on stderr.
    tqdm reads TQDM_DISABLE only when imported, so its constructor is patched for the duration."""
    try:
        import tqdm as tqdm_module
    except ImportError:  # pragma: no cover - dspy depends on tqdm
        yield
        return
    original_init = tqdm_module.tqdm.__init__
    tqdm_module.tqdm.__init__ = functools.partialmethod(original_init, disable=True)
    try:
        yield
    finally:
        tqdm_module.tqdm.__init__ = original_init


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """DSPy, optuna and GEPA log and print every step; keep only errors, and nothing on stdout."""
    printed = _PrintsToLog(logging.getLogger(NOISY_LOGGERS[0]))
    with (
        _loggers_at(logging.ERROR, NOISY_LOGGERS),
        _tqdm_disabled(),
        contextlib.redirect_stdout(printed),
    ):
        try:
            yield
        finally:
            printed.flush()
