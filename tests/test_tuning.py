"""Studies into a throw-away store: nesting, metrics, artifacts, statuses, resume, registry."""

from __future__ import annotations

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from conftest import is_held
from mlflow import MlflowClient
from optuna.visualization import matplotlib as ovm

from pipeline import tuning
from pipeline.plots import DRAWING
from pipeline.tracking import Tracker
from pipeline.train import resolve_device

CELLS = ("rnn", "lstm", "gru")


def _study(cfg, tracker, cell, job_run):
    return tuning.run_study(cfg, cell, tracker, job_run)


def _runs(client, tracker, level):
    return client.search_runs([tracker.experiment_id],
                              filter_string=f"tags.`cellstudy.level` = '{level}'")


@pytest.fixture
def tracker(tracking_store):
    return Tracker("test")


@pytest.mark.parametrize("cell", CELLS)
def test_a_tiny_study_per_cell_is_tracked_three_deep(tiny_cfg, tracker, tmp_path, cell):
    cfg = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/optuna.db"})
    job, _ = tracker.job_run_id("job")
    outcome = _study(cfg, tracker, cell, job)
    client = MlflowClient()

    study_runs = _runs(client, tracker, "study")
    assert len(study_runs) == 1
    study_run = study_runs[0]
    assert study_run.data.tags["mlflow.parentRunId"] == job
    assert study_run.info.status == "FINISHED"

    trials = _runs(client, tracker, "trial")
    assert len(trials) == cfg.study.n_trials
    study = optuna.load_study(study_name=f"{cfg.study.name}-{cell}", storage=cfg.study.storage)
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        trial = by_run[run.info.run_id]  # the trial stores the run id ...
        assert run.data.tags["optuna.trial_number"] == str(trial.number)  # ... and vice versa
        # The searched values and the cell, as numbers that compare; not the whole config.
        assert run.data.params["model.cell"] == cell
        assert set(run.data.params) == {"model.cell", "model.hidden_size", "train.lr"}
        assert not {"hidden_size", "lr"} & set(run.data.params)  # one name per quantity
        trial_values = {k: str(v) for k, v in trial.params.items()}
        assert {k: run.data.params[k] for k in trial_values} == trial_values
        config = yaml.safe_load(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml"))
        assert config["model"]["hidden_size"] == trial.params["model.hidden_size"]
        assert config["train"]["steps"] == cfg.train.steps
        assert "val" in {d.dataset.name for d in run.inputs.dataset_inputs}
        assert run.data.tags["mlflow.source.type"] == "LOCAL" and "mlflow.user" in run.data.tags
        assert run.data.tags["device"] == str(resolve_device("auto"))  # cuda where present
        history = client.get_metric_history(run.info.run_id, "val/mse")
        assert history and history[0].step == 10
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == len(history)
        if run.info.status == "FINISHED":
            assert [m.step for m in history] == [10, 20]
            assert "val/mse_best" in run.data.metrics
            files = {f.path for f in client.list_artifacts(run.info.run_id)}
            assert "val_predictions.png" in files  # top level: the compare view shows it

    best = study.best_trial
    assert outcome.best_trial == best.number
    best_run = client.get_run(best.user_attrs["mlflow_run_id"])
    assert "test/mse" in best_run.data.metrics  # the best model is tested...
    tested = [r for r in trials if "test/mse" in client.get_run(r.info.run_id).data.metrics]
    assert len(tested) == 1  # ... and only the best one
    plots = {f.path for f in client.list_artifacts(study_run.info.run_id, "plots")}
    assert "plots/optimization_history.png" in plots
    assert study_run.data.tags["best_run_id"] == best_run.info.run_id
    assert study_run.data.tags["train.lr"] == str(best.params["train.lr"])  # the same name
    assert study_run.info.run_name.startswith(f"{cell}-")  # the cell leads: names are cut
    assert study_run.data.params["search.train.lr.log"] == "True"
    assert float(study_run.data.params["search.model.hidden_size.high"]) == \
        cfg.study.space["model.hidden_size"].high
    assert f"**{cell} study**" in study_run.data.tags["mlflow.note.content"]
    assert {d.dataset.name for d in best_run.inputs.dataset_inputs} == {
        "val", *(t.name for t in cfg.data.tests)}

    champion = client.get_model_version_by_alias(f"sin2cos-{cell}", "champion")
    assert champion.run_id == best_run.info.run_id
    assert float(champion.tags["val_mse"]) == pytest.approx(best.value)
    assert {"test_mse_this_model", "study", "run_id"} <= set(champion.tags)
    assert champion.description.startswith(f"Trial {best.number} of study ")
    assert "pyfunc contract" in client.get_registered_model(f"sin2cos-{cell}").description
    (logged,) = client.search_logged_models([tracker.experiment_id])  # not in Default
    assert logged.name == f"{cell}-trial-{best.number}"


def test_pruned_trials_end_killed_and_diverged_ones_failed(tiny_cfg, tracker, tmp_path):
    cfg = tiny_cfg.replace({
        "study.storage": f"sqlite:///{tmp_path}/optuna.db", "study.n_trials": 3,
        "study.space.train.lr.low": 1e-4, "study.space.train.lr.high": 1e38,
        "study.pruner_startup_trials": 1,
        "study.pruner_warmup_steps": 0, "train.grad_clip": 0, "train.steps": 30,
    })
    study = tuning.open_study(cfg, "gru")
    study.enqueue_trial({"model.hidden_size": 16, "train.lr": 0.03})    # learns: completes
    study.enqueue_trial({"model.hidden_size": 4, "train.lr": 1e-4})     # barely moves: pruned
    study.enqueue_trial({"model.hidden_size": 4, "train.lr": 1e30})     # blows up: failed
    job, _ = tracker.job_run_id("job")
    _study(cfg, tracker, "gru", job)

    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                      optuna.trial.TrialState.FAIL]
    client = MlflowClient()
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
    assert [r.info.status for r in runs] == ["FINISHED", "KILLED", "FAILED"]
    assert "pruned at step" in runs[1].data.tags["pruned_reason"]
    assert runs[1].data.tags["cellstudy.pruned"] == "true"  # the UI shows KILLED: say why
    pruned_files = {f.path for f in client.list_artifacts(runs[1].info.run_id)}
    assert "val_predictions.png" in pruned_files  # the state it reached
    assert "DivergedError" in runs[2].data.tags["failure_reason"]
    assert tuning.FAIL_ATTR in study.trials[2].user_attrs  # counts toward the total


