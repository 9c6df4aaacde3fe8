"""What a researcher gets at the end of a job: ``report.md`` and ``report.html`` on the job run,
two figures, and the same tables on the console.

After the studies, ``job_report``:

1. scores the two baselines (predict zero; the exact linear rule with the step known) on the
   validation and test sets, each logged as a run under the job run (``cellstudy.level`` =
   ``baseline``);
2. retrains each cell's champion configuration (selected on validation only) with
   ``report.seeds`` fresh weight seeds and tests each once, so test MSE comes with its seed
   noise (a run ``<cell>-seeds`` under the study run, one step per seed);
3. replays the tutorial's protocol (``report.tutorial_config``) with ``report.tutorial_seeds``
   seeds per cell and measures the blog's claims: the cliff metric during training and after,
   stability over training (a run ``tutorial-<cell>`` under the job run);
4. warns when a best trial sits on the edge of its search range;
5. writes it all as Markdown with the verdicts computed from the numbers, and the same
   document as one HTML page with the figures embedded (MLflow 3.17's viewer shows
   report.md's images as text; see ``pipeline/render.py``).

This module is the orchestration only: the numbers and verdicts are pure functions in
``pipeline/verdicts.py``, the Markdown and the HTML are ``pipeline/render.py``'s.

Every model it trains is one tracked run (``pipeline/runs.py``); it imports neither mlflow nor
optuna itself.

    >>> print(job_report(cfg, outcomes, tracker, job_run_id))    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline import interrupts
from pipeline.config import ExperimentConfig, ModelConfig, load_config, resolve_path
from pipeline.data import Windows, tutorial_windows, validation_set
from pipeline.evaluation import (
    BASELINES,
    SeedRun,
    TutorialRun,
    baseline_scores,
    baseline_train_cliffs,
    held_out_sets,
    measure_tutorial,
    replay_tutorial,
)
from pipeline.metrics import cliff
from pipeline.plots import DRAWING, comparison_figure, tutorial_figure
from pipeline.render import (
    COMPARISON_FIGURE,
    TUTORIAL_FIGURE,
    document,
    summary_rows,
    to_html,
    to_markdown,
)
from pipeline.runs import tracked_fit
from pipeline.tracking import Tracker
from pipeline.verdicts import (
    CellResult,
    TutorialResult,
    edge_warnings,
    finite_spread,
    refused_champions,
)

log = logging.getLogger(__name__)


REPORT_MD = "report.md"
"""The report on the job run: shown by MLflow's viewer with its version links, its images as
text."""
REPORT_HTML = "report.html"
"""The same report as one page, figures embedded: the viewer shows it in a frame."""


def _log_seeds(tracker: Tracker, run_id: str, runs: Sequence[Any], extra: Callable[[Any], dict]
               ) -> None:
    """Per-seed values as steps (step = seed), then each key's mean and interval."""
    rows = [{**r.scores, **extra(r)} for r in runs]
    for r, row in zip(runs, rows, strict=True):
        tracker.log_metrics(run_id, row, step=r.seed)
    summary = {}
    for key in rows[0]:
        s = finite_spread([row[key] for row in rows])
        if s is not None:
            summary[f"{key}_mean"] = s.mean
            summary[f"{key}_ci95"] = s.half_width
    tracker.log_metrics(run_id, summary)


def _seed_run(tracker: Tracker, cfg: ExperimentConfig, seed: int, parent: str,
              sets: dict[str, Windows], val: Windows, base: ExperimentConfig) -> SeedRun:
    """One retrain of a champion configuration with weight seed ``seed``, a tracked run
    (stepped metrics, prediction plot, test scores) nested under the study run; its params
    are what differs from the job's config ``base``. Trained once: a FINISHED run of the same
    config under the same study run (a worker's, or an interrupted report's) is read back."""
    cfg = cfg.replace({"train.seed": seed})
    cell, name = cfg.model.cell, f"{cfg.model.cell}-seed-{seed}"
    key = _key(name, "seed", cfg)
    found = tracker.finished_run(parent, key)
    if found:
        metrics, tags = tracker.metrics_and_tags(found)
        return SeedRun(seed, metrics["val/mse_best"], _test_scores(metrics),
                       metrics["train/seconds"], tags["device"], int(metrics["val/best_step"]))
    interrupts.check()  # between the report's runs: a safe point
    done = tracked_fit(tracker, cfg, name, val=val, parent_run_id=parent,
                       tags={"cellstudy.level": "seed", "cell": cell, "cellstudy.key": key},
                       callbacks=[interrupts.callback], test_sets=sets, base=base)
    return SeedRun(seed, done.result.best_val, done.scores, done.result.seconds,
                   done.result.device, done.result.best_step)


