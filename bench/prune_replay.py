"""Is the median pruner safe? Run a study with pruning off, then replay the pruner on it.

Runs one cell's study on the default protocol with Optuna's ``NopPruner`` (every trial to the
end, its best-so-far validation MSE recorded at each validation pass, exactly what the real
objective reports), then replays ``MedianPruner`` with several settings on those recorded
values, trial by trial in the same order, through Optuna itself (``ask``, ``report``,
``should_prune``, ``tell``), and prints per setting: how many trials it prunes, the share of
training steps it saves, whether the trial that ended best would have been pruned, and how much
worse the best surviving trial is. Core, Optuna and no tracking; the numbers go to
docs/convergence.md.

The replay keeps the trials fixed: in a real pruned study TPE would have seen pruned trials'
values and suggested differently afterwards, which this cannot show.

    python bench/prune_replay.py --cell lstm --n-trials 20 --out /tmp/replay.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.train import fit  # noqa: E402
from pipeline.tuning import Objective, TrialSeededTPE  # noqa: E402

SETTINGS = ((5, 100), (5, 250), (5, 300), (5, 500), (8, 250), (10, 500))
"""(n_startup_trials, n_warmup_steps) pairs replayed by default."""


def unpruned_study(cfg, cell: str, n_trials: int) -> list[dict]:
    """Every trial to the end; returns each one's params, curve and value, in order."""
    study = optuna.create_study(direction="minimize",
                                sampler=TrialSeededTPE(cfg.study.sampler_seed),
                                pruner=optuna.pruners.NopPruner())
    suggest = Objective(cfg, cell, None, "", None).suggest  # the job's own search space
    trials = []
    for _ in range(n_trials):
        trial = study.ask()
        tcfg = suggest(trial)
        curve: list[tuple[int, float]] = []
        best = math.inf

        def record(step: int, metrics: dict[str, float], curve=curve) -> None:
            nonlocal best
            best = min(best, metrics["val/mse"])
            curve.append((step, best))

        start = time.perf_counter()
        try:
            result = fit(tcfg, callbacks=[record])
            value = result.best_val
        except Exception as err:  # noqa: BLE001 - a diverged trial is failed, as in the job
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            print(f"trial {trial.number} failed: {err}", flush=True)
            continue
        study.tell(trial, value)
        trials.append({"number": trial.number, "params": trial.params, "value": value,
                       "best_step": result.best_step, "curve": curve,
                       "seconds": round(time.perf_counter() - start, 2)})
        print(f"trial {trial.number:3d} {trial.params} val {value:.3g} best_step "
              f"{result.best_step}", flush=True)
    return trials


def replay(trials: list[dict], startup: int, warmup: int, steps: int) -> dict:
    """MedianPruner(startup, warmup) decisions on the recorded curves."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=startup, n_warmup_steps=warmup))
    pruned, saved = {}, 0
    for t in trials:
        trial = study.ask()
        for step, value in t["curve"]:
            trial.report(value, step)
            if step >= warmup and trial.should_prune():
                pruned[t["number"]] = step
                saved += steps - step
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, t["value"])
    ranked = sorted(trials, key=lambda t: t["value"])
    best = ranked[0]
    surviving = [t for t in ranked if t["number"] not in pruned]
    return {"startup": startup, "warmup": warmup, "pruned": len(pruned), "trials": len(trials),
            "steps_saved": saved / (steps * len(trials)),
            "best_pruned": best["number"] in pruned,
            "top3_pruned": sum(t["number"] in pruned for t in ranked[:3]),
            "regret": surviving[0]["value"] / best["value"] if surviving else math.inf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/default.yaml")
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--load", help="replay trials saved by an earlier --out instead")
    parser.add_argument("--out", help="write the trials and the replays as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    cfg = load_config(ROOT / args.config, {"train.device": "cpu", **overrides})
    if args.load:
        trials = json.loads(Path(args.load).read_text())["trials"]
    else:
        trials = unpruned_study(cfg, args.cell, args.n_trials)
    rows = [replay(trials, s, w, cfg.train.steps) for s, w in SETTINGS]
    print("| startup | warmup steps | pruned | steps saved | best pruned | top-3 pruned | "
          "best surviving / best |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['startup']} | {r['warmup']} | {r['pruned']}/{r['trials']} | "
              f"{r['steps_saved']:.0%} | {'yes' if r['best_pruned'] else 'no'} | "
              f"{r['top3_pruned']} | {r['regret']:.3g} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"config": args.config, "cell": args.cell,
                                              "overrides": overrides, "trials": trials,
                                              "replays": rows}, indent=1))


if __name__ == "__main__":
    main()
