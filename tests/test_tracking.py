"""The tracker (pipeline/tracking.py), the one module that talks to MLflow: runs ended with the
status they earned, resumed, failed from outside, scores read back, metrics batched, models
promoted only when they load; provenance on runs made through the client, live metrics,
datasets, descriptions, and a logged model that ships only its serving code."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT, is_held
from matplotlib.figure import Figure
from mlflow import MlflowClient

from pipeline.config import ModelConfig, to_dict
from pipeline.data import make_eval_set
from pipeline.plots import DRAWING
from pipeline.tracking import Tracker
from pipeline.train import build_model, fit


@pytest.fixture
def tracker(tracking_store):
    return Tracker("tracking", entry_point="python -m pipeline tune")


@pytest.mark.parametrize(("raised", "status", "tag"), [
    (None, "FINISHED", None), (ValueError("bad"), "FAILED", "failure_reason"),
    (KeyboardInterrupt("SIGINT"), "KILLED", "interrupted_reason")])
def test_a_run_block_ends_with_the_status_it_earned(tracker, raised, status, tag):
    ids = []
    with pytest.raises(type(raised)) if raised else contextlib.nullcontext():
        with tracker.run("r", tags={"cellstudy.level": "x"}) as run_id:
            ids.append(run_id)
            if raised:
                raise raised
    run = MlflowClient().get_run(ids[0])
    assert run.info.status == status and run.data.tags["cellstudy.level"] == "x"
    if tag:
        assert str(raised) in run.data.tags[tag]


def test_a_nested_run_names_its_parent(tracker):
    with tracker.run("parent") as parent, tracker.run("child", parent) as child:
        pass
    assert MlflowClient().get_run(child).data.tags["mlflow.parentRunId"] == parent


def test_resume_and_fail_from_outside(tracker):
    with tracker.run("study") as run_id:
        pass
    tracker.resume_run(run_id)
    assert MlflowClient().get_run(run_id).info.status == "RUNNING"
    tracker.fail_run(run_id, "worker lost")
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == "worker lost"


def test_scores_are_the_test_metrics_read_back(tracker):
    run_id = tracker.start_run("best")
    tracker.log_metrics(run_id, {"test/mse": 0.1, "test/a/mse": 0.2, "val/mse_best": 0.05,
                                 "test/nan": float("nan")})
    assert tracker.scores(run_id) == {"test/mse": 0.1, "test/a/mse": 0.2}


def test_the_metric_buffer_writes_every_step_in_one_flush(tracker):
    run_id = tracker.start_run("buffered")
    buffer = tracker.metric_buffer(run_id)
    for step in (10, 20, 30):
        buffer(step, {"val/mse": 1.0 / step, "train/loss": 2.0 / step})
    assert not MlflowClient().get_metric_history(run_id, "val/mse")  # nothing written yet
    buffer.flush()
    buffer.flush()  # safe twice
    history = MlflowClient().get_metric_history(run_id, "val/mse")
    assert [m.step for m in history] == [10, 20, 30]


def test_a_checkpoint_comes_back_as_it_went(tracker):
    cfg = ModelConfig(cell="gru", hidden_size=4)
    state = build_model(cfg).state_dict()
    run_id = tracker.start_run("ckpt")
    tracker.log_checkpoint(run_id, state, to_dict(cfg))
    loaded, model_cfg = tracker.load_checkpoint(run_id)
    assert model_cfg == to_dict(cfg)
    assert all((loaded[k] == v).all() for k, v in state.items())


def _checkpoint_run(tracker: Tracker, weights_cfg: ModelConfig, claimed_cfg: ModelConfig) -> str:
    run_id = tracker.start_run("ckpt")
    tracker.log_checkpoint(run_id, build_model(weights_cfg).state_dict(), to_dict(claimed_cfg))
    return run_id


def test_alias_never_points_at_a_model_that_does_not_load(tracking_store):
    tracker = Tracker("promote")
    good = ModelConfig(cell="lstm", hidden_size=4)
    v1, moved = tracker.promote("m", tracker.log_model(_checkpoint_run(tracker, good, good)),
                                0.5, "champion", {})
    assert moved
    # Weights of one size under a config of another: logs fine, fails to load.
    broken = _checkpoint_run(tracker, ModelConfig(cell="lstm", hidden_size=6), good)
    with pytest.raises(Exception, match="size mismatch"):
        tracker.promote("m", tracker.log_model(broken), 0.1, "champion", {})
    assert str(tracker.champion("m", "champion").version) == str(v1)
    versions = [str(v.version) for v in MlflowClient().search_model_versions("name='m'")]
    assert versions == [str(v1)], "the broken version is not left behind, half-registered"


def test_runs_made_through_the_client_say_where_they_come_from(tracker):
    tags = MlflowClient().get_run(tracker.start_run("r")).data.tags
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] and tags["mlflow.user"]
    assert tags["mlflow.project.entryPoint"] == "python -m pipeline tune"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True).stdout
    assert tags["mlflow.source.git.dirty"] == str(bool(dirty.strip())).lower()


def test_runs_under_mlflow_run_carry_the_projects_source(tracking_store, monkeypatch):
    """What `mlflow run` leaves: a project run whose source is the project; nested runs say
    the same instead of naming this process's entry file."""
    client = mlflow.MlflowClient()
    exp = client.create_experiment("proj")
    project = client.create_run(exp, tags={"mlflow.source.type": "PROJECT",
                                           "mlflow.source.name": "file:///repo",
                                           "mlflow.project.entryPoint": "main"}).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    tracker = Tracker("ignored", entry_point="python -m pipeline tune")
    child = MlflowClient().get_run(tracker.start_run("study", parent_run_id=project)).data.tags
    assert child["mlflow.source.type"] == "PROJECT"
    assert child["mlflow.source.name"] == "file:///repo"
    assert child["mlflow.project.entryPoint"] == "main"


