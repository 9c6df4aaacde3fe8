"""What a researcher gets at the end of a job: ``report.md`` on the job run, two figures, and
the same tables on the console.

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
5. writes it all as Markdown with the verdicts computed from the numbers.

The tracker is passed in; this module never imports mlflow or optuna.

    >>> print(job_report(cfg, outcomes, tracker, job_run_id))    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import interrupts
from pipeline.config import ExperimentConfig, ModelConfig, load_config
from pipeline.data import Windows, make_eval_set, tutorial_windows
from pipeline.evaluation import (
    BASELINES,
    SeedRun,
    TutorialRun,
    baseline_scores,
    baseline_train_cliffs,
    held_out_sets,
    retrain,
    tutorial_run,
    zero_reference,
)
from pipeline.metrics import Spread, clearly_less, paired, summarize
from pipeline.plots import comparison_figure, tutorial_figure
from pipeline.records import SEARCHED

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
"""The repository root: relative config paths are also looked up there."""
BASELINE_LABELS = {"zero": "baseline: zero", "linear_rule": "baseline: linear rule"}
COMPARISON_FIGURE = "report/comparison.png"
TUTORIAL_FIGURE = "report/tutorial.png"


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def summary_table(outcomes: Sequence, cfg: ExperimentConfig) -> str:
    """A Markdown table of each study's best trial, its scores and its registry version."""
    tests = [t.name for t in cfg.data.tests]
    head = ["cell", "best trial", "hidden", "lr", "val MSE", "test MSE, this model",
            *(f"test {t}" for t in tests), "model version"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    zero = zero_reference(cfg)
    for o in outcomes:
        name = f"{cfg.tracking.registry_prefix}-{o.cell}"
        # A link into the MLflow UI that shows report.md (its routes live after the '#').
        version = "-" if o.model_version is None else (
            f"[{name} v{o.model_version}](#/models/{name}/versions/{o.model_version})"
            + (f" @{cfg.tracking.alias}" if o.champion_moved else "")
            + (" (no alias: not below zero)" if not o.val_mse < zero else ""))
        row = [o.cell, str(o.best_trial), str(o.best_params.get("hidden_size", "-")),
               _fmt(o.best_params.get("lr")), _fmt(o.val_mse), _fmt(o.test_mse.get("test/mse")),
               *(_fmt(o.test_mse.get(f"test/{t}/mse")) for t in tests), version]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellResult:
    """A cell's champion configuration and its seed retrains."""

    cell: str
    params: dict[str, Any]
    """The best trial's hidden_size and lr (chosen on validation only)."""
    val_mse: float
    """The best trial's validation MSE: the value it was selected by."""
    seeds: list[SeedRun]


@dataclass(frozen=True)
class TutorialResult:
    """The tutorial's protocol, every cell over several seeds, and the baselines on it."""

    cfg: ExperimentConfig
    runs: dict[str, list[TutorialRun]]
    baselines: dict[str, dict[str, float]]
    baseline_train_cliffs: dict[str, float]

    @property
    def stateful_set(self) -> str | None:
        """The test set of consecutive windows (continuing after training), if any."""
        return _stateful_name(self.cfg)


def _stateful_name(cfg: ExperimentConfig) -> str | None:
    """The first test set of consecutive windows: where a cliff can be measured."""
    return next((t.name for t in cfg.data.tests if t.kind == "tutorial" and t.n > 1), None)


def _spread(values: Sequence[float]) -> Spread | None:
    finite = [v for v in values if math.isfinite(v)]
    return summarize(finite) if finite else None


def _pm(s: Spread | None) -> str:
    """``mean ± half-width`` of a 95% interval, or the mean alone for one value."""
    if s is None:
        return "-"
    if not math.isfinite(s.half_width):
        return _fmt(s.mean)
    return f"{s.mean:.3g} ± {s.half_width:.2g}"


def seed_spread(runs: Sequence[SeedRun | TutorialRun], key: str) -> Spread | None:
    """Mean and 95% interval of ``scores[key]`` over seed runs."""
    return _spread([r.scores.get(key, math.nan) for r in runs])




def results_table(cfg: ExperimentConfig, cells: Sequence[CellResult],
                  baselines: dict[str, dict[str, float]]) -> str:
    """One row per cell (champion configuration, seed retrains) and one per baseline."""
    tests = [t.name for t in cfg.data.tests]
    # No cliff column: the champions are trained on independent windows from a fresh state,
    # so a jump at a window boundary of theirs measures that mismatch, not a cliff; the cliff
    # is the tutorial protocol's, in its own table.
    head = ["model", "hidden", "lr", "val MSE", *(f"test {t}" for t in tests), "test mean",
            f"best step (of {cfg.train.steps})", "train s", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        seconds = _spread([r.seconds for r in c.seeds])
        # The seeds' median step of best validation: near the end, training had not flattened.
        best_step = int(np.median([r.best_step for r in c.seeds])) if c.seeds else None
        row = [c.cell, str(c.params.get("hidden_size", "-")), _fmt(c.params.get("lr")),
               _fmt(c.val_mse), *(_pm(seed_spread(c.seeds, f"test/{t}/mse")) for t in tests),
               _pm(seed_spread(c.seeds, "test/mse")), str(best_step or "-"),
               _fmt(seconds.mean) if seconds else "-",
               ", ".join(sorted({r.device for r in c.seeds})) or "-"]
        lines.append("| " + " | ".join(row) + " |")
    for name, scores in baselines.items():
        row = [BASELINE_LABELS[name], "-", "-", _fmt(scores.get("val/mse")),
               *(_fmt(scores.get(f"test/{t}/mse")) for t in tests), _fmt(scores.get("test/mse")),
               "-", "-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def differences(cfg: ExperimentConfig, cells: Sequence[CellResult],
                baselines: dict[str, dict[str, float]]) -> list[str]:
    """Per test set, which cells differ by more than the seed noise, and against baselines."""
    out = []
    for t in [*(s.name for s in cfg.data.tests), None]:
        key = f"test/{t}/mse" if t else "test/mse"
        spreads = {c.cell: seed_spread(c.seeds, key) for c in cells}
        spreads = {k: v for k, v in spreads.items() if v is not None}
        if not spreads:
            continue
        ranked = sorted(spreads, key=lambda k: spreads[k].mean)
        clear, noise = [], []
        for i, a in enumerate(ranked):
            for b in ranked[i + 1:]:
                if clearly_less(spreads[a], spreads[b]):
                    clear.append(f"{a} < {b}")
                else:
                    noise.append(f"{a} ~ {b}")
        verdict = (f"Clearly different: {', '.join(clear)}" if clear else
                   "No difference between cells beyond seed noise")
        if noise and clear:
            verdict += f"; within seed noise: {', '.join(noise)}"
        beats = []
        for name, scores in baselines.items():
            ref = scores.get(key, math.nan)
            won = [c for c in ranked if spreads[c].high < ref]
            beats.append(f"{BASELINE_LABELS[name].split(': ')[1]} beaten by "
                         f"{', '.join(won) if won else 'none'}")
        order = " < ".join(f"{c} {spreads[c].mean:.3g}" for c in ranked)
        out.append(f"- **{t or 'mean of sets'}**: {order}. {verdict}. Baselines: "
                   f"{'; '.join(beats)}.")
    return out


def refused_champions(outcomes: Sequence, zero_val: float, cfg: ExperimentConfig) -> list[str]:
    """One line per study whose best model is no better than predicting zero on validation:
    it was registered as a version, but ``tracking.promote`` did not give it the alias."""
    return [f"{o.cell}: best val MSE {o.val_mse:.3g} is not below predicting zero "
            f"({zero_val:.3g}); registered as v{o.model_version} without the alias "
            f"@{cfg.tracking.alias}" for o in outcomes
            if o.best_trial is not None and not o.val_mse < zero_val]


# -- search space -----------------------------------------------------------------------------


def edge_position(value: float, bounds: tuple[float, float]) -> float:
    """Where ``value`` sits in ``bounds`` on a log scale: 0 at the low end, 1 at the high."""
    low, high = bounds
    if high <= low:
        return 0.5
    return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))


