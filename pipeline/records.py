"""What the tracking records say, as plain data: the params that make runs comparable, and the
Markdown descriptions of runs and registered models. No MLflow or Optuna here (``tracking``
writes these, ``tuning`` and ``cli`` decide when), so all of it is testable without a store.

One name per quantity, from the YAML to Optuna to MLflow: a trial's params are dotted config
paths (``model.hidden_size``, ``train.lr``, ``model.cell``); a study's ranges are
``search.<path>.low/high/log``.

    >>> from pipeline.config import ExperimentConfig
    >>> search_params(ExperimentConfig())["search.train.lr.log"]
    True
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.config import ExperimentConfig, flatten, to_dict

PER_STUDY = ("model.cell",)
"""Set by the study, not by the job's config: the cell is each study's scientific parameter."""
_SPACE_PREFIX = "study.space."
"""The ranges in the flattened config, logged as ``search.*`` params instead."""


def search_space(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """The study's search space as data: config path -> {low, high, log}."""
    return {path: {"low": dist.low, "high": dist.high, "log": dist.log}
            for path, dist in cfg.study.space.items()}


def search_params(cfg: ExperimentConfig) -> dict[str, Any]:
    """``search.<path>.low/high/log`` params: numbers and booleans, never a "[8, 128]" string
    that would turn a compared column into text."""
    return {f"search.{path}.{key}": value
            for path, bounds in search_space(cfg).items() for key, value in bounds.items()}


def resolved_config(cfg: ExperimentConfig, mask: Any = None) -> dict[str, Any]:
    """The whole config as nested dicts, for the ``config.yaml`` artifact.

    Args:
        cfg: the config.
        mask: maps the storage URL to what may be written (its password hidden).
    """
    out = json.loads(json.dumps(to_dict(cfg)))  # tuples to lists: YAML any reader can load
    if mask is not None:
        out["study"]["storage"] = mask(cfg.study.storage)
    return out


def base_params(cfg: ExperimentConfig, mask: Any = None) -> dict[str, Any]:
    """The job's config as params, once, on the job run: the base every trial starts from.
    The searched fields and the cell are left out (each trial logs its own values; the base
    ones were never trained), and the ranges are ``search.*`` params."""
    skip = {*cfg.study.space, *PER_STUDY}
    out = {k: v for k, v in flatten(cfg).items()
           if k not in skip and not k.startswith(_SPACE_PREFIX)}
    if mask is not None:
        out["study.storage"] = mask(cfg.study.storage)
    return {**out, **search_params(cfg)}


def study_params(cfg: ExperimentConfig, cell: str, mask: Any = None) -> dict[str, Any]:
    """A study run's params: its cell, its ranges, and how it searches (sampler, pruner,
    total); the rest of the config is the job's, in ``config.yaml``."""
    study = {f"study.{k}": v for k, v in flatten(cfg.study).items()
             if not f"study.{k}".startswith(_SPACE_PREFIX) and k != "cells"}
    if mask is not None:
        study["study.storage"] = mask(cfg.study.storage)
    return {"model.cell": cell, **study, **search_params(cfg)}


def trial_params(trial_cfg: ExperimentConfig, job_cfg: ExperimentConfig) -> dict[str, Any]:
    """A trial's params: the searched values and the cell (always), plus whatever else of its
    config differs from the job's. A handful of numeric columns that compare across trials,
    instead of the whole config repeated on every run (it is in ``config.yaml``)."""
    mine, base = flatten(trial_cfg), flatten(job_cfg)
    differs = {k: v for k, v in mine.items() if base.get(k) != v}
    always = (*PER_STUDY, *(k for k in job_cfg.study.space if k in mine))
    return {**{k: mine[k] for k in always}, **differs}


def _md_table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def job_description(cfg: ExperimentConfig, command: str) -> str:
    """The job run's description (Markdown)."""
    cells = ", ".join(cfg.study.cells)
    return (f"**cellstudy job** `{command}`: one Optuna study per cell ({cells}), "
            f"{cfg.study.n_trials} trials each, tuning "
            f"{', '.join(f'`{p}`' for p in cfg.study.space)} on sin(t) → cos(t).\n\n"
            "Its params are the **base config** every trial starts from; the searched fields "
            "are not among them (each trial logs the values it trained with), the ranges are "
            "the `search.*` params. The whole resolved config is `config.yaml`; the comparison "
            "of the cells is `report.md`, and `report.html` with its figures drawn.")


def study_description(cfg: ExperimentConfig, cell: str, study_name: str,
                      metric: str) -> str:
    """A study run's description (Markdown): what it searches, and how it is scored."""
    space = {f"`{p}`": f"{b['low']:g} – {b['high']:g}" + (" (log)" if b["log"] else "")
             for p, b in search_space(cfg).items()}
    return (f"**{cell} study** `{study_name}`: TPE (seed {cfg.study.sampler_seed} and each "
            "trial's number) over\n\n"
            f"{_md_table(space)}\n\n"
            f"{cfg.study.n_trials} trials, each scored by `{metric}` (the best validation MSE "
            "it reached; lower is better), pruned by the median rule. Its trials are nested "
            "under this run; the best one is tested once and offered to the registry.")


def version_description(study_name: str, trial: int, run_id: str, val_mse: float,
                        test: dict[str, float], params: dict[str, Any]) -> str:
    """A model version's description (Markdown): where it comes from and its scores."""
    scores = {"val/mse_best (validation, selects the champion)": val_mse}
    scores.update({f"{k} (this model, one seed)": v for k, v in sorted(test.items())})
    # The first line is plain text: the registry's version list shows it raw, cut short.
    headline = (f"Trial {trial} of study {study_name}: val/mse_best {val_mse:.3g}"
                + (f", test/mse {test['test/mse']:.3g} (this model)" if "test/mse" in test
                   else "") + ".")
    return (f"{headline}\n\nRun `{run_id}`.\n\n"
            f"{_md_table(scores)}\n\n**Trained with** (the rest is the run's `config.yaml`):\n\n"
            f"{_md_table(params)}")
