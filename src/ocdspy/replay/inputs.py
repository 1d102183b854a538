"""What a replay runs with: the agents (files, their plugins) and the model endpoint (a provider
of the user's OpenCode config, or `ocdspy serve` with the built-in model)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocdspy.artifacts import bytes_sha256
from ocdspy.display import show_path
from ocdspy.errors import ConfigError, DataError, ModelError, OcdspyError
from ocdspy.layout import PLUGINS_DIR
from ocdspy.replay.run import DEFAULT_MAX_STEPS, AgentSetup

UNTUNED = "untuned"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ReplayAgent:
    setup: AgentSetup
    path: Path | None
    sha256: str
    steps: int | None  # the agent's own `steps` setting

    @property
    def name(self) -> str:
        return self.setup.name

    def max_steps(self, flag: int | None) -> int:
        return flag or self.steps or DEFAULT_MAX_STEPS


def untuned_agent() -> ReplayAgent:
    """The baseline by default: the program's starting instructions as an agent file."""
    from ocdspy.agents import untuned_body

    text = (
        "---\ndescription: Untuned agent (ocdspy replay baseline)\nmode: primary\n---\n\n"
        + untuned_body()
    )
    return ReplayAgent(AgentSetup(UNTUNED, text), None, bytes_sha256(text.encode()), None)


def load_agent(path: Path) -> ReplayAgent:
    """An agent file, checked as OpenCode would check it, with the demo plugin export wrote
    beside it (`plugins/ocdspy-NAME.js` and its pool), if there is one."""
    from ocdspy.agents import read_agent
    from ocdspy.export import check_agent_text

    text = read_agent(path)
    name = path.stem
    if not _NAME.match(name):
        raise DataError(f"{show_path(path)}: the file name cannot be an agent name")
    try:
        front = check_agent_text(text)
    except OcdspyError as e:
        raise DataError(f"{show_path(path)}: {e.message}") from None
    plugin = [
        path.parent / PLUGINS_DIR / f"ocdspy-{name}.js",
        path.parent / PLUGINS_DIR / f"ocdspy-{name}.pool.json",
    ]
    files = plugin if all(p.is_file() for p in plugin) else []
    digest = bytes_sha256(text.encode() + b"".join(p.read_bytes() for p in files))
    return ReplayAgent(AgentSetup(name, text, files), path, digest, front.steps)


def load_agents(baseline: Path | None, agents: Sequence[Path]) -> list[ReplayAgent]:
    """[baseline, *agents]; two agents of the same name would be the same OpenCode agent."""
    loaded = [load_agent(baseline) if baseline else untuned_agent()]
    loaded += [load_agent(p) for p in agents]
    seen: set[str] = set()
    for agent in loaded:
        if agent.name in seen:
            where = show_path(agent.path or agent.name)
            raise DataError(f"{where}: a second agent named {agent.name!r}")
        seen.add(agent.name)
    return loaded


# ---------------------------------------------------------------------------------------------
# The model


def user_config_files(environ: dict[str, str] | None = None) -> list[Path]:
    """OpenCode's global config files, as OpenCode looks for them."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    folder = Path(base) / "opencode"
    return [folder / n for n in ("opencode.jsonc", "opencode.json", "config.json")]


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (OpenCode's config) -> JSON."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def provider_block(model: str, config: Path | None = None) -> dict[str, Any]:
    """`{provider id: its settings}` copied from the user's OpenCode config, nothing else."""
    provider, _, model_id = model.partition("/")
    if not provider or not model_id:
        raise ConfigError(f"--model {model!r}: give it as provider/model")
    files = [config] if config else [p for p in user_config_files() if p.is_file()]
    if not files:
        raise ConfigError(
            "no OpenCode config found to take the provider from "
            f"(looked for {', '.join(map(str, user_config_files()))})",
            hint="pass --opencode-config FILE",
        )
    for path in files:
        try:
            data = json.loads(strip_jsonc(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{show_path(path)}: cannot read it as OpenCode config ({e})"
            ) from None
        block = (data.get("provider") or {}).get(provider) if isinstance(data, dict) else None
        if isinstance(block, dict):
            return {provider: block}
    raise ConfigError(
        f"{show_path(files[0])}: provider.{provider}: not declared, so the replay cannot reach "
        f"model {model}"
    )


@dataclass
class Endpoint:
    model: str  # provider/model as OpenCode takes it
    provider: dict[str, Any]


@contextmanager
def endpoint(model: str | None, config: Path | None = None) -> Iterator[Endpoint]:
    """The model a replay runs on: `model` from the user's config, else `ocdspy serve` with
    the built-in model, started here and stopped on the way out."""
    if model:
        yield Endpoint(model, provider_block(model, config))
        return
    try:
        from ocdspy.serve import serving  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ModelError(
            "`ocdspy serve` is not part of this install, so there is no built-in endpoint",
            hint="pass --model provider/model (a provider of your OpenCode config)",
        ) from None
    with serving(model_path=None, host="127.0.0.1", port=0) as srv:
        yield Endpoint(srv.opencode_model, srv.provider_config())


def find_opencode(binary: Path | None) -> Path:
    if binary is not None:
        if not binary.is_file():
            raise DataError(f"{show_path(binary)}: no such OpenCode binary (from --opencode)")
        return binary
    found = shutil.which("opencode")
    if not found:
        raise DataError(
            "opencode is not on PATH", hint="install OpenCode or pass --opencode PATH/opencode"
        )
    return Path(found)
