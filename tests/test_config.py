from __future__ import annotations

import os
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


# ---------------------------------------------------------------------------------------------
# Flags: None is "not given", UNSET sets a setting to null


def test_unset_flag_sets_null_and_records_the_flag(tmp_path: Path) -> None:
    from ocdspy.config import UNSET

    cfg = write(tmp_path / "config.yaml", "optimization:\n  auto_mode: heavy\n")
    loaded = load_settings(
        cfg, environ={}, cwd=tmp_path, overrides={"optimization.auto_mode": UNSET}
    )
    assert loaded.settings.optimization.auto_mode is None
    assert loaded.sources["optimization.auto_mode"] == "flag"
    given_none = load_settings(
        cfg, environ={}, cwd=tmp_path, overrides={"optimization.auto_mode": None}
    )
    assert given_none.settings.optimization.auto_mode == "heavy"
    assert given_none.sources["optimization.auto_mode"] == str(cfg)


@pytest.mark.parametrize(
    ("auto", "trials", "mode", "source"),
    [
        (None, None, "light", "default"),
        ("none", None, None, "flag"),
        (None, 5, None, "flag"),  # --trials alone means "this many", not a preset
        ("heavy", 5, "heavy", "flag"),
    ],
)
def test_optimize_auto_and_trials_flags_record_their_source(
    tmp_path: Path, auto: str | None, trials: int | None, mode: str | None, source: str
) -> None:
    from ocdspy.cli import _auto_mode_flag

    loaded = load_settings(
        None,
        environ={},
        cwd=tmp_path,
        overrides={
            "optimization.auto_mode": _auto_mode_flag(auto, trials),
            "optimization.num_trials": trials,
        },
    )
    assert loaded.settings.optimization.auto_mode == mode
    assert loaded.sources["optimization.auto_mode"] == source


# ---------------------------------------------------------------------------------------------
# Provider switches


def test_provider_switch_resets_the_provider_specific_defaults(tmp_path: Path) -> None:
    env = {"OCDSPY_MODELS__TEACHER__PROVIDER": "local"}
    loaded = load_settings(None, environ=env, cwd=tmp_path)
    t = loaded.settings.models.teacher
    assert (t.provider, t.model, t.api_key_env, t.api_base) == ("local", "smollm2-135m", None, None)
    assert loaded.sources["models.teacher.model"] == "default for local"
    assert loaded.sources["models.teacher.api_key_env"] == "default for local"
    assert loaded.sources["models.teacher.temperature"] == "default"  # not provider-specific
    assert loaded.warnings == []


def test_provider_switch_keeps_values_set_at_the_same_or_a_higher_layer(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config.yaml",
        "models:\n  teacher:\n    provider: openai\n    model: gpt-4.1\n"
        "    api_base: https://proxy.example/v1\n",
    )
    env = {
        "OCDSPY_MODELS__TEACHER__PROVIDER": "anthropic",
        "OCDSPY_MODELS__TEACHER__MODEL": "claude-opus-4-1",
    }
    t = load_settings(cfg, environ=env, cwd=tmp_path).settings.models.teacher
    assert t.model == "claude-opus-4-1"  # same layer as the switch
    assert t.api_base is None  # set below the switch: the proxy was openai's
    assert t.api_key_env == "ANTHROPIC_API_KEY"
    # The file's own provider line keeps the file's model and endpoint.
    same = load_settings(cfg, environ={}, cwd=tmp_path).settings.models.teacher
    assert (same.model, same.api_base) == ("gpt-4.1", "https://proxy.example/v1")
    assert same.api_key_env == "OPENAI_API_KEY"  # the file did not name one


def test_restating_the_same_provider_resets_nothing(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "models:\n  teacher:\n    model: claude-opus-4-1\n")
    env = {"OCDSPY_MODELS__TEACHER__PROVIDER": "anthropic"}
    t = load_settings(cfg, environ=env, cwd=tmp_path).settings.models.teacher
    assert t.model == "claude-opus-4-1"


