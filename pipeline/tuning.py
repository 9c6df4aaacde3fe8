"""Everything Optuna: one study per cell, its search space from the config, pruning, the links
between trials and their MLflow runs, and the study's wrap-up (test once, plots, registry).

The objective has the canonical shape (suggest -> train -> report -> should_prune), but it
suggests into a plain config: the model and trainer never see a trial.

    >>> from pipeline.tuning import tune
    >>> tune(cfg)                                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.config import ExperimentConfig, ModelConfig, flatten, to_dict
from pipeline.data import Windows, make_eval_set
from pipeline.plots import prediction_figure
from pipeline.tracking import Tracker
from pipeline.train import DivergedError, build_model, fit, predict, resolve_device, score

log = logging.getLogger(__name__)

RUN_ID_ATTR = "mlflow_run_id"
"""Trial and study user attribute: the MLflow run that records it."""
FAIL_ATTR = "fail_reason"
"""Set on trials that failed on their own (divergence): they count toward the total, while
interrupted or stale trials do not and are run again on resume."""
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "journal")


@dataclass(frozen=True)
class StudyOutcome:
    """What a cell's study ended with."""

    cell: str
    study_name: str
    study_run_id: str
    best_trial: int | None
    best_params: dict
    val_mse: float
    test_mse: dict[str, float]
    model_version: str | None
    champion_moved: bool


def check_storage_url(url: str) -> None:
    """Refuses a storage URL whose scheme Optuna cannot open, before anything is created.

    Raises:
        ValueError: with a one-line message.
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if ":" not in url or scheme not in STORAGE_SCHEMES:
        raise ValueError(f"unknown storage scheme in {mask_url(url)!r} "
                         f"(valid: {', '.join(s + '://' for s in STORAGE_SCHEMES)})")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: storage URLs are logged and printed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's own storage for ``url``: a journal file for ``journal:///path``, else an
    RDB storage with heartbeats, so a worker that dies holding a RUNNING trial does not stall
    the study: its trial is failed once the grace period passes."""
    check_storage_url(url)
    if url.startswith("journal:"):
        path = url.split(":", 1)[1].removeprefix("//")
        backend = optuna.storages.journal.JournalFileBackend(path)
        return optuna.storages.JournalStorage(backend)
    if url.startswith("postgresql://"):
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2.
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)


