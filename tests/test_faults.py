"""Faults: diverging trials, a model that does not load, SIGINT/SIGTERM in the middle of a
study. Each leaves Optuna and MLflow consistent, and a champion only where a good model is."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from conftest import ROOT, copy_store, subprocess_env
from mlflow import MlflowClient

from pipeline import tuning
from pipeline.tracking import Tracker

SMOKE = str(ROOT / "experiments" / "smoke.yaml")


def test_diverging_trials_fail_in_both_stores_and_the_study_goes_on(tiny_cfg, tracking_store,
                                                                    tmp_path):
    cfg = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path / 'optuna.db'}",
                            "study.space.train.lr.high": 1e30, "study.n_trials": 3,
                            "study.pruner_startup_trials": 10})
    study = tuning.open_study(cfg, "gru")
    # A huge lr turns the loss to NaN within one validation interval (grad clipping or not).
    for lr in (1e25, 1e-2, 1e28):
        study.enqueue_trial({"model.hidden_size": 8, "train.lr": lr})
    tracker = Tracker(cfg.tracking.experiment)
    job = tracker.start_run("job")
    outcome = tuning.run_study(cfg, "gru", tracker, job)

    study = tuning.open_study(cfg, "gru")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE", "FAIL"], "the study went on past the divergences"
    assert tuning.counted_trials(study) == 3, "a diverged trial counts toward the total"
    for trial in study.trials:
        run = MlflowClient().get_run(trial.user_attrs[tuning.RUN_ID_ATTR])
        assert run.info.status == ("FINISHED" if trial.state.name == "COMPLETE" else "FAILED")
        if trial.state.name == "FAIL":
            assert "DivergedError" in run.data.tags["failure_reason"]
    assert outcome.best_trial == 1
    champion = tracker.champion(f"{cfg.tracking.registry_prefix}-gru", "champion")
    assert champion.tags["trial"] == "1"


def _statuses(db) -> dict[str, list[str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT t.value, r.status FROM runs r JOIN tags t ON "
                            "t.run_uuid = r.run_uuid AND t.key = 'cellstudy.level'").fetchall()
    out: dict[str, list[str]] = {}
    for level, status in rows:
        out.setdefault(level, []).append(status)
    return out


def _running_trials(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            query = "SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'"
            return conn.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # tables not made yet
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_study_ends_runs_killed_and_resumes(signum, tmp_path, _empty_store):
    """The signal lands at a random moment of a trial (storage calls included, where a raise
    used to be swallowed by a weakref callback and the worker trained on); it must always stop
    the worker within seconds."""
    import random

    copy_store(_empty_store, tmp_path)  # the worker need not migrate a new store first
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # The report's retrains and tutorial runs are not what is tested: one seed, no tutorial.
    args = [sys.executable, "-m", "pipeline", "-q", "tune", "--config", SMOKE, "--cells", "rnn",
            "--n-trials", "2", "--storage", storage,
            "--set", "report.seeds=1", "--set", "report.tutorial_seeds=0"]
    env = subprocess_env(tmp_path)
    proc = subprocess.Popen([*args, "--set", "train.steps=100000"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _running_trials(tmp_path / "optuna.db") == 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        delay = random.uniform(0.2, 1.5)  # inside training, at no particular step
        time.sleep(delay)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # never leave a worker behind, even when the test fails
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, f"signal {delay:.2f} s into the trial: {err}"
    assert "Traceback" not in err and "interrupted" in err

    statuses = _statuses(tmp_path / "mlflow.db")
    assert statuses["trial"] == ["KILLED"] and statuses["study"] == ["KILLED"]
    assert statuses["job"] == ["KILLED"]
    study = optuna.load_study(study_name="sin2cos-smoke-rnn", storage=storage)
    assert tuning.counted_trials(study) == 0, "an interrupted trial is redone on resume"
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 0

    if signum == signal.SIGTERM:  # resuming once is enough to show it
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        study = optuna.load_study(study_name="sin2cos-smoke-rnn", storage=storage)
        assert tuning.counted_trials(study) == 2
        assert "RUNNING" not in sum(_statuses(tmp_path / "mlflow.db").values(), [])
        assert "@champion" in done.stdout