def test_resume_runs_only_the_missing_trials(tiny_cfg, tracker, tmp_path):
    cfg = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/optuna.db",
                            "study.n_trials": 2})
    job, _ = tracker.job_run_id("job")
    _study(cfg, tracker, "rnn", job)
    more = cfg.replace({"study.n_trials": 4})
    _study(more, tracker, "rnn", job)
    _study(more, tracker, "rnn", job)  # already at its total: adds nothing
    study = optuna.load_study(study_name=f"{cfg.study.name}-rnn", storage=cfg.study.storage)
    assert len(study.trials) == 4
    client = MlflowClient()
    assert len(_runs(client, tracker, "study")) == 1  # the study run is found again
    assert len(_runs(client, tracker, "trial")) == 4


def test_alias_moves_only_on_improvement(tiny_cfg, tracker, tmp_path):
    client = MlflowClient()
    name = "sin2cos-lstm"
    job, _ = tracker.job_run_id("job")
    good = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/a.db", "study.name": "a",
                             "study.n_trials": 2, "train.steps": 40})
    first = _study(good, tracker, "lstm", job)
    assert first.champion_moved
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    worse = good.replace({"study.storage": f"sqlite:///{tmp_path}/b.db", "study.name": "b",
                          "train.steps": 10, "train.eval_every": 5,
                          "study.space.train.lr.low": 1e-4, "study.space.train.lr.high": 2e-4})
    second = _study(worse, tracker, "lstm", job)
    assert second.val_mse > first.val_mse and not second.champion_moved
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert second.model_version == "2"  # registered, but not promoted

    better = good.replace({"study.storage": f"sqlite:///{tmp_path}/c.db", "study.name": "c",
                           "train.steps": 120, "train.eval_every": 20})
    third = _study(better, tracker, "lstm", job)
    assert third.val_mse < first.val_mse and third.champion_moved
    assert str(client.get_model_version_by_alias(name, "champion").version) == third.model_version


