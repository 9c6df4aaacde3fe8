"""The report's numbers and verdicts (pipeline/verdicts.py): verdicts computed from the
numbers, differences beyond seed noise, edge warnings over the search space."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from pipeline.evaluation import SeedRun, TutorialRun
from pipeline.verdicts import (
    CellResult,
    TutorialResult,
    differences,
    edge_warnings,
    median_best_step,
    refused_champions,
    tutorial_claims,
)


@dataclass
class FakeOutcome:
    """The fields of tuning.StudyOutcome the report reads."""

    cell: str
    best_params: dict
    best_trial: int | None = 0
    val_mse: float = 0.01
    study_run_id: str = ""
    test_mse: dict = field(default_factory=dict)
    model_version: str | None = None
    champion_moved: bool = False


def _seed_runs(cfg, means: dict[str, float], spread: float) -> list[SeedRun]:
    rng = np.random.default_rng(0)
    runs = []
    for seed in range(1, 6):
        scores = {f"test/{t.name}/mse": means[t.name] + spread * rng.standard_normal()
                  for t in cfg.data.tests}
        scores["test/mse"] = float(np.mean(list(scores.values())))
        scores["test/tutorial/cliff"] = 0.05
        runs.append(SeedRun(seed, 0.01, scores, 1.0, "cpu", best_step=10 * seed))
    return runs


def _tutorial_runs(cliff: float, inside: float, early: float, late: float,
                   noise: float = 0.002) -> list[TutorialRun]:
    rng = np.random.default_rng(1)
    out = []
    for seed in range(6):
        e = noise * rng.standard_normal()
        out.append(TutorialRun(seed, cliff + e, inside - e, cliff + e, cliff + e, early + e,
                               late - e, {"test/tutorial/cliff": cliff + e,
                                          "test/tutorial/step_error": inside,
                                          "test/tutorial/mse": 0.02}, 0.3, np.zeros((3, 10, 1))))
    return out


def test_edge_warnings_name_the_parameter_and_the_bound(tiny_cfg) -> None:
    space = tiny_cfg.study.space
    lo, hi = space["model.hidden_size"].low, space["model.hidden_size"].high
    lr_lo, lr_hi = space["train.lr"].low, space["train.lr"].high
    middle, mid_h = float(np.sqrt(lr_lo * lr_hi)), round(float(np.sqrt(lo * hi)))
    warnings = edge_warnings(
        [FakeOutcome("rnn", {"model.hidden_size": lo, "train.lr": middle}),
         FakeOutcome("gru", {"model.hidden_size": mid_h, "train.lr": lr_hi * 0.99})], tiny_cfg)
    assert len(warnings) == 2
    assert warnings[0].startswith("rnn: best model.hidden_size") and "low edge" in warnings[0]
    assert warnings[1].startswith("gru: best train.lr") and "high edge" in warnings[1]
    assert "study.space.train.lr" in warnings[1]
    assert edge_warnings([FakeOutcome("lstm", {"model.hidden_size": mid_h,
                                               "train.lr": middle})], tiny_cfg) == []


def test_edge_warnings_loop_over_any_space(tiny_cfg) -> None:
    cfg = tiny_cfg.replace({"study.space": {"model.num_layers": {"low": 1, "high": 4,
                                                                  "type": "int"}}})
    warnings = edge_warnings([FakeOutcome("rnn", {"model.num_layers": 4})], cfg)
    assert len(warnings) == 1 and "model.num_layers" in warnings[0]
    assert "linear scale" in warnings[0]


def test_differences_follow_the_seed_noise(tiny_cfg) -> None:
    means = {t.name: 0.1 for t in tiny_cfg.data.tests}
    worse = {t.name: 0.3 for t in tiny_cfg.data.tests}
    baselines = {"zero": {"test/mse": 0.5}, "linear_rule": {"test/mse": 0.0}}
    clear = [CellResult("gru", {}, 0.01, _seed_runs(tiny_cfg, means, 0.005)),
             CellResult("rnn", {}, 0.01, _seed_runs(tiny_cfg, worse, 0.005))]
    line = differences(tiny_cfg, clear, baselines)[-1]
    assert "Clearly different: gru < rnn" in line
    assert "zero beaten by gru, rnn" in line and "linear rule beaten by none" in line
    noisy = [CellResult("gru", {}, 0.01, _seed_runs(tiny_cfg, means, 0.3)),
             CellResult("rnn", {}, 0.01, _seed_runs(tiny_cfg, worse, 0.3))]
    assert "No difference between cells beyond seed noise" in differences(
        tiny_cfg, noisy, baselines)[-1]


@pytest.mark.parametrize(("rnn_cliff", "verdict"), [(0.2, "holds"), (0.02, "does not hold")])
def test_cliff_verdicts_come_from_the_numbers(tiny_cfg, rnn_cliff: float, verdict: str) -> None:
    from pipeline.config import REPO, load_config

    tcfg = load_config(REPO / "experiments" / "tutorial.yaml")
    tut = TutorialResult(tcfg, {"rnn": _tutorial_runs(rnn_cliff, 0.08, 0.3, 0.03),
                                "lstm": _tutorial_runs(0.03, 0.08, 0.3, 0.3)}, {}, {})
    claims = {c.claim: c for c in tutorial_claims(tut)}
    rnn = next(c for k, c in claims.items() if k.startswith("The RNN") and "during" in k)
    lstm = next(c for k, c in claims.items() if k.startswith("The LSTM's predictions show"))
    stable = next(c for k, c in claims.items() if "stable" in k)
    assert rnn.verdict == verdict
    assert lstm.verdict == "holds"  # its jump is clearly below its step error inside windows
    assert stable.verdict == "not shown"  # the LSTM runs above neither improve nor settle


def test_a_champion_worse_than_zero_is_named(tiny_cfg) -> None:
    outcomes = [FakeOutcome("rnn", {"model.hidden_size": 8, "train.lr": 1e3}, val_mse=3e5,
                            model_version="1"),
                FakeOutcome("lstm", {"model.hidden_size": 8, "train.lr": 1e-2}, val_mse=0.01,
                            model_version="1", champion_moved=True)]
    (line,) = refused_champions(outcomes, 0.5, tiny_cfg)
    assert line.startswith("rnn:") and "without the alias @champion" in line


def test_the_best_step_is_the_seeds_median(tiny_cfg) -> None:
    cell = CellResult("gru", {}, 0.01, _seed_runs(tiny_cfg, {t.name: 0.1
                                                            for t in tiny_cfg.data.tests}, 0.01))
    assert median_best_step(cell) == 30
    assert median_best_step(CellResult("gru", {}, 0.01, [])) is None
