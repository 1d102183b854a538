"""Install and run the real OpenCode CLI in an isolated, offline-friendly environment.

- :func:`ensure_opencode` installs ``opencode-ai@VERSION`` from the npm registry into a cache
  directory (once) and returns the binary.
- :func:`isolated_env` builds the environment for a run: HOME and XDG_* point into a temp
  directory, and ``~/.config/opencode/opencode.json`` declares provider ``scripted`` (npm type
  ``@ai-sdk/openai-compatible``) whose ``baseURL`` is a local model server, with model ``coder``.
- :func:`run_opencode` runs one command with ``</dev/null`` and a timeout.

How providers are loaded (checked with 1.1.65, 1.2.27 and 1.18.33): ``@ai-sdk/openai-compatible``
is bundled in the OpenCode binary, so no provider package is installed at run time. What does
touch the network: the models.dev catalogue (off with ``OPENCODE_DISABLE_MODELS_FETCH``; a failed
fetch is only logged), the default auth plugins that 1.1.x/1.2.x install with bun into
``~/.cache/opencode`` (off with ``OPENCODE_DISABLE_DEFAULT_PLUGINS``), and title generation,
which uses ``opencode/gpt-5-nano`` unless ``small_model`` is set (set here to the scripted model).
The environment is built from a short allow-list, so no API key of the machine reaches OpenCode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocdspy.replay.run import QUIET_ENV, home_dirs

DEFAULT_VERSION = "1.18.33"
PROVIDER_ID = "scripted"
MODEL_ID = "coder"
MODEL = f"{PROVIDER_ID}/{MODEL_ID}"

#: Environment variables that keep OpenCode quiet and local (the ones replay runs it with).
QUIET_FLAGS = dict(QUIET_ENV)

#: Variables copied from the calling environment (everything else is dropped).
PASSTHROUGH = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "SYSTEMROOT",
    "npm_config_registry",
    "NPM_CONFIG_REGISTRY",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def cache_root() -> Path:
    """``$OCDSPY_TEST_CACHE`` or ``~/.cache/ocdspy-tests``."""
    env = os.environ.get("OCDSPY_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ocdspy-tests"


def have_node() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_opencode(version: str = DEFAULT_VERSION, *, timeout: float = 600) -> Path | None:
    """Path of the ``opencode`` binary of ``opencode-ai@version``, installing it if needed.

    Installs into ``cache_root()/opencode-VERSION`` with ``npm install`` (the package's
    platform binary comes as an optional dependency; no install script is needed). Returns
    ``None`` when node or npm is missing; raises ``RuntimeError`` when npm fails.
    """
    if not have_node():
        return None
    prefix = cache_root() / f"opencode-{version}"
    binary = prefix / "node_modules" / ".bin" / "opencode"
    if binary.exists() and _version_ok(binary, version):
        return binary
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "package.json").write_text('{"name": "opencode-cache", "private": true}\n')
    proc = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", f"opencode-ai@{version}"],
        cwd=prefix,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 or not binary.exists():
        raise RuntimeError(
            f"npm install opencode-ai@{version} failed:\n{proc.stdout}\n{proc.stderr}"
        )
    return binary


def _version_ok(binary: Path, version: str) -> bool:
    manifest = binary.parents[1] / "opencode-ai" / "package.json"
    try:
        return json.loads(manifest.read_text()).get("version") == version
    except (OSError, ValueError):
        return False


def _base_env() -> dict[str, str]:
    return {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}


def provider_config(base_url: str) -> dict[str, Any]:
    """The ``provider`` block declaring the scripted OpenAI-compatible model server."""
    return {
        PROVIDER_ID: {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Scripted test model",
            "options": {"baseURL": base_url, "apiKey": "sk-scripted-test"},
            "models": {
                MODEL_ID: {
                    "name": "Coder (scripted)",
                    "tool_call": True,
                    "limit": {"context": 128000, "output": 8192},
                }
            },
        }
    }


def isolated_env(
    tmp_path: Path,
    base_url: str,
    *,
    config: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Environment for running OpenCode with everything under ``tmp_path/home``.

    Writes ``tmp_path/home/.config/opencode/opencode.json`` (provider ``scripted``, model
    ``scripted/coder`` as both ``model`` and ``small_model``); ``config`` entries are merged on
    top (e.g. ``{"permission": {...}}``). Also writes a ``.gitconfig`` with a test identity.
    """
    home = Path(tmp_path) / "home"
    dirs = home_dirs(home)
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "model": MODEL,
        "small_model": MODEL,
        "provider": provider_config(base_url),
    }
    cfg.update(config or {})
    write_config(home, cfg)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test User\n\temail = test@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
    )
    env = _base_env()
    env.update({k: str(v) for k, v in dirs.items()})
    env.update(QUIET_FLAGS)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


def write_config(home: Path, cfg: Mapping[str, Any]) -> Path:
    path = Path(home) / ".config" / "opencode" / "opencode.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return path


def data_dir(env: Mapping[str, str]) -> Path:
    """OpenCode's data folder for ``env`` (holds ``opencode.db`` or ``storage/``)."""
    return Path(env["XDG_DATA_HOME"]) / "opencode"


@dataclass
class RunResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_opencode(
    binary: Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 120,
) -> RunResult:
    """Run ``binary *args`` in ``cwd`` with stdin from /dev/null; never raises on exit status.

    A run past ``timeout`` is killed and reported with return code -9 (stderr says so).
    """
    import time

    cmd = [str(binary), *args]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = -9
        out = _text(exc.stdout)
        err = _text(exc.stderr) + f"\n[killed after {timeout}s]"
    return RunResult(cmd, rc, out, err, time.monotonic() - start)


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode("utf-8", "replace")
