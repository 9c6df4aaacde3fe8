"""Where a second CPU worker, or a second trial at once, starts to pay: the crossovers behind
``--workers auto`` and ``--trials-at-once auto`` on a CPU (``pipeline/workers.py:
STEPS_PER_CPU_WORKER``, ``RUNS_PER_CPU_WORKER``, ``WINDOWS_PER_CPU_THREAD``).

    python bench/crossover.py                      # about 60 minutes on 2 idle cores
    python bench/crossover.py --steps 50 300 --configs smoke --rounds 1
    python bench/crossover.py --steps --configs 'tutorial:study.n_trials=5,report.tutorial_seeds=0'

One job per size: ``tune`` of 10 lstm trials of S steps each at batch 64 (pruning off, one
report seed, no tutorial runs: every step is trained), so the job holds 11 x S training
steps, as ``workers.job_steps`` counts them. Each size runs as 1 process x 1 trial at once,
1 x 2 and 2 x 1, whole processes on fresh stores, the three interleaved in every round
(after one uncounted warm-up job). For each layout the result gives the median wall time per
size and its ratio to 1 x 1 (above 1: faster), and the smallest job size from which it stays
faster. The experiment configs named by ``--configs`` (default: smoke and tutorial, jobs of
short trials with many runs) run the same way, as they are or with fields set
(``NAME:KEY=VALUE,...``); each job records its steps, runs (``workers.job_runs``) and
arguments. ``--auto`` adds a fourth layout, ``--workers auto --trials-at-once auto``, and its
``vs_best``: the fastest fixed layout's median over auto's (1: auto picked it).
``--bare-threads`` only times bare torch steps in two threads against one, per batch size
(``bare_threads``: why threads are counted in windows). Writes
``bench/crossover.json`` after every job, and prints it at the end. Needs an idle machine
with at least 2 cores: on busy cores a second worker only queues.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

from pipeline.workers import job_size  # noqa: E402

TRIALS = 10
LAYOUTS = ((1, 1), (1, 2), (2, 1))
"""(worker processes, trials at once each); the first is the baseline."""
AUTO = ("auto", "auto")
"""``--auto`` adds this layout: what ``auto`` picks for both, to be checked against the best."""
STEPS = (50, 150, 300, 600, 1200, 2400)
"""Steps per trial: jobs of 550 to 26 400 training steps, around the rules in ``workers``
(48 000 windows per thread, 750 steps at batch 64; 10 000 steps per worker)."""


def _name(layout: tuple[int | str, int | str]) -> str:
    return "auto" if layout == AUTO else f"{layout[0]}x{layout[1]}"


def _cmd(tmp: Path, job: list[str], processes: int | str, at_once: int | str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "-q", "tune", "--device", "cpu",
            "--workers", str(processes), "--trials-at-once", str(at_once),
            "--storage", f"sqlite:///{tmp / 'optuna.db'}", *job]


def _lstm_job(steps: int) -> str:
    """The sweep's job of ``steps`` per trial, as a ``--configs`` entry."""
    return (f"default:study.cells=[{bench.CELL}],study.n_trials={TRIALS},train.steps={steps},"
            f"study.pruner_startup_trials={TRIALS + 1},report.seeds=1,report.tutorial_seeds=0")


def _config_job(spec: str) -> dict[str, Any]:
    """A job from ``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE``: experiments/NAME.yaml with those
    fields set, and its training steps and runs as ``auto`` counts them."""
    import yaml

    from pipeline.config import load_config

    name, _, sets = spec.partition(":")
    # commas inside [...] belong to a list value: study.cells=[rnn,lstm]
    pairs = [item.split("=", 1) for item in re.split(r",(?![^\[]*\])", sets) if item]
    path = bench.ROOT / "experiments" / f"{name}.yaml"
    size = job_size(load_config(path, {k: yaml.safe_load(v) for k, v in pairs}))
    return {"args": ["--config", str(path), *(a for k, v in pairs for a in ("--set", f"{k}={v}"))],
            "job_steps": size.steps, "job_runs": size.runs}


def first_paying(sizes: list[int], ratios: list[float]) -> int | None:
    """The smallest job size from which every larger one is faster than the baseline."""
    paying = None
    for size, ratio in sorted(zip(sizes, ratios, strict=True), reverse=True):
        if ratio <= 1.0:
            break
        paying = size
    return paying


def _summary(jobs: dict[str, dict[str, Any]], seconds: dict[str, dict[str, list[float]]],
             sweep: list[str]) -> dict[str, Any]:
    layouts = {}
    for name, by_job in seconds.items():
        done = [j for j in jobs if by_job[j] and seconds["1x1"][j]]
        medians = {j: statistics.median(by_job[j]) for j in done}
        ratios = {j: statistics.median(seconds["1x1"][j]) / medians[j] for j in done}
        swept = [j for j in sweep if j in done]
        layouts[name] = {
            "median_seconds": medians, "speedup_vs_1x1": ratios, "seconds": by_job,
            "pays_from_job_steps": first_paying([jobs[j]["job_steps"] for j in swept],
                                                [ratios[j] for j in swept])}
    if "auto" in layouts:  # auto against the fastest fixed layout of each job (1: it picked it)
        auto = layouts["auto"]["median_seconds"]
        auto_vs_best = {j: min(layouts[n]["median_seconds"][j] for n in layouts
                               if n != "auto" and j in layouts[n]["median_seconds"]) / auto[j]
                        for j in auto}
        layouts["auto"]["vs_best"] = auto_vs_best
    return layouts


