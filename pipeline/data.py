"""The sin -> cos windows: the tutorial's protocol and the held-out sets.

Every array is float32 and shaped (windows, points, 1), the layout ``batch_first`` cells take.
Everything is deterministic from ``DataConfig.seed``; each set derives its own seed from it and
its name, so adding a test set never changes the others.

    >>> from pipeline.config import DataConfig
    >>> from pipeline.data import make_eval_set
    >>> ws = make_eval_set(DataConfig(), DataConfig().val)
    >>> ws.x.shape
    (256, 20, 1)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.config import TUTORIAL_POINTS, DataConfig, EvalSetConfig


@dataclass(frozen=True)
class Windows:
    """Inputs, targets and the phase step of each window (radians between two points)."""

    x: np.ndarray
    """sin values, (n, T, 1) float32."""
    y: np.ndarray
    """cos values, (n, T, 1) float32."""
    step: np.ndarray
    """Phase step of each window, (n,) float64: what the exact linear rule needs."""
    stateful: bool = False
    """True when the windows are consecutive and the hidden state runs through all of them."""
    t: np.ndarray | None = None
    """Time of each point, (n, T), where it means something (the tutorial's windows)."""


def tutorial_windows(start: int, n: int) -> Windows:
    """The tutorial's windows s = start .. start+n-1, each of 10 points over [s*pi, (s+1)*pi].

    Consecutive windows share a time point (s+1)*pi, so the true jump between the last point of
    one and the first of the next is zero: the cliff metric builds on that.
    """
    t = np.stack([np.linspace(s * np.pi, (s + 1) * np.pi, TUTORIAL_POINTS, dtype=np.float32)
                  for s in range(start, start + n)])
    step = np.full(n, np.pi / (TUTORIAL_POINTS - 1))
    return Windows(np.sin(t)[..., None], np.cos(t)[..., None], step, stateful=True, t=t)


def random_windows(rng: np.random.Generator, n: int, seq_len: int,
                   spacing: tuple[float, float], frequency: tuple[float, float]) -> Windows:
    """Windows at uniformly random phases with a random spacing and frequency each.

    Args:
        rng: source of randomness.
        n: number of windows.
        seq_len: points per window.
        spacing: range of the time step between points.
        frequency: range of the angular frequency.
    """
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    step = rng.uniform(*spacing, size=n) * rng.uniform(*frequency, size=n)
    theta = phase + step[:, None] * np.arange(seq_len)[None, :]
    x = np.sin(theta).astype(np.float32)[..., None]
    y = np.cos(theta).astype(np.float32)[..., None]
    return Windows(x, y, step)


def make_eval_set(cfg: DataConfig, spec: EvalSetConfig) -> Windows:
    """The held-out set ``spec``, with unset fields taken from the training ranges."""
    if spec.kind == "tutorial":
        return tutorial_windows(spec.start, spec.n)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(spec.name.encode())])
    return random_windows(
        rng, spec.n, spec.seq_len or cfg.seq_len,
        spec.spacing if spec.spacing != (0.0, 0.0) else cfg.spacing,
        spec.frequency if spec.frequency != (0.0, 0.0) else cfg.frequency,
    )



def validation_set(cfg: DataConfig) -> Windows:
    """The validation windows (``cfg.val``): model selection and pruning look at these only."""
    return make_eval_set(cfg, cfg.val)

def make_train_batches(cfg: DataConfig, steps: int, batch_size: int) -> tuple[torch.Tensor, ...]:
    """All training inputs and targets up front, as (steps, batch, T, 1) tensors.

    Drawing them once keeps the training loop free of host work and gives a CUDA graph static
    inputs; at these sizes the whole schedule is a few MB.

    Args:
        cfg: the data config (protocol, ranges, seed).
        steps: optimizer steps.
        batch_size: windows per step; the tutorial protocol always uses 1.

    Returns:
        (x, y): CPU float32 tensors.
    """
    if cfg.protocol == "tutorial":
        ws = tutorial_windows(0, steps)
        return torch.from_numpy(ws.x[:, None]), torch.from_numpy(ws.y[:, None])
    rng = np.random.default_rng([cfg.seed, zlib.crc32(b"train")])
    ws = random_windows(rng, steps * batch_size, cfg.seq_len, cfg.spacing, cfg.frequency)
    shape = (steps, batch_size, cfg.seq_len, 1)
    return torch.from_numpy(ws.x.reshape(shape)), torch.from_numpy(ws.y.reshape(shape))


