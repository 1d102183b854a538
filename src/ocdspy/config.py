"""Settings: defaults < config.yaml < `.env` < environment (`OCDSPY_*`) < command-line flags.

The layers are pydantic-settings sources (`_layers` lists them, highest precedence first):
`InitSettingsSource` for flags, `EnvSettingsSource` and `DotEnvSettingsSource` for `OCDSPY_*`
variables nested with `__`, and a `YamlConfigSettingsSource` for the config file. `load_settings`
runs them and merges their values itself rather than through `BaseSettings.__init__`, because
pydantic-settings' merge cannot say where each value came from (`ocdspy config show` does) nor
reset a model's provider-specific values when a layer switches its provider.

Relative paths in a config file are resolved against that file's directory; relative paths from
the environment or flags against the working directory.
"""

from __future__ import annotations

import difflib
import math
import os
import stat
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from ocdspy.errors import ConfigError

ENV_PREFIX = "OCDSPY_"
ENV_NESTED = "__"
DEFAULT_CONFIG_NAME = "config.yaml"
# Environment values that mean "no value" for a setting that may be null.
NULL_STRINGS = frozenset({"null", "none", "~"})
MAX_THREADS = 64
MAX_TIMEOUT = 86400.0  # one day

Provider = Literal["ollama", "openai", "anthropic", "openai_compatible", "local"]
OptimizerName = Literal[
    "MIPROv2", "COPRO", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "GEPA", "SIMBA"
]

# What a provider implies until the user says otherwise. A layer that switches a model's
# provider resets these to the new provider's values (see `_reset_switched_providers`).
PROVIDER_DEFAULTS: dict[str, dict[str, str | None]] = {
    "ollama": {"model": "qwen2.5-coder:7b", "api_key_env": None, "api_base": None},
    "openai": {"model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY", "api_base": None},
    "anthropic": {
        "model": "claude-sonnet-4-5",
        "api_key_env": "ANTHROPIC_API_KEY",
        "api_base": None,
    },
    "openai_compatible": {"model": "", "api_key_env": None, "api_base": None},
    "local": {"model": "smollm2-135m", "api_key_env": None, "api_base": None},
}


