"""Baselines, seed retrains and the tutorial replay (pipeline/evaluation.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import CELLS, ROOT

from pipeline.config import load_config
from pipeline.evaluation import (
    baseline_scores,
    baseline_train_cliffs,
    held_out_sets,
    model_predictor,
    replay_tutorial,
    score_sets,
    tutorial_run,
)
from pipeline.train import build_model, fit


@pytest.fixture
def tutorial_cfg():
    return load_config(ROOT / "experiments" / "tutorial.yaml", {"train.steps": 12,
                                                                "train.device": "cpu"})


def test_baselines_bracket_every_model(tiny_cfg) -> None:
    """Predicting zero scores about 0.5 (the mean of cos^2); the exact rule about 0 once the
    warm-up is left out."""
    scores = baseline_scores(tiny_cfg)
    for name in [*(f"test/{t.name}/mse" for t in tiny_cfg.data.tests), "val/mse"]:
        assert 0.4 < scores["zero"][name] < 0.6
        assert scores["linear_rule"][name] < 1e-6
    assert scores["zero"]["test/tutorial/cliff"] == 0.0


def test_score_sets_measures_cliffs_on_consecutive_windows_only(tiny_cfg) -> None:
    sets = held_out_sets(tiny_cfg)
    scores = score_sets(lambda ws: ws.y * 0.5, sets, tiny_cfg.data.warmup)
    assert set(scores) == {*(f"test/{n}/mse" for n in sets), "test/mse",
                           "test/tutorial/cliff", "test/tutorial/step_error"}


@pytest.mark.parametrize("cell", CELLS)
def test_replay_trains_exactly_as_fit(tutorial_cfg, cell: str) -> None:
    """The replay's last weights are fit's when fit validates only at the last step."""
    cfg = tutorial_cfg.replace({"model.cell": cell, "train.eval_every": 12})
    ws, pred, model, _ = replay_tutorial(cfg)
    assert pred.shape == ws.y.shape == (12, 10, 1)
    fitted = fit(cfg).state_dict
    for key, value in model.state_dict().items():
        # The same step as fit, so the same weights bit for bit.
        torch.testing.assert_close(value, fitted[key], rtol=0, atol=0)


def test_replay_refuses_the_default_protocol(tiny_cfg) -> None:
    with pytest.raises(ValueError, match="tutorial"):
        replay_tutorial(tiny_cfg)


def test_seeds_differ_and_repeat(tiny_cfg) -> None:
    cfg = tiny_cfg.replace({"model.cell": "gru", "model.hidden_size": 8})
    sets = held_out_sets(cfg)

    def retrain(seed: int) -> dict[str, float]:  # what the report's seed runs compute
        seeded = cfg.replace({"train.seed": seed})
        model = build_model(seeded.model, fit(seeded).state_dict)
        return score_sets(model_predictor(model), sets, cfg.data.warmup)

    a, b, a2 = (retrain(s) for s in (1, 2, 1))
    assert a == a2
    assert a["test/mse"] != b["test/mse"]


def test_tutorial_run_measures_train_time_cliffs(tutorial_cfg) -> None:
    run = tutorial_run(tutorial_cfg.replace({"model.cell": "rnn"}), 0,
                       held_out_sets(tutorial_cfg))
    assert run.train_cliff > 0 and run.train_interior > 0
    assert run.early_mse > 0 and run.late_mse > 0
    assert "test/tutorial/cliff" in run.scores
    assert baseline_train_cliffs(tutorial_cfg) == {"zero": 0.0, "linear_rule": 0.0}