def open_study(cfg: ExperimentConfig, cell: str,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Creates the cell's study or loads it to resume; safe when workers race to create it."""
    storage = storage or make_storage(cfg.study.storage)
    kwargs = dict(
        study_name=f"{cfg.study.name}-{cell}",
        storage=storage,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=cfg.study.sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=cfg.study.pruner_startup_trials,
                                           n_warmup_steps=cfg.study.pruner_warmup_steps),
    )
    try:
        return optuna.create_study(load_if_exists=True, **kwargs)
    except Exception:  # another worker created it between our look and our insert
        return optuna.load_study(**{k: kwargs[k] for k in ("study_name", "storage", "sampler",
                                                           "pruner")})


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward the study's total: finished, pruned, running in some worker,
    or failed on their own. Interrupted and stale trials are not counted: resuming redoes them.
    (Optuna's MaxTrialsCallback filters by state only, so it cannot tell those two FAILs apart.)
    """
    done = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.FAIL:
            done += FAIL_ATTR in t.user_attrs
        else:
            done += 1
    return done


def _stop_at(total: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if counted_trials(study) >= total:
            study.stop()

    return callback


class Objective:
    """One trial: suggest into the config, train with a tracked run, report to the pruner.

    Args:
        cfg: the job's config; the cell, hidden size and lr are set per trial.
        cell: the cell this study tunes.
        tracker: where runs go.
        study_run_id: the MLflow run each trial run nests under.
        val: the validation windows (drawn once per study, not once per trial).
    """

    def __init__(self, cfg: ExperimentConfig, cell: str, tracker: Tracker, study_run_id: str,
                 val: Windows) -> None:
        self.cfg, self.cell, self.tracker = cfg, cell, tracker
        self.study_run_id, self.val = study_run_id, val

    def suggest(self, trial: optuna.Trial) -> ExperimentConfig:
        space = self.cfg.study
        hidden = trial.suggest_int("hidden_size", *space.hidden_size, log=True)
        lr = trial.suggest_float("lr", *space.lr, log=True)
        return self.cfg.replace({"model.cell": self.cell, "model.hidden_size": hidden,
                                 "train.lr": lr})

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = self.suggest(trial)
        tracker = self.tracker
        run_id = tracker.start_run(
            f"{self.cell}-trial-{trial.number}", parent_run_id=self.study_run_id,
            tags={"optuna.trial_number": str(trial.number), "optuna.study": trial.study.study_name,
                  "cell": self.cell, "cellstudy.level": "trial"})
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        with tracker.ending(run_id, killed_on=(optuna.TrialPruned,)):
            device = str(resolve_device(cfg.train.device))
            tracker.log_params(run_id, {**flatten(cfg), "cell": self.cell,
                                        "hidden_size": cfg.model.hidden_size, "lr": cfg.train.lr},
                               tags={"device": device})
            buffer = tracker.metric_buffer(run_id)
            try:
                result = fit(cfg, callbacks=[buffer, _pruning(trial)], val=self.val)
            except DivergedError as err:
                trial.set_user_attr(FAIL_ATTR, str(err))
                raise
            finally:
                buffer.flush()
            tracker.log_metrics(run_id, {"val/mse_best": result.best_val,
                                         "val/best_step": result.best_step,
                                         "train/seconds": result.seconds})
            model = build_model(cfg.model, result.state_dict)
            fig = prediction_figure(self.val, predict(model, self.val), cfg.data.warmup,
                                    f"{self.cell} h={cfg.model.hidden_size} lr={cfg.train.lr:.2g}"
                                    f" - val MSE {result.best_val:.2e}",
                                    cfg.tracking.plot_windows)
            tracker.log_figure(run_id, fig, "plots/val_predictions.png")
            tracker.log_checkpoint(run_id, result.state_dict, to_dict(cfg.model))
        return result.best_val


def _pruning(trial: optuna.Trial) -> Callable[[int, dict[str, float]], None]:
    """A training callback that reports the best-so-far validation MSE (the value the trial
    is scored by) and raises TrialPruned when the pruner says so."""
    best = math.inf

    def callback(step: int, metrics: dict[str, float]) -> None:
        nonlocal best
        best = min(best, metrics["val/mse"])
        trial.report(best, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with val/mse_best {best:.3g}")

    return callback


def study_run(tracker: Tracker, study: optuna.Study, cfg: ExperimentConfig, cell: str,
              job_run_id: str) -> str:
    """The study's MLflow run, created once and found again on resume and by every worker
    (its id is a study user attribute)."""
    run_id = study.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        tracker.client.update_run(run_id, status="RUNNING")
        return run_id
    run_id = tracker.start_run(study.study_name, parent_run_id=job_run_id,
                               tags={"optuna.study": study.study_name, "cell": cell,
                                     "cellstudy.level": "study"})
    tracker.log_params(run_id, {**flatten(cfg.study), "cell": cell,
                                "storage": mask_url(cfg.study.storage)})
    study.set_user_attr(RUN_ID_ATTR, run_id)
    return run_id


def run_study(cfg: ExperimentConfig, cell: str, tracker: Tracker, job_run_id: str,
              storage: optuna.storages.BaseStorage | None = None,
              progress: bool = False) -> StudyOutcome:
    """Runs the cell's study up to its total, then tests, plots and registers its best.

    Args:
        cfg: the job's config.
        cell: the cell to tune.
        tracker: where runs go.
        job_run_id: the run the study run nests under (when it is created).
        storage: an opened Optuna storage; made from the config when None.
        progress: show Optuna's progress bar.
    """
    study = open_study(cfg, cell, storage)
    run_id = study_run(tracker, study, cfg, cell, job_run_id)
    with tracker.ending(run_id):
        val = make_eval_set(cfg.data, cfg.data.val)
        remaining = cfg.study.n_trials - counted_trials(study)
        if remaining > 0:
            study.optimize(Objective(cfg, cell, tracker, run_id, val), n_trials=remaining,
                           callbacks=[_stop_at(cfg.study.n_trials)], catch=(DivergedError,),
                           show_progress_bar=progress)
        return finish_study(cfg, cell, study, tracker, run_id)


def finish_study(cfg: ExperimentConfig, cell: str, study: optuna.Study, tracker: Tracker,
                 run_id: str) -> StudyOutcome:
    """Tests the best trial's model once, logs the study's plots, registers the champion."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.warning("study %s has no completed trial: nothing to test or register",
                    study.study_name)
        return StudyOutcome(cell, study.study_name, run_id, None, {}, math.nan, {}, None, False)
    best = study.best_trial
    best_run = best.user_attrs[RUN_ID_ATTR]
    test = _test_once(cfg, tracker, best, best_run)
    summary = {"val/mse_best": best.value, **test}
    tracker.log_params(run_id, {}, tags={"best_trial": str(best.number), "best_run_id": best_run,
                                         "best_hidden_size": str(best.params["hidden_size"]),
                                         "best_lr": str(best.params["lr"])})
    tracker.log_metrics(run_id, {**summary, "trials/complete": len(complete),
                                 "trials/total": len(study.trials)})
    for path, fig in study_figures(study):
        tracker.log_figure(run_id, fig, path)
    version, moved = _register(cfg, cell, study, tracker, best, best_run, test)
    return StudyOutcome(cell, study.study_name, run_id, best.number, dict(best.params),
                        float(best.value), test, version, moved)