def metric_mask(seq_len: int, warmup: int, stateful: bool, n: int) -> np.ndarray:
    """Which points count, (n, T) bool: all but the warm-up of each window (its first
    ``warmup`` points, those before the first knowable one).

    With state carried through consecutive windows only the very first window warms up.
    """
    mask = np.ones((n, seq_len), dtype=bool)
    if stateful:
        mask[0, :warmup] = False
    else:
        mask[:, :warmup] = False
    return mask


def zero_baseline(ws: Windows) -> np.ndarray:
    """Predicts cos = 0 everywhere: the reference every model must beat (about 0.5 MSE)."""
    return np.zeros_like(ws.y)


def linear_rule_baseline(ws: Windows) -> np.ndarray:
    """The exact rule with the phase step d known: cos t = (sin t cos d - sin(t - d)) / sin d.

    Exact from the second point of a window; the first has no predecessor and predicts 0
    (it lies in the warm-up). For stateful windows the predecessor comes from the window
    before, skipping the shared point.
    """
    x = ws.x[..., 0].astype(np.float64)
    d = ws.step[:, None]
    prev = np.zeros_like(x)
    prev[:, 1:] = x[:, :-1]
    pred = (x * np.cos(d) - prev) / np.sin(d)
    if ws.stateful:
        pred[1:, 0] = (x[1:, 0] * np.cos(d[1:, 0]) - x[:-1, -2]) / np.sin(d[1:, 0])
        pred[0, 0] = 0.0
    else:
        pred[:, 0] = 0.0
    return pred[..., None].astype(np.float32)


def three_point_rule(ws: Windows) -> np.ndarray:
    """The exact rule with the phase step unknown, estimated from the inputs alone: what makes
    point 2 the first knowable one (``DataConfig.warmup``).

    sin(t+d) + sin(t-d) = 2 sin t cos d, so each three consecutive values s0, s1, s2 give
    cos d = (s0 + s2) / (2 s1); then cos t2 = (s2 cos d - s1) / sin d, with sin d > 0 for the
    steps in (0, pi) used here. At point k the estimate pools every triple up to k by least
    squares (cos d = sum s1 (s0 + s2) / (2 sum s1^2)), so a triple whose middle value is near 0,
    where one triple alone says little, is outweighed by the others. Causal: point k uses
    points 0..k only. Points 0 and 1 predict 0. Stateless windows only.
    """
    x = ws.x[..., 0].astype(np.float64)
    n, t = x.shape
    pred = np.zeros_like(x)
    if t < 3:
        return pred[..., None].astype(np.float32)
    mid, outer = x[:, 1:-1], x[:, :-2] + x[:, 2:]
    num = np.cumsum(mid * outer, axis=1)
    den = 2 * np.cumsum(mid * mid, axis=1)
    cos_d = np.clip(num / np.maximum(den, 1e-300), -1.0, 1.0)
    sin_d = np.sqrt(np.maximum(1.0 - cos_d**2, 1e-300))
    pred[:, 2:] = (x[:, 2:] * cos_d - x[:, 1:-1]) / sin_d
    return pred[..., None].astype(np.float32)


def masked_mse(pred: np.ndarray, ws: Windows, warmup: int) -> float:
    """MSE over the points that count (see ``metric_mask``)."""
    mask = metric_mask(ws.x.shape[1], warmup, ws.stateful, ws.x.shape[0])
    err = (pred[..., 0].astype(np.float64) - ws.y[..., 0]) ** 2
    return float(err[mask].mean())
