"""Settings: defaults < config.yaml < environment (`OCDSPY_*`, `.env`) < command-line flags.

Everything is resolved in `load_settings`, which also records where each value came from so
`ocdspy config show` can tell the user. Relative paths in a config file are resolved against that
file's directory; relative paths from the environment or flags against the working directory.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ocdspy.errors import ConfigError

ENV_PREFIX = "OCDSPY_"
ENV_NESTED = "__"
DEFAULT_CONFIG_NAME = "config.yaml"

Provider = Literal["ollama", "openai", "anthropic", "openai_compatible", "local"]
OptimizerName = Literal[
    "MIPROv2", "COPRO", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "GEPA", "SIMBA"
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(_Section):
    raw_dir: Path = Field(Path("data/raw"), description="Where session logs are read from.")
    processed_dir: Path = Field(Path("data/processed"), description="Where convert writes.")
    splits_dir: Path = Field(Path("data/splits"), description="Where split writes.")
    train_split: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of sessions to train on.")
    val_split: float = Field(
        0.8, ge=0.0, le=1.0, description="Fraction of sessions to validate on."
    )
    min_examples: int = Field(10, ge=1, description="Fewest examples the data must hold.")
    require_success: bool = Field(True, description="Keep only successful sessions/turns.")
    result_max_chars: int = Field(
        2000, ge=0, description="Tool results longer than this are truncated in examples."
    )
    redact: bool = Field(True, description="Replace secrets with [REDACTED:kind] placeholders.")
    seed: int = Field(0, description="Seed of the train/validation split.")

    @model_validator(mode="after")
    def _splits_add_up(self) -> DataSettings:
        if not math.isclose(self.train_split + self.val_split, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"train_split ({self.train_split}) + val_split ({self.val_split}) must add up to 1"
            )
        return self


class ModelSettings(_Section):
    provider: Provider = Field(description="ollama, openai, anthropic, openai_compatible or local.")
    model: str = Field(description="Model name as the provider knows it (or a GGUF for local).")
    temperature: float | None = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(None, ge=1)
    api_base: str | None = Field(None, description="Endpoint URL (Ollama: ends in /v1).")
    api_key_env: str | None = Field(None, description="Name of the env var holding the API key.")
    model_path: Path | None = Field(None, description="local: path of a GGUF file to run.")
    timeout: float = Field(120.0, gt=0, description="Seconds before one request is abandoned.")
    num_retries: int = Field(3, ge=0, description="Retries with backoff on transient errors.")


def _default_target() -> ModelSettings:
    return ModelSettings(provider="ollama", model="qwen2.5-coder:7b", temperature=0.0)


def _default_teacher() -> ModelSettings:
    return ModelSettings(
        provider="anthropic", model="claude-sonnet-4-5", api_key_env="ANTHROPIC_API_KEY"
    )


class ModelsSettings(_Section):
    target: ModelSettings = Field(default_factory=_default_target)
    teacher: ModelSettings = Field(default_factory=_default_teacher)


class MetricWeights(_Section):
    success: float = Field(0.5, ge=0.0)
    efficiency: float = Field(0.3, ge=0.0)
    correctness: float = Field(0.2, ge=0.0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> MetricWeights:
        if self.success + self.efficiency + self.correctness <= 0:
            raise ValueError("at least one metric weight must be positive")
        return self


class OptimizationSettings(_Section):
    optimizer: OptimizerName = "MIPROv2"
    auto_mode: Literal["light", "medium", "heavy"] | None = "light"
    num_trials: int = Field(20, ge=1)
    max_bootstrapped_demos: int = Field(3, ge=0)
    max_labeled_demos: int = Field(2, ge=0)
    metric_weights: MetricWeights = Field(default_factory=MetricWeights)
    metric: str | None = Field(None, description="Custom metric as package.module:function.")
    program: Literal["plan", "next_action"] = "next_action"
    demos_shown: int = Field(
        3,
        ge=0,
        description="Demos shown per call, picked from the optimized pool by "
        "similarity to the input (0: show every demo).",
    )
    num_threads: int = Field(1, ge=1)
    max_errors: int = Field(10, ge=0)
    seed: int = 9


class OutputSettings(_Section):
    dir: Path = Field(Path("outputs"), description="Root of everything the pipeline produces.")
    cache_dir: Path = Field(Path(".dspy_cache"), description="DSPy's disk cache of LM calls.")

    @property
    def prompts_dir(self) -> Path:
        return self.dir / "prompts"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def programs_dir(self) -> Path:
        return self.dir / "programs"

    @property
    def reports_dir(self) -> Path:
        return self.dir / "reports"


class Settings(_Section):
    data: DataSettings = Field(default_factory=DataSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    optimization: OptimizationSettings = Field(default_factory=OptimizationSettings)
    outputs: OutputSettings = Field(default_factory=OutputSettings)


class LoadedSettings(BaseModel):
    """Effective settings plus, for each dotted key, where its value came from."""

    settings: Settings
    sources: dict[str, str]
    config_file: Path | None = None


# ---------------------------------------------------------------------------------------------
# Loading


def _path_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted keys whose values are filesystem paths (resolved relative to their origin)."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= _path_keys(ann, dotted + ".")
        elif ann is Path or ann == (Path | None):
            keys.add(dotted)
    return keys


def _all_path_keys() -> set[str]:
    return _path_keys(Settings)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def _known_keys() -> set[str]:
    keys = set(_flatten(Settings().model_dump(mode="python")))
    # Sections themselves may be given whole (`OCDSPY_OPTIMIZATION__METRIC_WEIGHTS='{...}'`).
    keys |= {k.rsplit(".", i)[0] for k in list(keys) for i in (1, 2) if k.count(".") >= i}
    return keys


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config file is not UTF-8 text ({e.reason})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the config file must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def _env_values(environ: dict[str, str]) -> dict[str, tuple[Any, str]]:
    """Dotted key -> (raw value, source label) from OCDSPY_* variables."""
    out: dict[str, tuple[Any, str]] = {}
    for name, value in environ.items():
        # OCDSPY_CONFIG names the file; OCDSPY_TEST_* belong to the test suite.
        if (
            not name.startswith(ENV_PREFIX)
            or name == f"{ENV_PREFIX}CONFIG"
            or name.startswith(f"{ENV_PREFIX}TEST_")
        ):
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace(ENV_NESTED, ".")
        parsed: Any = value
        # Structured values (maps, lists) may be given as YAML/JSON; scalars stay strings and
        # pydantic coerces them ("0.3" -> 0.3, "true" -> True).
        if value.strip().startswith(("{", "[")):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
        out[dotted] = (parsed, f"env {name}")
    return out


def _dotenv_values(path: Path) -> dict[str, str]:
    """Parse a `.env` file (KEY=VALUE, `export` prefix, quotes, comments)."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return values
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, _, val = line.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        elif " #" in val:
            val = val.split(" #", 1)[0].rstrip()
        values[key.strip()] = val
    return values


