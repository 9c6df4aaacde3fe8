"""The GPU goals of issue 8, measured on one host, each part a whole process on fresh stores;
``bench/gpu_check.sh speed`` runs them all (about 6 minutes on an H100/H200 machine).

    python bench/gpu_speed.py main_job     # default main job, --workers auto on CUDA (<= 20 s)
    python bench/gpu_speed.py workers      # trials/s with 1, 2, 4, 8 CUDA workers (for auto)
    python bench/gpu_speed.py trial        # default trial, CUDA vs this host's CPU (>= 5x)
    python bench/gpu_speed.py peer         # peer_speedup on CUDA (>= 5x)

Each prints one JSON object and writes it to ``$OUT/gpu_speed_<part>.json`` (or ``bench/``).
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
LEAN = ["--set", "report.seeds=1", "--set", "report.tutorial_seeds=0"]


def _tune(tmp: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "-q", "tune", "--config", DEFAULT,
            "--storage", f"sqlite:///{tmp / 'optuna.db'}", *args]


def main_job() -> dict[str, Any]:
    """The default main job as a user runs it: ``--workers auto`` on CUDA, fresh stores."""
    out = {}
    for workers in ("auto", "1"):
        used = bench._workers_used(workers)
        with tempfile.TemporaryDirectory() as tmp:
            seconds = bench._timed(_tune(Path(tmp), "--workers", workers, "--device", "cuda"),
                                   Path(tmp))
        out[workers] = {"seconds": seconds, "workers_used": used}
    return {"goal": "auto <= 20 s", "value": out["auto"]["seconds"], **out}


def workers() -> dict[str, Any]:
    """Trials per second of one study (lstm, 24 default trials, pruning off, lean report) with
    1, 2, 4 and 8 CUDA workers, whole job included: which count keeps the card busy."""
    out = {}
    for n in (1, 2, 4, 8):
        with tempfile.TemporaryDirectory() as tmp:
            seconds = bench._timed(_tune(Path(tmp), "--cells", "lstm", "--n-trials", "24",
                                         "--set", "study.pruner_startup_trials=25",
                                         "--workers", str(n), "--device", "cuda", *LEAN),
                                   Path(tmp))
        out[str(n)] = {"seconds": seconds, "trials_per_s": 24 / seconds}
    return out


def _trial_seconds(device: str) -> dict[str, Any]:
    """A one-worker study of 6 default-config lstm trials (pruning off) on ``device``; the time
    per trial is from the first trial run's start to the last one's end over 6, so the
    bookkeeping between and around trials (Optuna, runs, params, metrics, figure, checkpoint)
    is in it; process start, imports and the wrap-up are not."""
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        bench._timed(_tune(Path(tmp), "--cells", "lstm", "--n-trials", "6",
                           "--set", "study.pruner_startup_trials=7", "--workers", "1",
                           "--device", device, *LEAN), Path(tmp))
        client = MlflowClient(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  "tags.`cellstudy.level` = 'trial'")
        span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs))
        train = sorted(r.data.metrics["train/seconds"] for r in runs)
    return {"trials": len(runs), "seconds_per_trial": span / 1000 / len(runs),
            "train_seconds_median": train[len(train) // 2]}


def trial() -> dict[str, Any]:
    cuda, cpu = _trial_seconds("cuda"), _trial_seconds("cpu")
    return {"goal": ">= 5", "value": cpu["seconds_per_trial"] / cuda["seconds_per_trial"],
            "cuda": cuda, "cpu": cpu}


def peer() -> dict[str, Any]:
    return bench.peer_speedup(rounds=1)


PARTS = {"main_job": main_job, "workers": workers, "trial": trial, "peer": peer}


def main(argv: list[str]) -> int:
    dest = Path(os.environ.get("OUT", ROOT / "bench"))
    for name in argv or list(PARTS):
        start = time.perf_counter()
        result = {**PARTS[name](), "part_seconds": time.perf_counter() - start}
        (dest / f"gpu_speed_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({name: result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