def edge_warnings(outcomes: Sequence, cfg: ExperimentConfig) -> list[str]:
    """One line per best-trial parameter within ``report.edge`` of a search bound (log
    scale): the optimum may lie outside the range searched."""
    ranges = {"hidden_size": cfg.study.hidden_size, "lr": cfg.study.lr}
    out = []
    for o in outcomes:
        for name, bounds in ranges.items():
            value = o.best_params.get(name)
            if value is None or bounds[0] == bounds[1]:
                continue
            pos = edge_position(float(value), bounds)
            side = "low" if pos <= cfg.report.edge else "high" if pos >= 1 - cfg.report.edge \
                else None
            if side:
                out.append(f"{o.cell}: best {name} = {value:.3g} sits at the {side} edge of the "
                           f"search range [{bounds[0]:.3g}, {bounds[1]:.3g}] (log scale); "
                           f"widen study.{name} and tune again")
    return out


# -- the tutorial's claims --------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One of the blog's claims, the verdict computed from the runs, and the evidence."""

    claim: str
    verdict: str
    """``holds``, ``does not hold``, ``partly holds``, ``not shown`` or ``not contradicted``
    (the evidence is within seed noise)."""
    evidence: str


def _attr(runs: Sequence[TutorialRun], name: str) -> list[float]:
    return [getattr(r, name) for r in runs]


