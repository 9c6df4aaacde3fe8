"""Everything Optuna: one study per cell, its search space from the config, pruning, the links
between trials and their MLflow runs, and the study's wrap-up (test once, plots, registry).

The objective has the canonical shape (suggest -> train -> report -> should_prune), but it
suggests into a plain config: the model and trainer never see a trial.

    >>> from pipeline.tuning import tune
    >>> tune(cfg)                                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline import interrupts, records, tracking
from pipeline.config import Distribution, ExperimentConfig, ModelConfig
from pipeline.data import Windows, validation_set
from pipeline.evaluation import held_out_sets, model_predictor, score_sets, zero_reference
from pipeline.plots import DRAWING
from pipeline.runs import prediction_plot, tracked_fit
from pipeline.storage import Storage, mask_url
from pipeline.tracking import Tracker, model_description
from pipeline.train import (
    Callback,
    DivergedError,
    FitResult,
    OutOfMemory,
    build_model,
    fit,
    out_of_memory_as_failure,
    resolve_device,
)

log = logging.getLogger(__name__)

RUN_ID_ATTR = "mlflow_run_id"
"""Trial and study user attribute: the MLflow run that records it."""
JOB_RUN_ATTR = "mlflow_job_run_id"
"""Study user attribute: the job run that every worker of the job's studies shares."""
REPORTED_ATTR = "reported_for"
"""User attribute of the job's first study: the studies and trial total the job report was last
written for, so that of N workers only one writes it."""
FINALIZED_ATTR = "finalized_at_trials"
"""Study user attribute: how many trials the study held when it was last finalized."""
MIN_TRIALS_FOR_IMPORTANCE = 8
"""Completed trials a study needs before its parameter-importance plot is drawn."""
RESERVED_ATTR = "cellstudy.reserved_at"
"""User attribute of a trial queued by a worker to claim a place under the study's total."""
RESERVATION_SECONDS = 60.0
"""A claim not taken up within this time was left by a worker that died before starting its
trial: it no longer counts, and the next worker runs that queued trial instead."""
METRIC_NAME = "val/mse_best"
"""What a trial's objective value is; named on the study so Optuna's plots and optuna-dashboard
label their axes with it instead of "Objective Value"."""
FAIL_ATTR = "fail_reason"
"""Set on trials that failed on their own (divergence, out of memory): they count toward the
total, while interrupted or stale trials do not and are run again on resume."""


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
    best_run_id: str | None = None
    """The best trial's run (its checkpoint, its test scores); None without a completed trial."""


