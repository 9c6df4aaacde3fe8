"""What the records say: params that compare across trials, studies and the job, the resolved
config, and the Markdown descriptions."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline import records
from pipeline.config import ExperimentConfig, flatten
from pipeline.storage import mask_url


@pytest.fixture
def job_cfg() -> ExperimentConfig:
    return ExperimentConfig().replace({"study.space.model.hidden_size.high": 128,
                                       "study.space.train.lr.high": 1e-1})


def test_a_trial_logs_what_was_searched_and_what_differs(job_cfg):
    trial = job_cfg.replace({"model.cell": "gru", "model.hidden_size": 40, "train.lr": 0.02})
    assert records.trial_params(trial, job_cfg) == {
        "model.cell": "gru", "model.hidden_size": 40, "train.lr": 0.02}
    # Anything else a trial changes shows up too; the constant rest does not.
    longer = trial.replace({"train.steps": job_cfg.train.steps * 2})
    params = records.trial_params(longer, job_cfg)
    assert params["train.steps"] == job_cfg.train.steps * 2
    assert len(params) == 4


def test_a_trial_logs_the_cell_even_when_it_equals_the_base(job_cfg):
    same = job_cfg.replace({"model.cell": job_cfg.model.cell})
    assert set(records.trial_params(same, job_cfg)) == {"model.cell", "model.hidden_size",
                                                         "train.lr"}


def test_search_ranges_are_numbers_under_their_own_keys(job_cfg):
    params = records.search_params(job_cfg)
    assert params == {
        "search.model.hidden_size.low": 8, "search.model.hidden_size.high": 128,
        "search.model.hidden_size.log": True,
        "search.train.lr.low": 1e-3, "search.train.lr.high": 1e-1, "search.train.lr.log": True}


def test_the_job_logs_the_base_config_without_values_no_study_used(job_cfg):
    secret = job_cfg.replace({"study.storage": "postgresql+psycopg2://u:s3cret@h/db"})
    params = records.base_params(secret, mask_url)
    for never_trained in ("model.hidden_size", "train.lr", "model.cell",
                          "study.space.model.hidden_size.low", "study.space.train.lr.high"):
        assert never_trained not in params
    assert params["train.steps"] == job_cfg.train.steps
    assert params["search.train.lr.high"] == 1e-1
    assert "s3cret" not in json.dumps(params)
    assert set(params) - set(flatten(job_cfg)) == set(records.search_params(job_cfg))


def test_study_params_hold_the_cell_the_ranges_and_how_it_searches(job_cfg):
    params = records.study_params(job_cfg, "rnn", mask_url)
    assert params["model.cell"] == "rnn"
    assert params["study.n_trials"] == job_cfg.study.n_trials
    assert params["search.model.hidden_size.low"] == 8
    assert not any(isinstance(v, list | tuple) for v in params.values())  # no "[8, 128]"


def test_the_resolved_config_is_plain_yaml_with_the_password_masked(job_cfg):
    secret = job_cfg.replace({"study.storage": "postgresql+psycopg2://u:s3cret@h/db"})
    text = yaml.safe_dump(records.resolved_config(secret, mask_url))
    back = yaml.safe_load(text)  # safe_load: no python/tuple tags
    assert back["train"]["lr"] == job_cfg.train.lr
    assert back["study"]["space"]["model.hidden_size"] == {"low": 8, "high": 128, "log": True,
                                                           "type": "int"}
    assert "s3cret" not in text


def test_descriptions_say_what_a_user_needs(job_cfg):
    version = records.version_description("s-lstm", 7, "abc", 0.001,
                                          {"test/mse": 0.002, "test/long/mse": 0.003},
                                          {"model.hidden_size": 40, "train.lr": 0.02})
    assert version.startswith("Trial 7 of study s-lstm: val/mse_best 0.001, test/mse 0.002")
    assert "test/mse (this model, one seed) | 0.002" in version
    assert "model.hidden_size | 40" in version
    study = records.study_description(job_cfg, "gru", "s-gru", "val/mse_best")
    assert "`model.hidden_size` | 8 – 128 (log)" in study and "val/mse_best" in study
    job = records.job_description(job_cfg, "tune-x")
    assert "base config" in job
