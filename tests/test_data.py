"""Data: shapes, determinism, the tutorial protocol's facts and the two baselines."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DataConfig, EvalSetConfig
from pipeline.data import (
    linear_rule_baseline,
    make_eval_set,
    make_train_batches,
    masked_mse,
    metric_mask,
    three_point_rule,
    tutorial_windows,
    zero_baseline,
)


def test_train_batches_have_static_shapes_and_match_their_inputs():
    x, y = make_train_batches(DataConfig(seq_len=12), steps=5, batch_size=4)
    assert tuple(x.shape) == tuple(y.shape) == (5, 4, 12, 1)
    # x is sin and y is cos of the same angles: sin^2 + cos^2 = 1.
    np.testing.assert_allclose((x**2 + y**2).numpy(), 1.0, atol=1e-5)


def test_everything_is_deterministic_from_the_seed():
    a, b = DataConfig(seed=3), DataConfig(seed=3)
    np.testing.assert_array_equal(make_train_batches(a, 3, 2)[0], make_train_batches(b, 3, 2)[0])
    np.testing.assert_array_equal(make_eval_set(a, a.val).x, make_eval_set(b, b.val).x)
    assert not np.array_equal(make_eval_set(a, a.val).x, make_eval_set(DataConfig(seed=4),
                                                                        a.val).x)


def test_sets_do_not_share_windows():
    cfg = DataConfig()
    val = make_eval_set(cfg, cfg.val)
    test = make_eval_set(cfg, cfg.tests[0])
    assert not np.isin(val.x[:, 0, 0], test.x[:, 0, 0]).any()


def test_out_of_range_set_lies_outside_training_steps():
    cfg = DataConfig()
    wide = make_eval_set(cfg, EvalSetConfig(name="wide", spacing=(0.5, 0.6)))
    assert wide.step.min() > cfg.spacing[1] * cfg.frequency[0]
    long = make_eval_set(cfg, EvalSetConfig(name="long", seq_len=100))
    assert long.x.shape[1] == 100


def test_tutorial_windows_are_the_seeds():
    ws = tutorial_windows(0, 60)
    assert ws.x.shape == (60, 10, 1) and ws.stateful
    expected = np.linspace(2 * np.pi, 3 * np.pi, 10, dtype=np.float32)
    np.testing.assert_array_equal(ws.x[2, :, 0], np.sin(expected))
    # Consecutive windows share their boundary point...
    np.testing.assert_allclose(ws.t[:-1, -1], ws.t[1:, 0], rtol=1e-6)
    # ... and the whole training set holds only two distinct windows (phase 0 or pi).
    distinct = np.unique(np.round(ws.x[..., 0], 4), axis=0)
    assert len(distinct) == 2


def test_tutorial_protocol_trains_on_its_windows_in_order():
    x, _ = make_train_batches(DataConfig(protocol="tutorial", seq_len=10, warmup=0), 60, 64)
    assert tuple(x.shape) == (60, 1, 10, 1)  # batch 1 whatever was asked
    np.testing.assert_array_equal(x[5, 0].numpy(), tutorial_windows(5, 1).x[0])


@pytest.mark.parametrize("spec", [EvalSetConfig(name="a"), EvalSetConfig(name="b", seq_len=50),
                                  EvalSetConfig(name="t", kind="tutorial", n=8, start=60)])
def test_linear_rule_is_exact_and_zero_scores_about_half(spec):
    cfg = DataConfig()
    ws = make_eval_set(cfg, spec)
    assert masked_mse(linear_rule_baseline(ws), ws, warmup=1) < 1e-8
    assert 0.35 < masked_mse(zero_baseline(ws), ws, warmup=1) < 0.65


def test_warmup_mask_cuts_each_window_or_only_the_first_when_state_is_carried():
    stateless = metric_mask(5, 2, stateful=False, n=3)
    assert stateless.sum() == 3 * 3
    assert not stateless[:, :2].any() and stateless[:, 2:].all()  # point 2 is scored
    stateful = metric_mask(5, 2, stateful=True, n=3)
    assert stateful.sum() == 15 - 2 and not stateful[0, :2].any() and stateful[1:].all()
    assert metric_mask(5, 0, stateful=False, n=2).all()


def test_default_warmup_is_the_first_knowable_point():
    assert DataConfig().warmup == 2
    from pipeline.config import load_config

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    assert load_config(root / "experiments" / "default.yaml").data.warmup == 2


@pytest.mark.parametrize("name", ["in_dist", "wide_step", "long"])
def test_three_points_fix_cos_at_the_third_with_the_step_unknown(name):
    """The knowable-point claim on the project's own sets: the rule that estimates the step
    from the inputs alone scores ~0 from point 2 on, and cannot from point 1."""
    cfg = DataConfig()
    ws = make_eval_set(cfg, next(t for t in cfg.tests if t.name == name))
    pred = three_point_rule(ws)
    err = (pred[..., 0].astype(np.float64) - ws.y[..., 0]) ** 2
    assert masked_mse(pred, ws, warmup=2) < 1e-6
    # Point 2 alone rests on one triple: exact wherever its middle value is not near 0.
    clear = np.abs(ws.x[:, 1, 0]) > 0.2
    assert clear.sum() > 0.5 * len(clear)
    assert err[clear, 2].max() < 1e-5
    # Point 1 is not knowable (two values fit any step): the rule says nothing there.
    assert err[:, 1].mean() > 0.1


def test_known_step_rule_is_exact_from_point_one_but_not_at_point_zero():
    cfg = DataConfig()
    ws = make_eval_set(cfg, cfg.tests[0])
    pred = linear_rule_baseline(ws)
    assert masked_mse(pred, ws, warmup=1) < 1e-10
    assert masked_mse(pred, ws, warmup=0) > 1e-2


def test_masked_mse_ignores_the_warmup():
    ws = make_eval_set(DataConfig(), EvalSetConfig(name="m", n=4))
    pred = ws.y.copy()
    pred[:, :3] = 100.0  # garbage where nothing is scored
    assert masked_mse(pred, ws, warmup=3) == 0.0
    assert masked_mse(pred, ws, warmup=2) > 1.0