class _Unset:
    """A flag value that sets an optional setting to null (None means "flag not given")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataSettings(_Section):
    raw_dir: Path = Field(Path("data/raw"), description="Where session logs are read from.")
    processed_dir: Path = Field(Path("data/processed"), description="Where convert writes.")
    splits_dir: Path = Field(Path("data/splits"), description="Where split writes.")
    train_split: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of sessions to train on.")
    val_split: float = Field(
        0.8, ge=0.0, le=1.0, description="Fraction of sessions to validate on."
    )
    min_examples: int = Field(
        10, ge=1, le=10_000_000, description="Fewest examples the data must hold."
    )
    require_success: bool = Field(True, description="Keep only successful sessions/turns.")
    result_max_chars: int = Field(
        2000,
        ge=0,
        le=10_000_000,
        description="Tool results longer than this are truncated in examples.",
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
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    api_base: str | None = Field(None, description="Endpoint URL (Ollama: ends in /v1).")
    api_key_env: str | None = Field(None, description="Name of the env var holding the API key.")
    model_path: Path | None = Field(None, description="local: path of a GGUF file to run.")
    timeout: float = Field(
        120.0, gt=0, le=MAX_TIMEOUT, description="Seconds before one request is abandoned."
    )
    num_retries: int = Field(
        3, ge=0, le=20, description="Retries with backoff on transient errors."
    )


def provider_defaults(provider: str) -> ModelSettings:
    return ModelSettings(provider=provider, **PROVIDER_DEFAULTS[provider])


def _default_target() -> ModelSettings:
    return provider_defaults("ollama")


def _default_teacher() -> ModelSettings:
    return provider_defaults("anthropic")


class ModelsSettings(_Section):
    target: ModelSettings = Field(default_factory=_default_target)
    teacher: ModelSettings = Field(default_factory=_default_teacher)


class MetricWeights(_Section):
    success: float = Field(0.5, ge=0.0, le=1000.0)
    efficiency: float = Field(0.3, ge=0.0, le=1000.0)
    correctness: float = Field(0.2, ge=0.0, le=1000.0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> MetricWeights:
        if self.success + self.efficiency + self.correctness <= 0:
            raise ValueError("at least one metric weight must be positive")
        return self


class OptimizationSettings(_Section):
    optimizer: OptimizerName = "MIPROv2"
    auto_mode: Literal["light", "medium", "heavy"] | None = "light"
    num_trials: int = Field(20, ge=1, le=10_000)
    max_bootstrapped_demos: int = Field(3, ge=0, le=1000)
    max_labeled_demos: int = Field(2, ge=0, le=1000)
    metric_weights: MetricWeights = Field(default_factory=MetricWeights)
    metric: str | None = Field(None, description="Custom metric as package.module:function.")
    program: Literal["plan", "next_action"] = "next_action"
    demos_shown: int = Field(
        3,
        ge=0,
        le=1000,
        description="Demos shown per call, picked from the optimized pool by "
        "similarity to the input (0: show every demo).",
    )
    pool_size: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Demos in the plugin's pool (empty: every distinct training step, "
        "up to 400 demos or about 1 MB).",
    )
    static_demo_tokens: int = Field(
        1200,
        ge=0,
        le=100_000,
        description="Token budget (characters / 4) of the agent file's own demos.",
    )
    ship_search_steps: int = Field(
        12,
        ge=0,
        le=10_000,
        description="Training steps the pipeline scores to choose the static budget and "
        "the plugin's demos per step (0: no search, use the settings).",
    )
    score_program: bool = Field(
        False,
        description="pipeline: also score the optimized DSPy program itself on the held-out "
        "steps, as `ocdspy evaluate` does (the shipped forms are always scored).",
    )
    num_threads: int = Field(1, ge=1, le=MAX_THREADS)
    max_errors: int = Field(10, ge=0, le=1_000_000)
    seed: int = 9


# Settings that leave the optimized program as it is: what shapes only the shipped files
# (ocdspy.program.ship), and whether the pipeline scores the program itself.
PROGRAM_NEUTRAL_SETTINGS = frozenset(
    {"pool_size", "static_demo_tokens", "ship_search_steps", "score_program"}
)


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


class TrackingSettings(_Section):
    enabled: bool = Field(False, description="Log optimize and evaluate runs to MLflow.")
    uri: str | None = Field(
        None, description="MLflow tracking URI (default: sqlite:///<outputs.dir>/mlflow.db)."
    )
    experiment: str | None = Field(
        None, description="MLflow experiment (default: the project folder's name)."
    )


class Settings(BaseSettings):
    """Every setting of a project. `load_settings` builds it from all layers."""

    model_config = SettingsConfigDict(
        extra="forbid",
        validate_assignment=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        case_sensitive=False,
        # A .env saved by Windows tools starts with a BOM; without -sig it ends up in the
        # first variable's name and that variable is lost.
        env_file_encoding="utf-8-sig",
        # Only OCDSPY_* variables of a .env are settings; the rest (API keys) are not.
        dotenv_filtering="only_existing",
    )

    data: DataSettings = Field(default_factory=DataSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    optimization: OptimizationSettings = Field(default_factory=OptimizationSettings)
    outputs: OutputSettings = Field(default_factory=OutputSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` in code is its arguments over the defaults: nothing is read behind the
        # caller's back. The environment, .env and config file are layered by `load_settings`.
        return (init_settings,)


class LoadedSettings(BaseModel):
    """Effective settings plus, for each dotted key, where its value came from."""

    settings: Settings
    sources: dict[str, str]
    config_file: Path | None = None
    warnings: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Keys


def _walk_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Dotted key -> field, for every leaf setting."""
    out: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _walk_fields(ann, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = field
    return out


_FIELDS = _walk_fields(Settings)
_PATH_KEYS = frozenset(k for k, f in _FIELDS.items() if f.annotation in (Path, Path | None))
_NULLABLE_KEYS = frozenset(
    k for k, f in _FIELDS.items() if type(None) in getattr(f.annotation, "__args__", ())
)
# Sections may be given whole (`OCDSPY_OPTIMIZATION__METRIC_WEIGHTS='{...}'`).
_KNOWN_KEYS = frozenset(_FIELDS) | {k.rsplit(".", i)[0] for k in _FIELDS for i in (1, 2)}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
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


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(_KNOWN_KEYS), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        _set_dotted(out, key, value)
    return out


# ---------------------------------------------------------------------------------------------
# Files


def _regular_file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a settings file without blocking (None: it can).

    A FIFO or device would block `open()` forever; only regular files are read.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML (no python tags) for the config file."""


def _duplicate_keys(node: yaml.Node, prefix: str = "") -> list[tuple[str, int]]:
    """(dotted key, line) of every mapping key given twice; PyYAML keeps the last silently."""
    found: list[tuple[str, int]] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(node, prefix)]
    while stack:
        cur, pre = stack.pop()
        if id(cur) in seen_nodes:  # aliases share nodes: visit each once
            continue
        seen_nodes.add(id(cur))
        if isinstance(cur, yaml.MappingNode):
            keys: set[str] = set()
            for k, v in cur.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else ""
                if name and name in keys:
                    found.append((f"{pre}{name}", k.start_mark.line + 1))
                keys.add(name)
                stack.append((v, f"{pre}{name}."))
        elif isinstance(cur, yaml.SequenceNode):
            stack.extend((item, pre) for item in cur.value)
    return sorted(found, key=lambda x: x[1])


def read_config_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The config file's mapping and warnings (duplicate keys); ConfigError naming the file."""
    problem = _regular_file_problem(path)
    if problem is not None:
        raise ConfigError(f"{path}: cannot read config file: {problem}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config file is not UTF-8 text ({e.reason})") from e
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, []
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from e
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the config file must be a mapping of sections, got {type(data).__name__}"
        )
    warnings = [
        f"{path}: line {line}: {key}: duplicate key, the last value is used"
        for key, line in _duplicate_keys(node)
    ]
    return data, warnings