def _test_scores(metrics: dict[str, float]) -> dict[str, float]:
    """A finished report run's test scores among its metrics (``score_sets``' ``test/...``)."""
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


def share_report_runs(cfg: ExperimentConfig, outcomes: Sequence, tracker: Tracker,
                    job_run_id: str, index: int, count: int) -> None:
    """In worker ``index`` of ``count``, once its studies are done: trains its share (every
    ``count``-th) of the report's seed retrains and then of its tutorial seed runs, so that N
    workers train them side by side instead of the one process that writes the report
    training them all in a row; the report then reads them back (``_seed_run``,
    ``_tutorial_seed``)."""
    sets, val = held_out_sets(cfg), validation_set(cfg.data)
    # The config's cell order, not this worker's (each starts at another cell): every worker
    # must count the same list for the shares to add up.
    ordered = sorted(outcomes, key=lambda o: cfg.study.cells.index(o.cell))
    tasks: list[Callable[[], Any]] = [
        functools.partial(_seed_run, tracker, ccfg, seed, parent, sets, val, cfg)
        for ccfg, seed, parent in _seed_tasks(cfg, ordered)]
    tcfg = _tutorial_config(cfg)
    if tcfg is not None:
        tasks += [functools.partial(_tutorial_seed, tracker, tcfg.replace({"model.cell": cell}),
                                    s, job_run_id, sets, cfg.data.warmup)
                  for cell in cfg.study.cells for s in range(cfg.report.tutorial_seeds)]
    for i, task in enumerate(tasks):
        if i % count == index:
            task()


def _seed_tasks(cfg: ExperimentConfig, outcomes: Sequence
                ) -> list[tuple[ExperimentConfig, int, str]]:
    """The report's seed retrains: (champion config, seed, study run) for every cell."""
    return [(cfg.replace({"model.cell": o.cell, **o.best_params}), s, o.study_run_id)
            for o in outcomes if o.best_trial is not None for s in _seeds(cfg)]


def _seeds(cfg: ExperimentConfig) -> list[int]:
    return [cfg.train.seed + i for i in range(1, cfg.report.seeds + 1)]


def _log_summary(tracker: Tracker, name: str, parent: str, level: str, cell: str,
                 params: dict[str, Any], runs: Sequence[Any],
                 extra: Callable[[Any], dict], key: Any) -> None:
    """A run that gathers a cell's seed runs: per-seed values as steps, their means and
    intervals; logged once for ``key`` (see ``_once``)."""

    def body(run_id: str) -> None:
        tracker.log_params(run_id, params)
        _log_seeds(tracker, run_id, runs, extra)

    _once(tracker, name, parent, {"cellstudy.level": level, "cell": cell}, key, body)


def _once(tracker: Tracker, name: str, parent: str, tags: dict[str, str], key: Any,
          body: Callable[[str], None]) -> str:
    """Logs a run of the report under ``parent`` once for ``key`` (what its numbers depend
    on): a rerun after an interrupted report finds the FINISHED run it logged and does not log
    a second one.

    Returns:
        The run's id, the earlier one where it was found.
    """
    key = _key(name, tags.get("cellstudy.level"), key)
    done = tracker.finished_run(parent, key)
    if done:
        return done
    interrupts.check()  # between the report's runs: a safe point
    with tracker.run(name, parent, {**tags, "cellstudy.key": key}) as run_id:
        body(run_id)
    return run_id


def _key(name: str, level: str | None, depends_on: Any) -> str:
    """The ``cellstudy.key`` tag of a report run: what its numbers depend on, hashed."""
    return hashlib.sha256(repr((name, level, depends_on)).encode()).hexdigest()[:32]


def _cell_results(cfg: ExperimentConfig, outcomes: Sequence, tracker: Tracker,
                  sets: dict[str, Windows]) -> list[CellResult]:
    val = validation_set(cfg.data)
    seeds = _seeds(cfg)
    cells = []
    for o in outcomes:
        if o.best_trial is None:
            continue
        ccfg = cfg.replace({"model.cell": o.cell, **o.best_params})
        log.info("%s: retraining the champion configuration with %d seeds", o.cell, len(seeds))
        runs = [_seed_run(tracker, ccfg, s, o.study_run_id, sets, val, cfg) for s in seeds]
        cells.append(CellResult(o.cell, dict(o.best_params), float(o.val_mse), runs))
        _log_summary(tracker, f"{o.cell}-seeds", o.study_run_id, "seeds", o.cell,
                     {"model.cell": o.cell, **o.best_params, "seeds": seeds},
                     runs, lambda r: {"val/mse_best": r.val_mse, "val/best_step": r.best_step,
                                      "train/seconds": r.seconds}, key=(ccfg, seeds))
    return cells


