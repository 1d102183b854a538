"""init: scaffold a project directory (config, .env example, data and output folders)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from ocdspy.artifacts import write_text_atomic

CONFIG_TEMPLATE = """\
# ocdspy configuration. Every setting is shown with its default.
# Precedence: command-line flags > environment (OCDSPY_SECTION__KEY, also from .env) > this file.
# Relative paths here are resolved against this file's directory.

data:
  raw_dir: ./data/raw              # session logs: plugin JSON, `opencode export` files, opencode.db
  processed_dir: ./data/processed  # convert writes examples.jsonl + manifest.json here
  splits_dir: ./data/splits        # split writes train.jsonl, val.jsonl + manifest.json here
  train_split: 0.2                 # fraction of sessions used to optimize (must add up to 1
  val_split: 0.8                   #   with val_split); the rest scores the result
  min_examples: 10                 # validate fails below this many usable examples
  require_success: true            # learn only from turns that succeeded
  result_max_chars: 2000           # tool results are truncated to this length in examples
  redact: true                     # replace secrets with [REDACTED:kind]; keep this on
  seed: 0                          # seed of the split

models:
  target:                          # the model being prompted (the one you will run)
    provider: ollama               # ollama | openai | anthropic | openai_compatible | local
    model: qwen2.5-coder:7b
    temperature: 0.0
    max_tokens: null
    api_base: null                 # ollama default: http://localhost:11434/v1 (must end in /v1)
    api_key_env: null              # name of the env var holding the key (never the key itself)
    model_path: null               # local: a GGUF file; empty = the built-in small model
    timeout: 120.0                 # seconds per request
    num_retries: 3                 # retries with backoff on transient errors
  teacher:                         # the model that writes instructions and reflects
    provider: anthropic
    model: claude-sonnet-4-5
    temperature: 0.0
    max_tokens: null
    api_base: null
    api_key_env: ANTHROPIC_API_KEY
    model_path: null
    timeout: 120.0
    num_retries: 3

optimization:
  optimizer: MIPROv2               # MIPROv2 | COPRO | BootstrapFewShot |
                                   #   BootstrapFewShotWithRandomSearch | GEPA | SIMBA
  auto_mode: light                 # light | medium | heavy (MIPROv2, GEPA)
  num_trials: 20
  max_bootstrapped_demos: 3
  max_labeled_demos: 2
  metric_weights:                  # each metric component is in [0, 1]
    success: 0.5                   # the plan matches the recorded successful one
    efficiency: 0.3                # no more tool calls than needed
    correctness: 0.2               # right files/commands and a matching final answer
  metric: null                     # a custom metric: package.module:function
  program: next_action             # next_action (one example per step) | plan (per turn)
  demos_shown: 3                   # demos per call, the most similar to the input (0 = all)
  pool_size: null                  # plugin demo pool; empty = every distinct training step
                                   #   (up to 400 demos or about 1 MB)
  static_demo_tokens: 1200         # token budget of the agent file's own demos
  ship_search_steps: 12            # training steps scored to tune both (0 = no search)
  score_program: false             # pipeline: also score the DSPy program itself (slow; the
                                   #   agent file's forms are always scored)
  num_threads: 1
  max_errors: 10                   # failed LM calls tolerated before a run stops
  seed: 9

outputs:
  dir: ./outputs                   # programs/, reports/, prompts/, logs/ go here
  cache_dir: ./.dspy_cache         # DSPy's disk cache of LM calls

tracking:                          # MLflow (pip install "ocdspy[track]"); --track turns it on
  enabled: false
  uri: null                        # empty = sqlite:///<outputs.dir>/mlflow.db
  experiment: null                 # empty = the name of this project's folder
"""

ENV_TEMPLATE = """\
# Copy to .env and fill in what you use. ocdspy reads OCDSPY_* settings from here too.
# Keys are read from the variable named by models.<role>.api_key_env; they are never printed.
ANTHROPIC_API_KEY=
OPENAI_API_KEY=
# OCDSPY_MODELS__TARGET__API_BASE=http://localhost:11434/v1
# OCDSPY_OPTIMIZATION__NUM_THREADS=4
"""

PROJECT_DIRS = ("data/raw", "data/processed", "data/splits", "outputs/prompts", "outputs/logs")


class InitResult(BaseModel):
    root: Path
    created: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)
    overwritten: list[str] = Field(default_factory=list)


def init_project(root: Path, *, force: bool = False) -> InitResult:
    """Create the project layout. Existing files are kept unless `force` (then backed up)."""
    from datetime import datetime, timezone

    result = InitResult(root=root)
    root.mkdir(parents=True, exist_ok=True)
    for d in PROJECT_DIRS:
        p = root / d
        if p.is_dir():
            result.kept.append(d + "/")
        else:
            p.mkdir(parents=True, exist_ok=True)
            result.created.append(d + "/")
    for name, text in (("config.yaml", CONFIG_TEMPLATE), (".env.example", ENV_TEMPLATE)):
        p = root / name
        if p.exists():
            if not force:
                result.kept.append(name)
                continue
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            backup = p.with_name(f"{p.name}.{stamp}.bak")
            p.replace(backup)
            result.overwritten.append(f"{name} (backup: {backup.name})")
        else:
            result.created.append(name)
        write_text_atomic(p, text)
    return result