def find_config(explicit: Path | None, cwd: Path | None = None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found")
        return explicit
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (from {ENV_PREFIX}CONFIG)")
        return p
    candidate = (cwd or Path.cwd()) / DEFAULT_CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    cwd: Path | None = None,
    dotenv: Path | None = None,
) -> LoadedSettings:
    """Build the effective settings.

    `overrides` are command-line flags as dotted keys (`{"data.seed": 3}`); a value of None means
    "flag not given" and is ignored.
    """
    cwd = (cwd or Path.cwd()).resolve()
    env = dict(os.environ if environ is None else environ)
    path = find_config(config_file, cwd)
    known = _known_keys()
    path_keys = _all_path_keys()

    layers: list[tuple[dict[str, Any], dict[str, str]]] = []

    # config.yaml
    if path is not None:
        raw = _read_config_file(path)
        base_dir = path.resolve().parent
        flat = _flatten(raw)
        file_vals: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in known:
                raise ConfigError(f"{path}: {key}: unknown setting{_suggest(key, known)}")
            if key in path_keys and isinstance(value, str) and value:
                value = str((base_dir / Path(value).expanduser()).resolve())
            file_vals[key] = value
        layers.append((file_vals, dict.fromkeys(file_vals, str(path))))

    # .env (below the process environment), then the environment
    dotenv_path = dotenv if dotenv is not None else cwd / ".env"
    dot = {k: v for k, v in _dotenv_values(dotenv_path).items() if k.startswith(ENV_PREFIX)}
    for label, source in ((str(dotenv_path), dot), ("env", env)):
        vals: dict[str, Any] = {}
        srcs: dict[str, str] = {}
        for key, (value, name) in _env_values(source).items():
            if key not in known:
                where = f"{dotenv_path}: " if label != "env" else ""
                raise ConfigError(
                    f"{where}{name.split()[-1]}: unknown setting{_suggest(key, known)}"
                )
            if key in path_keys and isinstance(value, str) and value:
                value = str((cwd / Path(value).expanduser()).resolve())
            vals[key] = value
            srcs[key] = name if label == "env" else f"{dotenv_path} ({name.split()[-1]})"
        layers.append((vals, srcs))

    # flags
    if overrides:
        flag_vals: dict[str, Any] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in known:
                raise ConfigError(f"--{key}: unknown setting")
            if key in path_keys:
                value = str((cwd / Path(value).expanduser()).resolve())
            flag_vals[key] = value
        layers.append((flag_vals, dict.fromkeys(flag_vals, "flag")))

    # Start from the defaults so a layer may set one field of a section and keep the rest.
    merged: dict[str, Any] = Settings().model_dump(mode="python")
    sources: dict[str, str] = {}
    for vals, srcs in layers:
        for key, value in vals.items():
            if isinstance(value, dict):
                for sub, subval in _flatten(value, key + ".").items():
                    _set_dotted(merged, sub, subval)
                    sources[sub] = srcs[key]
            else:
                _set_dotted(merged, key, value)
                sources[key] = srcs[key]

    # Default relative paths are relative to the config file's directory when there is one,
    # so `--config examples/config.yaml` works from anywhere.
    default_base = path.resolve().parent if path is not None else cwd
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, sources, path)) from None
    for key in sorted(path_keys):
        if key in sources:
            continue
        value = _get_dotted(settings, key)
        if isinstance(value, Path) and not value.is_absolute():
            _assign_dotted(settings, key, (default_base / value).resolve())

    all_sources = {k: sources.get(k, "default") for k in _flatten(settings.model_dump())}
    return LoadedSettings(settings=settings, sources=all_sources, config_file=path)


def _get_dotted(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _assign_dotted(obj: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        obj = getattr(obj, part)
    setattr(obj, parts[-1], value)


def _format_validation(e: ValidationError, sources: dict[str, str], path: Path | None) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        # A section-level check (splits, weights) names the section; find which layer set it.
        origin = sources.get(loc)
        if origin is None:
            related = sorted({s for k, s in sources.items() if k.startswith(loc + ".") or not loc})
            origin = ", ".join(related) if related else (str(path) if path else "defaults")
        lines.append(f"{origin}: {loc or 'config'}: {msg}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def settings_as_rows(loaded: LoadedSettings) -> list[tuple[str, str, str]]:
    """(key, value, source) rows. Secrets never appear: settings hold env-var *names* only."""
    flat = _flatten(loaded.settings.model_dump(mode="json"))
    return [(k, _display(v), loaded.sources.get(k, "default")) for k, v in flat.items()]


def _display(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{}"
    return str(v)