BARE_SHAPES = ((1, 32, 600), (16, 32, 400), (64, 32, 300), (64, 96, 200))
"""(batch, hidden, steps) of the bare thread check: from the tutorial's batch 1 to the main
job's batch 64, about a second of steps each."""


def bare_threads(shapes: tuple[tuple[int, int, int], ...] = BARE_SHAPES,
                 rounds: int = 5) -> dict[str, Any]:
    """Why ``auto`` counts threads in windows (``workers.WINDOWS_PER_CPU_THREAD``): bare lstm
    training steps (torch alone, one torch thread each, no study or tracking) run by two
    threads at once against the same steps twice in a row, per batch size, the shapes
    interleaved in every round; the median of the rounds' ratios. Threads share one
    interpreter, so what two of them win is the share of a step spent in torch's kernels."""
    import threading
    import time

    import torch

    torch.set_num_threads(1)

    def train(batch: int, hidden: int, n: int, seq_len: int = 20) -> None:
        rnn, head = torch.nn.LSTM(1, hidden, batch_first=True), torch.nn.Linear(hidden, 1)
        opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=0.01)
        x, y = torch.randn(batch, seq_len, 1), torch.randn(batch, seq_len, 1)
        for _ in range(n):
            opt.zero_grad()
            loss = ((head(rnn(x)[0]) - y) ** 2).mean()
            loss.backward()
            opt.step()

    ratios: dict[str, list[float]] = {f"batch {b}, hidden {h}": [] for b, h, _ in shapes}
    for batch, hidden, _ in shapes:
        train(batch, hidden, 20)  # warm-up: the first steps allocate
    for _ in range(rounds):
        for batch, hidden, n in shapes:
            started = time.perf_counter()
            train(batch, hidden, n)
            train(batch, hidden, n)
            one = time.perf_counter() - started
            pair = [threading.Thread(target=train, args=(batch, hidden, n)) for _ in range(2)]
            started = time.perf_counter()
            for t in pair:
                t.start()
            for t in pair:
                t.join()
            ratios[f"batch {batch}, hidden {hidden}"].append(one / (time.perf_counter() - started))
    return {k: {"two_threads_speedup": statistics.median(v), "rounds": v}
            for k, v in ratios.items()}


def measure(steps: list[int], configs: list[str], rounds: int,
            dest: Path | None = None, auto: bool = False) -> dict[str, Any]:
    jobs = {f"lstm-{s}": _config_job(_lstm_job(s)) for s in steps}
    sweep = list(jobs)
    for spec in configs:
        jobs[spec] = _config_job(spec)
    layouts = [*LAYOUTS, AUTO] if auto else list(LAYOUTS)
    seconds = {_name(lay): {j: [] for j in jobs} for lay in layouts}
    result = {"trials": TRIALS, "cell": bench.CELL, "batch": 64, "rounds": rounds,
              "cores": len(os.sched_getaffinity(0)), "machine": bench._machine(),
              "jobs": {j: {k: v[k] for k in ("job_steps", "job_runs", "args")}
                       for j, v in jobs.items()}}
    first = next(iter(jobs.values()))["args"]
    with tempfile.TemporaryDirectory() as tmp:  # warm-up, not counted: the first process
        bench._timed(_cmd(Path(tmp), first, 1, 1), Path(tmp))  # reads cold files
    for r in range(rounds):
        for j, job in jobs.items():
            # each round starts at a different layout: none always follows the same one
            for p, k in layouts[r % len(layouts):] + layouts[:r % len(layouts)]:
                with tempfile.TemporaryDirectory() as tmp:
                    seconds[_name((p, k))][j].append(
                        bench._timed(_cmd(Path(tmp), job["args"], p, k), Path(tmp)))
            result["layouts"] = _summary(jobs, seconds, sweep)
            if dest is not None:  # what was measured survives a run cut short
                dest.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="*", default=list(STEPS),
                        help="steps per trial of the lstm jobs, one job size each")
    parser.add_argument("--configs", nargs="*", default=["smoke", "tutorial"],
                        help="experiment configs run as they are (experiments/NAME.yaml), or "
                             "with fields set: NAME:KEY=VALUE,KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--auto", action="store_true",
                        help="also run each job as --workers auto --trials-at-once auto")
    parser.add_argument("--bare-threads", action="store_true",
                        help="only the bare check: torch's lstm steps in two threads against "
                             "one, per batch size (--rounds rounds, about 10 s each)")
    args = parser.parse_args(argv)
    if args.bare_threads:
        print(json.dumps(bare_threads(rounds=args.rounds), indent=2))
        return 0
    result = measure(args.steps, args.configs, args.rounds,
                     bench.ROOT / "bench" / "crossover.json", auto=args.auto)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
