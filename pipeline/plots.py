"""Figures of predictions; they are returned, never saved or logged here.

Built on ``matplotlib.figure.Figure`` directly rather than pyplot: no global figure registry to
leak from, no GUI backend to pick, and nothing to close.

    >>> from pipeline.plots import prediction_figure
    >>> fig = prediction_figure(ws, pred, warmup=3, title="lstm")    # doctest: +SKIP
"""

from __future__ import annotations

import threading

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, MultipleLocator

from pipeline.data import Windows

DRAWING = threading.RLock()
"""Held wherever a figure is built or drawn while other threads may draw: a run's figure
(``Tracker.log_figure``, in its figure thread too) and a study's Optuna plots. Matplotlib is
not thread-safe (its docs leave the locking to the caller), and with ``tune --trials-at-once``
both happen at once: unlocked, mathtext's shared parser failed a tutorial-config study
("Expected end of text, found '$'" on a log axis's ``10^{-2}``) on the first try of one
process x 2 trials at once."""

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
    # Fixed margins, not layout="constrained": the constrained solver draws the whole figure
    # once more before saving, which was half the cost of every trial's PNG.
    fig = Figure(figsize=(10, 3.5))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.14, top=0.91)
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
    if ws.t is None:  # a tick where each window starts
        ax.xaxis.set_major_locator(MultipleLocator(ws.x.shape[1]))
    # Half as many ticks as matplotlib's default: drawing ticks was half of this figure's
    # rendering, which a trial's figure thread does on a core another worker trains on.
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.set_ylabel("cos t")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _label(style: dict, keep: bool) -> dict:
    return style if keep else {**style, "label": None}


BASELINE_STYLES = {
    "zero": {"color": "0.45", "linestyle": ":", "lw": 1.2, "label": "baseline: zero"},
    "linear_rule": {"color": "black", "linestyle": "--", "lw": 1.0,
                    "label": "baseline: linear rule"},
}
"""How the two reference predictors are drawn wherever models are."""
_CELL_COLORS = ("tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def _panel_windows(ws: Windows, most: int) -> int:
    """Windows per panel: about 60 points, at least one window, at most ``most``."""
    return max(1, min(most, 60 // ws.x.shape[1], ws.x.shape[0]))


def comparison_figure(sets: dict[str, Windows], preds: dict[str, dict[str, np.ndarray]],
                      title: str, n_windows: int = 4) -> Figure:
    """Every model and baseline on the same held-out windows, one panel per set.

    Args:
        sets: held-out sets by name.
        preds: label -> set name -> predictions (n, T, 1); labels ``zero`` and ``linear_rule``
            are drawn in the baseline styles, the others (the cells' champions) in colour.
        title: figure title.
        n_windows: most windows drawn per panel (fewer for long windows).
    """
    fig = Figure(figsize=(11, 2.6 * len(sets) + 0.6), layout="constrained")
    axes = fig.subplots(len(sets), 1, squeeze=False)[:, 0]
    models = [label for label in preds if label not in BASELINE_STYLES]
    for ax, (name, ws) in zip(axes, sets.items(), strict=True):
        n = _panel_windows(ws, n_windows)
        t = _time_axis(ws, n)
        for i in range(n):
            first = i == 0
            ax.plot(t[i], ws.y[i, :, 0], **_label({**TARGET_STYLE, "lw": 2.5, "alpha": 0.5},
                                                   first))
            for label, style in BASELINE_STYLES.items():
                if label in preds:
                    ax.plot(t[i], preds[label][name][i, :, 0], **_label(style, first))
            for k, label in enumerate(models):
                ax.plot(t[i], preds[label][name][i, :, 0], lw=1.2,
                        color=_CELL_COLORS[k % len(_CELL_COLORS)],
                        label=label if first else None)
        ax.set_title(f"test set {name}", fontsize="medium", loc="left")
        ax.set_ylabel("cos t")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    axes[-1].set_xlabel("t (tutorial set) or point (windows laid end to end)")
    fig.suptitle(title)
    return fig


def tutorial_figure(ws: Windows, preds: dict[str, np.ndarray], notes: dict[str, str],
                    title: str) -> Figure:
    """The blog's figure, one panel per cell: the target in red and the prediction made during
    training in blue, window by window, with the baselines drawn thin.

    Args:
        ws: the tutorial's training windows (each drawn as its own segment, so cliffs show).
        preds: cell -> train-time predictions (n, T, 1).
        notes: cell -> a line added to the panel title (e.g. its cliff).
        title: figure title.
    """
    from pipeline.data import linear_rule_baseline

    rule = linear_rule_baseline(ws)
    fig = Figure(figsize=(12, 2.4 * len(preds) + 0.6), layout="constrained")
    axes = fig.subplots(len(preds), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (cell, pred) in zip(axes, preds.items(), strict=True):
        for i in range(ws.x.shape[0]):
            first = i == 0
            ax.plot(ws.t[i], ws.y[i, :, 0], **_label(TARGET_STYLE, first))
            ax.plot(ws.t[i], pred[i, :, 0], **_label(PRED_STYLE, first))
            ax.plot(ws.t[i], rule[i, :, 0], **_label({**BASELINE_STYLES["linear_rule"],
                                                      "lw": 0.6}, first))
        ax.axhline(0.0, **{**BASELINE_STYLES["zero"], "lw": 0.6})
        ax.set_title(f"{cell}: {notes.get(cell, '')}", fontsize="medium", loc="left")
        ax.set_ylabel("cos t")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    axes[-1].set_xlabel("t (the tutorial's training windows, each predicted as it was trained on)")
    fig.suptitle(title)
    return fig
