"""The GPU goals of issue 8, measured on one host, each part a whole process on fresh stores;
``bench/gpu_check.sh speed`` runs them all (about 6 minutes on an H100/H200 machine).

    python bench/gpu_speed.py main_job     # default main job, --workers auto on CUDA (<= 20 s)
    python bench/gpu_speed.py workers      # trials/s, 1-16 CUDA workers and 16 CPU workers
    python bench/gpu_speed.py trial        # default trial, CUDA vs this host's CPU (>= 5x)
    python bench/gpu_speed.py peer         # peer_speedup on CUDA (>= 5x)

Each prints one JSON object and writes it to ``$OUT/gpu_speed_<part>.json`` (or ``bench/``),
after each of its measurements, so a part cut off by its time limit still leaves what it took.
``GPU_SPEED_DEVICE=cpu`` runs the same code on the CPU (a dry run of the script).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

ROOT = bench.ROOT
DEFAULT = str(ROOT / "experiments" / "default.yaml")
DEVICE = os.environ.get("GPU_SPEED_DEVICE", "cuda")
DEST = Path(os.environ.get("OUT", ROOT / "bench"))
LEAN = ["--set", "report.seeds=1", "--set", "report.tutorial_seeds=0"]


def _tune(tmp: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "-q", "tune", "--config", DEFAULT,
            "--storage", f"sqlite:///{tmp / 'optuna.db'}", *args]


def _save(part: str, result: dict[str, Any]) -> None:
    (DEST / f"gpu_speed_{part}.json").write_text(json.dumps(result, indent=2) + "\n")


def _spans(tmp: Path, started: float | None = None) -> dict[str, Any]:
    """Where a job's time went, read back from its MLflow store: per run level (trial, study,
    seed, baseline, tutorial, job), the first start and the last end in seconds from the
    process's start (``started``, epoch seconds; else from the job run's), and the number of
    runs."""
    import sqlite3

    with sqlite3.connect(tmp / "mlflow.db") as conn:
        rows = conn.execute(
            "SELECT t.value, MIN(r.start_time), MAX(r.end_time), COUNT(*) FROM runs r JOIN tags t"
            " ON t.run_uuid = r.run_uuid AND t.key = 'cellstudy.level' GROUP BY t.value"
        ).fetchall()
    start = started * 1000 if started is not None else min(r[1] for r in rows)
    return {level: {"first_start_s": (first - start) / 1000,
                    "last_end_s": ((last or first) - start) / 1000, "runs": n}
            for level, first, last, n in rows}


def _configs(tmp: Path) -> dict[str, dict[str, int]]:
    """Per study: its trials, and how many distinct configurations they trained (the same
    number since 44a2a96; before it, workers seeded alike drew the same ones)."""
    import sqlite3

    with sqlite3.connect(tmp / "optuna.db") as conn:
        rows = conn.execute(
            "SELECT s.study_name, p.trial_id, p.param_name, p.param_value FROM trial_params p"
            " JOIN trials t ON t.trial_id = p.trial_id JOIN studies s ON s.study_id = t.study_id"
        ).fetchall()
    trials: dict[str, dict[int, list]] = {}
    for study, trial, name, value in rows:
        trials.setdefault(study, {}).setdefault(trial, []).append((name, value))
    return {study: {"trials": len(by_id),
                    "distinct": len({tuple(sorted(p)) for p in by_id.values()})}
            for study, by_id in trials.items()}


ISSUE_TIME_JOB = ("--set", "train.steps=400", "--set", "train.schedule=constant",
                  "--set", "study.pruner_warmup_steps=100", "--set", "study.report_every=50")
"""The main job as it was when issue 8 set its 20-s goal (51 s then on the H200 host): 400
steps a trial at a constant lr; since issue 9 a trial is 3000 steps, 7.5 times the training."""
AUTO = ("--workers", "auto", "--trials-at-once", "auto")
"""What the MLproject's ``main`` entry point passes (the command line's default for
``--trials-at-once`` is 1)."""
MAIN_RUNS = {"auto": AUTO, "1": ("--workers", "1"),
             "8": ("--workers", "8"), "issue_time_auto": (*AUTO, *ISSUE_TIME_JOB),
             # Several trials per process, each thread on its own stream (one CUDA context,
             # so their replays can overlap, where processes take turns on the card).
             "2x4": ("--workers", "2", "--trials-at-once", "4"),
             "4x4": ("--workers", "4", "--trials-at-once", "4"),
             "1x8": ("--workers", "1", "--trials-at-once", "8")}


def main_job() -> dict[str, Any]:
    """The default main job as a user runs it: ``--workers auto`` on CUDA, fresh stores; then
    with one worker (or the runs named in ``GPU_SPEED_MAIN_RUNS``, from ``MAIN_RUNS``, e.g.
    ``auto issue_time_auto 8``), and where its time went (run spans per level)."""
    out: dict[str, Any] = {"goal": "auto <= 20 s"}
    for key in os.environ.get("GPU_SPEED_MAIN_RUNS", "auto 1").split():
        args = MAIN_RUNS[key]
        # Every run's args are flag-value pairs.
        flags = dict(zip(args[::2], args[1::2], strict=True))
        used, at_once = bench._counts_used(Path(DEFAULT), flags["--workers"],
                                           flags.get("--trials-at-once", "1"),
                                           {"train.device": DEVICE})
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            seconds = bench._timed(_tune(Path(tmp), *args, "--device", DEVICE), Path(tmp))
            out[key] = {"seconds": seconds, "workers_used": used,
                        "trials_at_once_used": at_once, "args": list(args),
                        "spans": _spans(Path(tmp), started), "configs": _configs(Path(tmp))}
        out.setdefault("value", seconds)
        _save("main_job", out)
    return out


WORKER_COUNTS = (1, 2, 4, 8, 16)
CPU_WORKERS = 16
"""The H100/H200 machines' cores."""