def test_flag_switch_resets_a_provider_set_in_the_environment(tmp_path: Path) -> None:
    env = {
        "OCDSPY_MODELS__TARGET__PROVIDER": "openai_compatible",
        "OCDSPY_MODELS__TARGET__API_BASE": "http://127.0.0.1:8000/v1",
        "OCDSPY_MODELS__TARGET__MODEL": "served",
    }
    loaded = load_settings(
        None, environ=env, cwd=tmp_path, overrides={"models.target.provider": "ollama"}
    )
    t = loaded.settings.models.target
    assert (t.model, t.api_base) == ("qwen2.5-coder:7b", None)
    assert loaded.sources["models.target.provider"] == "flag"


def _template_switched_to_local(tmp_path: Path) -> Path:
    text = CONFIG_TEMPLATE.replace("provider: anthropic", "provider: local").replace(
        "provider: ollama ", "provider: local  "
    )
    assert text.count("provider: local") == 2
    return write(tmp_path / "config.yaml", text)


def test_init_config_switched_to_local_needs_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocdspy.lm.local as local
    from ocdspy.lm.providers import check_lm_settings

    monkeypatch.setattr(local, "resolve_gguf", lambda *a: tmp_path / "m.gguf")
    monkeypatch.setattr(local, "llama_cpp_available", lambda: True)
    loaded = load_settings(_template_switched_to_local(tmp_path), environ={}, cwd=tmp_path)
    teacher = loaded.settings.models.teacher
    assert teacher.api_key_env == "ANTHROPIC_API_KEY"  # written in the file: kept, but unused
    check_lm_settings(teacher, "teacher", environ={})  # no "ANTHROPIC_API_KEY is not set"
    text = "\n".join(loaded.warnings)
    assert "models.teacher.api_key_env (ANTHROPIC_API_KEY" in text and "not used" in text
    assert "models.teacher.model (claude-sonnet-4-5)" in text
    assert "models.target.model (qwen2.5-coder:7b)" in text
    # The labels name the model that runs, as `ocdspy serve` names it to OpenCode.
    assert teacher.model == loaded.settings.models.target.model == "smollm2-135m"
    assert loaded.sources["models.teacher.model"] == "default (provider local)"


def test_local_model_with_any_key_variable_works_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocdspy.lm.local as local
    from ocdspy.lm.providers import check_lm_settings, key_env_for

    monkeypatch.setattr(local, "resolve_gguf", lambda *a: tmp_path / "m.gguf")
    monkeypatch.setattr(local, "llama_cpp_available", lambda: True)
    cfg = write(
        tmp_path / "config.yaml",
        "models:\n  target:\n    provider: local\n    api_key_env: MY_UNSET_KEY\n"
        "    api_base: http://127.0.0.1:9/v1\n",
    )
    loaded = load_settings(cfg, environ={}, cwd=tmp_path)
    target = loaded.settings.models.target
    assert key_env_for(target) is None
    check_lm_settings(target, "target", environ={})
    assert any("models.target.api_key_env (MY_UNSET_KEY" in w for w in loaded.warnings)
    assert any("models.target.api_base" in w for w in loaded.warnings)


@pytest.mark.parametrize(
    ("optimizer", "warned"),
    [("MIPROv2", True), ("COPRO", True), ("GEPA", True), ("BootstrapFewShot", False)],
)
def test_local_teacher_with_an_optimizer_that_needs_a_capable_one_warns(
    tmp_path: Path, optimizer: str, warned: bool
) -> None:
    from ocdspy.optimize import preflight
    from ocdspy.optimizers import capable_teacher_warning

    env = {
        "OCDSPY_MODELS__TEACHER__PROVIDER": "local",
        "OCDSPY_OPTIMIZATION__OPTIMIZER": optimizer,
        "OCDSPY_OPTIMIZATION__AUTO_MODE": "light",
    }
    s = load_settings(None, environ=env, cwd=tmp_path).settings
    w = capable_teacher_warning(s)
    assert (w is not None) == warned
    if optimizer != "GEPA":  # GEPA's budget check needs real split sizes
        got = preflight(s, n_fit=40, n_sel=40)
        assert any("teacher" in x and optimizer in x for x in got) == warned
    if warned:
        assert w is not None and "models.teacher.provider: local" in w
        remote = load_settings(
            None, environ={**env, "OCDSPY_MODELS__TEACHER__PROVIDER": "openai"}, cwd=tmp_path
        ).settings
        assert capable_teacher_warning(remote) is None