def _boundary_vs_inside(runs: Sequence[TutorialRun], where: str,
                        stateful: str | None) -> tuple[Spread, Spread, Spread] | None:
    """(cliff, step error inside windows, paired cliff - step error) for ``where`` = train or
    after (the continuation windows)."""
    if where == "train":
        cliff, inside = _attr(runs, "train_cliff"), _attr(runs, "train_interior")
    elif stateful:
        cliff = [r.scores[f"test/{stateful}/cliff"] for r in runs]
        inside = [r.scores[f"test/{stateful}/step_error"] for r in runs]
    else:
        return None
    return summarize(cliff), summarize(inside), paired(inside, cliff)


def _where(where: str, tut: TutorialResult) -> str:
    steps = tut.cfg.train.steps
    if where == "train":
        return f"during training (windows 0-{steps - 1})"
    spec = next(t for t in tut.cfg.data.tests if t.name == tut.stateful_set)
    return f"after training (windows {spec.start}-{spec.start + spec.n - 1})"


def _cliff_claims(tut: TutorialResult) -> list[Claim]:
    out = []
    rnn, lstm = tut.runs.get("rnn"), tut.runs.get("lstm")
    for where in ("train", "after"):
        if where == "after" and not tut.stateful_set:
            continue
        label = _where(where, tut)
        if rnn:
            cliff, inside, diff = _boundary_vs_inside(rnn, where, tut.stateful_set)
            verdict = ("holds" if diff.low > 0 else "does not hold" if diff.high < 0
                       else "not shown")
            out.append(Claim(
                f"The RNN's predictions show cliffs at window boundaries, {label}.", verdict,
                f"RNN jump at boundaries {_pm(cliff)} vs. its step error inside windows "
                f"{_pm(inside)} (difference {_pm(diff)}, paired over {diff.n} seeds)."))
        if lstm:
            cliff, inside, diff = _boundary_vs_inside(lstm, where, tut.stateful_set)
            # Absence cannot be shown, only a boundary effect failing to appear.
            verdict = ("does not hold" if diff.low > 0 else "holds" if diff.high < 0
                       else "not contradicted")
            text = (f"LSTM jump at boundaries {_pm(cliff)} vs. its step error inside windows "
                    f"{_pm(inside)} (difference {_pm(diff)}).")
            if rnn:
                rnn_cliff = _boundary_vs_inside(rnn, where, tut.stateful_set)[0]
                smaller = clearly_less(cliff, rnn_cliff)
                how = "smaller than" if smaller else "not clearly smaller than"
                text += f" Its jumps are {how} the RNN's ({_pm(rnn_cliff)}) beyond seed noise."
            out.append(Claim(f"The LSTM's predictions show no such cliffs, {label}.", verdict,
                             text))
    return out