def workers() -> dict[str, Any]:
    """Trials per second of one study (lstm, 24 default trials, pruning off, lean report) with
    1 to 16 CUDA workers, whole job included: which count keeps the card busy; and 16 workers
    on this host's CPU cores, the other way to use the machine."""
    out: dict[str, Any] = {}
    runs = [(str(n), n, DEVICE) for n in WORKER_COUNTS] + [(f"cpu{CPU_WORKERS}", CPU_WORKERS,
                                                            "cpu")]
    for key, n, device in runs:
        with tempfile.TemporaryDirectory() as tmp:
            seconds = bench._timed(_tune(Path(tmp), "--cells", "lstm", "--n-trials", "24",
                                         "--set", "study.pruner_startup_trials=25",
                                         "--workers", str(n), "--device", device, *LEAN),
                                   Path(tmp))
            spans = _spans(Path(tmp))
        out[key] = {"seconds": seconds, "trials_per_s": 24 / seconds, "device": device,
                    "trial_span_s": spans["trial"]["last_end_s"] - spans["trial"]["first_start_s"]}
        _save("workers", out)
    return out


TRIALS = int(os.environ.get("GPU_SPEED_TRIALS", "6"))


def _trial_seconds(device: str) -> dict[str, Any]:
    """A one-worker study of ``TRIALS`` default-config lstm trials (pruning off) on ``device``;
    the time per trial is from the first trial run's start to the last one's end over their
    number, so the
    bookkeeping between and around trials (Optuna, runs, params, metrics, figure, checkpoint)
    is in it; process start, imports and the wrap-up are not."""
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        bench._timed(_tune(Path(tmp), "--cells", "lstm", "--n-trials", str(TRIALS),
                           "--set", f"study.pruner_startup_trials={TRIALS + 1}", "--workers", "1",
                           "--device", device, *LEAN), Path(tmp))
        client = MlflowClient(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  "tags.`cellstudy.level` = 'trial'")
        span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs))
        train = sorted(r.data.metrics["train/seconds"] for r in runs)
    return {"trials": len(runs), "seconds_per_trial": span / 1000 / len(runs),
            "train_seconds_median": train[len(train) // 2]}


def trial() -> dict[str, Any]:
    out: dict[str, Any] = {"goal": ">= 5", "cuda": _trial_seconds(DEVICE)}
    _save("trial", out)
    out["cpu"] = _trial_seconds("cpu")
    out["value"] = out["cpu"]["seconds_per_trial"] / out["cuda"]["seconds_per_trial"]
    return out


def peer() -> dict[str, Any]:
    return bench.peer_speedup(rounds=1)


PARTS = {"main_job": main_job, "workers": workers, "trial": trial, "peer": peer}


def main(argv: list[str]) -> int:
    for name in argv or list(PARTS):
        start = time.perf_counter()
        result = {**PARTS[name](), "part_seconds": time.perf_counter() - start}
        _save(name, result)
        print(json.dumps({name: result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