def _test_once(cfg: ExperimentConfig, tracker: Tracker, best: FrozenTrial,
               best_run: str) -> dict[str, float]:
    """Scores the best trial on every test set, once: a resumed study whose best did not
    change reads the scores back instead of testing again."""
    logged = tracker.client.get_run(best_run).data.metrics
    if "test/mse" in logged:
        return {k: v for k, v in logged.items() if k.startswith("test/")}
    state_dict, model_cfg = tracker.load_checkpoint(best_run)
    model = build_model(ModelConfig(**model_cfg), state_dict)
    scores = {f"test/{spec.name}/mse": score(model, make_eval_set(cfg.data, spec), cfg.data.warmup)
              for spec in cfg.data.tests}
    scores["test/mse"] = sum(scores.values()) / len(scores)
    tracker.log_metrics(best_run, scores)
    return scores


def _register(cfg: ExperimentConfig, cell: str, study: optuna.Study, tracker: Tracker,
              best: FrozenTrial, best_run: str, test: dict[str, float]) -> tuple[str, bool]:
    """Logs the best trial's model and offers it for the alias, once per best trial."""
    if study.user_attrs.get("registered_trial") == best.number:
        return study.user_attrs.get("registered_version"), False
    model_uri = tracker.log_model(best_run)
    name = f"{cfg.tracking.registry_prefix}-{cell}"
    version, moved = tracker.promote(
        name, model_uri, float(best.value), cfg.tracking.alias,
        tags={"test_mse": str(test.get("test/mse")), "study": study.study_name,
              "run_id": best_run, "trial": str(best.number), "cell": cell})
    study.set_user_attr("registered_trial", best.number)
    study.set_user_attr("registered_version", version)
    return version, moved


def study_figures(study: optuna.Study) -> list[tuple[str, object]]:
    """Optuna's own matplotlib plots of the study, as (artifact path, figure)."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = [("plots/optimization_history.png", lambda: ovm.plot_optimization_history(study)),
             ("plots/contour_hidden_size_lr.png",
              lambda: ovm.plot_contour(study, params=["hidden_size", "lr"])),
             ("plots/slice.png", lambda: ovm.plot_slice(study)),
             ("plots/param_importances.png", lambda: ovm.plot_param_importances(study))]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # these plots are flagged experimental
        for path, make in plots:
            try:
                axes = make()
            except (ValueError, RuntimeError) as err:  # e.g. importances need 2+ trials
                log.info("skipping %s: %s", path, err)
                continue
            ax = axes.flat[0] if hasattr(axes, "flat") else axes
            out.append((path, ax.figure))
    plt.close("all")
    return out