# ---------------------------------------------------------------------------------------------
# Hostile values and files


@pytest.mark.parametrize(
    ("name", "value", "key", "expected"),
    [
        (
            "OCDSPY_OPTIMIZATION__NUM_THREADS",
            "1000000000",
            "optimization.num_threads",
            "at most 64",
        ),
        ("OCDSPY_OPTIMIZATION__NUM_THREADS", "0", "optimization.num_threads", "at least 1"),
        ("OCDSPY_OPTIMIZATION__NUM_THREADS", "1e9", "optimization.num_threads", "integer"),
        ("OCDSPY_MODELS__TEACHER__TIMEOUT", "inf", "models.teacher.timeout", "finite"),
        ("OCDSPY_MODELS__TEACHER__TIMEOUT", "nan", "models.teacher.timeout", "finite"),
        ("OCDSPY_MODELS__TEACHER__TIMEOUT", "1e9", "models.teacher.timeout", "at most 86400"),
        ("OCDSPY_MODELS__TARGET__NUM_RETRIES", "1e9", "models.target.num_retries", "integer"),
    ],
)
def test_numbers_are_bounded(
    tmp_path: Path, name: str, value: str, key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(None, environ={name: value}, cwd=tmp_path)
    msg = str(e.value)
    assert f"env {name}: {key}:" in msg and expected in msg


def test_out_of_range_in_the_file_names_file_key_and_range(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.yaml", "optimization:\n  num_threads: 1000000000\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={}, cwd=tmp_path)
    assert f"{cfg}: optimization.num_threads: must be at least 1 and at most 64" in str(e.value)


@pytest.mark.parametrize("null", ["null", "NULL", "None", "none", "~", " Null "])
def test_null_strings_from_the_environment_are_null(tmp_path: Path, null: str) -> None:
    env = {"OCDSPY_MODELS__TEACHER__API_KEY_ENV": null, "OCDSPY_OPTIMIZATION__AUTO_MODE": null}
    loaded = load_settings(None, environ=env, cwd=tmp_path)
    assert loaded.settings.models.teacher.api_key_env is None
    assert loaded.settings.optimization.auto_mode is None
    assert loaded.sources["models.teacher.api_key_env"] == "env OCDSPY_MODELS__TEACHER__API_KEY_ENV"
    dotenv = write(tmp_path / ".env", f"OCDSPY_MODELS__TEACHER__API_KEY_ENV={null}\n")
    from_file = load_settings(None, environ={}, cwd=tmp_path, dotenv=dotenv).settings
    assert from_file.models.teacher.api_key_env is None


def test_null_strings_stay_text_where_null_is_not_allowed(tmp_path: Path) -> None:
    env = {"OCDSPY_MODELS__TARGET__MODEL": "none"}
    assert load_settings(None, environ=env, cwd=tmp_path).settings.models.target.model == "none"


def test_duplicate_yaml_keys_warn_with_file_key_and_line(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "config.yaml",
        "data:\n  seed: 1\n  seed: 2\nmodels:\n  teacher:\n    model: a\n    model: b\n",
    )
    loaded = load_settings(cfg, environ={}, cwd=tmp_path)
    assert loaded.settings.data.seed == 2  # YAML's rule: the last one
    assert f"{cfg}: line 3: data.seed: duplicate key" in loaded.warnings[0]
    assert f"{cfg}: line 7: models.teacher.model: duplicate key" in loaded.warnings[1]
    clean = load_settings(write(tmp_path / "ok.yaml", "data:\n  seed: 1\n"), environ={})
    assert clean.warnings == []


def test_config_file_loading_stays_safe(tmp_path: Path) -> None:
    cfg = write(tmp_path / "config.yaml", "data: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(cfg, environ={}, cwd=tmp_path)


def test_dotenv_with_a_bom_keeps_its_first_variable(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"\xef\xbb\xbfOCDSPY_DATA__SEED=5\r\nOCDSPY_DATA__MIN_EXAMPLES=6\r\n")
    loaded = load_settings(None, environ={}, cwd=tmp_path)
    assert (loaded.settings.data.seed, loaded.settings.data.min_examples) == (5, 6)
    assert loaded.sources["data.seed"] == f"{dotenv} (OCDSPY_DATA__SEED)"


def test_dotenv_reading_keeps_its_conventions(tmp_path: Path) -> None:
    write(
        tmp_path / ".env",
        "# comment\nexport OCDSPY_DATA__SEED=7\nOCDSPY_DATA__RAW_DIR='logs dir'\n"
        "OCDSPY_DATA__MIN_EXAMPLES=3 # inline comment\nANTHROPIC_API_KEY=not-a-setting\n",
    )
    d = load_settings(None, environ={}, cwd=tmp_path).settings.data
    assert (d.seed, d.min_examples, d.raw_dir) == (7, 3, tmp_path / "logs dir")


def test_a_dotenv_that_is_not_utf8_is_skipped_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"OCDSPY_DATA__SEED=\xff\xfe\n")
    loaded = load_settings(None, environ={}, cwd=tmp_path)
    assert loaded.settings.data.seed == 0
    assert loaded.warnings[0].startswith(f"{tmp_path / '.env'}: cannot read it")


def test_unknown_dotenv_key_names_the_file_and_a_suggestion(tmp_path: Path) -> None:
    dotenv = write(tmp_path / ".env", "OCDSPY_DATA__SEDD=1\n")
    with pytest.raises(ConfigError) as e:
        load_settings(None, environ={}, cwd=tmp_path)
    assert f"{dotenv}: OCDSPY_DATA__SEDD: unknown setting (did you mean 'data.seed'?)" in str(
        e.value
    )


def test_a_fifo_dotenv_is_skipped_with_a_warning(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".env")  # reading it would block forever
    loaded = load_settings(None, environ={}, cwd=tmp_path)
    assert loaded.warnings == [f"{tmp_path / '.env'}: not a regular file; its settings are ignored"]


def test_a_config_that_is_not_a_regular_file_is_an_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match=r"config\.yaml: cannot read config file: not a regular"):
        load_settings(None, environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(tmp_path / "config.yaml", environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(tmp_path, environ={}, cwd=tmp_path)  # a directory


def test_settings_in_code_read_nothing_implicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCDSPY_DATA__SEED", "42")
    assert Settings().data.seed == 0


def test_config_warnings_reach_the_cli_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ocdspy.cli import app

    monkeypatch.chdir(tmp_path)
    _template_switched_to_local(tmp_path)
    with open(tmp_path / "config.yaml", "a") as f:
        f.write("data:\n  seed: 4\n")
    r = CliRunner().invoke(app, ["config", "show", "--json"], catch_exceptions=False)
    assert r.exit_code == 0
    assert "warning:" in r.stderr and "data: duplicate key" in r.stderr
    assert "models.teacher.api_key_env (ANTHROPIC_API_KEY" in r.stderr
    assert "warning:" not in r.stdout


def test_an_api_key_in_dotenv_reaches_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.env.example` tells users to put keys in `.env`: the variables the models name are
    loaded from it, never over the real environment, and nothing else is."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-shell")
    monkeypatch.delenv("UNRELATED", raising=False)
    (tmp_path / ".env").write_text(
        "\ufeffANTHROPIC_API_KEY=sk-ant-from-dotenv\nOPENAI_API_KEY=sk-from-dotenv\nUNRELATED=x\n"
    )
    (tmp_path / "config.yaml").write_text(
        "models:\n"
        "  teacher: {provider: anthropic, model: claude-sonnet-4-5}\n"
        "  target: {provider: openai, model: gpt-4o-mini}\n"
    )
    load_settings(cwd=tmp_path)
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-from-dotenv"
    assert os.environ["OPENAI_API_KEY"] == "sk-from-the-shell"
    assert "UNRELATED" not in os.environ
