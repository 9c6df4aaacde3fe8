"""The job's report (pipeline/report.py): verdicts computed from the numbers, edge warnings,
tables with baselines, and the report logged on the job run."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from pipeline.evaluation import SeedRun, TutorialRun
from pipeline.report import (
    CellResult,
    TutorialResult,
    differences,
    edge_warnings,
    refused_champions,
    results_table,
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
    lo, hi = tiny_cfg.study.hidden_size
    lr_lo, lr_hi = tiny_cfg.study.lr
    middle = float(np.sqrt(lr_lo * lr_hi))
    warnings = edge_warnings([FakeOutcome("rnn", {"hidden_size": lo, "lr": middle}),
                              FakeOutcome("gru", {"hidden_size": 8, "lr": lr_hi * 0.99})],
                             tiny_cfg)
    assert len(warnings) == 2
    assert warnings[0].startswith("rnn: best hidden_size") and "low edge" in warnings[0]
    assert warnings[1].startswith("gru: best lr") and "high edge" in warnings[1]
    assert edge_warnings([FakeOutcome("lstm", {"hidden_size": 8, "lr": middle})], tiny_cfg) == []


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


def test_results_table_has_a_row_per_cell_and_per_baseline(tiny_cfg) -> None:
    cells = [CellResult("lstm", {"hidden_size": 9, "lr": 0.01}, 0.02,
                        _seed_runs(tiny_cfg, {t.name: 0.1 for t in tiny_cfg.data.tests}, 0.01))]
    table = results_table(tiny_cfg, cells, {"zero": {"test/mse": 0.5},
                                            "linear_rule": {"test/mse": 0.0}})
    rows = [r for r in table.splitlines() if r.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| lstm", "| baseline: zero",
                                                 "| baseline: linear rule"]
    assert " ± " in rows[0]
    # The champions are stateless models: their table has no cliff column.
    assert "cliff" not in table.splitlines()[0]
    # Where the best validation came, against the budget: has the curve flattened?
    assert f"best step (of {tiny_cfg.train.steps})" in table.splitlines()[0]
    assert rows[0].split(" | ")[-3] == "30"  # the median of the seeds


def test_a_champion_worse_than_zero_is_named_in_the_report(tiny_cfg) -> None:
    outcomes = [FakeOutcome("rnn", {"hidden_size": 8, "lr": 1e3}, val_mse=3e5,
                            model_version="1"),
                FakeOutcome("lstm", {"hidden_size": 8, "lr": 1e-2}, val_mse=0.01,
                            model_version="1", champion_moved=True)]
    (line,) = refused_champions(outcomes, 0.5, tiny_cfg)
    assert line.startswith("rnn:") and "without the alias @champion" in line
    from pipeline.report import summary_table

    table = summary_table(outcomes, tiny_cfg)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert "v1" in rows["rnn"] and "(no alias: not below zero)" in rows["rnn"]
    assert "v1" in rows["lstm"] and "@champion" in rows["lstm"]
    assert "no alias" not in rows["lstm"]


@pytest.mark.parametrize(("rnn_cliff", "verdict"), [(0.2, "holds"), (0.02, "does not hold")])
def test_cliff_verdicts_come_from_the_numbers(tiny_cfg, rnn_cliff: float, verdict: str) -> None:
    from pipeline.config import load_config
    from pipeline.report import REPO

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


def test_job_report_is_logged_on_the_job_run(tiny_cfg, tracking_store) -> None:
    from mlflow import MlflowClient

    from pipeline.report import job_report
    from pipeline.tracking import Tracker
    from pipeline.tuning import run_study

    cfg = tiny_cfg.replace({"study.cells": "gru", "study.storage": "sqlite:///optuna.db",
                            "report.seeds": 2, "report.tutorial_seeds": 2})
    tracker = Tracker(cfg.tracking.experiment)
    job = tracker.start_run("job", tags={"cellstudy.level": "job"})
    outcome = run_study(cfg, "gru", tracker, job)
    text = job_report(cfg, [outcome], tracker, job)

    client = MlflowClient()
    assert client.download_artifacts(job, "report.md") and "| gru |" in text
    # One scoring: the linear rule's row reads the same in the results and tutorial tables.
    rule_rows = [r for r in text.splitlines() if r.startswith("| baseline: linear rule")]
    assert len(rule_rows) == 2
    first = rule_rows[0].split(" | ")[4:4 + len(cfg.data.tests)]
    second = rule_rows[1].split(" | ")[-1 - len(cfg.data.tests):-1]
    assert first == second and all(float(v) < 1e-6 for v in first)
    assert text.count("leaves out the first 2 points") == 1
    assert {a.path for a in client.list_artifacts(job, "report")} == {
        "report/comparison.png", "report/tutorial.png"}
    # Embedded by relative paths that resolve beside report.md, and versions linked.
    for figure in ("report/comparison.png", "report/tutorial.png"):
        assert f"]({figure})" in text
    assert f"(#/models/sin2cos-gru/versions/{outcome.model_version})" in text
    runs = client.search_runs([tracker.experiment_id])
    by_level: dict[str, list] = {}
    for r in runs:
        by_level.setdefault(r.data.tags.get("cellstudy.level"), []).append(r)
    assert {r.info.run_name for r in by_level["baseline"]} == {"baseline-zero",
                                                               "baseline-linear-rule"}
    assert all(r.data.tags["mlflow.parentRunId"] == job for r in by_level["baseline"])
    (seeds,) = by_level["seeds"]
    assert seeds.data.tags["mlflow.parentRunId"] == outcome.study_run_id
    history = client.get_metric_history(seeds.info.run_id, "test/in_dist/mse")
    assert sorted(m.step for m in history) == [1, 2]
    assert "test/in_dist/mse_ci95" in seeds.data.metrics
    assert [r.info.run_name for r in by_level["tutorial"]] == ["tutorial-gru"]