# ---------------------------------------------------------------------------------------------
# Sources (pydantic-settings)


class _StructuredValues:
    """Structured env values (maps, lists) may be JSON or YAML flow (`{success: 1}`)."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            parsed = yaml.safe_load(value) if isinstance(value, str) else value
        except yaml.YAMLError:
            return value  # validation then names the setting and its source
        return parsed if isinstance(parsed, (dict, list)) else value


class _EnvSource(_StructuredValues, EnvSettingsSource):
    """`OCDSPY_*` variables of a given mapping (the process environment by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._environ.items()}


class _DotEnvSource(_StructuredValues, DotEnvSettingsSource):
    """`OCDSPY_*` lines of a `.env` file; an unreadable one is skipped with a warning."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path
        self.warnings: list[str] = []
        problem = _regular_file_problem(path)
        if problem not in (None, "not found"):
            self.warnings.append(f"{path}: {problem}; its settings are ignored")
        self.readable = problem is None
        super().__init__(settings_cls, env_file=path if self.readable else None)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        try:
            return super()._load_env_vars()
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
            self.warnings.append(f"{self.path}: cannot read it ({why}); its settings are ignored")
            return {}


class _ConfigFileSource(YamlConfigSettingsSource):
    """The YAML config file, read safely; duplicate keys become warnings."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        self.warnings: list[str] = []
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data, warnings = read_config_file(Path(file_path))
        self.warnings += warnings
        return data


