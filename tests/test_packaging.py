"""Packaging: one list of dependencies, in pyproject.toml, and conda.yaml agrees with it."""

from __future__ import annotations

import tomllib
import yaml
from conftest import ROOT


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_conda_yaml_pip_list_equals_pyproject_dependencies():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_lists = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict)]
    assert len(pip_lists) == 1
    norm = lambda specs: sorted(s.replace(" ", "") for s in specs)  # noqa: E731
    assert norm(pip_lists[0]) == norm(_pyproject()["project"]["dependencies"])


def test_conda_python_is_pinned_to_a_full_version():
    # `mlflow run --env-manager virtualenv` asks pyenv for exactly this version.
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    python = [d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1 and python[0].count(".") == 2


def test_core_dependencies_are_the_few_we_name():
    names = {d.split("=")[0].split(">")[0].split("<")[0]
             for d in _pyproject()["project"]["dependencies"]}
    assert {"torch", "numpy", "matplotlib", "mlflow", "optuna", "pyyaml"} <= names
    assert "plotly" not in names


def test_system_metrics_dependencies_are_in_both_environments():
    """MLflow's system metrics need psutil (CPU, memory) and nvidia-ml-py (GPU): the conda
    environment of `mlflow run .` must have them as the venv does."""
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    (pip_list,) = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict)]
    for deps in (pip_list, _pyproject()["project"]["dependencies"]):
        names = {d.split("=")[0].split(">")[0].split("<")[0] for d in deps}
        assert {"psutil", "nvidia-ml-py"} <= names


def test_mlproject_entry_points():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    points = project["entry_points"]
    assert {"main", "tune", "train", "evaluate"} <= set(points)
    assert set(points["main"]["parameters"]) == {"n_trials", "cells", "device", "workers",
                                                 "trials_at_once"}


def test_mlproject_parameters_are_typed_with_real_defaults():
    """Nothing is logged as '': every declared parameter has a value, and `main`'s are the
    values of the config it runs, so its logged params say what the job did."""
    from pipeline.config import load_config

    points = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    for point in points.values():
        for name, spec in point["parameters"].items():
            assert spec["type"] in {"int", "float", "string"} and spec["default"] != "", name
    cfg = load_config(ROOT / "experiments" / "default.yaml")
    main = {k: v["default"] for k, v in points["main"]["parameters"].items()}
    assert "--config experiments/default.yaml" in points["main"]["command"]
    # workers and trials_at_once are how the job runs, not what it computes: no config field
    # holds them.
    assert main == {"n_trials": cfg.study.n_trials, "cells": ",".join(cfg.study.cells),
                    "device": cfg.train.device, "workers": "auto", "trials_at_once": "auto"}
    assert "--workers {workers}" in points["main"]["command"]
    assert "--trials-at-once {trials_at_once}" in points["main"]["command"]
    train = points["train"]["parameters"]
    assert (train["hidden_size"]["default"], train["lr"]["default"]) == (
        cfg.model.hidden_size, cfg.train.lr)


def test_generated_stores_are_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"mlflow.db", "optuna.db", "mlruns/", "mlartifacts/"} <= set(ignored)


def _imports(name: str) -> set[str]:
    """The top-level packages a module of the pipeline imports, anywhere in it."""
    import ast

    tree = ast.parse((ROOT / "pipeline" / f"{name}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


def _core_modules() -> list[str]:
    """The modules the package docstring names as core."""
    import pipeline

    text = pipeline.__doc__
    core = text[text.index("Core"):text.index("Edges")]
    return core.split("``")[1::2]


def test_core_imports_neither_mlflow_nor_optuna():
    core = _core_modules()
    assert {"config", "data", "model", "train", "plots", "metrics"} <= set(core)
    for name in core:
        assert not _imports(name) & {"mlflow", "optuna"}, name


def test_only_tracking_and_serving_import_mlflow_only_tuning_optuna():
    modules = sorted(p.stem for p in (ROOT / "pipeline").glob("*.py"))
    assert [m for m in modules if "mlflow" in _imports(m)] == ["serving", "tracking"]
    assert [m for m in modules if "optuna" in _imports(m)] == ["tuning"]
    for name in modules:  # the tracker's client is its own: nobody else reaches MLflow
        if name != "tracking":
            text = (ROOT / "pipeline" / f"{name}.py").read_text()
            assert ".client" not in text and "MlflowClient" not in text, name


def test_the_package_map_names_every_module():
    import pipeline

    modules = {p.stem for p in (ROOT / "pipeline").glob("*.py")} - {"__init__", "__main__"}
    named = {w.strip("`,.:") for w in pipeline.__doc__.replace("``", " ").split()}
    assert modules <= named, sorted(modules - named)


def test_code_passes_ruff():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ruff", "check", "pipeline", "tests", "bench"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:]