class _NoTraceback(logging.Filter):
    """Optuna logs each failed trial with its traceback, an interrupted one included; the
    reason line is enough (the trial's MLflow run keeps it in its ``failure_reason`` tag)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            record.msg = f"{record.msg} ({record.exc_info[0].__name__})"
        record.exc_info = record.exc_text = None
        return True


def configure_logs(quiet: bool) -> None:
    """Optuna's logs through the root logger, at INFO unless ``quiet``, tracebacks cut: Optuna
    resets its logger to INFO when imported, and brings its own handler."""
    optuna.logging.set_verbosity(logging.WARNING if quiet else logging.INFO)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoTraceback())


def warm_up() -> None:
    """Imports what a worker's stores and its studies' wrap-up use (MLflow's SQL stores,
    Optuna's matplotlib figures) while it waits for the parent (``cli._warm_up``)."""
    import optuna.visualization.matplotlib  # noqa: F401

    tracking.warm_up()


def make_storage(url: str | Storage, heartbeat_interval: int = 30, grace_period: int = 120,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None,
                 ) -> optuna.storages.BaseStorage:
    """Optuna's own storage for ``url``: a journal file for ``journal:///path``, else an
    RDB storage with heartbeats, so a worker that dies holding a RUNNING trial does not stall
    the study: its trial is failed once ``grace_period`` seconds pass without a heartbeat, and
    ``on_stale`` is called with it. Given a ``Storage``, it is kept as its ``optuna``.

    Workers that start together would race to create the tables of a new database
    (``UniqueViolation`` on PostgreSQL, ``alembic_version`` on SQLite): they take turns.
    """
    store = url if isinstance(url, Storage) else Storage(url)
    if store.journal_path is not None:
        backend = optuna.storages.journal.JournalFileBackend(store.journal_path)
        store.optuna = optuna.storages.JournalStorage(backend)
        return store.optuna
    with warnings.catch_warnings(), store.lock("create-tables"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(store.sqlalchemy_url,
                                             heartbeat_interval=heartbeat_interval,
                                             grace_period=grace_period,
                                             heartbeat_stale_trial_callback=on_stale)
    store.tune_engine(storage.engine)
    store.optuna = storage
    return storage


def _opened(cfg: ExperimentConfig, storage: Storage | None) -> Storage:
    """``storage``, or the config's, with its Optuna storage opened."""
    storage = storage or Storage(cfg.study.storage)
    if storage.optuna is None:
        make_storage(storage)
    return storage


class TrialSeededTPE(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler, its random draws seeded by (seed, trial number) instead of once
    per process.

    Why: every worker process builds its own sampler. Seeded alike, N workers drew the same
    start-up configurations, so each was trained N times (`--workers 2`: 20 trials, 10
    configurations). Optuna reseeds at random for its own threads for that reason
    (optuna/optuna#4412); seeding each trial by its number keeps a one-worker study
    reproducible and gives every trial of a shared study draws of its own. TPE proper
    already keeps workers apart: its constant liar counts the running trials.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._tpe = optuna.samplers.TPESampler(seed=seed)

    def for_trial(self, number: int) -> optuna.samplers.TPESampler:
        """The TPE sampler that draws trial ``number``'s values."""
        state = np.random.SeedSequence([self.seed, number]).generate_state(1)[0]
        return optuna.samplers.TPESampler(seed=int(state))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Optuna calls this first for every trial, then samples it on this thread.
        self._tpe = self.for_trial(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, Any]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)


def open_study(cfg: ExperimentConfig, cell: str, storage: Storage | None = None) -> optuna.Study:
    """Creates the cell's study or loads it to resume; safe when workers race to create it."""
    kwargs = dict(
        study_name=f"{cfg.study.name}-{cell}",
        storage=_opened(cfg, storage).optuna,
        direction="minimize",
        sampler=TrialSeededTPE(cfg.study.sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=cfg.study.pruner_startup_trials,
                                           n_warmup_steps=cfg.study.pruner_warmup_steps),
    )
    try:
        study = optuna.create_study(load_if_exists=True, **kwargs)
    except Exception:  # another worker created it between our look and our insert
        study = optuna.load_study(**{k: kwargs[k] for k in ("study_name", "storage", "sampler",
                                                            "pruner")})
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
    return study


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward the study's total: finished, pruned, running in some worker,
    or failed on their own. Interrupted and stale trials are not counted: resuming redoes them.
    (Optuna's MaxTrialsCallback filters by state only, so it cannot tell those two FAILs apart.)
    """
    return _counted(study.get_trials(deepcopy=False))


def _counted(trials: list[FrozenTrial]) -> int:
    done = 0
    for t in trials:
        if t.state == TrialState.FAIL:
            done += FAIL_ATTR in t.user_attrs
        else:
            done += t.state != TrialState.WAITING  # queued, not yet run
    return done


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
        self.on_start: Callable[[], object] = lambda: None
        """Called first in each trial, once Optuna has asked it (lets go of the claim)."""

    def _fit(self, cfg: ExperimentConfig, callbacks: list[Callback]) -> FitResult:
        # Inside the tracked run, so that the run fails with the same one-line reason.
        with out_of_memory_as_failure():
            return fit(cfg, callbacks, val=self.val)

    def suggest(self, trial: optuna.Trial) -> ExperimentConfig:
        """The trial's config: each ``study.space`` path suggested under its own name, so
        ``trial.params`` (and the best trial's) rebuild it with ``cfg.replace``."""
        values = {path: suggest(trial, path, dist) for path, dist in self.cfg.study.space.items()}
        return self.cfg.replace({"model.cell": self.cell, **values})

    def __call__(self, trial: optuna.Trial) -> float:
        self.on_start()
        cfg = self.suggest(trial)
        tags = {"optuna.trial_number": str(trial.number), "optuna.study": trial.study.study_name,
                "cell": self.cell, "cellstudy.level": "trial"}
        # interrupts.callback last: a signal stops training after the pruner's report.
        pruning = _pruning(trial, cfg.study.pruner_warmup_steps, cfg.study.report_every,
                           cfg.train.steps)
        try:
            done = tracked_fit(
                self.tracker, cfg, f"{self.cell}-trial-{trial.number}", val=self.val,
                parent_run_id=self.study_run_id, tags=tags, base=self.cfg,
                callbacks=[pruning, interrupts.callback], killed_on=(optuna.TrialPruned,),
                on_start=lambda run_id: trial.set_user_attr(RUN_ID_ATTR, run_id),
                train=self._fit, background=True,
                plot=prediction_plot(cfg, self.val, f"{self.cell} {_describe(trial.params)}"))
        except (DivergedError, OutOfMemory) as err:
            trial.set_user_attr(FAIL_ATTR, str(err))
            raise
        return done.result.best_val


def suggest(trial: optuna.Trial, path: str, dist: Distribution) -> float | int:
    """One ``study.space`` entry suggested under its dotted path."""
    if dist.type == "int":
        return trial.suggest_int(path, int(dist.low), int(dist.high), log=dist.log)
    return trial.suggest_float(path, dist.low, dist.high, log=dist.log)


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{path}={value:.3g}" for path, value in params.items())


def _pruning(trial: optuna.Trial, warmup_steps: int = 0, report_every: int = 0,
             last_step: int = 0) -> Callable[[int, dict[str, float]], None]:
    """A training callback that reports the best-so-far validation MSE (the value the trial
    is scored by, ``val/mse_best`` from ``runs.best_so_far``) every ``report_every`` steps and
    at ``last_step`` (at every validation when 0), and raises TrialPruned when the pruner says
    so.

    Before ``warmup_steps`` the median pruner never prunes, yet ``should_prune`` would still
    read every trial back from the storage: it is not asked."""

    def callback(step: int, metrics: dict[str, float]) -> None:
        if report_every and step % report_every and step != last_step:
            return  # the run's metrics have this validation; the study does not need it
        best = metrics["val/mse_best"]
        trial.report(best, step)
        if step >= warmup_steps and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with val/mse_best {best:.3g}")

    return callback


def mark_lost_runs(tracker: Tracker) -> Callable[[optuna.Study, FrozenTrial], None]:
    """A stale-trial callback for the storage: when Optuna fails a trial whose worker stopped
    sending heartbeats (killed, machine lost), its MLflow run is ended FAILED too, instead of
    showing RUNNING forever."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            return
        log.warning("trial %d of %s lost its worker; its run %s is ended FAILED",
                    trial.number, study.study_name, run_id)
        try:
            tracker.fail_run(run_id, "worker lost: no heartbeat within the grace period")
        except Exception:  # the study goes on even if the tracking store hiccups
            log.exception("could not end the lost run %s", run_id)

    return callback


def job_run(tracker: Tracker, cfg: ExperimentConfig, storage: Storage,
            name: str) -> tuple[str, bool]:
    """The job's MLflow run: under ``mlflow run`` the project's run; else the one that the
    job's studies name, so that every worker of the same studies shares one; else a new one.
    Workers take turns to look, so two starting together do not both create one.

    Returns:
        (run id, whether this process must end it).
    """
    studies = [open_study(cfg, cell, storage) for cell in cfg.study.cells]
    with storage.lock(f"job-run:{cfg.study.name}"):
        known = [s.user_attrs[JOB_RUN_ATTR] for s in studies if JOB_RUN_ATTR in s.user_attrs]
        if known and not tracker.project_run_id:
            run_id, owned = known[0], True
            tracker.resume_run(run_id)
        else:
            run_id, owned = tracker.job_run_id(name)
            tracker.log_params(run_id, records.base_params(cfg, mask_url),
                               tags={"cellstudy.level": "job"})
            tracker.log_config(run_id, records.resolved_config(cfg, mask_url))
            tracker.describe(run_id, records.job_description(cfg, name))
        for study in studies:
            if JOB_RUN_ATTR not in study.user_attrs:
                study.set_user_attr(JOB_RUN_ATTR, run_id)
    return run_id, owned


def report_once(cfg: ExperimentConfig, storage: Storage,
                write: Callable[[], str]) -> str | None:
    """Calls ``write`` (the job report: baselines, seed retrains, tutorial runs) unless another
    worker, or an earlier run, already wrote it for the studies as they are now. Without this,
    each of N workers would train the report's models and log its runs again under the shared
    job run. Workers take turns; one that died writing lets the next one write it.

    Returns:
        What ``write`` returned, or None where the report was already written.
    """
    with storage.lock(f"report:{cfg.study.name}"):
        studies = [open_study(cfg, cell, storage) for cell in cfg.study.cells]
        # The total, not the trials held: a worker may still add one over the total.
        mark = f"{','.join(s.study_name for s in studies)} n_trials={cfg.study.n_trials}"
        if studies[0].user_attrs.get(REPORTED_ATTR) == mark:
            return None
        text = write()
        studies[0].set_user_attr(REPORTED_ATTR, mark)
    return text


def study_run(tracker: Tracker, study: optuna.Study, cfg: ExperimentConfig, cell: str,
              job_run_id: str, storage: Storage | None = None) -> str:
    """The study's MLflow run, created once and found again on resume and by every worker
    (its id is a study user attribute; workers take turns to look, so only one creates it)."""
    storage = storage or Storage(cfg.study.storage)
    with storage.lock(f"study-run:{study.study_name}"):
        run_id = study.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            tracker.resume_run(run_id)
            return run_id
        # The cell first: the runs list cuts long names, and the cell is what tells them apart.
        run_id = tracker.start_run(f"{cell}-study-{cfg.study.name}", parent_run_id=job_run_id,
                                   tags={"optuna.study": study.study_name, "cell": cell,
                                         "cellstudy.level": "study"})
        tracker.log_params(run_id, records.study_params(cfg, cell, mask_url))
        tracker.log_config(run_id, records.resolved_config(cfg.replace({"model.cell": cell}),
                                                           mask_url))
        tracker.describe(run_id, records.study_description(cfg, cell, study.study_name,
                                                           METRIC_NAME))
        study.set_user_attr(RUN_ID_ATTR, run_id)
    return run_id


def run_study(cfg: ExperimentConfig, cell: str, tracker: Tracker, job_run_id: str,
              storage: Storage | None = None) -> StudyOutcome:
    """Runs the cell's study up to its total, then tests, plots and registers its best.

    Args:
        cfg: the job's config.
        cell: the cell to tune.
        tracker: where runs go.
        job_run_id: the run the study run nests under (when it is created).
        storage: the study storage; the config's when None.
    """
    storage = _opened(cfg, storage)
    study = open_study(cfg, cell, storage)
    run_id = study_run(tracker, study, cfg, cell, job_run_id, storage)
    with tracker.ending(run_id):
        val = validation_set(cfg.data)
        # On a GPU the study run records how busy the card was (MLflow system metrics).
        on_gpu = resolve_device(cfg.train.device).type == "cuda"
        with tracker.system_metrics(run_id, enabled=on_gpu):
            try:
                _run_to_total(study, Objective(cfg, cell, tracker, run_id, val),
                              cfg.study.n_trials, poll=min(cfg.study.heartbeat_interval, 2),
                              storage=storage)
            finally:
                tracker.wait_for_figures()  # also when interrupted: nothing logged is lost
        interrupts.check()  # not once the wrap-up has begun: it finishes, then the job stops
        # Every worker gets here once the study is complete; they take turns, the first does
        # the work and the others find it done (or redo it, if the first died doing it).
        with storage.lock(f"finalize:{study.study_name}"):
            return finish_study(cfg, cell, study, tracker, run_id)


def _run_to_total(study: optuna.Study, objective: Objective, total: int, poll: float,
                  storage: Storage) -> None:
    """Runs trials until the study holds ``total`` counted trials and none is still running in
    another worker. Waiting for those matters: a worker that died holding one is only found
    out (its trial failed by the heartbeat check) after the grace period, and then its trial
    must be run again by someone still alive.

    Each trial is claimed first (``_claim``), so N workers together stop at the total exactly
    instead of each starting one more when they all see one missing."""
    waiting = False
    while True:
        interrupts.check()  # between trials: a safe point to honor SIGINT/SIGTERM
        _fail_stale(study)
        with contextlib.ExitStack() as held:
            if _claim(study, total, storage, held):
                # The claim's lock stays held until the trial is asked, so that this ask pops
                # this worker's own claim (see ``_claim``); the objective's first act lets go.
                objective.on_start = held.close
                study.optimize(objective, n_trials=1, catch=(DivergedError, OutOfMemory))
                _one_log_line_each()
                continue
        # Claimed but not yet started counts as running: its worker is about to start it.
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,
                                                                        TrialState.WAITING))
                   if t.state == TrialState.RUNNING or _claimed(t, time.time())]
        if not running or not _has_heartbeats(study):
            return  # without heartbeats a dead worker cannot be told from a slow one
        if not waiting:
            log.info("study %s: waiting for %d trial(s) running in other workers",
                     study.study_name, len(running))
            waiting = True
        time.sleep(poll)


def is_finished(trial: FrozenTrial) -> bool:
    """A trial done for good: complete, pruned, or failed on its own (see ``counted_trials``)."""
    if trial.state == TrialState.FAIL:
        return FAIL_ATTR in trial.user_attrs
    return trial.state.is_finished()


def _claim(study: optuna.Study, total: int, storage: Storage,
           held: contextlib.ExitStack) -> bool:
    """Claims a place for one more trial under the study's total, if one is left: workers take
    turns to count and to queue a trial (``enqueue_trial`` with no fixed params: the sampler
    still picks them), which the claimer's next ``ask`` runs. A claim left behind by a dead
    worker is taken over rather than queued again.

    On success the lock stays held, in ``held``, until the caller's trial is asked. Were it let
    go at once, another worker's ``ask`` could pop this claim first, and this worker's ask the
    other's; measured with 2 workers on SQLite: in about one job of three, at the end of a
    study, an ``ask`` read a stale list of queued trials (Optuna's cached storage), found none
    and made a new trial, leaving a claim nobody ran, and both workers waited the whole
    ``RESERVATION_SECONDS`` (60 s) for it.

    Returns:
        Whether the caller should run one trial now.
    """
    held.enter_context(storage.lock(f"claim:{study.study_name}"))
    trials = study.get_trials(deepcopy=False)  # one read: this runs before every trial
    queued = [t for t in trials if t.state == TrialState.WAITING]
    now = time.time()
    fresh = [t for t in queued if _claimed(t, now)]
    if _counted(trials) + len(fresh) >= total:
        held.close()
        return False
    if len(queued) == len(fresh):  # no abandoned or hand-queued trial to run instead
        study.enqueue_trial({}, user_attrs={RESERVED_ATTR: now})
    return True


def _claimed(trial: FrozenTrial, now: float) -> bool:
    """A queued trial that a live worker claimed and is about to run."""
    return now - trial.user_attrs.get(RESERVED_ATTR, 0.0) < RESERVATION_SECONDS


def _one_log_line_each() -> None:
    """Optuna's progress bar turns Optuna's own log handler back on when it closes, even where
    it was turned off for Optuna's records to reach the root logger's handlers (as the CLI
    does): each line would then print twice, ``[I ...]`` and ``INFO optuna...``."""
    if logging.getLogger("optuna").propagate:
        optuna.logging.disable_default_handler()


def _has_heartbeats(study: optuna.Study) -> bool:
    # Public since Optuna 2.9 on heartbeat storages; the journal storage has none.
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    return interval is not None


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


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
    if study.user_attrs.get(FINALIZED_ATTR) == len(study.trials):
        return _finalized_outcome(cfg, cell, study, tracker, run_id, best)
    test = _test_once(cfg, tracker, best_run)
    summary = {"val/mse_best": best.value, **test}
    # The best trial's values under the names they have everywhere (``train.lr``).
    tracker.log_params(run_id, {}, tags={"best_trial": str(best.number), "best_run_id": best_run,
                                         **{k: str(v) for k, v in best.params.items()}})
    tracker.log_metrics(run_id, {**summary, "trials/complete": len(complete),
                                 "trials/total": len(study.trials)})
    for path, fig in study_figures(study, cell):
        tracker.log_figure(run_id, fig, path, tight=True)
    version, moved = _register(cfg, cell, study, tracker, best, best_run, test)
    study.set_user_attr(FINALIZED_ATTR, len(study.trials))
    return StudyOutcome(cell, study.study_name, run_id, best.number, dict(best.params),
                        float(best.value), test, version, moved, best_run)


def _finalized_outcome(cfg: ExperimentConfig, cell: str, study: optuna.Study,
                       tracker: Tracker, run_id: str, best: FrozenTrial) -> StudyOutcome:
    """The outcome of a study another worker (or an earlier run) already finalized, read back
    from the stores instead of testing, plotting and registering again."""
    test = tracker.scores(best.user_attrs[RUN_ID_ATTR])
    version = study.user_attrs.get("registered_version")
    # The summary marks the version the alias is on, whichever run moved it there.
    holder = tracker.champion(cfg.tracking.registry_name(cell), cfg.tracking.alias)
    on_it = version is not None and holder is not None and str(holder.version) == str(version)
    return StudyOutcome(cell, study.study_name, run_id, best.number, dict(best.params),
                        float(best.value), test, version, on_it, best.user_attrs[RUN_ID_ATTR])


def _test_once(cfg: ExperimentConfig, tracker: Tracker, best_run: str) -> dict[str, float]:
    """Scores the best trial on every test set, once: a resumed study whose best did not
    change reads the scores back instead of testing again."""
    logged = tracker.scores(best_run)
    if "test/mse" in logged:
        return logged
    state_dict, model_cfg = tracker.load_checkpoint(best_run)
    model = build_model(ModelConfig(**model_cfg), state_dict)
    sets = held_out_sets(cfg)
    scores = score_sets(model_predictor(model), sets, cfg.data.warmup)
    tracker.log_metrics(best_run, scores)
    tracker.log_datasets(best_run, {name: (ws.x, ws.y) for name, ws in sets.items()}, "test")
    return scores


def _register(cfg: ExperimentConfig, cell: str, study: optuna.Study, tracker: Tracker,
              best: FrozenTrial, best_run: str, test: dict[str, float]) -> tuple[str, bool]:
    """Logs the best trial's model and offers it for the alias, once per best trial."""
    if study.user_attrs.get("registered_trial") == best.number:
        return study.user_attrs.get("registered_version"), False
    model_uri = tracker.log_model(best_run, name=f"{cell}-trial-{best.number}")
    name = cfg.tracking.registry_name(cell)
    # The version's test MSE is this one model's (one seed); report.md's is the mean of the
    # champion configuration retrained over seeds: each is named for what it is.
    version, moved = tracker.promote(
        name, model_uri, float(best.value), cfg.tracking.alias,
        tags={"test_mse_this_model": str(test.get("test/mse")), "study": study.study_name,
              "run_id": best_run, "trial": str(best.number), "cell": cell},
        reference=zero_reference(cfg))
    tracker.describe_model(name, model_description(cell, name, cfg.tracking.alias,
                                                   cfg.data.warmup))
    tracker.describe_model(name, records.version_description(
        study.study_name, best.number, best_run, float(best.value), test, dict(best.params)),
        version)
    study.set_user_attr("registered_trial", best.number)
    study.set_user_attr("registered_version", version)
    return version, moved


def study_figures(study: optuna.Study, cell: str = "") -> list[tuple[str, object]]:
    """Optuna's own matplotlib plots of the study, as (artifact path, figure), each titled
    with the cell and the study's metric (set by ``open_study``) on its value axis."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    names = list(study.best_params)
    metric = (study.metric_names or [METRIC_NAME])[0]
    plots = [("plots/optimization_history.png",
              lambda: ovm.plot_optimization_history(study, target_name=metric)),
             ("plots/slice.png", lambda: ovm.plot_slice(study, target_name=metric))]
    if len(names) >= 2:  # the first two params of the space, as the contour plot shows two
        plots.insert(1, ("plots/contour.png",
                         lambda: ovm.plot_contour(study, params=names[:2], target_name=metric)))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # fANOVA on a handful of points says nothing, and its import of scikit-learn costs about
    # 5 s a process: a smoke study gets no importance plot.
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        plots.append(("plots/param_importances.png",
                      lambda: ovm.plot_param_importances(study)))  # reads metric_names
    out = []
    # Optuna draws through pyplot, whose current figure is one per process, and matplotlib is
    # not thread-safe: studies that end at once in threads (``tune --trials-at-once``) draw in
    # turn, and not while a trial's figure is drawn.
    with DRAWING, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # these plots are flagged experimental
        for path, make in plots:
            try:
                axes = make()
            except (ValueError, RuntimeError) as err:  # e.g. importances need 2+ trials
                log.info("skipping %s: %s", path, err)
                continue
            out.append((path, _titled(axes, f"{cell} study" if cell else study.study_name,
                                      metric)))
        plt.close("all")
    return out


def _titled(axes: Any, prefix: str, metric: str) -> Any:
    """The figure of Optuna's ``axes``, its title led by ``prefix`` (the cell), the metric
    named on an axis, laid out so that no label is cut (Optuna sizes its figures before
    drawing long tick labels)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    fig = first.figure
    if not any(metric in a.get_xlabel() + a.get_ylabel() for a in fig.axes):
        first.set_xlabel(f"{first.get_xlabel()} ({metric})")  # the importances' bars
    from matplotlib.ticker import NullFormatter

    for ax in fig.axes:  # log axes label their minor ticks too, over each other on a narrow one
        if ax.get_xscale() == "log":
            ax.xaxis.set_minor_formatter(NullFormatter())
    if hasattr(axes, "flat"):  # one panel per param, titled by the figure's suptitle
        # Wider panels, and no tight_layout: it would lay the panels over the colorbar that
        # Optuna took their space for; saving with bbox_inches="tight" keeps labels whole.
        fig.set_size_inches(4.5 * len(axes.flat) + 1.5, 4.5)
        fig.suptitle(f"{prefix}: {fig.get_suptitle()}")
    else:
        axes.set_title(f"{prefix}: {axes.get_title(loc='left') or axes.get_title()}", loc="left")
        axes.set_title("")
        fig.tight_layout()
    return fig
