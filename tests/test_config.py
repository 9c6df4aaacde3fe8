"""Config: every experiment file loads; bad keys and values fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, Distribution, ExperimentConfig, flatten, load_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


def test_ships_the_three_experiments():
    assert {p.stem for p in EXPERIMENTS} >= {"default", "tutorial", "smoke"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_file_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.study.n_trials > 0 and cfg.data.tests


def test_tutorial_is_the_seed_exactly():
    cfg = load_config(ROOT / "experiments" / "tutorial.yaml")
    assert (cfg.model.hidden_size, cfg.train.lr, cfg.train.steps) == (32, 0.01, 60)
    assert cfg.data.protocol == "tutorial" and cfg.data.seq_len == 10 and cfg.data.warmup == 0


def test_default_job_is_a_meaningful_study():
    cfg = load_config(ROOT / "experiments" / "default.yaml")
    assert cfg.study.cells == ("rnn", "lstm", "gru") and cfg.study.n_trials >= 20
    assert cfg.study.storage.startswith("sqlite:///")


def test_values_are_converted_by_field_type(tmp_path):
    # PyYAML reads 1e-3 (no dot) as the string "1e-3".
    path = tmp_path / "x.yaml"
    path.write_text("train: {lr: 1e-3, steps: '50'}\n"
                    "study: {space: {train.lr: {low: 1e-4, high: 1e-2, log: true}}}\n")
    cfg = load_config(path)
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 50
    assert cfg.study.space == {"train.lr": Distribution(1e-4, 1e-2, log=True)}
    assert isinstance(cfg.study.space["train.lr"].low, float)


def test_dotted_overrides_apply_and_convert():
    cfg = load_config(ROOT / "experiments" / "smoke.yaml",
                      {"train.lr": "3e-3", "study.cells": "gru,rnn", "model.hidden_size": "12"})
    assert cfg.train.lr == pytest.approx(3e-3)
    assert cfg.study.cells == ("gru", "rnn")
    assert cfg.model.hidden_size == 12


def test_configs_are_frozen():
    cfg = ExperimentConfig()
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_flatten_uses_dotted_names():
    flat = flatten(ExperimentConfig())
    assert flat["train.lr"] == 0.01
    assert flat["model.cell"] == "lstm"
    assert "data.tests.in_dist.n" in flat


@pytest.mark.parametrize("text, fragment", [
    ("model: {cell: transformer}", "unknown cell 'transformer' (valid: rnn, lstm, gru)"),
    ("study: {cells: [rnn, tcn]}", "unknown cell 'tcn'"),
    ("model: {hidden_size: 0}", "model.hidden_size must be positive"),
    ("study: {space: {model.hidden_size: {low: 0, high: 16, log: true, type: int}}}",
     "study.space.model.hidden_size: a log range must be positive"),
    ("study: {space: {train.lr: {low: 0.1, high: 0.001}}}",
     "study.space.train.lr: range is reversed"),
    ("study: {space: {train.lr: {low: .nan, high: 0.001}}}",
     "study.space.train.lr.low must be a finite number"),
    ("study: {space: {train.lr: {low: 0.1}}}", "study.space.train.lr needs high"),
    ("study: {space: {train.lr: {low: 0.1, high: 1, kind: x}}}", "unknown key"),
    ("study: {space: {model.hidden_size: {low: 4, high: 8}}}", "an int field, give it type: int"),
    ("study: {space: {model.num_layers: {low: 1.5, high: 3, type: int}}}",
     "int bounds must be whole numbers"),
    ("study: {space: {data.protocol: {low: 1, high: 3}}}", "not a numeric field"),
    ("study: {space: {model.cell: {low: 0, high: 2}}}", "cannot search model.cell"),
    ("study: {space: {train.lrr: {low: 0.1, high: 1}}}", "study.space.train.lrr: no such"),
    ("study: {n_trials: -3}", "n_trials must be positive"),
    ("train: {lrr: 0.1}", "unknown key train.'lrr'"),
    ("optimizer: {}", "unknown key 'optimizer'"),
    ("train: {steps: many}", "train.steps must be int, got 'many'"),
    ("train: {lr: [1, 2]}", "train.lr must be float"),
    ("study: {space: {train.lr: 0.1}}", "study.space.train.lr must be a mapping"),
    ("model: {cell: [1", "malformed YAML at line"),
    ("- a\n- b", "top level must be a mapping"),
])
def test_bad_files_fail_with_one_line(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message and str(path) in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_override_key_is_refused():
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        load_config(ROOT / "experiments" / "smoke.yaml", {"train.nope": 1})


def test_space_ranges_take_dotted_overrides():
    cfg = load_config(ROOT / "experiments" / "smoke.yaml",
                      {"study.space.train.lr.high": "0.2", "study.space.model.hidden_size.low": 2})
    assert cfg.study.space["train.lr"].high == pytest.approx(0.2)
    assert cfg.study.space["model.hidden_size"].low == 2
    assert isinstance(cfg.study.space["model.hidden_size"].high, int)  # an int field's range
    fixed = cfg.replace({"study.space.train.lr": None, "train.lr": 0.05})
    assert list(fixed.study.space) == ["model.hidden_size"] and fixed.train.lr == 0.05


def test_a_trials_params_rebuild_its_config():
    cfg = ExperimentConfig()
    params = {"model.hidden_size": 24, "train.lr": 0.004}  # as Optuna names them
    champion = cfg.replace(params)
    assert (champion.model.hidden_size, champion.train.lr) == (24, 0.004)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.schedule": "step"}, "unknown train.schedule 'step'"),
    ({"train.lr_warmup_steps": 400}, "train.lr_warmup_steps must be in"),
    ({"train.lr_warmup_steps": -1}, "train.lr_warmup_steps must be in"),
])
def test_schedule_fields_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig().replace(overrides)


@pytest.mark.parametrize("path, dist", [
    ("train.lr", {"low": -1.0, "high": 0.1}),
    ("model.hidden_size", {"low": 0, "high": 64, "type": "int"}),
    ("train.steps", {"low": 0, "high": 100, "type": "int"}),
])
def test_a_searched_range_must_hold_values_the_field_accepts(path, dist):
    """Caught when the config loads, not by the first trial that draws the bad end."""
    with pytest.raises(ValueError, match=f"study.space.{path}: .* outside what the field"):
        load_config(ROOT / "experiments" / "smoke.yaml", {"study.space": {path: dist}})
