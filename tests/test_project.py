"""End to end as a user starts it: `mlflow run .` on the smoke experiment, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, subprocess_env


@pytest.mark.slow
def test_mlflow_run_tune_entry_point(tmp_path):
    """`tune` on the smoke config, the storage given as an extra parameter (`--storage`)."""
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    before = {p.name for p in ROOT.iterdir()}
    env = subprocess_env(tmp_path)
    # `mlflow run --env-manager local` runs `python -m pipeline` from PATH: this interpreter's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run(
        [str(mlflow_cli), "run", str(ROOT), "--env-manager", "local", "-e", "tune",
         "-P", "config=experiments/smoke.yaml", "-P", f"storage=sqlite:///{tmp_path}/optuna.db",
         "--experiment-name", "e2e"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "succeeded" in out.stderr

    import mlflow

    uri = env["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("e2e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    levels = {}
    for run in runs:
        levels.setdefault(run.data.tags.get("cellstudy.level"), []).append(run)
    (job,) = levels["job"]
    assert job.data.params["config"] == "experiments/smoke.yaml"  # the project's own run
    assert job.data.params["workers"] == "auto"  # the main job runs N workers by default
    assert len(levels["study"]) == 3
    assert all(r.data.tags["mlflow.parentRunId"] == job.info.run_id for r in levels["study"])
    assert len(levels["trial"]) == 3 * 3
    for cell in ("rnn", "lstm", "gru"):
        version = client.get_model_version_by_alias(f"sin2cos-{cell}", "champion")
        assert version.tags["cell"] == cell
    # The run wrote its stores where it was told, nothing into the project folder.
    assert {p.name for p in ROOT.iterdir()} - before == set()
