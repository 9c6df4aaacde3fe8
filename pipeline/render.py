"""The job report rendered: Markdown tables and the document, from the plain results and
verdicts of ``pipeline/verdicts.py``. Figures are ``pipeline/plots.py``'s.

    >>> print(summary_table(outcomes, cfg))                  # doctest: +SKIP
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.config import ExperimentConfig
from pipeline.evaluation import zero_reference
from pipeline.metrics import summarize
from pipeline.verdicts import (
    BASELINE_LABELS,
    CellResult,
    TutorialResult,
    attr_values,
    differences,
    finite_spread,
    fmt,
    median_best_step,
    pm,
    seed_spread,
    tutorial_claims,
)

COMPARISON_FIGURE = "report/comparison.png"
"""The champions beside the baselines, on the job run."""
TUTORIAL_FIGURE = "report/tutorial.png"
"""The tutorial's red/blue figure, on the job run."""


def _space_cells(cfg: ExperimentConfig, params: dict[str, Any]) -> list[str]:
    """A table's cells for the searched values, one column per ``study.space`` path."""
    return [fmt(params[p]) if p in params else "-" for p in cfg.study.space]


def summary_table(outcomes: Sequence, cfg: ExperimentConfig) -> str:
    """A Markdown table of each study's best trial, its scores and its registry version."""
    tests = [t.name for t in cfg.data.tests]
    head = ["cell", "best trial", *cfg.study.space, "val MSE", "test MSE, this model",
            *(f"test {t}" for t in tests), "model version"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    zero = zero_reference(cfg)
    for o in outcomes:
        name = cfg.tracking.registry_name(o.cell)
        # A link into the MLflow UI that shows report.md (its routes live after the '#').
        version = "-" if o.model_version is None else (
            f"[{name} v{o.model_version}](#/models/{name}/versions/{o.model_version})"
            + (f" @{cfg.tracking.alias}" if o.champion_moved else "")
            + (" (no alias: not below zero)" if not o.val_mse < zero else ""))
        row = [o.cell, str(o.best_trial), *_space_cells(cfg, o.best_params), fmt(o.val_mse),
               fmt(o.test_mse.get("test/mse")),
               *(fmt(o.test_mse.get(f"test/{t}/mse")) for t in tests), version]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def results_table(cfg: ExperimentConfig, cells: Sequence[CellResult],
                  baselines: dict[str, dict[str, float]]) -> str:
    """One row per cell (champion configuration, seed retrains) and one per baseline."""
    tests = [t.name for t in cfg.data.tests]
    # No cliff column: the champions are trained on independent windows from a fresh state,
    # so a jump at a window boundary of theirs measures that mismatch, not a cliff; the cliff
    # is the tutorial protocol's, in its own table.
    head = ["model", *cfg.study.space, "val MSE", *(f"test {t}" for t in tests), "test mean",
            f"best step (of {cfg.train.steps})", "train s", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        seconds = finite_spread([r.seconds for r in c.seeds])
        row = [c.cell, *_space_cells(cfg, c.params), fmt(c.val_mse),
               *(pm(seed_spread(c.seeds, f"test/{t}/mse")) for t in tests),
               pm(seed_spread(c.seeds, "test/mse")), str(median_best_step(c) or "-"),
               fmt(seconds.mean) if seconds else "-",
               ", ".join(sorted({r.device for r in c.seeds})) or "-"]
        lines.append("| " + " | ".join(row) + " |")
    for name, scores in baselines.items():
        row = [BASELINE_LABELS[name], *("-" for _ in cfg.study.space), fmt(scores.get("val/mse")),
               *(fmt(scores.get(f"test/{t}/mse")) for t in tests), fmt(scores.get("test/mse")),
               "-", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def tutorial_table(tut: TutorialResult) -> str:
    """The tutorial's protocol per cell: cliffs during and after training, MSE on every set."""
    tests = [t.name for t in tut.cfg.data.tests]
    after = tut.stateful_set
    head = ["model", "cliff in training", "step error in training",
            "cliff, first → last third", "MSE, first → last third",
            *([f"cliff after ({after})"] if after else []), *(f"test {t}" for t in tests),
            "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell, runs in tut.runs.items():
        row = [cell, pm(summarize(attr_values(runs, "train_cliff"))),
               pm(summarize(attr_values(runs, "train_interior"))),
               f"{pm(summarize(attr_values(runs, 'early_cliff')))} → "
               f"{pm(summarize(attr_values(runs, 'late_cliff')))}",
               f"{pm(summarize(attr_values(runs, 'early_mse')))} → "
               f"{pm(summarize(attr_values(runs, 'late_mse')))}",
               *([pm(seed_spread(runs, f"test/{after}/cliff"))] if after else []),
               *(pm(seed_spread(runs, f"test/{t}/mse")) for t in tests),
               fmt(float(np.mean(attr_values(runs, "seconds"))))]
        lines.append("| " + " | ".join(row) + " |")
    for name, scores in tut.baselines.items():
        row = [BASELINE_LABELS[name], fmt(tut.baseline_train_cliffs.get(name)), "-", "-", "-",
               *([fmt(scores.get(f"test/{after}/cliff"))] if after else []),
               *(fmt(scores.get(f"test/{t}/mse")) for t in tests), "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    """One line naming the machine, for results that will be compared later."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores"
            f"{gpu}; Python {platform.python_version()}, torch {torch.__version__}")


def scoring_note(cfg: ExperimentConfig) -> str:
    """The one scoring every table of the report uses, said once."""
    w = cfg.data.warmup
    if not w:
        return "Every MSE in this report scores every point of every window.\n"
    return (f"Every MSE in this report, the tutorial protocol's runs included, is on this "
            f"job's own sets and leaves out the first {w} point{'s' if w > 1 else ''} of each "
            f"window (of the first window only where the state is carried across windows): "
            f"point {w} is the first one whose cos the sin values before it can fix.\n")


def render(cfg: ExperimentConfig, cells: Sequence[CellResult],
           baselines: dict[str, dict[str, float]], tut: TutorialResult | None,
           warnings: Sequence[str], studies: str, refused: Sequence[str] = ()) -> str:
    """The whole report as Markdown."""
    n_seeds = cfg.report.seeds
    parts = [
        f"# Report: {cfg.study.name}\n",
        f"Machine: {machine()}.\n",
        scoring_note(cfg),
        f"Each cell's champion configuration (best {', '.join(cfg.study.space)}, chosen on "
        f"validation only, {cfg.study.n_trials} trials per study) retrained with {n_seeds} "
        f"weight seeds (train.seed + 1 ... + {n_seeds}), each tested once. Test MSE: mean ± "
        "half-width of the 95% Student-t interval over those seeds. val MSE: the best trial's. "
        "Baselines are deterministic.\n",
        *([("\n".join(f"- NO CHAMPION: {r}" for r in refused)) + "\n"] if refused else []),
        results_table(cfg, cells, baselines),
        f"![champions and baselines on the same held-out windows]({COMPARISON_FIGURE})\n",
        "## Differences between cells\n",
        "Called only when the 95% interval of the difference of means (Welch) excludes 0.\n",
        "\n".join(differences(cfg, cells, baselines)) + "\n",
        "## Search space\n",
        ("\n".join(f"- WARNING: {w}" for w in warnings) if warnings else
         f"No best trial within {cfg.report.edge:.0%} of a search bound.") + "\n",
    ]
    if tut is not None:
        parts += [
            "## The tutorial's claims\n",
            f"Protocol: `{cfg.report.tutorial_config}` (hidden {tut.cfg.model.hidden_size}, "
            f"lr {tut.cfg.train.lr:g}, {tut.cfg.train.steps} windows of "
            f"{tut.cfg.data.seq_len} points, batch 1, state carried), "
            f"{len(next(iter(tut.runs.values())))} seeds per cell. *In training*: the "
            "prediction the model made for each training window as it came, before the "
            "optimizer step on it (what the blog's red/blue figure shows). *After*: the final "
            "weights run over the continuation windows from a fresh state. The cliff is the "
            "mean absolute jump of the prediction between the last point of one window and the "
            "first of the next on consecutive windows (true jump 0). Step error: the "
            "same jump measure between neighbouring points inside windows, where a cliff is a "
            "boundary effect only if it is larger. Test MSE columns: the job's own test sets, "
            "scored as every table here.\n",
            tutorial_table(tut),
            f"![the tutorial's protocol: target and prediction during training]"
            f"({TUTORIAL_FIGURE})\n",
            "| claim | verdict | evidence |\n|---|---|---|\n" + "".join(
                f"| {c.claim} | **{c.verdict}** | {c.evidence} |\n"
                for c in tutorial_claims(tut)),
        ]
    parts += ["## Studies\n", "Each study's best trial, tested once: its test MSE is that one "
              "registered model's, not the seed mean above.\n", studies]
    return "\n".join(parts)
