"""The job's report (pipeline/report.py): every model it trains is a run of its own, and the
report and its figures are logged on the job run."""

from __future__ import annotations

import base64
from pathlib import Path


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
    # The same report as one page, for MLflow's viewer: the logged figures embedded, byte for
    # byte, and the version linked.
    page = Path(client.download_artifacts(job, "report.html")).read_text()
    for figure in ("report/comparison.png", "report/tutorial.png"):
        png = Path(client.download_artifacts(job, figure)).read_bytes()
        assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert f'href="#/models/sin2cos-gru/versions/{outcome.model_version}"' in page
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
    # Every model the report trains is one run of its own, with its curve and its plot.
    assert sorted(r.info.run_name for r in by_level["seed"]) == ["gru-seed-1", "gru-seed-2"]
    assert sorted(r.info.run_name for r in by_level["tutorial-seed"]) == [
        "tutorial-gru-seed-0", "tutorial-gru-seed-1"]
    for run, parent in [*((r, outcome.study_run_id) for r in by_level["seed"]),
                        *((r, job) for r in by_level["tutorial-seed"])]:
        assert run.data.tags["mlflow.parentRunId"] == parent and run.info.status == "FINISHED"
        assert client.get_metric_history(run.info.run_id, "val/mse")
        assert "test/mse" in run.data.metrics
        assert "val_predictions.png" in {f.path for f in client.list_artifacts(run.info.run_id)}
    # A second report (a rerun after an interruption, or the parent after its workers trained
    # the seeds) reads every retrain and tutorial run back: the same document, no new runs.
    assert tracker.load_array(by_level["tutorial-seed"][0].info.run_id,
                              "replay/train_pred.json").shape == (_tutorial_steps(cfg), 10, 1)
    again = job_report(cfg, [outcome], tracker, job)
    assert again == text
    counts = {level: len(rs) for level, rs in by_level.items()}
    rerun: dict[str, int] = {}
    for r in client.search_runs([tracker.experiment_id]):
        level = r.data.tags.get("cellstudy.level")
        rerun[level] = rerun.get(level, 0) + 1
    assert rerun == counts, "the report trained or logged a run twice"


def _tutorial_steps(cfg) -> int:
    from pipeline.config import load_config, resolve_path

    return load_config(resolve_path(cfg.report.tutorial_config)).train.steps