def test_a_model_worse_than_zero_is_registered_but_refused_the_alias(tiny_cfg, tracker,
                                                                      tmp_path, caplog):
    """An lr of 1e3 trains to garbage (clipping keeps it finite): even as the first model it
    gets a version, tagged with the reason, and no alias; a later sound model gets the alias."""
    client = MlflowClient()
    job, _ = tracker.job_run_id("job")
    bad = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/a.db", "study.name": "a",
                            "study.n_trials": 1,
                            "study.space.train.lr.low": 1e3, "study.space.train.lr.high": 1e4})
    with caplog.at_level("WARNING", logger="pipeline.tracking"):
        outcome = _study(bad, tracker, "rnn", job)
    zero = tuning.zero_reference(bad)
    assert outcome.val_mse >= zero  # the premise: worse than predicting 0
    assert outcome.model_version == "1" and not outcome.champion_moved
    version = client.get_model_version("sin2cos-rnn", "1")
    assert "zero baseline" in version.tags["alias_refused"]
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("sin2cos-rnn", "champion")
    assert any("alias champion not set" in r.getMessage() for r in caplog.records)

    good = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/b.db", "study.name": "b",
                             "study.n_trials": 1, "train.steps": 40})
    second = _study(good, tracker, "rnn", job)
    assert second.val_mse < zero and second.champion_moved
    assert str(client.get_model_version_by_alias("sin2cos-rnn", "champion").version) == "2"


def test_promote_compares_with_the_reference_strictly(tracker, tmp_path, monkeypatch):
    """The seam alone: at or above the reference the alias is never looked at or moved."""
    calls = []
    monkeypatch.setattr(mlflow, "register_model",
                        lambda uri, name, tags: type("V", (), {"version": 7})())
    monkeypatch.setattr(tracker._client, "set_model_version_tag",
                        lambda *a: calls.append(("tag", a)))
    monkeypatch.setattr(tracker, "champion", lambda *a: calls.append(("champion", a)))
    assert tracker.promote("m", "runs:/x/model", 0.5, "champion", {}, reference=0.5) == ("7",
                                                                                          False)
    assert [c[0] for c in calls] == ["tag"]


def test_same_config_twice_gives_the_same_trials(tiny_cfg, tracker, tmp_path):
    """One worker is deterministic: the seeded sampler, data and weights make the same
    trials, pruning decisions and values on fresh stores (what makes results reproducible)."""
    job, _ = tracker.job_run_id("job")
    seen = []
    for name in ("a", "b"):
        cfg = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/{name}.db",
                                "study.name": name, "study.n_trials": 4})
        _study(cfg, tracker, "gru", job)
        study = optuna.load_study(study_name=f"{name}-gru", storage=cfg.study.storage)
        seen.append([(t.state, t.params, t.value, t.intermediate_values) for t in study.trials])
    assert len(seen[0]) == 4 and seen[0] == seen[1]