class _Layer:
    """One source's values as dotted keys, each with the label `config show` prints."""

    def __init__(self, values: dict[str, Any], labels: dict[str, str]) -> None:
        self.values = values
        self.labels = labels


def _layers(
    settings_cls: type[BaseSettings],
    *,
    flags: dict[str, Any],
    environ: Mapping[str, str],
    dotenv: Path,
    config_file: Path | None,
) -> list[tuple[str, PydanticBaseSettingsSource]]:
    """The sources, highest precedence first: flags > environment > .env > config file.

    Defaults come below all of them.
    """
    return [
        ("flag", InitSettingsSource(settings_cls, init_kwargs=_nested(flags))),
        ("env", _EnvSource(settings_cls, environ)),
        ("dotenv", _DotEnvSource(settings_cls, dotenv)),
        ("file", _ConfigFileSource(settings_cls, config_file)),
    ]


def _env_names(names: Any) -> dict[str, str]:
    """Dotted key -> variable name, for the OCDSPY_* names among `names`."""
    out: dict[str, str] = {}
    prefix = ENV_PREFIX.lower()
    for name in names:
        low = name.lower()
        # OCDSPY_CONFIG names the file; OCDSPY_TEST_* belong to the test suite.
        own = low == f"{prefix}config" or low.startswith(f"{prefix}test_")
        if own or not low.startswith(prefix):
            continue
        out[low[len(prefix) :].replace(ENV_NESTED, ".")] = name.upper()
    return out


def _env_layer(kind: str, source: Any, cwd: Path) -> _Layer:
    names = _env_names(source.env_vars)
    where = f"{source.path}: " if kind == "dotenv" else ""
    for key, name in names.items():
        if key not in _KNOWN_KEYS:
            raise ConfigError(f"{where}{name}: unknown setting{_suggest(key)}")
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for key, value in _flatten(_call(source, where or "environment: ")).items():
        name = next((names[p] for p in _prefixes(key) if p in names), key)
        if key not in _KNOWN_KEYS:
            raise ConfigError(f"{where}{name}: {key}: unknown setting{_suggest(key)}")
        if isinstance(value, str):
            if key in _NULLABLE_KEYS and value.strip().lower() in NULL_STRINGS:
                value = None
            elif key in _PATH_KEYS and value:
                value = str((cwd / Path(value).expanduser()).resolve())
        values[key] = value
        labels[key] = f"env {name}" if kind == "env" else f"{source.path} ({name})"
    return _Layer(values, labels)


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _call(source: PydanticBaseSettingsSource, where: str) -> dict[str, Any]:
    try:
        return source()
    except SettingsError as e:
        raise ConfigError(f"{where}{e}") from None


def _file_layer(source: _ConfigFileSource, path: Path | None) -> _Layer:
    if path is None:
        return _Layer({}, {})
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for key, value in _flatten(_call(source, f"{path}: ")).items():
        if value is None and key in _KNOWN_KEYS and key not in _FIELDS:
            continue  # an empty section (`data:`) sets nothing
        if key not in _KNOWN_KEYS:
            raise ConfigError(f"{path}: {key}: unknown setting{_suggest(key)}")
        if key in _PATH_KEYS and isinstance(value, str) and value:
            value = str((base / Path(value).expanduser()).resolve())
        values[key] = value
    return _Layer(values, dict.fromkeys(values, str(path)))


def _flag_layer(source: PydanticBaseSettingsSource, cwd: Path) -> _Layer:
    values: dict[str, Any] = {}
    for key, value in _flatten(source()).items():
        if key in _PATH_KEYS and value is not None:
            value = str((cwd / Path(value).expanduser()).resolve())
        values[key] = value
    return _Layer(values, dict.fromkeys(values, "flag"))