REPLAY_PATH = "replay/train_pred.json"
"""A tutorial seed run's predictions made during training: the claims and the red/blue figure
are measured on them, so a run another worker trained is read back whole."""


def _tutorial_seed(tracker: Tracker, cfg: ExperimentConfig, seed: int, parent: str,
                   sets: dict[str, Windows], warmup: int) -> TutorialRun:
    """The tutorial's protocol with one seed, a tracked run under the job run: stepped
    metrics, the blog's red/blue figure of the predictions made during training (kept too, as
    ``REPLAY_PATH``), its MSEs scored with the job's ``warmup``. Trained once: a FINISHED run
    of the same config under the job run (a worker's, or an interrupted report's) is read
    back."""
    base, cfg = cfg, cfg.replace({"train.seed": seed})  # its params: the seed, the cell, ...
    cell, name = cfg.model.cell, f"tutorial-{cfg.model.cell}-seed-{seed}"
    key = _key(name, "tutorial-seed", (cfg, warmup))
    found = tracker.finished_run(parent, key)
    if found:
        metrics, _ = tracker.metrics_and_tags(found)
        return measure_tutorial(cfg, tutorial_windows(0, cfg.train.steps),
                                tracker.load_array(found, REPLAY_PATH), _test_scores(metrics),
                                metrics["train/seconds"], warmup)
    interrupts.check()  # between the report's runs: a safe point
    replayed: dict[str, Any] = {}

    def train(c: ExperimentConfig, callbacks: list) -> Any:
        replayed["ws"], replayed["pred"], _, result = replay_tutorial(c, callbacks)
        return result

    def plot(_result: Any) -> Any:
        ws, pred = replayed["ws"], replayed["pred"]
        return tutorial_figure(ws, {cell: pred}, {cell: f"train-time cliff {cliff(pred, ws):.3g}"},
                               f"{cell}, seed {seed}: target (red), prediction in training (blue)")

    done = tracked_fit(tracker, cfg, name, val=validation_set(cfg.data), parent_run_id=parent,
                       tags={"cellstudy.level": "tutorial-seed", "cell": cell,
                             "cellstudy.key": key},
                       callbacks=[interrupts.callback], train=train, plot=plot, test_sets=sets,
                       test_warmup=warmup, base=base,
                       after_fit=lambda run_id: tracker.log_array(run_id, replayed["pred"],
                                                                  REPLAY_PATH))
    return measure_tutorial(cfg, replayed["ws"], replayed["pred"], done.scores,
                            done.result.seconds, warmup)


def _tutorial_config(cfg: ExperimentConfig) -> ExperimentConfig | None:
    """The tutorial protocol's config as the report runs it (the job's device and test sets),
    or None where the job replays no tutorial."""
    if not cfg.report.tutorial_config or cfg.report.tutorial_seeds == 0:
        return None
    tcfg = load_config(resolve_path(cfg.report.tutorial_config),
                       {"train.device": cfg.train.device})
    # The sets it is tested on are the job's: its config names them too.
    return dataclasses.replace(tcfg, data=dataclasses.replace(tcfg.data, tests=cfg.data.tests))


def _tutorial(cfg: ExperimentConfig, tracker: Tracker, job_run_id: str,
              sets: dict[str, Windows], baselines: dict[str, dict[str, float]]
              ) -> TutorialResult | None:
    """The tutorial's protocol, trained as the blog did, but scored as every table of the
    report: on the job's own ``sets`` with the job's warm-up (one scoring, one name)."""
    tcfg = _tutorial_config(cfg)
    if tcfg is None:
        return None
    runs = {}
    for cell in cfg.study.cells:
        log.info("tutorial protocol: %s with %d seeds", cell, cfg.report.tutorial_seeds)
        ccfg = tcfg.replace({"model.cell": cell})
        runs[cell] = [_tutorial_seed(tracker, ccfg, s, job_run_id, sets, cfg.data.warmup)
                      for s in range(cfg.report.tutorial_seeds)]
        _log_summary(tracker, f"tutorial-{cell}", job_run_id, "tutorial", cell,
                     {"config": cfg.report.tutorial_config, "seeds": cfg.report.tutorial_seeds},
                     runs[cell], _tutorial_metrics, key=(ccfg, cfg.report.tutorial_seeds))
    # The job's sets and warm-up: its baselines are the tutorial table's too.
    return TutorialResult(tcfg, runs, baselines, baseline_train_cliffs(tcfg))


def _tutorial_metrics(r: TutorialRun) -> dict[str, float]:
    return {"cliff/train": r.train_cliff, "step_error/train": r.train_interior,
            "cliff/train_first_third": r.early_cliff, "cliff/train_last_third": r.late_cliff,
            "mse/train_first_third": r.early_mse, "mse/train_last_third": r.late_mse,
            "train/seconds": r.seconds}