def test_workers_with_the_same_seed_draw_configurations_of_their_own():
    """Each worker process builds the study's sampler from the same seed. Seeded per trial,
    two workers asking in turn get distinct draws; and a study's n-th trial draws the same
    values whichever worker runs it (one worker stays reproducible)."""
    storage = optuna.storages.InMemoryStorage()
    workers = [optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                   sampler=tuning.TrialSeededTPE(0)) for _ in range(2)]
    asked = []
    for i in range(6):  # within TPE's random start-up, where the seed alone decides
        trial = workers[i % 2].ask()
        asked.append((trial.suggest_int("h", 4, 128, log=True),
                      trial.suggest_float("lr", 1e-3, 1e-1, log=True)))
        workers[i % 2].tell(trial, float(i))
    assert len(set(asked)) == len(asked), asked
    alone = optuna.create_study(sampler=tuning.TrialSeededTPE(0))
    again = []
    for i in range(6):
        trial = alone.ask()
        again.append((trial.suggest_int("h", 4, 128, log=True),
                      trial.suggest_float("lr", 1e-3, 1e-1, log=True)))
        alone.tell(trial, float(i))
    assert again == asked


def test_registered_champion_meets_the_contract(tiny_cfg, tracker, tmp_path):
    cfg = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/optuna.db",
                            "study.n_trials": 1})
    job, _ = tracker.job_run_id("job")
    _study(cfg, tracker, "lstm", job)
    model = mlflow.pyfunc.load_model("models:/sin2cos-lstm@champion")
    for T in (1, 10, 37):
        x = np.sin(np.linspace(0, 3, T, dtype=np.float32))[None, :, None].repeat(2, 0)
        y = model.predict(x)
        assert y.shape == (2, T, 1) and y.dtype == np.float32
        # From a fresh state each call: the first T' outputs do not depend on what follows.
        np.testing.assert_allclose(model.predict(x[:, :1])[:, 0], y[:, 0], rtol=1e-5)
    signature = model.metadata.signature.inputs.inputs[0]
    assert signature.shape == (-1, -1, 1)


@pytest.mark.parametrize("n, has_importances",
                         [(3, False), (tuning.MIN_TRIALS_FOR_IMPORTANCE, True)])
def test_study_figures_are_optunas_own(n, has_importances):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_int("model.hidden_size", 8, 128, log=True)
                   * t.suggest_float("train.lr", 1e-3, 1e-1, log=True), n_trials=n)
    study.set_metric_names(["val/mse_best"])
    figures = tuning.study_figures(study, "gru")
    paths = [path for path, _ in figures]
    for _, fig in figures:  # titled with the cell, the value axis named after the metric
        texts = [t.get_text() for ax in fig.axes for t in (ax.title, ax._left_title,
                                                           ax.yaxis.label, ax.xaxis.label)]
        texts.append(fig.get_suptitle())
        assert any(t.startswith("gru study: ") for t in texts), texts
        assert any("val/mse_best" in t for t in texts + [c.get_label() for a in fig.axes
                                                          for c in a.collections]), texts
    assert paths[:3] == ["plots/optimization_history.png", "plots/contour.png",
                         "plots/slice.png"]
    assert ("plots/param_importances.png" in paths) == has_importances


def test_study_figures_are_drawn_holding_the_drawing_lock(monkeypatch):
    # Optuna draws through pyplot, and matplotlib is not thread-safe: studies that end in
    # threads, and the trials' figure threads, must not draw at once (plots.DRAWING).
    held = []
    history = ovm.plot_optimization_history
    monkeypatch.setattr(ovm, "plot_optimization_history",
                        lambda *a, **k: held.append(is_held(DRAWING)) or history(*a, **k))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("train.lr", 1e-3, 1e-1, log=True), n_trials=3)
    study.set_metric_names(["val/mse_best"])
    assert [p for p, _ in tuning.study_figures(study, "rnn")][0] == \
        "plots/optimization_history.png"
    assert held == [True] and not is_held(DRAWING)