def _stability(runs: Sequence[TutorialRun]) -> tuple[Spread, Spread, Spread, Spread]:
    """(MSE first third, MSE last third, paired change of MSE, paired change of cliff)."""
    return (summarize(_attr(runs, "early_mse")), summarize(_attr(runs, "late_mse")),
            paired(_attr(runs, "early_mse"), _attr(runs, "late_mse")),
            paired(_attr(runs, "early_cliff"), _attr(runs, "late_cliff")))


def _stable_claim(tut: TutorialResult) -> Claim | None:
    lstm = tut.runs.get("lstm")
    if not lstm:
        return None
    early, late, d_mse, d_cliff = _stability(lstm)
    mse_down, cliff_down = d_mse.high < 0, d_cliff.high < 0
    verdict = ("holds" if mse_down and cliff_down else "partly holds" if mse_down or cliff_down
               else "not shown")
    others = [c for c, runs in tut.runs.items()
              if c != "lstm" and _stability(runs)[2].high < 0]
    text = (f"LSTM train-time MSE {_pm(early)} in the first third of training, {_pm(late)} in "
            f"the last (change {_pm(d_mse)}); its cliff changes by {_pm(d_cliff)}. "
            + (f"The same MSE drop holds for {', '.join(others)}: it is not specific to the "
               "LSTM." if others else "No other cell's MSE drops as clearly."))
    return Claim("The LSTM's predictions become stable as training goes on.", verdict, text)