def test_metrics_reach_the_store_while_training(tracker, tiny_cfg):
    run_id = tracker.start_run("live")
    buffer = tracker.metric_buffer(run_id, every=0)
    seen: list[int] = []

    def probe(step: int, metrics: dict[str, float]) -> None:
        # Runs after the buffer, while fit goes on: what a user watching the UI would see.
        seen.append(len(MlflowClient().get_metric_history(run_id, "val/mse")))

    fit(tiny_cfg, callbacks=[buffer, probe])
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 2


def test_buffered_metrics_wait_for_the_interval_or_a_flush(tracker):
    run_id = tracker.start_run("buffered")
    buffer = tracker.metric_buffer(run_id, every=3600)
    buffer(1, {"val/mse": 0.5})
    assert not MlflowClient().get_metric_history(run_id, "val/mse")
    buffer.flush()
    assert [m.value for m in MlflowClient().get_metric_history(run_id, "val/mse")] == [0.5]


def test_datasets_are_logged_with_their_digests(tracker, tiny_cfg):
    val = make_eval_set(tiny_cfg.data, tiny_cfg.data.val)
    run_id = tracker.start_run("data")
    tracker.log_datasets(run_id, {"val": (val.x, val.y)}, "validation")
    (logged,) = MlflowClient().get_run(run_id).inputs.dataset_inputs
    expected = mlflow.data.from_numpy(val.x, targets=val.y).digest
    assert (logged.dataset.name, logged.dataset.digest) == ("val", expected)
    assert [(t.key, t.value) for t in logged.tags] == [("mlflow.data.context", "validation")]
    other = make_eval_set(tiny_cfg.data, tiny_cfg.data.tests[0])
    assert mlflow.data.from_numpy(other.x, targets=other.y).digest != expected


def test_descriptions_land_where_the_ui_shows_them(tracker):
    run_id = tracker.start_run("described")
    tracker.describe(run_id, "**hello**")
    assert MlflowClient().get_run(run_id).data.tags["mlflow.note.content"] == "**hello**"


def _logged_model(tracker: Tracker) -> str:
    cfg = ModelConfig(cell="gru", hidden_size=4)
    run_id = tracker.start_run("ckpt")
    tracker.log_checkpoint(run_id, build_model(cfg).state_dict(), to_dict(cfg))
    return tracker.log_model(run_id, name="gru-trial-3")