def _champion_predictions(outcomes: Sequence, tracker: Tracker,
                          sets: dict[str, Windows]) -> dict[str, dict[str, np.ndarray]]:
    """Each registered champion (the best trial's checkpoint) and each baseline on ``sets``."""
    from pipeline.train import build_model, predict

    preds = {name: {s: fn(ws) for s, ws in sets.items()} for name, fn in BASELINES.items()}
    for o in outcomes:
        if not o.best_run_id:
            continue
        state, model_cfg = tracker.load_checkpoint(o.best_run_id)
        model = build_model(ModelConfig(**model_cfg), state)
        preds[o.cell] = {s: predict(model, ws) for s, ws in sets.items()}
    return preds


def job_report(cfg: ExperimentConfig, outcomes: Sequence, tracker: Tracker,
               job_run_id: str) -> str:
    """Runs the baselines, seed retrains and the tutorial's protocol, logs them as runs, and
    logs ``report.md``, the figures and ``report.html`` (the figures embedded) on the job run.

    Args:
        cfg: the job's config.
        outcomes: the studies' ``StudyOutcome``s.
        tracker: where the report's runs go.
        job_run_id: the job's run.

    Returns:
        The report as Markdown (the console prints it).
    """
    sets = held_out_sets(cfg)
    baselines = _baselines(cfg, tracker, job_run_id, sets)
    cells = _cell_results(cfg, outcomes, tracker, sets)
    tut = _tutorial(cfg, tracker, job_run_id, sets, baselines)
    warnings = edge_warnings(outcomes, cfg)
    for line in warnings:
        log.warning("search space: %s", line)
    refused = refused_champions(outcomes, baselines["zero"]["val/mse"], cfg)
    for line in refused:
        log.warning("no champion: %s", line)
    doc = document(cfg, cells, baselines, tut, warnings, summary_rows(outcomes, cfg), refused)
    text = to_markdown(doc)
    tracker.log_text(job_run_id, text, REPORT_MD)
    figures = _log_figures(cfg, outcomes, tut, tracker, job_run_id, sets)
    tracker.log_text(job_run_id, to_html(doc, figures), REPORT_HTML)
    return text


def _baselines(cfg: ExperimentConfig, tracker: Tracker, job_run_id: str,
               sets: dict[str, Windows]) -> dict[str, dict[str, float]]:
    """The baselines' scores, each logged as a run under the job run."""
    baselines = baseline_scores(cfg, sets)
    for name, scores in baselines.items():
        _once(tracker, f"baseline-{name.replace('_', '-')}", job_run_id,
              {"cellstudy.level": "baseline", "baseline": name}, cfg.data,
              lambda run_id, scores=scores: tracker.log_metrics(run_id, scores))
    return baselines


def _log_figures(cfg: ExperimentConfig, outcomes: Sequence, tut: TutorialResult | None,
                 tracker: Tracker, job_run_id: str, sets: dict[str, Windows]
                 ) -> dict[str, bytes]:
    """The champions beside the baselines, and the tutorial's red/blue figure, on the job run.

    Returns:
        Each figure's PNG by artifact path, for report.html to embed.
    """
    preds = _champion_predictions(outcomes, tracker, sets)
    figures = {COMPARISON_FIGURE: comparison_figure(
        sets, preds, f"{cfg.study.name}: champions and baselines on the same held-out windows",
        cfg.tracking.plot_windows)}
    if tut is not None:
        ws = tutorial_windows(0, tut.cfg.train.steps)
        notes = {c: f"train-time cliff {r[0].train_cliff:.3g} (seed {r[0].seed})"
                 for c, r in tut.runs.items()}
        figures[TUTORIAL_FIGURE] = tutorial_figure(
            ws, {c: r[0].train_pred for c, r in tut.runs.items()}, notes,
            "The tutorial's protocol: target (red) and the prediction made during training "
            "(blue)")
    # Drawn once (0.3-0.6 s a figure on the 2-core VMs we measured): the artifact and
    # report.html's copy are the same bytes.
    pngs = {path: _png(fig) for path, fig in figures.items()}
    for path, png in pngs.items():
        tracker.log_png(job_run_id, png, path)
    return pngs


def _png(fig: Any) -> bytes:
    """The figure as the PNG bytes ``log_figure`` would write (same ``savefig`` defaults),
    drawn holding ``DRAWING`` as every figure is: matplotlib is not thread-safe."""
    buf = io.BytesIO()
    with DRAWING:
        fig.savefig(buf, format="png")
    return buf.getvalue()