def _flags(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Given flags only: None is "not given", UNSET sets the setting to null."""
    flags: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _KNOWN_KEYS:
            raise ConfigError(f"--{key}: unknown setting")
        flags[key] = None if value is UNSET else value
    return flags


# ---------------------------------------------------------------------------------------------
# Merging


def _reset_switched_providers(
    layers: list[_Layer], merged: dict[str, Any], sources: dict[str, str]
) -> None:
    """A layer that switches a model's provider resets the provider-specific values set below it.

    `layers` run lowest first. Without this, `provider: local` over the default teacher kept
    `claude-sonnet-4-5` and `ANTHROPIC_API_KEY`.
    """
    for role in ("target", "teacher"):
        pkey = f"models.{role}.provider"
        current = ModelsSettings.model_fields[role].get_default(call_default_factory=True).provider
        floor = 0  # index + 1 of the layer that made the last switch; 0: none
        for i, layer in enumerate(layers, start=1):
            value = layer.values.get(pkey, current)
            if value != current:
                current, floor = value, i
        if floor == 0 or current not in PROVIDER_DEFAULTS:
            continue
        for field, default in PROVIDER_DEFAULTS[current].items():
            key = f"models.{role}.{field}"
            set_at = max((i for i, la in enumerate(layers, start=1) if key in la.values), default=0)
            if set_at < floor:
                _set_dotted(merged, key, default)
                sources[key] = f"default for {current}"


def _merge(layers: list[_Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """Defaults, then each layer (lowest first) over them; returns values and sources."""
    merged: dict[str, Any] = Settings().model_dump(mode="python")
    sources: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.values.items():
            _set_dotted(merged, key, value)
            sources[key] = layer.labels[key]
    _reset_switched_providers(layers, merged, sources)
    return merged, sources


# ---------------------------------------------------------------------------------------------
# Loading


def find_config(explicit: Path | None, cwd: Path | None = None) -> Path | None:
    if explicit is not None:
        return _checked_config(explicit, "")
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        return _checked_config(Path(env), f" (from {ENV_PREFIX}CONFIG)")
    candidate = (cwd or Path.cwd()) / DEFAULT_CONFIG_NAME
    if not os.path.lexists(candidate):
        return None
    return _checked_config(candidate, "")


def _checked_config(path: Path, origin: str) -> Path:
    problem = _regular_file_problem(path)
    if problem == "not found":
        raise ConfigError(f"{path}: config file not found{origin}")
    if problem is not None:
        raise ConfigError(f"{path}: cannot read config file{origin}: {problem}")
    return path


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    dotenv: Path | None = None,
) -> LoadedSettings:
    """Build the effective settings.

    `overrides` are command-line flags as dotted keys (`{"data.seed": 3}`); a value of None means
    "flag not given" and is ignored, `UNSET` sets an optional setting to null.
    """
    cwd = (cwd or Path.cwd()).resolve()
    env = os.environ if environ is None else environ
    path = find_config(config_file, cwd)
    dotenv = dotenv if dotenv is not None else cwd / ".env"
    by_kind = dict(
        _layers(Settings, flags=_flags(overrides), environ=env, dotenv=dotenv, config_file=path)
    )
    file_src, dotenv_src = by_kind["file"], by_kind["dotenv"]
    assert isinstance(file_src, _ConfigFileSource) and isinstance(dotenv_src, _DotEnvSource)
    layers = [  # lowest first
        _file_layer(file_src, path),
        _env_layer("dotenv", dotenv_src, cwd),
        _env_layer("env", by_kind["env"], cwd),
        _flag_layer(by_kind["flag"], cwd),
    ]
    merged, sources = _merge(layers)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(
            "invalid settings:", details=_format_validation(e, sources, path)
        ) from None
    _resolve_default_paths(settings, sources, path.resolve().parent if path else cwd)
    warnings = file_src.warnings + dotenv_src.warnings + _unused_model_settings(settings, sources)
    all_sources = {k: sources.get(k, "default") for k in _flatten(settings.model_dump())}
    if environ is None and dotenv_src.readable:
        _export_dotenv_keys(settings, dotenv, os.environ)
    return LoadedSettings(
        settings=settings, sources=all_sources, config_file=path, warnings=warnings
    )


def _export_dotenv_keys(
    settings: Settings, dotenv: Path, environ: MutableMapping[str, str]
) -> None:
    """API keys written in `.env` (as `.env.example` suggests) reach the process, for the
    variables the models name only, and never over a variable the environment already sets."""
    from dotenv import dotenv_values

    wanted = {getattr(settings.models, role).api_key_env for role in ("target", "teacher")}
    values = dotenv_values(dotenv, encoding="utf-8-sig")
    for name in sorted(n for n in wanted if n):
        value = values.get(name)
        if value and name not in environ:
            environ[name] = value


def _resolve_default_paths(settings: Settings, sources: dict[str, str], base: Path) -> None:
    """Default relative paths are relative to the config file's directory when there is one,
    so `--config examples/config.yaml` works from anywhere."""
    for key in sorted(_PATH_KEYS):
        if key in sources:
            continue
        section, name = key.rsplit(".", 1)
        owner = _get_dotted(settings, section)
        value = getattr(owner, name)
        if isinstance(value, Path) and not value.is_absolute():
            setattr(owner, name, (base / value).resolve())


def _get_dotted(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _unused_model_settings(settings: Settings, sources: dict[str, str]) -> list[str]:
    """Settings a local model ignores, named so a leftover from another provider is visible."""
    out: list[str] = []
    other_defaults = {d["model"] for p, d in PROVIDER_DEFAULTS.items() if p != "local"}
    for role in ("target", "teacher"):
        m: ModelSettings = getattr(settings.models, role)
        if m.provider != "local":
            continue
        where = f"models.{role}"
        if m.api_key_env:
            origin = sources.get(f"{where}.api_key_env", "default")
            out.append(
                f"{where}.api_key_env ({m.api_key_env}, from {origin}) is not used: "
                "a local model needs no API key"
            )
        if m.api_base:
            out.append(f"{where}.api_base ({m.api_base}) is not used by a local model")
        if m.model_path is None and m.model in other_defaults:
            builtin = PROVIDER_DEFAULTS["local"]["model"]
            out.append(
                f"{where}.model ({m.model}) is another provider's model and is not used: "
                f"provider local runs model_path or the built-in model ({builtin})"
            )
            # Every label (tables, reports, the model name in the prompt's environment block)
            # then names the model that runs, as `ocdspy serve` names it to OpenCode.
            m.model = str(builtin)
            sources[f"{where}.model"] = "default (provider local)"
    return out


# ---------------------------------------------------------------------------------------------
# Messages


_BOUND_ERRORS = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
)


def _allowed_range(key: str) -> str | None:
    field = _FIELDS.get(key)
    if field is None:
        return None
    words = (("gt", "more than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most"))
    parts = [
        f"{word} {getattr(meta, attr)}"
        for meta in field.metadata
        for attr, word in words
        if getattr(meta, attr, None) is not None
    ]
    return " and ".join(parts) if parts else None


def _bound_message(key: str, kind: str, value: Any) -> str | None:
    allowed = _allowed_range(key)
    if kind == "finite_number":
        return f"must be a finite number{' ' + allowed if allowed else ''}, got {value}"
    return f"must be {allowed}, got {value}" if allowed else None


def _format_validation(
    e: ValidationError, sources: dict[str, str], path: Path | None
) -> tuple[str, ...]:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] in _BOUND_ERRORS:
            msg = _bound_message(loc, err["type"], err["input"]) or msg
        # A section-level check (splits, weights) names the section; find which layer set it.
        origin = sources.get(loc)
        if origin is None:
            related = sorted({s for k, s in sources.items() if k.startswith(loc + ".") or not loc})
            origin = ", ".join(related) if related else (str(path) if path else "defaults")
        lines.append(f"{origin}: {loc or 'config'}: {msg}")
    return tuple(lines)


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
