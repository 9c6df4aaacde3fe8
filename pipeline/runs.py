"""One tracked training run, the only one: ``cli train``, every Optuna trial, and the report's
seed retrains and tutorial runs all go through ``tracked_fit``.

It starts (or takes) a run, logs the config as params, fits with the metric buffer (fed the
best validation so far as curves) and the caller's callbacks (a pruner, a progress line,
interrupts), logs the training time, the test scores when asked, the prediction plot and the
checkpoint, and ends the run with the status it earned. A run stopped by a pruner keeps the
plot of the state it reached and the tag ``cellstudy.pruned=true``. Imports no Optuna: the
caller passes the pruner in as a callback.

    >>> done = tracked_fit(tracker, cfg, "train-lstm", val=val)    # doctest: +SKIP
    >>> done.run_id, done.result.best_val                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from matplotlib.figure import Figure

from pipeline import records
from pipeline.config import ExperimentConfig, flatten, to_dict
from pipeline.data import Windows
from pipeline.evaluation import model_predictor, score_sets
from pipeline.model import SeqRegressor
from pipeline.plots import prediction_figure
from pipeline.storage import mask_url
from pipeline.tracking import Tracker
from pipeline.train import Callback, FitResult, build_model, fit, predict, reached, resolve_device

log = logging.getLogger(__name__)

PLOT_PATH = "val_predictions.png"
"""Each run's prediction plot, at the top of its artifacts: MLflow 3.17's compare view shows
only top-level artifacts side by side."""
PRUNED_TAG = "cellstudy.pruned"
"""Tag of a run a pruner stopped: MLflow shows it KILLED, as an interrupted one."""

Trainer = Callable[[ExperimentConfig, list[Callback]], FitResult]
"""How a run trains: ``fit`` by default; the tutorial's replay keeps its predictions too."""
Plot = Callable[[FitResult], Figure]
"""The run's figure, drawn from what training reached."""


@dataclass(frozen=True)
class TrackedFit:
    """A finished tracked run."""

    run_id: str
    result: FitResult
    model: SeqRegressor
    """The weights kept (best validation, or the last for the tutorial), on the CPU."""
    scores: dict[str, float] = field(default_factory=dict)
    """``score_sets`` on the test sets, when they were given."""


def loggable_params(cfg: ExperimentConfig,
                    base: ExperimentConfig | None = None) -> dict[str, object]:
    """A training run's params, dotted names once. Under a job (``base``, the job's config)
    what compares across its runs: the searched values, the cell and what differs from the
    base (``records.trial_params``); alone (``cli train``) the whole config it trained with,
    the study's settings aside (they searched nothing here)."""
    if base is not None:
        return records.trial_params(cfg, base)
    return {k: v for k, v in flatten(cfg).items() if not k.startswith("study.")}


def prediction_plot(cfg: ExperimentConfig, val: Windows, title: str) -> Plot:
    """The default figure: the kept weights' predictions on the validation windows."""

    def draw(result: FitResult) -> Figure:
        pred = predict(build_model(cfg.model, result.state_dict), val)
        return prediction_figure(val, pred, cfg.data.warmup,
                                 f"{title} - val MSE {result.best_val:.2e}",
                                 cfg.tracking.plot_windows)

    return draw


