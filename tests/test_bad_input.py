"""Bad input through the real CLI: each case gets one line on stderr that names the problem, a
non-zero exit, no traceback, and leaves no MLflow run and no Optuna study behind."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, copy_store, subprocess_env
from servers import free_port

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
SECRET = "pw-never-printed"

# (id, files to write into tmp_path, CLI arguments after `python -m pipeline`, message fragment)
TABLE = [
    ("unknown-cell", {}, ["tune", "--cells", "lstm,tcn"], "unknown cell 'tcn'"),
    ("unknown-cell-train", {}, ["train", "--cell", "transformer"], "unknown cell 'transformer'"),
    ("empty-range-set", {}, ["tune", "--set", "study.space.train.lr="],
     "study.space.train.lr must be a mapping"),
    ("empty-range-yaml", {"empty.yaml": "study:\n  space: {}\n"},
     ["tune", "--config", "{tmp}/empty.yaml"], "study.space is empty"),
    ("reversed-range", {}, ["tune", "--set", "study.space.model.hidden_size.low=64",
                            "--set", "study.space.model.hidden_size.high=8"],
     "study.space.model.hidden_size: range is reversed"),
    ("reversed-lr-range", {}, ["tune", "--set", "study.space.train.lr.low=0.1"],
     "study.space.train.lr: range is reversed"),
    ("zero-size-range", {}, ["tune", "--set", "study.space.model.hidden_size.low=0"],
     "a log range must be positive"),
    ("searched-cell", {"cell.yaml": "study:\n  space: {model.cell: {low: 0, high: 2}}\n"},
     ["tune", "--config", "{tmp}/cell.yaml"], "study.space cannot search model.cell"),
    ("searched-non-field", {"width.yaml": "study:\n  space: {model.width: {low: 1, high: 2}}\n"},
     ["tune", "--config", "{tmp}/width.yaml"], "study.space.model.width: no such config field"),
    ("set-a-searched-field", {}, ["tune", "--set", "train.lr=0.01"],
     "train.lr is searched by study.space"),
    ("negative-hidden-size", {}, ["train", "--hidden-size", "-4"],
     "model.hidden_size must be positive"),
    ("zero-batch", {}, ["train", "--set", "train.batch_size=0"],
     "train.batch_size must be positive"),
    ("negative-lr", {}, ["train", "--lr", "-0.01"], "train.lr must be positive"),
    ("malformed-yaml", {"bad.yaml": "study: [rnn, lstm\ntrain: {lr: 1}\n"},
     ["tune", "--config", "{tmp}/bad.yaml"], "malformed YAML"),
    ("not-a-mapping", {"list.yaml": "- a\n- b\n"}, ["tune", "--config", "{tmp}/list.yaml"],
     "top level must be a mapping"),
    ("missing-config", {}, ["tune", "--config", "{tmp}/nope.yaml"], "config file not found"),
    ("unknown-key-yaml", {"typo.yaml": "study:\n  n_trails: 3\n"},
     ["tune", "--config", "{tmp}/typo.yaml"], "unknown key study.'n_trails'"),
    ("unknown-key-set", {}, ["tune", "--set", "train.lrr=0.1"], "unknown key 'train.lrr'"),
    ("set-without-value", {}, ["tune", "--set", "train.lr"], "--set takes KEY=VALUE"),
    ("wrong-type-yaml", {"type.yaml": "train:\n  lr: fast\n"},
     ["tune", "--config", "{tmp}/type.yaml"], "train.lr must be float, got 'fast'"),
    ("wrong-type-set", {}, ["tune", "--set", "train.steps=2.5"], "train.steps must be int"),
    ("wrong-type-bool", {}, ["tune", "--set", "study.n_trials=true"],
     "study.n_trials must be a"),
    ("zero-trials", {}, ["tune", "--n-trials", "0"], "n_trials must be positive, got 0"),
    ("negative-trials", {}, ["tune", "--n-trials", "-3"], "n_trials must be positive, got -3"),
    ("unknown-storage-scheme", {}, ["tune", "--storage", "redis://127.0.0.1/0"],
     "unknown storage scheme"),
    ("no-storage-scheme", {}, ["tune", "--storage", "optuna.db"], "unknown storage scheme"),
    ("unreachable-database", {},
     ["tune", "--storage", f"postgresql://cellstudy:{SECRET}@127.0.0.1:{{port}}/optuna"],
     "cannot reach the Optuna storage postgresql+psycopg2://cellstudy:***@127.0.0.1"),
    ("storage-folder-missing", {}, ["tune", "--storage", "sqlite:///{tmp}/no/such/optuna.db"],
     "study.storage: folder"),
    ("unknown-data-set", {}, ["evaluate", "--model-uri", "models:/x@champion", "--data", "nope"],
     "unknown data set 'nope'"),
    ("wrong-model-uri", {}, ["evaluate", "--model-uri", "models:/sin2cos-nope@champion"],
     "cannot load model 'models:/sin2cos-nope@champion'"),
    ("wrong-model-path", {}, ["evaluate", "--model-uri", "{tmp}/no-model"],
     "cannot load model"),
    ("input-4d", {"x.npy": np.zeros((2, 3, 1, 1), np.float32)},
     ["evaluate", "--model-uri", "runs:/none/model", "--input", "{tmp}/x.npy"],
     "input must be shaped (batch, T, 1) with T >= 1, got (2, 3, 1, 1)"),
    ("input-two-features", {"x.npy": np.zeros((2, 3, 2))},
     ["evaluate", "--model-uri", "runs:/none/model", "--input", "{tmp}/x.npy"],
     "got (2, 3, 2)"),
    ("input-not-numbers", {"x.json": [["a", "b"]]},
     ["evaluate", "--model-uri", "runs:/none/model", "--input", "{tmp}/x.json"],
     "input must be numeric"),
    ("input-missing-file", {},
     ["evaluate", "--model-uri", "runs:/none/model", "--input", "{tmp}/none.npy"],
     "cannot read"),
    # issue 10: accepted before, then failing late (or never) after runs or studies existed
    ("unscorable-set", {}, ["tune", "--set", "data.val.seq_len=2"],
     "data.val: set 'val' has 2 points per window, not more than data.warmup = 2"),
    ("section-as-field", {}, ["tune", "--set", "study=5"],
     "study is a section, not a field: set one of study.cells"),
    ("duplicate-section", {"dup.yaml": "train:\n  lr: 0.1\ntrain:\n  steps: 3\n"},
     ["tune", "--config", "{tmp}/dup.yaml"], "key 'train' given twice (line 3)"),
    ("duplicate-key", {"dup.yaml": "study:\n  lr: [0.1, 0.2]\n  lr: [0.1, 0.3]\n"},
     ["tune", "--config", "{tmp}/dup.yaml"], "key 'lr' given twice (line 3)"),
    ("not-utf8", {"latin.yaml": "study:\n  name: caf\xe9\n".encode("latin-1")},
     ["tune", "--config", "{tmp}/latin.yaml"], "not UTF-8 text"),
    ("huge-hidden-range", {}, ["tune", "--set", "study.space.model.hidden_size.high=1e9"],
     "study.space.model.hidden_size must stay within [1, 4096]"),
    ("reserved-alias", {}, ["tune", "--set", "tracking.alias=latest"],
     "tracking.alias: MLflow's registry refuses 'latest'"),
    ("version-alias", {}, ["train", "--register", "--set", "tracking.alias=v1"],
     "tracking.alias: MLflow's registry refuses 'v1'"),
    ("slash-in-prefix", {}, ["tune", "--set", "tracking.registry_prefix=team/x"],
     "tracking.registry_prefix: MLflow's registry refuses 'team/x-rnn'"),
    ("tutorial-config-missing", {}, ["tune", "--set", "report.tutorial_config=nope.yaml"],
     "report.tutorial_config 'nope.yaml' does not exist"),
    ("in-memory-storage", {}, ["tune", "--storage", "sqlite://"], "names no database file"),
    ("journal-folder-missing", {}, ["tune", "--storage", "journal://{tmp}/no/such/j.log"],
     "study.storage: folder {tmp}/no/such does not exist"),
    ("plot-folder-missing", {},
     ["evaluate", "--model-uri", "models:/x@champion", "--plot", "{tmp}/no/x.png"],
     "--plot: folder {tmp}/no does not exist"),
    ("s3-without-boto3", {}, ["evaluate", "--model-uri", "s3://bucket/model"],
     "the s3:// scheme needs the package 'boto3', which is not installed"),
]


def _write(tmp_path: Path, files: dict) -> None:
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, np.ndarray):
            np.save(path, content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif name.endswith(".json"):
            path.write_text(json.dumps(content))
        else:
            path.write_text(content)


def run_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` in tmp_path with its own stores; smoke config by default."""
    if "--config" not in args:
        args = [args[0], "--config", SMOKE, *args[1:]]
    if args[0] == "tune" and "--storage" not in args:
        args = [*args, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    return subprocess.run([sys.executable, "-m", "pipeline", "-q", *args], cwd=tmp_path,
                          env={**subprocess_env(tmp_path), **env}, capture_output=True, text=True,
                          timeout=120)


def _count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name=?",
                             (table,)).fetchone()
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] if found else 0