def tutorial_claims(tut: TutorialResult) -> list[Claim]:
    """The blog's claims with verdicts computed from the seeds' numbers."""
    claims = _cliff_claims(tut)
    stable = _stable_claim(tut)
    return claims + ([stable] if stable else [])


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
        row = [cell, _pm(summarize(_attr(runs, "train_cliff"))),
               _pm(summarize(_attr(runs, "train_interior"))),
               f"{_pm(summarize(_attr(runs, 'early_cliff')))} → "
               f"{_pm(summarize(_attr(runs, 'late_cliff')))}",
               f"{_pm(summarize(_attr(runs, 'early_mse')))} → "
               f"{_pm(summarize(_attr(runs, 'late_mse')))}",
               *([_pm(seed_spread(runs, f"test/{after}/cliff"))] if after else []),
               *(_pm(seed_spread(runs, f"test/{t}/mse")) for t in tests),
               _fmt(float(np.mean(_attr(runs, "seconds"))))]
        lines.append("| " + " | ".join(row) + " |")
    for name, scores in tut.baselines.items():
        row = [BASELINE_LABELS[name], _fmt(tut.baseline_train_cliffs.get(name)), "-", "-", "-",
               *([_fmt(scores.get(f"test/{after}/cliff"))] if after else []),
               *(_fmt(scores.get(f"test/{t}/mse")) for t in tests), "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# -- the document -----------------------------------------------------------------------------


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
        f"Each cell's champion configuration (best hidden size and lr, chosen on validation "
        f"only, {cfg.study.n_trials} trials per study) retrained with {n_seeds} weight seeds "
        f"(train.seed + 1 ... + {n_seeds}), each tested once. Test MSE: mean ± half-width of "
        "the 95% Student-t interval over those seeds. val MSE: the best trial's. Baselines are "
        "deterministic.\n",
        *([("\n".join(f"- NO CHAMPION: {r}" for r in refused)) + "\n"] if refused else []),
        results_table(cfg, cells, baselines),
        f"![champions and baselines on the same held-out windows]({COMPARISON_FIGURE})\n",
        "## Differences between cells\n",
        "Called only when the 95% interval of the difference of means (Welch) excludes 0.\n",
        "\n".join(differences(cfg, cells, baselines)) + "\n",
        "## Search space\n",
        ("\n".join(f"- WARNING: {w}" for w in warnings) if warnings else
         f"No best trial within {cfg.report.edge:.0%} of a search bound (log scale).") + "\n",
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


# -- the orchestrator -------------------------------------------------------------------------


def resolve_path(path: str) -> Path:
    """``path`` as given if it exists, else relative to the repository."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else REPO / given


def _log_run(tracker: Any, name: str, parent: str, level: str,
             body: Callable[[str], None], tags: dict[str, str] | None = None,
             key: Any = None) -> str:
    """Logs a run of the report under ``parent``; with ``key`` (what the run's numbers depend
    on), only once: a rerun after an interrupted report finds the FINISHED run it logged and
    does not log a second one."""
    if key is not None:
        key = hashlib.sha256(repr((name, level, key)).encode()).hexdigest()[:32]
        done = tracker.finished_run(parent, key)
        if done:
            return done
        tags = {**(tags or {}), "cellstudy.key": key}
    interrupts.check()  # between the report's runs: a safe point
    run_id = tracker.start_run(name, parent_run_id=parent,
                               tags={"cellstudy.level": level, **(tags or {})})
    with tracker.ending(run_id):
        body(run_id)
    return run_id


def _log_seeds(tracker: Any, run_id: str, runs: Sequence[Any], extra: Callable[[Any], dict]
               ) -> None:
    """Per-seed values as steps (step = seed), then each key's mean and interval."""
    rows = [{**r.scores, **extra(r)} for r in runs]
    for r, row in zip(runs, rows, strict=True):
        tracker.log_metrics(run_id, row, step=r.seed)
    summary = {}
    for key in rows[0]:
        s = _spread([row[key] for row in rows])
        if s is not None:
            summary[f"{key}_mean"] = s.mean
            summary[f"{key}_ci95"] = s.half_width
    tracker.log_metrics(run_id, summary)


def _cell_results(cfg: ExperimentConfig, outcomes: Sequence, tracker: Any,
                  sets: dict[str, Windows]) -> list[CellResult]:
    val = make_eval_set(cfg.data, cfg.data.val)
    seeds = [cfg.train.seed + i for i in range(1, cfg.report.seeds + 1)]
    cells = []
    for o in outcomes:
        if o.best_trial is None:
            continue
        ccfg = cfg.replace({"model.cell": o.cell, "train.lr": o.best_params["lr"],
                            "model.hidden_size": o.best_params["hidden_size"]})
        log.info("%s: retraining the champion configuration with %d seeds", o.cell, len(seeds))
        runs = [retrain(ccfg, s, sets, val) for s in seeds]
        cells.append(CellResult(o.cell, dict(o.best_params), float(o.val_mse), runs))

        def body(run_id: str, runs: list[SeedRun] = runs, o: Any = o) -> None:
            tracker.log_params(run_id, {"model.cell": o.cell, "seeds": seeds, **{
                SEARCHED.get(k, k): v for k, v in o.best_params.items()}})  # the trials' names
            _log_seeds(tracker, run_id, runs, lambda r: {"val/mse_best": r.val_mse,
                                                         "val/best_step": r.best_step,
                                                         "train/seconds": r.seconds})

        _log_run(tracker, f"{o.cell}-seeds", o.study_run_id, "seeds", body, {"cell": o.cell},
                 key=(ccfg, seeds))
    return cells


def _tutorial(cfg: ExperimentConfig, tracker: Any, job_run_id: str,
              sets: dict[str, Windows], baselines: dict[str, dict[str, float]]
              ) -> TutorialResult | None:
    """The tutorial's protocol, trained as the blog did, but scored as every table of the
    report: on the job's own ``sets`` with the job's warm-up (one scoring, one name)."""
    if not cfg.report.tutorial_config or cfg.report.tutorial_seeds == 0:
        return None
    tcfg = load_config(resolve_path(cfg.report.tutorial_config),
                       {"train.device": cfg.train.device})
    # The sets it is tested on are the job's: its config names them too.
    tcfg = dataclasses.replace(tcfg, data=dataclasses.replace(tcfg.data, tests=cfg.data.tests))
    runs = {}
    for cell in cfg.study.cells:
        log.info("tutorial protocol: %s with %d seeds", cell, cfg.report.tutorial_seeds)
        ccfg = tcfg.replace({"model.cell": cell})
        runs[cell] = [tutorial_run(ccfg, s, sets, warmup=cfg.data.warmup)
                      for s in range(cfg.report.tutorial_seeds)]

        def body(run_id: str, cell: str = cell, cell_runs: list[TutorialRun] = runs[cell]
                 ) -> None:
            tracker.log_params(run_id, {"cell": cell, "config": cfg.report.tutorial_config,
                                        "seeds": cfg.report.tutorial_seeds})
            _log_seeds(tracker, run_id, cell_runs, lambda r: {
                "cliff/train": r.train_cliff, "step_error/train": r.train_interior,
                "cliff/train_first_third": r.early_cliff, "cliff/train_last_third": r.late_cliff,
                "mse/train_first_third": r.early_mse, "mse/train_last_third": r.late_mse,
                "train/seconds": r.seconds})

        _log_run(tracker, f"tutorial-{cell}", job_run_id, "tutorial", body, {"cell": cell},
                 key=(ccfg, cfg.report.tutorial_seeds))
    return TutorialResult(tcfg, runs, baselines, baseline_train_cliffs(tcfg))


def _champion_predictions(cfg: ExperimentConfig, outcomes: Sequence, tracker: Any,
                          sets: dict[str, Windows]) -> dict[str, dict[str, np.ndarray]]:
    """Each registered champion (the best trial's checkpoint) and each baseline on ``sets``."""
    from pipeline.train import build_model, predict

    preds = {name: {s: fn(ws) for s, ws in sets.items()} for name, fn in BASELINES.items()}
    for o in outcomes:
        best_run = tracker.client.get_run(o.study_run_id).data.tags.get("best_run_id")
        if not best_run:
            continue
        state, model_cfg = tracker.load_checkpoint(best_run)
        model = build_model(ModelConfig(**model_cfg), state)
        preds[o.cell] = {s: predict(model, ws) for s, ws in sets.items()}
    return preds


def job_report(cfg: ExperimentConfig, outcomes: Sequence, tracker: Any,
               job_run_id: str) -> str:
    """Runs the baselines, seed retrains and the tutorial's protocol, logs them as runs, and
    logs ``report.md`` and the figures on the job run.

    Args:
        cfg: the job's config.
        outcomes: the studies' ``StudyOutcome``s.
        tracker: a ``pipeline.tracking.Tracker``.
        job_run_id: the job's run.

    Returns:
        The report as Markdown (the console prints it).
    """
    sets = held_out_sets(cfg)
    baselines = baseline_scores(cfg, sets)
    for name, scores in baselines.items():
        _log_run(tracker, f"baseline-{name.replace('_', '-')}", job_run_id, "baseline",
                 lambda run_id, scores=scores: tracker.log_metrics(run_id, scores),
                 {"baseline": name}, key=cfg.data)
    cells = _cell_results(cfg, outcomes, tracker, sets)
    tut = _tutorial(cfg, tracker, job_run_id, sets, baselines)
    warnings = edge_warnings(outcomes, cfg)
    for line in warnings:
        log.warning("search space: %s", line)
    refused = refused_champions(outcomes, baselines["zero"]["val/mse"], cfg)
    for line in refused:
        log.warning("no champion: %s", line)
    text = render(cfg, cells, baselines, tut, warnings, summary_table(outcomes, cfg), refused)
    tracker.log_text(job_run_id, text, "report.md")
    preds = _champion_predictions(cfg, outcomes, tracker, sets)
    tracker.log_figure(job_run_id, comparison_figure(
        sets, preds, f"{cfg.study.name}: champions and baselines on the same held-out windows",
        cfg.tracking.plot_windows), COMPARISON_FIGURE)
    if tut is not None:
        ws = tutorial_windows(0, tut.cfg.train.steps)
        notes = {c: f"train-time cliff {r[0].train_cliff:.3g} (seed {r[0].seed})"
                 for c, r in tut.runs.items()}
        tracker.log_figure(job_run_id, tutorial_figure(
            ws, {c: r[0].train_pred for c, r in tut.runs.items()}, notes,
            "The tutorial's protocol: target (red) and the prediction made during training "
            "(blue)"), TUTORIAL_FIGURE)
    return text