def test_a_logged_model_ships_only_its_serving_code_under_its_own_name(tracker, tmp_path):
    uri = _logged_model(tracker)
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model"))
    shipped = sorted(p.relative_to(f"{local}/code").as_posix()
                     for p in Path(local, "code").rglob("*.py"))
    assert shipped == ["cellstudy_sin2cos/__init__.py", "cellstudy_sin2cos/inputs.py",
                       "cellstudy_sin2cos/model.py"]
    (model,) = MlflowClient().search_logged_models([tracker.experiment_id])
    assert model.name == "gru-trial-3"

    # Where another project's `pipeline` package is already imported (a serving process, a
    # notebook), the model still loads: it needs nothing called `pipeline`.
    other = tmp_path / "other"
    (other / "pipeline").mkdir(parents=True)
    (other / "pipeline" / "__init__.py").write_text("OWNER = 'another project'\n")
    code = ("import pipeline; assert pipeline.OWNER == 'another project'; "
            f"import mlflow, numpy as np; m = mlflow.pyfunc.load_model({local!r}); "
            "print(m.predict(np.zeros((2, 5, 1), np.float32)).shape)")
    env = {**os.environ, "PYTHONPATH": str(other)}
    out = subprocess.run([sys.executable, "-c", code], cwd=other, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(2, 5, 1)")


def test_a_registered_model_and_its_version_get_descriptions(tracker):
    version, _ = tracker.promote("described", _logged_model(tracker), 0.1, "champion", {})
    tracker.describe_model("described", "what it maps")
    tracker.describe_model("described", "trial 3", version)
    assert MlflowClient().get_registered_model("described").description == "what it maps"
    assert MlflowClient().get_model_version("described", version).description == "trial 3"


def test_the_registered_models_description_says_its_contract_and_warm_up() -> None:
    from pipeline.tracking import model_description

    model = model_description("lstm", "sin2cos-lstm", "champion", warmup=2)
    assert "(batch, T, 1)" in model and "models:/sin2cos-lstm@champion" in model
    assert "mlflow models serve" in model
    assert "first 2 points of a window are not scored" in model


def test_warm_up_does_a_workers_first_store_and_model_log_work_ahead(tmp_path):
    """In a fresh interpreter, as a worker waiting for the parent: the SQL store's modules
    are imported and the installed-distribution map log_model consults is filled."""
    import subprocess
    import sys

    from conftest import subprocess_env

    probe = ("import sys; from pipeline import tracking; tracking.warm_up(); "
             "from mlflow.utils import requirements_utils as r; "
             "print('mlflow.store.tracking.sqlalchemy_store' in sys.modules, "
             "'mlflow.store.model_registry.sqlalchemy_store' in sys.modules, "
             "bool(r._MODULES_TO_PACKAGES) and 'torch' in r._MODULES_TO_PACKAGES)")
    out = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(tmp_path),
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "True", "True"], out.stderr


def test_workers_logging_the_same_new_dataset_at_once_both_succeed(tracking_store):
    """Measured on the H200 host: two workers reached their first tutorial runs together and
    one died on "UNIQUE constraint failed: datasets.experiment_id, datasets.name,
    datasets.digest" (MLflow looks the dataset up, then inserts it: two inserts race)."""
    import threading

    import numpy as np

    trackers = [Tracker("datasets") for _ in range(2)]
    errors: list[BaseException] = []
    for round_ in range(8):  # a new dataset each round: each round is a fresh race
        x = np.full((4, 5, 1), round_, dtype=np.float32)
        runs = [t.start_run(f"r{round_}-{i}") for i, t in enumerate(trackers)]
        barrier = threading.Barrier(2)

        def log(t: Tracker, run_id: str, x=x, barrier=barrier) -> None:
            barrier.wait()
            try:
                t.log_datasets(run_id, {"val": (x, x)}, "validation")
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=log, args=(t, r))
                   for t, r in zip(trackers, runs, strict=True)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for run_id in runs:
            (logged,) = MlflowClient().get_run(run_id).inputs.dataset_inputs
            assert logged.dataset.name == "val"
    assert not errors, errors[0]


@pytest.mark.parametrize("background", [False, True])
def test_figures_are_built_and_drawn_holding_the_drawing_lock(tracker, background):
    # matplotlib is not thread-safe: a trial's figure drawn while a study's Optuna plots were
    # drawn in another thread failed a study (plots.DRAWING).
    held = []

    def build() -> Figure:
        held.append(is_held(DRAWING))
        fig = Figure()
        fig.add_subplot().semilogy([1, 2], [0.01, 0.1])  # tick labels through mathtext
        return fig

    with tracker.run("figure") as run_id:
        tracker.log_figure(run_id, build, "plots/f.png", background=background)
        tracker.wait_for_figures()
    assert held == [True]
    paths = [f.path for f in MlflowClient().list_artifacts(run_id, "plots")]
    assert paths == ["plots/f.png"]


@pytest.mark.parametrize("path", ["top.png", "report/deep/f.png"])
def test_a_rendered_png_is_logged_byte_for_byte_where_it_is_named(tracker, tmp_path, path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # the report's figures, drawn once
    with tracker.run("png") as run_id:
        tracker.log_png(run_id, png, path)
    assert Path(MlflowClient().download_artifacts(run_id, path, str(tmp_path))).read_bytes() \
        == png


def test_the_tracking_module_loads_without_matplotlib_or_torch():
    # The store checks of a refused command and `evaluate`'s model load import it: the plots'
    # lock comes with the first figure, not with the module (about 1.5 s of imports).
    code = ("import sys; import pipeline.tracking; "
            "print(sorted({'torch', 'matplotlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