def assert_refused(done: subprocess.CompletedProcess, fragment: str, tmp_path: Path) -> None:
    """One line on stderr naming the problem, exit status 2, no traceback, nothing created."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert _count(tmp_path / "mlflow.db", "runs") == 0
    assert _count(tmp_path / "optuna.db", "studies") == 0


@pytest.mark.parametrize(("files", "args", "fragment"), [case[1:] for case in TABLE],
                         ids=[case[0] for case in TABLE])
def test_bad_input_is_refused_in_one_line(files, args, fragment, tmp_path, _empty_store):
    # A migrated empty store: a CLI that reaches it (wrong model URI) need not build one
    # first (seconds), and "no run created" is still checked on it.
    if "s3://bucket/model" in args and importlib.util.find_spec("boto3"):
        pytest.skip("boto3 is installed here: the s3:// scheme is usable")
    copy_store(_empty_store, tmp_path)
    _write(tmp_path, files)
    port = free_port()  # nothing listens there
    args = [a.format(tmp=tmp_path, port=port) for a in args]
    done = run_cli(args, tmp_path)
    assert_refused(done, fragment.format(port=port, tmp=tmp_path), tmp_path)
    assert SECRET not in done.stdout + done.stderr


def test_unreachable_tracking_server_is_reported_before_training(tmp_path):
    port = free_port()
    uri = f"http://cellstudy:{SECRET}@127.0.0.1:{port}"
    done = run_cli(["tune"], tmp_path, MLFLOW_TRACKING_URI=uri)
    assert_refused(done, "cannot reach the MLflow tracking store http://cellstudy:***@", tmp_path)
    assert SECRET not in done.stdout + done.stderr
    assert not (tmp_path / "optuna.db").exists()  # refused before the storage was touched


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="this machine has CUDA")
def test_cuda_without_cuda_creates_no_tracking_store(tmp_path):
    """Before: the device was checked after the tracking store had been made (an empty
    mlflow.db was left behind)."""
    for command in (["tune", "--device", "cuda"], ["train", "--device", "cuda"]):
        done = run_cli(command, tmp_path)
        assert_refused(done, "train.device 'cuda' asked for, but torch sees no CUDA device",
                       tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory, _empty_store) -> str:
    """A logged model (untrained weights: the shapes are what is tested) in its own store."""
    import mlflow

    from pipeline.config import ModelConfig, to_dict
    from pipeline.tracking import Tracker
    from pipeline.train import build_model

    root = tmp_path_factory.mktemp("model")
    uri = copy_store(_empty_store, root)
    mlflow.set_tracking_uri(uri)
    cwd = os.getcwd()
    os.chdir(root)  # the store's default artifact root is ./mlruns
    try:
        tracker = Tracker("shapes")
        run_id = tracker.start_run("shapes")
        cfg = ModelConfig(cell="gru", hidden_size=4)
        tracker.log_checkpoint(run_id, build_model(cfg).state_dict(), to_dict(cfg))
        model = tracker.log_model(run_id)
    finally:
        mlflow.set_tracking_uri(None)
        os.chdir(cwd)
    return f"{uri}|{model}|{root}"


CONVERTED = [
    ("2d.npy", np.zeros((3, 7)), (3, 7, 1)),
    ("float64.npy", np.sin(np.linspace(0, 3, 10))[None, :, None], (1, 10, 1)),
    ("list.json", [[0.0, 0.3, 0.6], [0.1, 0.2, 0.3]], (2, 3, 1)),
]


@pytest.mark.slow
def test_evaluate_converts_unambiguous_input(model_uri, tmp_path):
    """A (batch, T) array, float64 and a nested list are read as (batch, T, 1) float32. One
    real CLI run end to end (MLflow's import and the model's load take seconds each time); the
    other files go through the same function, ``cli._predict_file``, in this process."""
    from pipeline import cli

    store, uri, root = model_uri.split("|")
    _write(tmp_path, {name: content for name, content, _ in CONVERTED})
    first, *rest = CONVERTED
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "-q", "evaluate", "--model-uri", uri,
         "--input", str(tmp_path / first[0]), "--output", str(tmp_path / "y0.npy")],
        cwd=root, env={**subprocess_env(tmp_path), "MLFLOW_TRACKING_URI": store},
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    import mlflow

    mlflow.set_tracking_uri(store)
    try:
        for i, (name, _, _) in enumerate(rest, 1):
            assert cli._predict_file(uri, str(tmp_path / name), str(tmp_path / f"y{i}.npy")) == 0
    finally:
        mlflow.set_tracking_uri(None)
    for i, (name, _, shape) in enumerate(CONVERTED):
        y = np.load(tmp_path / f"y{i}.npy")
        assert y.shape == shape and y.dtype == np.float32 and np.isfinite(y).all(), name
