"""Shared fixtures: a tiny config and a throw-away tracking store under tmp_path."""

from __future__ import annotations

import os
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
    migration (seconds), copying it takes milliseconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_store(tmp_path, monkeypatch, _empty_store) -> str:
    """A fresh SQLite tracking store and artifact folder; MLflow's globals point at it."""
    import shutil

    import mlflow

    shutil.copy(_empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # default artifact root ./mlruns lands in tmp_path
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment for a CLI run in a subprocess: its own stores under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", PYTHONUNBUFFERED="1",
               **extra)
    return env


# -- real servers (tests/servers.py): started once per session, stopped at its end ---------------


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A throw-away PostgreSQL 15 cluster on 127.0.0.1 (skipped where it is not installed)."""
    from servers import postgres, postgres_available

    why = postgres_available()
    if why:
        pytest.skip(why)
    with postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def mlflow_server(postgres_server, tmp_path_factory):
    """``mlflow server`` on its own database of ``postgres_server``, artifacts under tmp."""
    from servers import mlflow_server as start

    backend = postgres_server.create_database("mlflow")
    with start(backend, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
