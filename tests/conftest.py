"""Shared fixtures: a tiny config and a throw-away tracking store under tmp_path."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline.config import ExperimentConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CELLS = ("rnn", "lstm", "gru")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2 cores; one torch thread per process is also what the pipeline uses."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg() -> ExperimentConfig:
    """The smoke experiment, shrunk further: a study of a few seconds."""
    return load_config(ROOT / "experiments" / "smoke.yaml", {
        "train.steps": 20, "train.eval_every": 10, "study.n_trials": 3,
    })


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory) -> Path:
    """One migrated, empty MLflow database per session: creating one runs every alembic
    migration (seconds), copying it takes milliseconds (``copy_store``)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def copy_store(empty: Path, folder: Path) -> str:
    """Copies the migrated empty store into ``folder``; returns its tracking URI.

    The migration wrote the Default experiment's artifact location as an absolute
    ``<cwd>/mlruns/0`` (the repository, when pytest runs there): it is pointed at ``folder``,
    or models logged there (MLflow 3 logs them in the active experiment) land in the checkout.
    """
    import shutil
    import sqlite3

    shutil.copy(empty, folder / "mlflow.db")
    with sqlite3.connect(folder / "mlflow.db") as conn:
        conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                     (str(folder / "mlruns" / "0"),))
    conn.close()
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def tracking_store(tmp_path, monkeypatch, _empty_store) -> str:
    """A fresh SQLite tracking store and artifact folder; MLflow's globals point at it."""
    import mlflow

    uri = copy_store(_empty_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in tmp_path
    mlflow.set_tracking_uri(uri)
    # set_registry_uri also exports MLFLOW_REGISTRY_URI and never unsets it: set it through
    # monkeypatch first, so that it is restored and does not leak into later tests.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def is_held(lock) -> bool:
    """Whether some thread holds ``lock`` now: another thread's non-blocking acquire fails (a
    ``threading.RLock`` lets its owner in again, so the owner cannot ask it directly)."""
    got = []

    def probe() -> None:
        got.append(lock.acquire(blocking=False))
        if got[0]:
            lock.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return not got[0]


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for a CLI run in a subprocess: its own stores under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", PYTHONUNBUFFERED="1",
               **extra)
    return env


@contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Never leaves ``proc`` behind, even when the test fails: on leaving the block it is
    killed, and waited for, if it is still running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- real servers (tests/servers.py): started once per session, stopped at its end ---------------


def in_ci() -> bool:
    """True under CI (``.ci/run`` runs with ``CI=true``, as most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_unless_installed(why: str | None) -> None:
    """Skips the test when a program it needs is missing (``why`` says which), except under CI:
    there the install step must have provided it, and a skip would hide that it did not.

    Args:
        why: None when everything is installed, else the reason.
    """
    if why is None:
        return
    if in_ci():
        pytest.fail(f"CI is set but {why}: fix the install step in .ci/run", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A throw-away PostgreSQL 15 cluster on 127.0.0.1 (skipped where it is not installed,
    failed instead under CI)."""
    from servers import postgres, postgres_available

    skip_unless_installed(postgres_available())
    with postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def mlflow_server(postgres_server, tmp_path_factory):
    """``mlflow server`` on its own database of ``postgres_server``, artifacts under tmp."""
    from servers import mlflow_server as start

    backend = postgres_server.create_database("mlflow")
    with start(backend, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


# -- a second OS user (locks and permissions as another user sees them) -------------------------

OTHER_USER = "cellstudy-other"


@pytest.fixture(scope="session")
def other_user() -> str:
    """A second, unprivileged OS user, created once where the tests run as root (they do in
    .ci/run); skipped elsewhere. It runs the system Python on this checkout (the venv lives
    under /root, which it cannot read), so only code that needs the standard library and PyYAML
    can run as it: the CLI up to its first heavy import."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root with useradd and runuser to act as a second user")
    if subprocess.run(["id", OTHER_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/false", OTHER_USER],
                       check=True, capture_output=True)
    return OTHER_USER


@pytest.fixture
def shared_tmp() -> Path:
    """A throw-away folder that other users may enter (pytest's tmp_path is root's own)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="cellstudy-shared-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_as(user: str, code: str, cwd: Path, timeout: float = 60, **env: str):
    """Runs ``code`` with the system Python as ``user``, this checkout importable."""
    import shutil
    import subprocess

    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(cwd),
            "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    argv = [shutil.which("runuser"), "-u", user, "--", "/usr/bin/python3", "-B", "-c", code]
    return subprocess.run(argv, cwd=cwd, env={**base, **env}, capture_output=True, text=True,
                          timeout=timeout)
