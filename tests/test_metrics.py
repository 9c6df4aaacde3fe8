"""The cliff metric and the seed statistics (pipeline/metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.data import random_windows, tutorial_windows
from pipeline.metrics import (
    boundary_jumps,
    clearly_less,
    cliff,
    interior_step_error,
    paired,
    summarize,
    t975,
)


def test_the_true_target_has_no_cliff_and_no_step_error() -> None:
    ws = tutorial_windows(0, 20)
    assert cliff(ws.y, ws) == pytest.approx(0.0, abs=1e-6)
    assert interior_step_error(ws.y, ws) == pytest.approx(0.0, abs=1e-6)


def test_cliff_is_the_mean_jump_at_window_boundaries() -> None:
    ws = tutorial_windows(0, 5)
    pred = ws.y.copy()
    pred[1::2] += 0.3  # every other window shifted: each of the 4 boundaries jumps by 0.3
    np.testing.assert_allclose(boundary_jumps(pred, ws), 0.3, atol=1e-6)
    assert cliff(pred, ws) == pytest.approx(0.3, abs=1e-6)
    # A shift inside windows is no step error: the steps inside are unchanged.
    assert interior_step_error(pred, ws) == pytest.approx(0.0, abs=1e-6)


def test_cliff_needs_consecutive_windows() -> None:
    ws = random_windows(np.random.default_rng(0), 4, 10, (0.1, 0.2), (1.0, 1.0))
    with pytest.raises(ValueError, match="consecutive"):
        cliff(ws.y, ws)


def test_summarize_gives_mean_std_and_student_t_interval() -> None:
    s = summarize([1.0, 2.0, 3.0, math.nan])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert s.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(summarize([5.0]).half_width)
    with pytest.raises(ValueError):
        summarize([math.nan])


def test_t_table_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 19, 30, 31, 45, 100, 1000):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=3e-3)


def test_a_difference_is_called_only_beyond_seed_noise() -> None:
    low = summarize([0.10, 0.11, 0.09, 0.10, 0.105])
    high = summarize([0.20, 0.21, 0.19, 0.20, 0.205])
    noisy = summarize([0.05, 0.30, 0.12, 0.25, 0.02])
    assert clearly_less(low, high)
    assert not clearly_less(high, low)
    assert not clearly_less(low, noisy)
    assert not clearly_less(summarize([0.1]), high)  # one seed: no interval, no call


def test_paired_differences_remove_shared_noise() -> None:
    first = [1.0, 5.0, 9.0]
    d = paired(first, [x - 0.5 for x in first])
    assert d.mean == pytest.approx(-0.5) and d.high < 0
