"""Figures of predictions; they are returned, never saved or logged here.

Built on ``matplotlib.figure.Figure`` directly rather than pyplot: no global figure registry to
leak from, no GUI backend to pick, and nothing to close.

    >>> from pipeline.plots import prediction_figure
    >>> fig = prediction_figure(ws, pred, warmup=3, title="lstm")    # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pipeline.data import Windows

TARGET_STYLE = {"color": "red", "linestyle": "-", "label": "target cos"}
PRED_STYLE = {"color": "blue", "linestyle": "-", "label": "prediction"}


def _time_axis(ws: Windows, n: int) -> np.ndarray:
    """Times of the first n windows: their own for the tutorial's, else laid end to end."""
    if ws.t is not None:
        return ws.t[:n]
    seq_len = ws.x.shape[1]
    return np.arange(n * seq_len, dtype=np.float64).reshape(n, seq_len)


def prediction_figure(ws: Windows, pred: np.ndarray, warmup: int, title: str,
                      n_windows: int = 4) -> Figure:
    """The tutorial's picture: target in red, prediction in blue, window after window.

    Args:
        ws: held-out windows.
        pred: predictions for them, (n, T, 1).
        warmup: leading points left out of the metric, shaded grey.
        title: figure title.
        n_windows: how many windows to draw.
    """
    n = min(n_windows, ws.x.shape[0])
    t = _time_axis(ws, n)
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    ax = fig.add_subplot()
    for i in range(n):
        first = i == 0
        ax.plot(t[i], ws.y[i, :, 0], **_label(TARGET_STYLE, first))
        ax.plot(t[i], pred[i, :, 0], **_label(PRED_STYLE, first))
        if warmup and (not ws.stateful or first):
            ax.axvspan(t[i, 0], t[i, warmup - 1], color="0.85", lw=0,
                       label="warm-up (not scored)" if first else None)
        if not ws.stateful and i:
            ax.axvline(t[i, 0] - 0.5, color="0.6", lw=0.5, ls=":")
    ax.set_xlabel("t" if ws.t is not None else "point (windows laid end to end)")
    ax.set_ylabel("cos t")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _label(style: dict, keep: bool) -> dict:
    return style if keep else {**style, "label": None}
