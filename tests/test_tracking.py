"""The tracker (pipeline/tracking.py), the one module that talks to MLflow: runs ended with the
status they earned, resumed, failed from outside, scores read back, metrics batched, models
promoted only when they load."""

from __future__ import annotations

import contextlib

import pytest
from mlflow import MlflowClient

from pipeline.config import ModelConfig, to_dict
from pipeline.tracking import Tracker
from pipeline.train import build_model


@pytest.fixture
def tracker(tracking_store):
    return Tracker("tracking")


@pytest.mark.parametrize(("raised", "status", "tag"), [
    (None, "FINISHED", None), (ValueError("bad"), "FAILED", "failure_reason"),
    (KeyboardInterrupt("SIGINT"), "KILLED", "interrupted_reason")])
def test_a_run_block_ends_with_the_status_it_earned(tracker, raised, status, tag):
    ids = []
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with tracker.run("r", tags={"cellstudy.level": "x"}) as run_id:
            ids.append(run_id)
            if raised:
                raise raised
    run = MlflowClient().get_run(ids[0])
    assert run.info.status == status and run.data.tags["cellstudy.level"] == "x"
    if tag:
        assert str(raised) in run.data.tags[tag]


def test_a_nested_run_names_its_parent(tracker):
    with tracker.run("parent") as parent, tracker.run("child", parent) as child:
        pass
    assert MlflowClient().get_run(child).data.tags["mlflow.parentRunId"] == parent


def test_resume_and_fail_from_outside(tracker):
    with tracker.run("study") as run_id:
        pass
    tracker.resume_run(run_id)
    assert MlflowClient().get_run(run_id).info.status == "RUNNING"
    tracker.fail_run(run_id, "worker lost")
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "worker lost"


def test_scores_are_the_test_metrics_read_back(tracker):
    run_id = tracker.start_run("best")
    tracker.log_metrics(run_id, {"test/mse": 0.1, "test/a/mse": 0.2, "val/mse_best": 0.05,
                                 "test/nan": float("nan")})
    assert tracker.scores(run_id) == {"test/mse": 0.1, "test/a/mse": 0.2}


def test_the_metric_buffer_writes_every_step_in_one_flush(tracker):
    run_id = tracker.start_run("buffered")
    buffer = tracker.metric_buffer(run_id)
    for step in (10, 20, 30):
        buffer(step, {"val/mse": 1.0 / step, "train/loss": 2.0 / step})
    assert not MlflowClient().get_metric_history(run_id, "val/mse")  # nothing written yet
    buffer.flush()
    buffer.flush()  # safe twice
    history = MlflowClient().get_metric_history(run_id, "val/mse")
    assert [m.step for m in history] == [10, 20, 30]


def test_a_checkpoint_comes_back_as_it_went(tracker):
    cfg = ModelConfig(cell="gru", hidden_size=4)
    state = build_model(cfg).state_dict()
    run_id = tracker.start_run("ckpt")
    tracker.log_checkpoint(run_id, state, to_dict(cfg))
    loaded, model_cfg = tracker.load_checkpoint(run_id)
    assert model_cfg == to_dict(cfg)
    assert all((loaded[k] == v).all() for k, v in state.items())


def _checkpoint_run(tracker: Tracker, weights_cfg: ModelConfig, claimed_cfg: ModelConfig) -> str:
    run_id = tracker.start_run("ckpt")
    tracker.log_checkpoint(run_id, build_model(weights_cfg).state_dict(), to_dict(claimed_cfg))
    return run_id


def test_alias_never_points_at_a_model_that_does_not_load(tracking_store):
    tracker = Tracker("promote")
    good = ModelConfig(cell="lstm", hidden_size=4)
    v1, moved = tracker.promote("m", tracker.log_model(_checkpoint_run(tracker, good, good)),
                                0.5, "champion", {})
    assert moved
    # Weights of one size under a config of another: logs fine, fails to load.
    broken = _checkpoint_run(tracker, ModelConfig(cell="lstm", hidden_size=6), good)
    with pytest.raises(Exception, match="size mismatch"):
        tracker.promote("m", tracker.log_model(broken), 0.1, "champion", {})
    assert str(tracker.champion("m", "champion").version) == str(v1)
    versions = [str(v.version) for v in MlflowClient().search_model_versions("name='m'")]
    assert versions == [str(v1)], "the broken version is not left behind, half-registered"
