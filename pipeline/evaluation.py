"""Scoring models beside the two baselines: held-out sets, seed retrains of a champion
configuration, and the tutorial's protocol replayed to measure its claims.

Core only (numpy, torch and the pipeline's core); ``evaluate_uri`` imports the tracking module
when called.

    python -m pipeline evaluate --model-uri models:/sin2cos-gru@champion --data all

    >>> from pipeline.evaluation import baseline_scores
    >>> baseline_scores(cfg)["zero"]["test/in_dist/mse"]    # doctest: +SKIP
    0.5
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline import interrupts
from pipeline.config import ExperimentConfig
from pipeline.data import (
    Windows,
    linear_rule_baseline,
    make_eval_set,
    masked_mse,
    tutorial_windows,
    validation_set,
    zero_baseline,
)
from pipeline.metrics import boundary_jumps, cliff, interior_step_error
from pipeline.plots import prediction_figure
from pipeline.train import Callback, FitResult, build_model, fit, predict, predict_windows

Predictor = Callable[[Windows], np.ndarray]
"""Windows -> predictions (n, T, 1), with the state carried through stateful windows."""

BASELINES: dict[str, Predictor] = {"zero": zero_baseline, "linear_rule": linear_rule_baseline}
"""The references every table shows: predicting 0, and the exact rule with the step known."""

Row = tuple[str, float, float, float]
"""(data set, model MSE, zero-baseline MSE, linear-rule MSE)."""


def evaluate_uri(uri: str, cfg: ExperimentConfig, names: list[str],
                 plot: bool = False) -> tuple[list[Row], Any]:
    """Loads ``uri`` with ``mlflow.pyfunc`` and scores it on each named set.

    Args:
        uri: any MLflow model URI (``models:/name@alias``, ``runs:/id/model``, ...).
        cfg: the config whose data sets are used.
        names: ``val`` and/or names of ``cfg.data.tests``.
        plot: also return a prediction figure of the first set.

    Returns:
        (rows, figure or None).
    """
    from pipeline.tracking import load_pyfunc

    model = load_pyfunc(uri)
    specs = {"val": cfg.data.val, **{t.name: t for t in cfg.data.tests}}
    rows, fig = [], None
    for name in names:
        ws = make_eval_set(cfg.data, specs[name])
        pred = predict_windows(model.predict, ws)
        rows.append((name, masked_mse(pred, ws, cfg.data.warmup),
                     masked_mse(zero_baseline(ws), ws, cfg.data.warmup),
                     masked_mse(linear_rule_baseline(ws), ws, cfg.data.warmup)))
        if plot and fig is None:
            fig = prediction_figure(ws, pred, cfg.data.warmup, f"{uri} on {name}",
                                    cfg.tracking.plot_windows)
    return rows, fig


def held_out_sets(cfg: ExperimentConfig) -> dict[str, Windows]:
    """The config's held-out test sets by name, drawn once."""
    return {spec.name: make_eval_set(cfg.data, spec) for spec in cfg.data.tests}


def score_sets(predictor: Predictor, sets: dict[str, Windows], warmup: int) -> dict[str, float]:
    """``test/<set>/mse`` for each set, ``test/mse`` their mean (as the studies log it), and
    ``test/<set>/cliff`` and ``test/<set>/step_error`` (the same error inside windows) for sets of
    consecutive windows."""
    scores: dict[str, float] = {}
    for name, ws in sets.items():
        pred = predictor(ws)
        scores[f"test/{name}/mse"] = masked_mse(pred, ws, warmup)
        if ws.stateful and ws.x.shape[0] > 1:
            scores[f"test/{name}/cliff"] = cliff(pred, ws)
            scores[f"test/{name}/step_error"] = interior_step_error(pred, ws)
    mses = [v for k, v in scores.items() if k.endswith("/mse")]
    scores["test/mse"] = float(np.mean(mses))
    return scores


def model_predictor(model: torch.nn.Module) -> Predictor:
    """A trained SeqRegressor as a Predictor."""
    return lambda ws: predict(model, ws)


def baseline_scores(cfg: ExperimentConfig,
                    sets: dict[str, Windows] | None = None) -> dict[str, dict[str, float]]:
    """Each baseline's ``val/mse`` and test scores, on the same windows the models see."""
    sets = sets if sets is not None else held_out_sets(cfg)
    val = validation_set(cfg.data)
    return {name: {"val/mse": masked_mse(fn(val), val, cfg.data.warmup),
                   **score_sets(fn, sets, cfg.data.warmup)}
            for name, fn in BASELINES.items()}


def zero_reference(cfg: ExperimentConfig, val: Windows | None = None) -> float:
    """The zero baseline's validation MSE: the bar a model must pass to be a champion."""
    val = val if val is not None else make_eval_set(cfg.data, cfg.data.val)
    return masked_mse(zero_baseline(val), val, cfg.data.warmup)


@dataclass(frozen=True)
class SeedRun:
    """One retrain of a fixed configuration with its own weight seed, tested once."""

    seed: int
    val_mse: float
    """Best validation MSE (the checkpoint tested is the one that reached it)."""
    scores: dict[str, float]
    """``score_sets`` of that checkpoint."""
    seconds: float
    device: str
    best_step: int = 0
    """Step of the best validation MSE: at or near ``train.steps``, the curve had not
    flattened."""


