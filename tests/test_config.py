from __future__ import annotations

from pathlib import Path

import pytest

from ocdspy.config import Settings, load_settings, settings_as_rows
from ocdspy.errors import ConfigError
from ocdspy.scaffold import CONFIG_TEMPLATE


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_match_the_brief(tmp_path: Path) -> None:
    s = load_settings(None, environ={}, cwd=tmp_path).settings
    assert (s.data.train_split, s.data.val_split, s.data.min_examples) == (0.2, 0.8, 10)
    assert s.data.require_success is True
    assert (s.models.target.provider, s.models.target.model) == ("ollama", "qwen2.5-coder:7b")
    assert s.models.target.temperature == 0.0
    assert s.models.teacher.model == "claude-sonnet-4-5"
    assert s.models.teacher.api_key_env == "ANTHROPIC_API_KEY"
    o = s.optimization
    assert (o.optimizer, o.auto_mode, o.num_trials) == ("MIPROv2", "light", 20)
    assert (o.max_bootstrapped_demos, o.max_labeled_demos) == (3, 2)
    w = o.metric_weights
    assert (w.success, w.efficiency, w.correctness) == (0.5, 0.3, 0.2)
    assert s.data.raw_dir == tmp_path / "data" / "raw"


def test_config_template_holds_every_setting_at_its_default(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.yaml", CONFIG_TEMPLATE)
    loaded = load_settings(cfg, environ={}, cwd=tmp_path)
    assert loaded.settings == load_settings(None, environ={}, cwd=tmp_path).settings
    # Every key was set by the file, none fell back to a default silently.
    assert set(loaded.sources.values()) == {str(cfg)}


def test_precedence_pair_by_pair(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config.yaml", "data:\n  seed: 1\n  min_examples: 5\n  result_max_chars: 100\n"
    )
    dotenv = write(tmp_path / ".env", "OCDSPY_DATA__SEED=2\nOCDSPY_DATA__MIN_EXAMPLES=6\n")
    env = {"OCDSPY_DATA__SEED": "3"}
    loaded = load_settings(
        cfg,
        environ=env,
        cwd=tmp_path,
        dotenv=dotenv,
        overrides={"data.seed": 4, "data.redact": None},
    )
    d = loaded.settings.data
    assert d.result_max_chars == 100  # file > default
    assert d.min_examples == 6  # .env > file
    assert d.seed == 4  # flag > env > .env > file
    assert loaded.sources["data.result_max_chars"] == str(cfg)
    assert loaded.sources["data.min_examples"].startswith(str(dotenv))
    assert loaded.sources["data.seed"] == "flag"
    assert loaded.sources["data.redact"] == "default"  # a flag given as None is "not given"
    no_flag = load_settings(cfg, environ=env, cwd=tmp_path, dotenv=dotenv)
    assert no_flag.settings.data.seed == 3  # env > .env
    assert no_flag.sources["data.seed"] == "env OCDSPY_DATA__SEED"


def test_setting_one_field_of_a_section_keeps_the_others(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "models:\n  target:\n    temperature: 0.7\n")
    s = load_settings(cfg, environ={}, cwd=tmp_path).settings
    assert s.models.target.temperature == 0.7
    assert s.models.target.model == "qwen2.5-coder:7b"


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    cfg = write(proj / "config.yaml", "data:\n  raw_dir: ./logs\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    s = load_settings(cfg, environ={}, cwd=elsewhere).settings
    assert s.data.raw_dir == proj / "logs"
    assert s.data.splits_dir == proj / "data" / "splits"  # defaults too
    env = load_settings(cfg, environ={"OCDSPY_DATA__RAW_DIR": "x"}, cwd=elsewhere).settings
    assert env.data.raw_dir == elsewhere / "x"


def test_unknown_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.yaml", "data:\n  trian_split: 0.3\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={}, cwd=tmp_path)
    assert str(cfg) in str(e.value)
    assert "data.trian_split" in str(e.value)
    assert "data.train_split" in str(e.value)


def test_unknown_env_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OCDSPY_DATA__NOPE"):
        load_settings(None, environ={"OCDSPY_DATA__NOPE": "1"}, cwd=tmp_path)


def test_splits_must_add_up(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.yaml", "data:\n  train_split: 0.3\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={}, cwd=tmp_path)
    msg = str(e.value)
    assert str(cfg) in msg and "add up to 1" in msg and "data" in msg


def test_negative_weight_is_an_error(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config.yaml", "optimization:\n  metric_weights:\n    efficiency: -0.1\n"
    )
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={}, cwd=tmp_path)
    assert f"{cfg}: optimization.metric_weights.efficiency" in str(e.value)


def test_bad_yaml_and_non_mapping(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "data: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(bad, environ={}, cwd=tmp_path)
    lst = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(lst, environ={}, cwd=tmp_path)


def test_structured_env_value(tmp_path: Path) -> None:
    env = {
        "OCDSPY_OPTIMIZATION__METRIC_WEIGHTS": '{"success": 1, "efficiency": 0, "correctness": 0}'
    }
    loaded = load_settings(None, environ=env, cwd=tmp_path)
    assert loaded.settings.optimization.metric_weights.success == 1
    assert loaded.sources["optimization.metric_weights.success"].startswith("env")


def test_rows_never_show_secrets(tmp_path: Path) -> None:
    loaded = load_settings(
        None, environ={"ANTHROPIC_API_KEY": "sk-ant-supersecretvalue123456"}, cwd=tmp_path
    )
    text = repr(settings_as_rows(loaded))
    assert "ANTHROPIC_API_KEY" in text
    assert "supersecret" not in text


def test_settings_model_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        Settings.model_validate({"data": {"nope": 1}})
