"""Convergence probe: does a champion configuration gain from more steps or cosine decay?

Trains a few (cell, hidden, lr) configurations on the default protocol at several step budgets
and schedules, one weight seed each, and prints the best validation MSE, the step it was
reached at (against the budget: a best step at the very end means the curve had not flattened),
and the test MSE on the default job's own sets from the first knowable point. Core only: no
tracking, no tuning. The numbers go to docs/convergence.md.

    python bench/converge.py --steps 400,1200 --schedules constant,cosine
    python bench/converge.py --point lstm:68:0.055 --point gru:38:0.071
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.evaluation import held_out_sets, model_predictor, score_sets  # noqa: E402
from pipeline.train import build_model, fit  # noqa: E402

# The champions of the default job at 59b394a (docs/results.md of that commit).
DEFAULT_POINTS = ("rnn:116:0.00585", "lstm:68:0.055", "gru:38:0.071")


def probe(config: str, point: str, steps: int, schedule: str, seed: int) -> dict:
    """One training run at ``point`` (cell:hidden:lr); returns its numbers."""
    cell, hidden, lr = point.split(":")
    cfg = load_config(ROOT / config, {
        "model.cell": cell, "model.hidden_size": int(hidden), "train.lr": float(lr),
        "train.steps": steps, "train.schedule": schedule, "train.seed": seed,
        "train.device": "cpu"})
    result = fit(cfg)
    sets = {k: v for k, v in held_out_sets(cfg).items() if not v.stateful}
    scores = score_sets(model_predictor(build_model(cfg.model, result.state_dict)), sets,
                        cfg.data.warmup)
    return {"point": point, "steps": steps, "schedule": schedule, "seed": seed,
            "val": result.best_val, "best_step": result.best_step,
            "seconds": round(result.seconds, 2),
            **{k: v for k, v in scores.items() if k != "test/mse"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/default.yaml")
    parser.add_argument("--point", action="append", help="cell:hidden:lr (repeatable)")
    parser.add_argument("--steps", default="400,1200")
    parser.add_argument("--schedules", default="constant,cosine")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for point in args.point or DEFAULT_POINTS:
        for steps in (int(s) for s in args.steps.split(",")):
            for schedule in args.schedules.split(","):
                start = time.perf_counter()
                row = probe(args.config, point, steps, schedule, args.seed)
                rows.append(row)
                print(f"{point:18} {steps:5d} {schedule:8} val {row['val']:.3g} best_step "
                      f"{row['best_step']:5d} in_dist {row['test/in_dist/mse']:.3g} wide "
                      f"{row['test/wide_step/mse']:.3g} long {row['test/long/mse']:.3g} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
