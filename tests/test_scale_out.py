"""Scale-out against the real servers: worker processes sharing studies through PostgreSQL and
logging to an ``mlflow server``; a load test of the storage; a worker killed mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
# One cell is enough to show N workers sharing a study; a second only doubled the time. The
# job report's retrains are not what is tested here: one seed, no tutorial runs.
CELLS = ("gru",)
N_TRIALS = 4
N_WORKERS = 3
LEAN_REPORT = ["--set", "report.seeds=1", "--set", "report.tutorial_seeds=0"]


def _env(server_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CELLSTUDY_"))}
    env.update(MLFLOW_TRACKING_URI=server_url, PYTHONUNBUFFERED="1", TMPDIR=str(tmp_path))
    return env


def _worker(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "pipeline", "-q", "tune", *args],
                                cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def three_workers(postgres_server, mlflow_server, tmp_path_factory):
    """Three `tune` workers started together on a new study; the storage URL, password
    included, is given on the command line, the worst case for leaks."""
    tmp = tmp_path_factory.mktemp("workers")
    name = f"scale-{uuid.uuid4().hex[:6]}"
    storage = postgres_server.create_database(f"optuna_{name.replace('-', '_')}")
    storage = storage.replace("postgresql+psycopg2://", "postgresql://")  # the bare form too
    args = ["--config", SMOKE, "--cells", ",".join(CELLS), "--n-trials", str(N_TRIALS),
            "--storage", storage, "--study-name", name,
            "--set", f"tracking.experiment={name}", "--set", f"tracking.registry_prefix={name}",
            *LEAN_REPORT]
    env = _env(mlflow_server.url, tmp)
    logs = [tmp / f"worker{i}.log" for i in range(N_WORKERS)]
    procs = [_worker(args, env, tmp, log) for log in logs]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:  # none is left running, even when one hangs
            if p.poll() is None:
                p.kill()
                p.wait()
    return {"name": name, "storage": storage, "codes": codes,
            "output": "\n".join(log.read_text() for log in logs), "server": mlflow_server}


def _client(server_url: str):
    from mlflow import MlflowClient

    return MlflowClient(server_url, registry_uri=server_url)


def test_workers_all_succeed(three_workers):
    assert three_workers["codes"] == [0] * N_WORKERS, three_workers["output"]


def test_each_study_holds_exactly_its_total(three_workers):
    import optuna

    from pipeline.tuning import counted_trials, make_storage

    storage = make_storage(three_workers["storage"])
    for cell in CELLS:
        study = optuna.load_study(study_name=f"{three_workers['name']}-{cell}", storage=storage)
        assert counted_trials(study) == N_TRIALS, "workers claim trials before starting them"
        assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]


def test_every_trial_has_one_run_nested_under_its_study_run(three_workers):
    import optuna

    from pipeline.tuning import RUN_ID_ATTR, make_storage

    client = _client(three_workers["server"].url)
    exp = client.get_experiment_by_name(three_workers["name"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_level: dict[str, list] = {}
    for run in runs:
        by_level.setdefault(run.data.tags.get("cellstudy.level"), []).append(run)
    assert len(by_level["job"]) == 1, "workers must share one job run"
    assert len(by_level["study"]) == len(CELLS), "one study run per cell, whatever the workers"
    job_id = by_level["job"][0].info.run_id
    storage = make_storage(three_workers["storage"])
    trial_runs = {r.info.run_id: r for r in by_level["trial"]}
    seen = set()
    for cell in CELLS:
        study = optuna.load_study(study_name=f"{three_workers['name']}-{cell}", storage=storage)
        study_run = client.get_run(study.user_attrs[RUN_ID_ATTR])
        assert study_run.data.tags["mlflow.parentRunId"] == job_id
        for trial in study.trials:
            run = trial_runs[trial.user_attrs[RUN_ID_ATTR]]
            assert run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
            assert run.data.tags["optuna.trial_number"] == str(trial.number)
            assert run.info.status != "RUNNING"
            seen.add(run.info.run_id)
    assert seen == set(trial_runs), "no trial run without its trial, none twice"


def test_one_champion_per_cell(three_workers):
    client = _client(three_workers["server"].url)
    for cell in CELLS:
        name = f"{three_workers['name']}-{cell}"
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) == 1, "only one worker may finalize a study"
        assert client.get_model_version_by_alias(name, "champion").version == versions[0].version


def test_one_worker_writes_the_job_report(three_workers):
    """The report's retrains and baselines run once, not once per worker."""
    client = _client(three_workers["server"].url)
    exp = client.get_experiment_by_name(three_workers["name"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    levels = [r.data.tags.get("cellstudy.level") for r in runs]
    assert levels.count("seeds") == len(CELLS), levels
    assert levels.count("baseline") == 2, levels  # zero and linear rule
    job = next(r for r in runs if r.data.tags.get("cellstudy.level") == "job")
    assert "report.md" in {a.path for a in client.list_artifacts(job.info.run_id)}
    assert three_workers["output"].count("was already written") == N_WORKERS - 1


def test_no_password_reaches_mlflow_or_the_console(three_workers, postgres_server):
    from servers import dump_database

    secret = postgres_server.password
    assert secret in three_workers["storage"]  # the test would prove nothing otherwise
    assert secret not in three_workers["output"]
    assert secret not in dump_database(postgres_server, "mlflow")
    for path in Path(three_workers["server"].artifacts).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


LOAD_WORKER = textwrap.dedent("""
    import sys, optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(sys.argv[1])
    study = optuna.load_study(study_name=sys.argv[2], storage=storage)
    def objective(trial):
        trial.set_user_attr("worker", sys.argv[3])
        return trial.suggest_float("x", -10, 10) ** 2
    study.optimize(objective, n_trials=int(sys.argv[4]))
""")


def test_load_four_workers_fifty_trials_each(postgres_server, tmp_path):
    """4 workers x 50 trivial trials on PostgreSQL: none lost, none duplicated."""
    import optuna

    from pipeline.tuning import make_storage

    url = postgres_server.create_database(f"load_{uuid.uuid4().hex[:6]}")
    name = "load"
    optuna.create_study(study_name=name, storage=make_storage(url))
    script = tmp_path / "worker.py"
    script.write_text(LOAD_WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), url, name, str(w), "50"],
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read()
    trials = optuna.load_study(study_name=name, storage=make_storage(url)).trials
    assert sorted(t.number for t in trials) == list(range(200))
    assert all(t.state.name == "COMPLETE" for t in trials)
    for w in range(4):
        assert sum(t.user_attrs["worker"] == str(w) for t in trials) == 50


def _wait_for_running_trial(storage_url: str, study_name: str, timeout: float = 120):
    import optuna

    from pipeline.tuning import RUN_ID_ATTR, make_storage

    storage = make_storage(storage_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:  # not created yet
            study = None
        running = [t for t in (study.trials if study else []) if t.state.name == "RUNNING"
                   and RUN_ID_ATTR in t.user_attrs]
        if running:
            return running[0]
        time.sleep(0.3)
    raise TimeoutError("no trial started")


def test_a_killed_worker_does_not_stall_the_study(postgres_server, mlflow_server, tmp_path):
    """SIGKILL a worker mid-trial: a second worker fails the lost trial once its heartbeats
    stop, ends its MLflow run FAILED, runs a trial in its place and finishes the study."""
    import optuna

    from pipeline.tuning import RUN_ID_ATTR, counted_trials, make_storage

    name = f"kill-{uuid.uuid4().hex[:6]}"
    storage = postgres_server.create_database(name.replace("-", "_"))
    args = ["--config", SMOKE, "--cells", "lstm", "--n-trials", "2", "--storage", storage,
            "--study-name", name, "--set", f"tracking.experiment={name}",
            "--set", f"tracking.registry_prefix={name}",
            "--set", "study.heartbeat_interval=1", "--set", "study.grace_period=3", *LEAN_REPORT]
    env = _env(mlflow_server.url, tmp_path)
    slow = _worker([*args, "--set", "train.steps=100000", "--set", "train.eval_every=100000"],
                   env, tmp_path, tmp_path / "victim.log")
    try:
        lost = _wait_for_running_trial(storage, f"{name}-lstm")
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    survivor = _worker(args, env, tmp_path, tmp_path / "survivor.log")
    assert survivor.wait(timeout=240) == 0, (tmp_path / "survivor.log").read_text()

    study = optuna.load_study(study_name=f"{name}-lstm", storage=make_storage(storage))
    assert study.trials[lost.number].state.name == "FAIL"
    assert counted_trials(study) == 2
    client = _client(mlflow_server.url)
    run = client.get_run(lost.user_attrs[RUN_ID_ATTR])
    assert run.info.status == "FAILED"
    assert "worker lost" in run.data.tags["failure_reason"]
    assert client.get_model_version_by_alias(f"{name}-lstm", "champion")
