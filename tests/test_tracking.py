"""The tracker on a throw-away store: provenance on runs made through the client, live metrics,
datasets, descriptions, and a logged model that ships only its serving code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT

from pipeline.config import ModelConfig, to_dict
from pipeline.data import make_eval_set
from pipeline.tracking import Tracker
from pipeline.train import build_model, fit


@pytest.fixture
def tracker(tracking_store) -> Tracker:
    return Tracker("records", entry_point="python -m pipeline tune")


def test_runs_made_through_the_client_say_where_they_come_from(tracker):
    tags = tracker.client.get_run(tracker.start_run("r")).data.tags
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] and tags["mlflow.user"]
    assert tags["mlflow.project.entryPoint"] == "python -m pipeline tune"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True).stdout
    assert tags["mlflow.source.git.dirty"] == str(bool(dirty.strip())).lower()


def test_runs_under_mlflow_run_carry_the_projects_source(tracking_store, monkeypatch):
    """What `mlflow run` leaves: a project run whose source is the project; nested runs say
    the same instead of naming this process's entry file."""
    client = mlflow.MlflowClient()
    exp = client.create_experiment("proj")
    project = client.create_run(exp, tags={"mlflow.source.type": "PROJECT",
                                           "mlflow.source.name": "file:///repo",
                                           "mlflow.project.entryPoint": "main"}).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    tracker = Tracker("ignored", entry_point="python -m pipeline tune")
    child = tracker.client.get_run(tracker.start_run("study", parent_run_id=project)).data.tags
    assert child["mlflow.source.type"] == "PROJECT"
    assert child["mlflow.source.name"] == "file:///repo"
    assert child["mlflow.project.entryPoint"] == "main"


def test_metrics_reach_the_store_while_training(tracker, tiny_cfg):
    run_id = tracker.start_run("live")
    buffer = tracker.metric_buffer(run_id, every=0)
    seen: list[int] = []

    def probe(step: int, metrics: dict[str, float]) -> None:
        # Runs after the buffer, while fit goes on: what a user watching the UI would see.
        seen.append(len(tracker.client.get_metric_history(run_id, "val/mse")))

    fit(tiny_cfg, callbacks=[buffer, probe])
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 2


def test_buffered_metrics_wait_for_the_interval_or_a_flush(tracker):
    run_id = tracker.start_run("buffered")
    buffer = tracker.metric_buffer(run_id, every=3600)
    buffer(1, {"val/mse": 0.5})
    assert not tracker.client.get_metric_history(run_id, "val/mse")
    buffer.flush()
    assert [m.value for m in tracker.client.get_metric_history(run_id, "val/mse")] == [0.5]


def test_datasets_are_logged_with_their_digests(tracker, tiny_cfg):
    val = make_eval_set(tiny_cfg.data, tiny_cfg.data.val)
    run_id = tracker.start_run("data")
    tracker.log_datasets(run_id, {"val": (val.x, val.y)}, "validation")
    (logged,) = tracker.client.get_run(run_id).inputs.dataset_inputs
    expected = mlflow.data.from_numpy(val.x, targets=val.y).digest
    assert (logged.dataset.name, logged.dataset.digest) == ("val", expected)
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "validation")]
    other = make_eval_set(tiny_cfg.data, tiny_cfg.data.tests[0])
    assert mlflow.data.from_numpy(other.x, targets=other.y).digest != expected


def test_descriptions_land_where_the_ui_shows_them(tracker):
    run_id = tracker.start_run("described")
    tracker.describe(run_id, "**hello**")
    assert tracker.client.get_run(run_id).data.tags["mlflow.note.content"] == "**hello**"


def _logged_model(tracker: Tracker) -> str:
    cfg = ModelConfig(cell="gru", hidden_size=4)
    run_id = tracker.start_run("ckpt")
    tracker.log_checkpoint(run_id, build_model(cfg).state_dict(), to_dict(cfg))
    return tracker.log_model(run_id, name="gru-trial-3")


def test_a_logged_model_ships_only_its_serving_code_under_its_own_name(tracker, tmp_path):
    uri = _logged_model(tracker)
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model"))
    shipped = sorted(p.relative_to(f"{local}/code").as_posix()
                     for p in Path(local, "code").rglob("*.py"))
    assert shipped == ["cellstudy_sin2cos/__init__.py", "cellstudy_sin2cos/inputs.py",
                       "cellstudy_sin2cos/model.py"]
    (model,) = tracker.client.search_logged_models([tracker.experiment_id])
    assert model.name == "gru-trial-3"

    # Where another project's `pipeline` package is already imported (a serving process, a
    # notebook), the model still loads: it needs nothing called `pipeline`.
    other = tmp_path / "other"
    (other / "pipeline").mkdir(parents=True)
    (other / "pipeline" / "__init__.py").write_text("OWNER = 'another project'\n")
    code = ("import pipeline; assert pipeline.OWNER == 'another project'; "
            f"import mlflow, numpy as np; m = mlflow.pyfunc.load_model({local!r}); "
            "print(m.predict(np.zeros((2, 5, 1), np.float32)).shape)")
    env = {**os.environ, "PYTHONPATH": str(other)}
    out = subprocess.run([sys.executable, "-c", code], cwd=other, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(2, 5, 1)")


def test_a_registered_model_and_its_version_get_descriptions(tracker):
    version, _ = tracker.promote("described", _logged_model(tracker), 0.1, "champion", {})
    tracker.describe_model("described", "what it maps")
    tracker.describe_model("described", "trial 3", version)
    assert tracker.client.get_registered_model("described").description == "what it maps"
    assert tracker.client.get_model_version("described", version).description == "trial 3"
