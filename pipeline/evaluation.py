"""Scoring a logged or registered model on the held-out sets, beside the two baselines.

    python -m pipeline evaluate --model-uri models:/sin2cos-gru@champion --data all
"""

from __future__ import annotations

from typing import Any

from pipeline.config import ExperimentConfig
from pipeline.data import linear_rule_baseline, make_eval_set, masked_mse, zero_baseline
from pipeline.plots import prediction_figure
from pipeline.train import predict_windows

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