def test_any_numeric_field_can_be_searched(tiny_cfg, tracker, tmp_path):
    space = {"model.num_layers": {"low": 1, "high": 2, "type": "int"},
             "train.steps": {"low": 10, "high": 20, "type": "int"}}
    cfg = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/optuna.db",
                            "study.n_trials": 2, "study.space": space})
    job, _ = tracker.job_run_id("job")
    outcome = _study(cfg, tracker, "gru", job)
    assert set(outcome.best_params) == set(space)
    client = MlflowClient()
    study = optuna.load_study(study_name=f"{cfg.study.name}-gru", storage=cfg.study.storage)
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.params["model.num_layers"] == str(trial.params["model.num_layers"])
        steps = trial.params["train.steps"]
        assert run.data.params["train.steps"] == str(steps)
        if trial.state == optuna.trial.TrialState.COMPLETE:  # it trained for the steps it drew
            assert client.get_metric_history(run.info.run_id, "val/mse")[-1].step == steps
    champion = cfg.replace({"model.cell": "gru", **outcome.best_params})
    assert champion.model.num_layers == outcome.best_params["model.num_layers"]


@pytest.mark.parametrize("report_every, steps, reported", [
    (0, 40, [10, 20, 30, 40]),   # every validation
    (20, 40, [20, 40]),
    (20, 50, [20, 40, 50]),      # and always the last step: the study's final value
])
def test_trials_report_to_optuna_every_report_every_steps(tiny_cfg, tracker, tmp_path,
                                                          report_every, steps, reported):
    """Optuna gets the best-so-far at ``study.report_every`` steps; the run's MLflow curve
    still has every validation."""
    cfg = tiny_cfg.replace({"study.storage": f"sqlite:///{tmp_path}/optuna.db",
                            "study.n_trials": 1, "study.report_every": report_every,
                            "train.steps": steps, "train.eval_every": 10})
    job, _ = tracker.job_run_id("job")
    _study(cfg, tracker, "rnn", job)
    trial = tuning.open_study(cfg, "rnn").trials[0]
    assert sorted(trial.intermediate_values) == reported
    assert trial.intermediate_values[steps] == pytest.approx(trial.value)
    history = MlflowClient().get_metric_history(trial.user_attrs["mlflow_run_id"], "val/mse")
    assert [m.step for m in history] == list(range(10, steps + 1, 10))


@pytest.mark.parametrize("value", [-20, 15])
def test_report_every_must_be_a_multiple_of_the_validation_interval(tiny_cfg, value):
    with pytest.raises(ValueError, match="study.report_every"):
        tiny_cfg.replace({"study.report_every": value, "train.eval_every": 10})


class _Quick:
    """An objective of no cost, for the claim protocol alone: records what it was asked."""

    def __init__(self) -> None:
        self.on_start = lambda: None

    def __call__(self, trial: optuna.Trial) -> float:
        self.on_start()
        return trial.suggest_float("x", 0.0, 1.0)


def test_workers_each_run_their_own_claim_and_stop_at_the_total(tmp_path):
    """Two workers (threads, each with its own Optuna storage and cache, as processes have)
    on one SQLite study of trials that cost nothing, where the race is tightest: every trial
    run is a claimed one (none made by an ``ask`` that found no queued trial, which left a
    claim nobody ran and stalled both workers for a minute) and they stop at the total."""
    import threading

    from pipeline.storage import Storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = Storage(url)
    optuna.create_study(study_name="s", storage=url)
    total, errors = 60, []

    def worker() -> None:
        try:
            study = optuna.load_study(study_name="s", storage=url)
            tuning._run_to_total(study, _Quick(), total, poll=0.05, storage=storage)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=tuning.RESERVATION_SECONDS / 2)
    assert not any(t.is_alive() for t in threads), "a worker waited on a claim nobody ran"
    assert not errors
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert len(trials) == total
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(tuning.RESERVED_ATTR in t.user_attrs for t in trials), \
        "a trial was made by an ask instead of running a claim"
