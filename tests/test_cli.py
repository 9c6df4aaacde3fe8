"""The command line as a user runs it: fast help, clear one-line errors, a real train run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, subprocess_env


def _run(args, tmp_path, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=tmp_path,
                          env=subprocess_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_help_imports_no_heavy_library():
    # `--help` must answer fast: importing mlflow.pytorch alone takes seconds.
    code = ("import sys; from pipeline.cli import build_parser; build_parser(); "
            "heavy = {'torch', 'mlflow', 'optuna', 'matplotlib'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [[], ["tune"], ["train"], ["evaluate"]])
def test_help_of_every_command(command):
    out = subprocess.run([sys.executable, "-m", "pipeline", *command, "--help"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "usage: python -m pipeline" in out.stdout


@pytest.mark.parametrize("args, fragment", [
    (["tune", "--cells", "rnn,transformer"], "unknown cell 'transformer'"),
    (["tune", "--n-trials", "-2"], "n_trials must be positive"),
    (["tune", "--config", "missing.yaml"], "config file not found"),
    (["tune", "--set", "study.space.train.lr.high=1e-5"],
     "study.space.train.lr: range is reversed"),
    (["tune", "--set", "train.lr=0.01"], "train.lr is searched by study.space"),
    (["tune", "--set", "train.lrr=1"], "unknown key 'train.lrr'"),
    (["tune", "--storage", "redis://localhost/0"], "unknown storage scheme"),
    (["train", "--hidden-size", "0"], "model.hidden_size must be positive"),
])
def test_bad_input_gets_one_line_and_creates_nothing(tmp_path, args, fragment):
    args = [a.replace("missing.yaml", str(tmp_path / "missing.yaml")) for a in args]
    if "--config" not in args:
        args += ["--config", str(ROOT / "experiments" / "smoke.yaml")]
    args += ["--storage", f"sqlite:///{tmp_path}/optuna.db"] if "--storage" not in args and \
        args[0] == "tune" else []
    out = _run(args, tmp_path)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert not (tmp_path / "optuna.db").exists()
    assert not (tmp_path / "mlflow.db").exists()  # not even an empty tracking store


def test_train_then_evaluate_through_the_cli(tmp_path):
    smoke = str(ROOT / "experiments" / "smoke.yaml")
    out = _run(["-q", "train", "--config", smoke, "--cell", "gru", "--hidden-size", "8",
                "--lr", "0.02", "--register"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "registered sin2cos-gru v1 as @champion" in out.stdout
    plot = tmp_path / "eval.png"
    out = _run(["-q", "evaluate", "--model-uri", "models:/sin2cos-gru@champion", "--config",
                smoke, "--data", "all", "--plot", str(plot)], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()[1:]
             if line and not line.startswith("plot")}
    assert set(lines) == {"val", "in_dist", "wide_step", "tutorial"}
    model, zero, rule = (float(v) for v in lines["val"])
    assert rule < 1e-6 < model < zero  # trained a little: between the two references
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_unknown_model_is_one_line(tmp_path):
    out = _run(["evaluate", "--model-uri", "models:/nope@champion", "--config",
                str(ROOT / "experiments" / "smoke.yaml")], tmp_path)
    assert out.returncode == 2 and "cannot load model 'models:/nope@champion'" in out.stderr
    assert "Traceback" not in out.stderr


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "mlflow run . --env-manager local" in readme
    assert "python -m pytest" in readme
    assert "python -m pytest" in Path(ROOT / ".ci" / "run").read_text()


def test_tune_prints_each_log_line_once(tmp_path):
    """Optuna's progress bar turns Optuna's own handler back on when it closes; its lines
    (``[I 2026-...] ...``) would then repeat every ``INFO optuna...`` line the CLI prints."""
    out = _run(["tune", "--config", str(ROOT / "experiments" / "smoke.yaml"), "--cells", "rnn",
                "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                "--set", "study.n_trials=2", "--set", "train.steps=10",
                "--set", "report.tutorial_seeds=0"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split("\r")[-1] for line in out.stderr.splitlines()]
    assert any(line.startswith("INFO optuna") for line in lines)  # logged, through the CLI
    optunas_own = [line for line in lines if line[:3] in ("[I ", "[W ", "[E ")]
    assert not optunas_own, optunas_own


@pytest.mark.parametrize("config, layout", [
    ("default", (2, 1)),   # 180 000 steps: a process per core
    ("tutorial", (2, 1)),  # 75 short runs: their bookkeeping is what a second process shares
    ("smoke", (1, 1)),     # 21 runs of 30 steps: a second anything costs more than it wins
])
def test_auto_picks_the_layout_measured_best_for_each_shipped_config(monkeypatch, config,
                                                                     layout):
    # bench/crossover.py on the idle 2-core machine (docs/performance.md): these are the
    # fastest of 1 x 1, 1 x 2 and 2 x 1 there; `auto` must read them from the config.
    from pipeline import cli, workers
    from pipeline.config import load_config

    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    monkeypatch.setattr(workers, "busy_cores", lambda *args, **kwargs: 0.0)  # idle
    cfg = load_config(ROOT / "experiments" / f"{config}.yaml", {"train.device": "cpu"})
    assert cli._n_workers("auto", "auto", cfg) == layout
