"""Test isolation: no test reads the developer's files, environment or caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# Set before anything imports dspy/litellm (they read these at import time).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Tests that install real OpenCode cache it outside the per-test HOME, or every test would
# download it again.
os.environ.setdefault("OCDSPY_TEST_CACHE", str(Path.home() / ".cache" / "ocdspy-tests"))
KEEP_ENV = {"OCDSPY_TEST_CACHE", "OCDSPY_RECORD_LEGACY"}


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("DSPY_CACHEDIR", str(home / ".dspy_cache"))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    for name in list(os.environ):
        if (name.startswith("OCDSPY_") and name not in KEEP_ENV) or name == "OPENCODE_DB":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def examples_raw() -> Path:
    return EXAMPLES / "data" / "raw"