def replay_tutorial(cfg: ExperimentConfig, callbacks: Iterable[Callback] = ()
                    ) -> tuple[Windows, np.ndarray, torch.nn.Module, FitResult]:
    """Trains with ``fit`` on the tutorial protocol, keeping what the blog plots: the
    prediction made for each training window as it came, before the optimizer step on it, with
    the state carried from window to window (``fit``'s per-step hook), and the last weights,
    which the tutorial keeps (``keep="last"``).

    Args:
        cfg: a config with ``data.protocol`` tutorial.
        callbacks: fit's callbacks (the tracked run's metric buffer).

    Returns:
        (the training windows, their predictions (steps, T, 1), the model after the last step,
        fit's result).
    """
    if cfg.data.protocol != "tutorial":
        raise ValueError(f"replay_tutorial needs data.protocol tutorial, "
                         f"got {cfg.data.protocol!r}")
    preds: list[torch.Tensor] = []

    def keep(_step: int, pred: torch.Tensor) -> None:
        interrupts.check()  # a safe point: no store is written while the replay trains
        preds.append(pred[0])

    result = fit(cfg, callbacks, on_step=keep, keep="last")
    model = build_model(cfg.model, result.state_dict)
    return (tutorial_windows(0, cfg.train.steps), torch.stack(preds).cpu().numpy(), model,
            result)


@dataclass(frozen=True)
class TutorialRun:
    """The tutorial's protocol with one seed: what its training showed, and what it learnt."""

    seed: int
    train_cliff: float
    """Cliff of the predictions made during training, over all training windows."""
    train_interior: float
    """Interior step error of the same predictions (see ``metrics.interior_step_error``)."""
    early_cliff: float
    """Train-time cliff within the first third of the training windows."""
    late_cliff: float
    """... and within the last third."""
    early_mse: float
    """Train-time MSE over the first third of the training windows."""
    late_mse: float
    """... and over the last third."""
    scores: dict[str, float]
    """``score_sets`` of the model as training left it (the tutorial keeps the last weights)."""
    seconds: float
    train_pred: np.ndarray
    """The train-time predictions, (steps, T, 1), for the red/blue figure."""


def _thirds(ws: Windows, pred: np.ndarray, warmup: int) -> tuple[float, float, float, float]:
    """(early cliff, late cliff, early MSE, late MSE) over the first and last third."""
    n = ws.x.shape[0]
    k = max(2, n // 3)
    jumps = boundary_jumps(pred, ws)

    def part(a: int, b: int) -> Windows:
        return Windows(ws.x[a:b], ws.y[a:b], ws.step[a:b], stateful=True)

    return (float(jumps[: k - 1].mean()), float(jumps[n - k:].mean()),
            masked_mse(pred[:k], part(0, k), warmup), masked_mse(pred[n - k:], part(n - k, n), 0))


def tutorial_run(cfg: ExperimentConfig, seed: int, sets: dict[str, Windows],
                 warmup: int | None = None) -> TutorialRun:
    """Replays the tutorial with ``train.seed = seed`` and measures its claims' quantities.

    Args:
        cfg: the tutorial's config (it trains as the blog did, on every point).
        seed: the weight seed.
        sets: held-out sets to test on.
        warmup: the warm-up its MSEs are scored with (the report passes the job's, so all its
            tables score alike); the config's own when None.
    """
    warmup = cfg.data.warmup if warmup is None else warmup
    cfg = cfg.replace({"train.seed": seed})
    ws, pred, model, result = replay_tutorial(cfg)
    scores = score_sets(model_predictor(model), sets, warmup)
    return measure_tutorial(cfg, ws, pred, scores, result.seconds, warmup)


def measure_tutorial(cfg: ExperimentConfig, ws: Windows, pred: np.ndarray,
                     scores: dict[str, float], seconds: float,
                     warmup: int | None = None) -> TutorialRun:
    """The claims' quantities of one replay (``replay_tutorial``'s windows and predictions),
    with the last weights' ``score_sets``; its MSEs scored with ``warmup`` (the config's own
    when None)."""
    warmup = cfg.data.warmup if warmup is None else warmup
    early_cliff, late_cliff, early_mse, late_mse = _thirds(ws, pred, warmup)
    return TutorialRun(
        seed=cfg.train.seed, train_cliff=cliff(pred, ws),
        train_interior=interior_step_error(pred, ws), early_cliff=early_cliff,
        late_cliff=late_cliff, early_mse=early_mse, late_mse=late_mse, scores=scores,
        seconds=seconds, train_pred=pred)


def baseline_train_cliffs(cfg: ExperimentConfig) -> dict[str, float]:
    """The baselines' cliff on the tutorial's training windows (the same windows the train-time
    cliff of the cells is measured on)."""
    ws = tutorial_windows(0, cfg.train.steps)
    return {name: cliff(fn(ws), ws) for name, fn in BASELINES.items()}
