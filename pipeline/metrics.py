"""Metrics beyond MSE, and the statistics that say whether a difference is real.

The cliff metric measures the tutorial's "cliffs": consecutive tutorial windows share a time
point ((s+1)*pi ends window s and starts window s+1), so a model that carries its state from
window to window should predict the same value twice there. Its jump is the cliff.

Seed noise is summarised as a mean and a Student-t 95% interval; two means are called different
only when the 95% interval of their difference excludes zero.

    >>> from pipeline.metrics import summarize
    >>> summarize([0.1, 0.2, 0.3]).mean
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.data import Windows

# Two-sided 95% quantiles of Student's t by degrees of freedom (df > 30 uses 1.96 + a little).
# A table rather than scipy: the core depends on numpy and torch only.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
         17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069,
         24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042}


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975.get(df, 1.96 + 2.4 / df)  # within 0.003 of the exact value past 30


def _check_boundaries(ws: Windows) -> None:
    if not ws.stateful or ws.x.shape[0] < 2:
        raise ValueError("the cliff needs two or more consecutive (stateful) windows")


def boundary_jumps(pred: np.ndarray, ws: Windows) -> np.ndarray:
    """|predicted jump - true jump| from the last point of each window to the first of the next.

    For the tutorial's windows the true jump is zero (the two points are the same time), so
    this is the prediction's own jump.

    Args:
        pred: predictions, (n, T, 1), made with the state carried across windows.
        ws: consecutive windows.

    Returns:
        (n - 1,) float64.
    """
    _check_boundaries(ws)
    p, y = pred[..., 0].astype(np.float64), ws.y[..., 0].astype(np.float64)
    return np.abs((p[1:, 0] - p[:-1, -1]) - (y[1:, 0] - y[:-1, -1]))


def cliff(pred: np.ndarray, ws: Windows) -> float:
    """The cliff metric: mean absolute jump of the prediction across window boundaries
    (minus the true jump, which is zero for the tutorial's windows)."""
    return float(boundary_jumps(pred, ws).mean())


def interior_step_error(pred: np.ndarray, ws: Windows) -> float:
    """The same quantity between neighbouring points inside windows: mean |predicted step -
    true step|. A cliff is a boundary effect only when it is larger than this."""
    p, y = pred[..., 0].astype(np.float64), ws.y[..., 0].astype(np.float64)
    return float(np.abs(np.diff(p, axis=1) - np.diff(y, axis=1)).mean())


@dataclass(frozen=True)
class Spread:
    """Mean of a few seeds' values and its 95% interval."""

    mean: float
    std: float
    """Sample standard deviation (0 for a single value)."""
    half_width: float
    """Half-width of the Student-t 95% interval of the mean (nan for a single value)."""
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def summarize(values: Sequence[float]) -> Spread:
    """Mean, standard deviation and 95% interval half-width of ``values`` (nan ignored).

    Raises:
        ValueError: no finite value.
    """
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no finite value to summarize")
    mean = float(arr.mean())
    if arr.size == 1:
        return Spread(mean, 0.0, math.nan, 1)
    std = float(arr.std(ddof=1))
    return Spread(mean, std, t975(arr.size - 1) * std / math.sqrt(arr.size), int(arr.size))


def difference(a: Spread, b: Spread) -> tuple[float, float]:
    """a.mean - b.mean and the half-width of its 95% interval (Welch's standard error, with the
    smaller sample's degrees of freedom: conservative for a handful of seeds).

    Returns:
        (difference, half-width); the half-width is nan when either side has one value.
    """
    diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return diff, math.nan
    se = math.sqrt(a.std**2 / a.n + b.std**2 / b.n)
    return diff, t975(min(a.n, b.n) - 1) * se


def clearly_less(a: Spread, b: Spread) -> bool:
    """True when a's mean is below b's by more than the seed noise (95% interval of the
    difference entirely below zero)."""
    diff, half = difference(a, b)
    return math.isfinite(half) and diff + half < 0


def paired(first: Sequence[float], second: Sequence[float]) -> Spread:
    """The spread of per-seed differences ``second - first``: for two measurements of the same
    seeds, where pairing removes the noise they share."""
    return summarize([b - a for a, b in zip(first, second, strict=True)])
