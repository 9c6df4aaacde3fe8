"""The job report's numbers and verdicts, as pure functions over plain results: seed spreads,
the differences between cells beyond seed noise, best trials on the edge of the search space,
and the tutorial's claims with verdicts computed from the seeds. Nothing here trains, logs or
renders a table (``pipeline/render.py`` does; ``pipeline/report.py`` runs the job's report).

    >>> from pipeline.verdicts import tutorial_claims
    >>> [c.verdict for c in tutorial_claims(tut)]           # doctest: +SKIP
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import ExperimentConfig
from pipeline.evaluation import SeedRun, TutorialRun
from pipeline.metrics import Spread, clearly_less, paired, summarize

BASELINE_LABELS = {"zero": "baseline: zero", "linear_rule": "baseline: linear rule"}


def fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


@dataclass(frozen=True)
class CellResult:
    """A cell's champion configuration and its seed retrains."""

    cell: str
    params: dict[str, Any]
    """The best trial's searched values by dotted path (chosen on validation only)."""
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
        return stateful_name(self.cfg)


def stateful_name(cfg: ExperimentConfig) -> str | None:
    """The first test set of consecutive windows: where a cliff can be measured."""
    return next((t.name for t in cfg.data.tests if t.kind == "tutorial" and t.n > 1), None)


def finite_spread(values: Sequence[float]) -> Spread | None:
    finite = [v for v in values if math.isfinite(v)]
    return summarize(finite) if finite else None


def pm(s: Spread | None) -> str:
    """``mean ± half-width`` of a 95% interval, or the mean alone for one value."""
    if s is None:
        return "-"
    if not math.isfinite(s.half_width):
        return fmt(s.mean)
    return f"{s.mean:.3g} ± {s.half_width:.2g}"


def seed_spread(runs: Sequence[SeedRun | TutorialRun], key: str) -> Spread | None:
    """Mean and 95% interval of ``scores[key]`` over seed runs."""
    return finite_spread([r.scores.get(key, math.nan) for r in runs])


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


def median_best_step(cell: CellResult) -> int | None:
    """The seeds' median step of best validation: near the end, training had not flattened."""
    return int(statistics.median([r.best_step for r in cell.seeds])) if cell.seeds else None


def refused_champions(outcomes: Sequence, zero_val: float, cfg: ExperimentConfig) -> list[str]:
    """One line per study whose best model is no better than predicting zero on validation:
    it was registered as a version, but ``tracking.promote`` did not give it the alias."""
    return [f"{o.cell}: best val MSE {o.val_mse:.3g} is not below predicting zero "
            f"({zero_val:.3g}); registered as v{o.model_version} without the alias "
            f"@{cfg.tracking.alias}" for o in outcomes
            if o.best_trial is not None and not o.val_mse < zero_val]


def edge_position(value: float, low: float, high: float, log: bool = True) -> float:
    """Where ``value`` sits in [low, high] (on a log scale when ``log``): 0 at the low end,
    1 at the high."""
    if high <= low:
        return 0.5
    if log:
        value, low, high = math.log(value), math.log(low), math.log(high)
    return (value - low) / (high - low)


def edge_warnings(outcomes: Sequence, cfg: ExperimentConfig) -> list[str]:
    """One line per best-trial value within ``report.edge`` of its ``study.space`` bound (on
    the range's own scale): the optimum may lie outside the range searched."""
    out = []
    for o in outcomes:
        for path, dist in cfg.study.space.items():
            value = o.best_params.get(path)
            if value is None or dist.low == dist.high:
                continue
            pos = edge_position(float(value), dist.low, dist.high, dist.log)
            side = "low" if pos <= cfg.report.edge else "high" if pos >= 1 - cfg.report.edge \
                else None
            if side:
                scale = "log scale" if dist.log else "linear scale"
                out.append(f"{o.cell}: best {path} = {value:.3g} sits at the {side} edge of the "
                           f"search range [{dist.low:.3g}, {dist.high:.3g}] ({scale}); "
                           f"widen study.space.{path} and tune again")
    return out


@dataclass(frozen=True)
class Claim:
    """One of the blog's claims, the verdict computed from the runs, and the evidence."""

    claim: str
    verdict: str
    """``holds``, ``does not hold``, ``partly holds``, ``not shown`` or ``not contradicted``
    (the evidence is within seed noise)."""
    evidence: str


def attr_values(runs: Sequence[TutorialRun], name: str) -> list[float]:
    return [getattr(r, name) for r in runs]


def _boundary_vs_inside(runs: Sequence[TutorialRun], where: str,
                        stateful: str | None) -> tuple[Spread, Spread, Spread] | None:
    """(cliff, step error inside windows, paired cliff - step error) for ``where`` = train or
    after (the continuation windows)."""
    if where == "train":
        cliff, inside = attr_values(runs, "train_cliff"), attr_values(runs, "train_interior")
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
                f"RNN jump at boundaries {pm(cliff)} vs. its step error inside windows "
                f"{pm(inside)} (difference {pm(diff)}, paired over {diff.n} seeds)."))
        if lstm:
            cliff, inside, diff = _boundary_vs_inside(lstm, where, tut.stateful_set)
            # Absence cannot be shown, only a boundary effect failing to appear.
            verdict = ("does not hold" if diff.low > 0 else "holds" if diff.high < 0
                       else "not contradicted")
            text = (f"LSTM jump at boundaries {pm(cliff)} vs. its step error inside windows "
                    f"{pm(inside)} (difference {pm(diff)}).")
            if rnn:
                rnn_cliff = _boundary_vs_inside(rnn, where, tut.stateful_set)[0]
                smaller = clearly_less(cliff, rnn_cliff)
                how = "smaller than" if smaller else "not clearly smaller than"
                text += f" Its jumps are {how} the RNN's ({pm(rnn_cliff)}) beyond seed noise."
            out.append(Claim(f"The LSTM's predictions show no such cliffs, {label}.", verdict,
                             text))
    return out


def _stability(runs: Sequence[TutorialRun]) -> tuple[Spread, Spread, Spread, Spread]:
    """(MSE first third, MSE last third, paired change of MSE, paired change of cliff)."""
    return (summarize(attr_values(runs, "early_mse")), summarize(attr_values(runs, "late_mse")),
            paired(attr_values(runs, "early_mse"), attr_values(runs, "late_mse")),
            paired(attr_values(runs, "early_cliff"), attr_values(runs, "late_cliff")))


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
    text = (f"LSTM train-time MSE {pm(early)} in the first third of training, {pm(late)} in "
            f"the last (change {pm(d_mse)}); its cliff changes by {pm(d_cliff)}. "
            + (f"The same MSE drop holds for {', '.join(others)}: it is not specific to the "
               "LSTM." if others else "No other cell's MSE drops as clearly."))
    return Claim("The LSTM's predictions become stable as training goes on.", verdict, text)


def tutorial_claims(tut: TutorialResult) -> list[Claim]:
    """The blog's claims with verdicts computed from the seeds' numbers."""
    claims = _cliff_claims(tut)
    stable = _stable_claim(tut)
    return claims + ([stable] if stable else [])
