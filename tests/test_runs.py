"""The one tracked training run (pipeline/runs.py): what a run holds when it finishes, when a
pruner stops it and when it fails."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.data import validation_set
from pipeline.runs import PLOT_PATH, PRUNED_TAG, tracked_fit
from pipeline.tracking import Tracker


class Stop(Exception):
    """Stands in for optuna.TrialPruned: runs.py knows no Optuna."""


@pytest.fixture
def cfg(tiny_cfg):
    return tiny_cfg.replace({"model.cell": "gru", "model.hidden_size": 8,
                             "study.storage": "postgresql://u:s3cret@127.0.0.1/optuna"})


def _history(run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient().get_metric_history(run_id, key)}


def _files(client, run_id, folder):
    return {f.path for f in client.list_artifacts(run_id, folder)}


def test_a_finished_run_holds_params_metrics_plot_checkpoint_and_scores(cfg, tracking_store):
    tracker = Tracker("runs")
    sets = {"in_dist": validation_set(cfg.data)}
    done = tracked_fit(tracker, cfg, "gru-run", val=validation_set(cfg.data),
                       tags={"cellstudy.level": "seed"}, test_sets=sets)
    run = MlflowClient().get_run(done.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "gru-run"
    assert run.data.params["model.hidden_size"] == "8" and "lr" not in run.data.params
    # A lone run's params are what it trained with: no study settings, nothing to mask.
    assert not any(k.startswith("study.") for k in run.data.params)
    config = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml")
    assert "s3cret" not in config and "***" in config  # the whole config, the password masked
    assert "val" in {d.dataset.name for d in run.inputs.dataset_inputs}
    assert run.data.tags["cellstudy.level"] == "seed" and "device" in run.data.tags
    steps = [m.step for m in MlflowClient().get_metric_history(done.run_id, "val/mse")]
    assert steps == [10, 20]
    # The values a researcher reads are curves (the UI draws a value logged once as a bar
    # labelled "0.00"): the best so far at each validation, ending on the run's result.
    val = _history(done.run_id, "val/mse")
    best = _history(done.run_id, "val/mse_best")
    assert list(best) == steps and list(best.values()) == [
        min(v for s, v in val.items() if s <= step) for step in steps]
    assert run.data.metrics["val/mse_best"] == done.result.best_val
    best_step = _history(done.run_id, "val/best_step")
    assert list(best_step) == steps and best_step[20] == done.result.best_step
    assert val[done.result.best_step] == done.result.best_val
    assert run.data.metrics["test/mse"] == pytest.approx(done.scores["test/mse"])
    assert PLOT_PATH in _files(MlflowClient(), done.run_id, None)  # top level: compare view
    assert _files(MlflowClient(), done.run_id, "checkpoint")


def test_a_stopped_run_ends_killed_with_the_plot_it_reached(cfg, tracking_store):
    tracker = Tracker("runs")
    started = []

    def stop(step, metrics):
        if step == 20:
            raise Stop(f"pruned at step {step}")

    with pytest.raises(Stop):
        tracked_fit(tracker, cfg, "stopped", val=validation_set(cfg.data), callbacks=[stop],
                    killed_on=(Stop,), on_start=started.append)
    (run_id,) = started
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[PRUNED_TAG] == "true"
    assert "pruned at step 20" in run.data.tags["pruned_reason"]
    assert PLOT_PATH in _files(MlflowClient(), run_id, None)
    assert [m.step for m in MlflowClient().get_metric_history(run_id, "val/mse")] == [10, 20]
    # What it had reached, as a finished run says it: the best so far up to where it stopped.
    assert list(_history(run_id, "val/mse_best")) == [10, 20]


def test_a_failing_run_ends_failed_without_the_pruned_tag(cfg, tracking_store):
    tracker = Tracker("runs")
    started = []

    def boom(step, metrics):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        tracked_fit(tracker, cfg, "failing", val=validation_set(cfg.data), callbacks=[boom],
                    on_start=started.append)
    run = MlflowClient().get_run(started[0])
    assert run.info.status == "FAILED" and "disk full" in run.data.tags["failure_reason"]
    assert PRUNED_TAG not in run.data.tags
