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
from conftest import ROOT, copy_store, reaped, subprocess_env
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


def _tune_job(tmp_path, empty_store, report_seeds: int) -> tuple[list[str], dict[str, str]]:
    """A ``tune`` of two rnn trials on stores in ``tmp_path`` (the migrated empty tracking store
    copied there, so the worker need not migrate one first): its argv and environment.

    Args:
        tmp_path: the job's folder, its working directory.
        empty_store: the session's migrated empty MLflow database (``_empty_store``).
        report_seeds: how many seeds the job report retrains; it runs no tutorial seeds.
    """
    copy_store(empty_store, tmp_path)
    args = [sys.executable, "-m", "pipeline", "-q", "tune", "--config", SMOKE, "--cells", "rnn",
            "--n-trials", "2", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
            "--set", f"report.seeds={report_seeds}", "--set", "report.tutorial_seeds=0"]
    return args, subprocess_env(tmp_path)


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

    # The report's retrains and tutorial runs are not what is tested: one seed, no tutorial.
    args, env = _tune_job(tmp_path, _empty_store, report_seeds=1)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = subprocess.Popen([*args, "--set", "train.steps=100000"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    with reaped(proc):  # never leave a worker behind, even when the test fails
        deadline = time.monotonic() + 120
        while _running_trials(tmp_path / "optuna.db") == 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        delay = random.uniform(0.2, 1.5)  # inside training, at no particular step
        time.sleep(delay)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
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


OOM_TRIALS = r'''
import resource, sys
import torch
from pipeline import tuning
from pipeline.config import load_config
from pipeline.tracking import Tracker

torch.set_num_threads(1)
cfg = load_config(sys.argv[1], {"train.steps": 20, "train.eval_every": 10, "study.n_trials": 3,
                                "study.space.model.hidden_size.low": 4,
                                "study.space.model.hidden_size.high": 4096,
                                "study.storage": sys.argv[2],
                                "study.pruner_startup_trials": 10})
study = tuning.open_study(cfg, "lstm")
for hidden in (8, 4096, 8):  # 4096 wide: 268 MB of weights, four times that with Adam
    study.enqueue_trial({"model.hidden_size": hidden, "train.lr": 1e-2})
tracker = Tracker(cfg.tracking.experiment)
job = tracker.start_run("job")
# The address space this process holds now plus 700 MB: room for the small trials, not the wide
vm_kb = int(next(line for line in open("/proc/self/status")
                 if line.startswith("VmSize")).split()[1])
resource.setrlimit(resource.RLIMIT_AS, ((vm_kb + 700 * 1024) * 1024, resource.RLIM_INFINITY))
outcome = tuning.run_study(cfg, "lstm", tracker, job)
print("best", outcome.best_trial)
'''


@pytest.mark.slow
def test_a_trial_out_of_memory_fails_alone_and_the_study_goes_on(tmp_path, _empty_store):
    """A real allocation failure (the address space capped, as a full machine would), not a
    raised exception: torch's CPU allocator reports it as a plain RuntimeError."""
    copy_store(_empty_store, tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    done = subprocess.run([sys.executable, "-c", OOM_TRIALS, SMOKE, storage], cwd=tmp_path,
                          env=subprocess_env(tmp_path, MALLOC_ARENA_MAX="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best 0" in done.stdout
    study = optuna.load_study(study_name="sin2cos-smoke-lstm", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    oom = study.trials[1]
    assert oom.user_attrs[tuning.FAIL_ATTR].startswith("out of memory: ")
    assert tuning.counted_trials(study) == 3, "it counts: rerunning it would fail again"
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        status, reason = conn.execute(
            "SELECT r.status, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "AND t.key = 'failure_reason' WHERE r.run_uuid = ?",
            (oom.user_attrs[tuning.RUN_ID_ATTR],)).fetchone()
    assert status == "FAILED" and reason.startswith("OutOfMemory: out of memory")


def _levels(db) -> dict[str, list[str]]:
    return _statuses(db) if db.exists() else {}


@pytest.mark.slow
def test_sigterm_mid_report_kills_its_runs_and_a_rerun_logs_nothing_twice(tmp_path,
                                                                          _empty_store):
    """Before: SIGTERM during the job report was ignored, the job ended FINISHED with exit 0.
    Now the report's training has safe points; a rerun reuses the report runs that finished."""
    args, env = _tune_job(tmp_path, _empty_store, report_seeds=40)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    with reaped(proc):
        deadline = time.monotonic() + 180
        # The baselines are the report's first runs: once they are FINISHED, it retrains.
        while (_levels(tmp_path / "mlflow.db").get("baseline", []).count("FINISHED") < 2
               and time.monotonic() < deadline and proc.poll() is None):
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - sent
    assert proc.returncode == 143, err
    assert stopped_in < 15 and "Traceback" not in err
    statuses = _statuses(tmp_path / "mlflow.db")
    assert statuses["job"] == ["KILLED"] and "RUNNING" not in sum(statuses.values(), [])
    assert "seeds" not in statuses or statuses["seeds"] == ["KILLED"]

    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    statuses = _statuses(tmp_path / "mlflow.db")
    assert statuses["baseline"] == ["FINISHED", "FINISHED"], "the baselines were logged twice"
    assert statuses["seeds"].count("FINISHED") == 1
    assert "RUNNING" not in sum(statuses.values(), [])
    assert "@champion" in done.stdout, "the resumed summary marks the champion"


@pytest.mark.slow
def test_runs_of_a_killed_worker_end_failed_on_the_next_start(tmp_path, _empty_store):
    """SIGKILL leaves no chance to end a run: before, a killed ``train`` stayed RUNNING for
    good. The next start on the machine finds its worker gone and ends the run FAILED."""
    copy_store(_empty_store, tmp_path)
    args = [sys.executable, "-m", "pipeline", "-q", "train", "--config", SMOKE, "--cell", "rnn"]
    env = subprocess_env(tmp_path)
    proc = subprocess.Popen([*args, "--set", "train.steps=100000"], cwd=tmp_path, env=env,
                            stderr=subprocess.DEVNULL)
    with reaped(proc):
        deadline = time.monotonic() + 120
        while _levels(tmp_path / "mlflow.db").get("train") != ["RUNNING"]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.3)
        proc.kill()
        proc.wait()
    assert _statuses(tmp_path / "mlflow.db")["train"] == ["RUNNING"]
    done = subprocess.run([*args, "--set", "train.steps=10", "--set", "train.eval_every=5"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert sorted(_statuses(tmp_path / "mlflow.db")["train"]) == ["FAILED", "FINISHED"]
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        reasons = [r for (r,) in conn.execute(
            "SELECT value FROM tags WHERE key = 'failure_reason'").fetchall()]
    assert len(reasons) == 1 and f":{proc.pid}:" in reasons[0] and "died" in reasons[0]


@pytest.mark.slow
def test_tracking_server_dying_mid_job_is_one_masked_line_within_30_s(tmp_path):
    """A real ``mlflow server`` (SQLite behind it) stopped while trials run: the worker gives
    up within seconds (bounded HTTP retries) with one masked line, not minutes of retries and
    a traceback; its open runs are ended FAILED by the next start."""
    from servers import mlflow_server

    secret = "pw-Server-Dies-3"
    backend = tmp_path / "server.db"
    with mlflow_server(f"sqlite:///{backend}", tmp_path / "server") as server:
        uri = server.url.replace("http://", f"http://cellstudy:{secret}@")
        args = [sys.executable, "-m", "pipeline", "-q", "tune", "--config", SMOKE, "--cells",
                "rnn", "--n-trials", "200", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
        proc = subprocess.Popen(args, cwd=tmp_path,
                                env={**subprocess_env(tmp_path), "MLFLOW_TRACKING_URI": uri},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 180
            while _levels(backend).get("trial", []).count("FINISHED") < 1:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.3)
        except BaseException:
            proc.kill()
            raise
    stopped = time.monotonic()  # the server is gone: its process group was stopped
    with reaped(proc):
        out, err = proc.communicate(timeout=60)
    assert time.monotonic() - stopped < 30
    assert proc.returncode == 1, err
    assert "Traceback" not in err and secret not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "a store stopped answering mid-job" in errors[0], err


def _study_tagged_best(db) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM tags WHERE key = 'best_trial'"
                                ).fetchone()[0] > 0
    except sqlite3.OperationalError:
        return False


@pytest.mark.slow
def test_sigterm_during_a_study_wrap_up_lets_it_finish_then_stops(tmp_path, _empty_store):
    """The wrap-up (test once, plots, register) is not cut in half: it finishes, then the job
    stops with 143 before its report, and the rerun completes without registering again."""
    args, env = _tune_job(tmp_path, _empty_store, report_seeds=1)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    with reaped(proc):
        deadline = time.monotonic() + 180
        while not _study_tagged_best(tmp_path / "mlflow.db"):  # the wrap-up has begun
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    statuses = _statuses(tmp_path / "mlflow.db")
    assert "RUNNING" not in sum(statuses.values(), []) and statuses["job"] == ["KILLED"]
    assert "baseline" not in statuses, "the report started after the signal"
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 1

    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "RUNNING" not in sum(_statuses(tmp_path / "mlflow.db").values(), [])
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 1
    assert "@champion" in done.stdout
