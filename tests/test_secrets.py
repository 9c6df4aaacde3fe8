"""No URL password is ever shown: not on stdout or stderr, not in the tracking store's file, not
in any artifact, whichever source the URL came from (flag, config, environment)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, copy_store, subprocess_env
from servers import free_port

from pipeline import secrets

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
SECRET = "pw-Never-Shown-7"


def test_masked_stream_hides_registered_passwords_in_any_form(monkeypatch):
    monkeypatch.setattr(secrets, "_hidden", set())
    secrets.hide("postgresql://u:p%40ss-word@db/x", "not a url", None)
    out = io.StringIO()
    stream = secrets.MaskedStream(out)
    stream.write("quoted p%40ss-word, decoded p@ss-word\n")
    assert out.getvalue() == "quoted ***, decoded ***\n"
    assert secrets.mask_url("http://user:other@host:5000") == "http://user:***@host:5000"


def _run(args: list[str], tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline", "-q", *args], cwd=tmp_path,
                          env={**subprocess_env(tmp_path), **env}, capture_output=True,
                          text=True, timeout=120)
    return done, time.monotonic() - start


def _assert_one_masked_line(done: subprocess.CompletedProcess, seconds: float,
                            expected: str) -> None:
    """The run gave up within 30 s with exit 2 and a single line on stderr that holds
    ``expected``; the password is nowhere in its output."""
    assert seconds < 30 and done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert SECRET not in done.stdout + done.stderr


DEAD = "http://cellstudy:{secret}@127.0.0.1:{port}"


@pytest.mark.parametrize("command", [
    ["train", "--config", SMOKE, "--cell", "rnn"],
    ["evaluate", "--config", SMOKE, "--model-uri", "models:/sin2cos-rnn@champion"],
    ["evaluate", "--model-uri", "models:/sin2cos-rnn@champion", "--input", "{tmp}/x.json"],
], ids=["train", "evaluate", "evaluate-input"])
def test_dead_tracking_server_is_one_masked_line_within_seconds(command, tmp_path):
    """Before: train and evaluate skipped the check, retried for about 250 s, then printed the
    password (train with a 110-line traceback)."""
    (tmp_path / "x.json").write_text("[[0.0, 0.1, 0.2]]")
    args = [a.format(tmp=tmp_path) for a in command]
    done, seconds = _run(args, tmp_path,
                         MLFLOW_TRACKING_URI=DEAD.format(secret=SECRET, port=free_port()))
    _assert_one_masked_line(done, seconds,
                            "cannot reach the MLflow tracking store http://cellstudy:***@")


@pytest.mark.parametrize("source", ["flag", "environment", "config"])
def test_dead_database_password_masked_from_every_source(source, tmp_path, _empty_store):
    copy_store(_empty_store, tmp_path)
    url = f"postgresql://cellstudy:{SECRET}@127.0.0.1:{free_port()}/optuna"
    args, env = ["tune", "--config", SMOKE], {}
    if source == "flag":
        args += ["--storage", url]
    elif source == "environment":
        env["CELLSTUDY_STORAGE"] = url
    else:
        (tmp_path / "exp.yaml").write_text(f"study:\n  storage: {url}\n")
        args = ["tune", "--config", str(tmp_path / "exp.yaml")]
    done, seconds = _run(args, tmp_path, **env)
    assert seconds < 30 and done.returncode == 2, done.stderr
    assert "cannot reach the Optuna storage postgresql+psycopg2://cellstudy:***@" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_a_password_in_the_config_reaches_no_param_tag_or_artifact(tmp_path, _empty_store):
    """``train`` logs the whole config as params, the study's storage URL included: it was
    logged with its password. The store's file and every artifact are grepped."""
    copy_store(_empty_store, tmp_path)
    url = f"postgresql://cellstudy:{SECRET}@db.example:5432/optuna"
    done, _ = _run(["train", "--config", SMOKE, "--cell", "gru", "--set", "train.steps=10",
                    "--set", "train.eval_every=5", "--set", f"study.storage={url}"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "weights.pt" for p in files), "the run logged its artifacts here"
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        params = dict(conn.execute("SELECT key, value FROM params").fetchall())
    assert params, "train logged its params"
    assert not [k for k, v in params.items() if SECRET in v]
    if "study.storage" in params:
        assert params["study.storage"] == "postgresql://cellstudy:***@db.example:5432/optuna"


def test_dead_tracking_database_is_one_attempt_not_minutes_of_retries(tmp_path):
    """MLflow's SQL store retries its first connection for minutes; one bounded attempt is
    made first, its error masked."""
    uri = f"postgresql://cellstudy:{SECRET}@127.0.0.1:{free_port()}/mlflow"
    done, seconds = _run(["train", "--config", SMOKE, "--cell", "rnn"], tmp_path,
                         MLFLOW_TRACKING_URI=uri)
    _assert_one_masked_line(done, seconds, "cannot reach the MLflow tracking store "
                            "postgresql+psycopg2://cellstudy:***@127.0.0.1")


def test_dead_registry_is_found_before_training(tmp_path, _empty_store):
    """``train --register`` with a registry apart from the tracking store: before, the run
    trained, then failed at registration after minutes of retries."""
    copy_store(_empty_store, tmp_path)
    registry = DEAD.format(secret=SECRET, port=free_port())
    done, seconds = _run(["train", "--config", SMOKE, "--cell", "rnn", "--register"], tmp_path,
                         MLFLOW_REGISTRY_URI=registry)
    _assert_one_masked_line(done, seconds, "cannot reach the MLflow model registry "
                            "http://cellstudy:***@127.0.0.1")
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