def tracked_fit(tracker: Tracker, cfg: ExperimentConfig, name: str, *, val: Windows,
                parent_run_id: str | None = None, run_id: str | None = None, owned: bool = True,
                tags: dict[str, str] | None = None, callbacks: Iterable[Callback] = (),
                killed_on: tuple[type[BaseException], ...] = (),
                on_start: Callable[[str], None] | None = None,
                train: Trainer | None = None, plot: Plot | None = None,
                test_sets: dict[str, Windows] | None = None,
                test_warmup: int | None = None, background: bool = False,
                base: ExperimentConfig | None = None,
                after_fit: Callable[[str], None] | None = None) -> TrackedFit:
    """Trains ``cfg`` as one tracked run.

    Args:
        tracker: where the run goes.
        cfg: the run's whole config (cell and searched values already set).
        name: the run's name (and the plot's title).
        val: the validation windows.
        parent_run_id: the run a new run nests under.
        run_id: an existing run to log into (the project run under ``mlflow run``).
        owned: whether this call ends ``run_id`` (a new run is always ended).
        tags: the run's tags (``cellstudy.level``, ``cell``, ...).
        callbacks: fit's callbacks after the metric buffer, in order (the pruner, interrupts).
        killed_on: exceptions that end the run KILLED (the pruner's) instead of FAILED.
        on_start: called with the run id once the run exists (a trial stores it).
        train: how to train; ``fit`` on ``val`` by default.
        plot: the run's figure; the validation predictions by default.
        test_sets: held-out sets to score the kept weights on (``test/...`` metrics).
        test_warmup: the warm-up they are scored with; the config's own when None (the
            report scores the tutorial's runs with the job's, as all its tables).
        background: draw and upload the figure in the tracker's figure thread.
        base: the job's config, where the run is one of a job's (a trial, a seed retrain):
            its params are then what differs from it (see ``loggable_params``).
        after_fit: called with the run id once the run's records are logged, before it ends
            FINISHED: what the caller keeps beside them (the tutorial's replayed predictions),
            so that a FINISHED run holds it.
    """
    if run_id is None:
        run_id, owned = tracker.start_run(name, parent_run_id, tags), True
        tags = None
    if on_start is not None:
        on_start(run_id)
    plot = plot or prediction_plot(cfg, val, name)
    train = train or (lambda c, cbs: fit(c, cbs, val=val))
    with tracker.ending(run_id, killed_on) if owned else contextlib.nullcontext():
        tracker.log_params(run_id, loggable_params(cfg, base),
                           tags={"device": str(resolve_device(cfg.train.device)),
                                 **(tags or {})})
        # The whole config it trained with, and the data it was validated on: the params
        # above are only what compares.
        tracker.log_config(run_id, records.resolved_config(cfg, mask_url))
        tracker.log_datasets(run_id, {"val": (val.x, val.y)}, "validation")
        buffer = tracker.metric_buffer(run_id)
        try:
            result = train(cfg, [best_so_far(buffer, *callbacks)])
        except killed_on as err:
            _log_reached(tracker, run_id, err, plot)
            raise
        finally:
            buffer.flush()
        model = build_model(cfg.model, result.state_dict)
        warmup = cfg.data.warmup if test_warmup is None else test_warmup
        scores = score_sets(model_predictor(model), test_sets, warmup) if test_sets else {}
        # val/mse_best and val/best_step are curves already (their last points are the run's
        # result); the time and the test scores are one number each: bars in the UI.
        tracker.log_metrics(run_id, {"train/seconds": result.seconds, **scores})
        tracker.log_figure(run_id, functools.partial(plot, result), PLOT_PATH,
                           background=background)
        tracker.log_checkpoint(run_id, result.state_dict, to_dict(cfg.model))
        if after_fit is not None:
            after_fit(run_id)
    return TrackedFit(run_id, result, model, scores)


def best_so_far(*callbacks: Callback) -> Callback:
    """``callbacks`` (the metric buffer, then the caller's: the pruner reads it too) fed, beside
    fit's metrics, the best validation so far and its step at each validation pass:
    ``val/mse_best`` and ``val/best_step`` reach the store as curves that grow while the run
    trains and end on the run's result (fit keeps the same best: the first lowest). Logged
    once at the end instead, MLflow 3.17's UI drew each as a one-bar chart, labelled to 2
    decimals ("0.00" for 0.000274), and a pruned run had neither."""
    best, best_step = math.inf, 0

    def feed(step: int, metrics: dict[str, float]) -> None:
        nonlocal best, best_step
        if metrics["val/mse"] < best:
            best, best_step = metrics["val/mse"], step
        metrics = {**metrics, "val/mse_best": best, "val/best_step": best_step}
        for callback in callbacks:
            callback(step, metrics)

    return feed


def _log_reached(tracker: Tracker, run_id: str, err: BaseException, plot: Plot) -> None:
    """A pruned run keeps the tag that says so and the plot of the state it reached."""
    tracker.log_params(run_id, {}, tags={PRUNED_TAG: "true"})
    result = reached(err)
    if result is None:
        return
    try:
        tracker.log_figure(run_id, functools.partial(plot, result), PLOT_PATH)
    except Exception:  # a missing picture must not hide why the run stopped
        log.exception("the plot of stopped run %s could not be logged", run_id)
