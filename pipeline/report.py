"""The job's summary: one row per cell, as Markdown, for the console and the job run.

    >>> print(summary_table(outcomes, cfg))                 # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.config import ExperimentConfig


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def summary_table(outcomes: Sequence, cfg: ExperimentConfig) -> str:
    """A Markdown table of each study's best trial, its scores and its registry version."""
    tests = [t.name for t in cfg.data.tests]
    head = ["cell", "best trial", "hidden", "lr", "val MSE", "test MSE",
            *(f"test {t}" for t in tests), "model version"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in outcomes:
        version = "-" if o.model_version is None else (
            f"{cfg.tracking.registry_prefix}-{o.cell} v{o.model_version}"
            + (f" @{cfg.tracking.alias}" if o.champion_moved else ""))
        row = [o.cell, str(o.best_trial), str(o.best_params.get("hidden_size", "-")),
               _fmt(o.best_params.get("lr")), _fmt(o.val_mse), _fmt(o.test_mse.get("test/mse")),
               *(_fmt(o.test_mse.get(f"test/{t}/mse")) for t in tests), version]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
