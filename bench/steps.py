"""Time per training step: the pipeline's step (``pipeline.train.StepRunner``, the code ``fit``
runs) against the tutorial's loop, on the CPU and, where present, CUDA eager and CUDA graph.

Rounds of each contender are interleaved and the median kept, so a neighbour's load drifting
over the run hits all contenders alike.

    python bench/steps.py                     # CPU, and CUDA when torch sees a GPU
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tutorial_ref import TutorialTrainer

from pipeline.config import ExperimentConfig, load_config
from pipeline.data import make_train_batches
from pipeline.model import detach_state
from pipeline.train import StepRunner, build_model, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
StepFn = Callable[[], object]


def tutorial_config(batch: int = 1) -> ExperimentConfig:
    """Ours at the tutorial's configuration: rnn, hidden 32, lr 0.01, 10 points, no clipping;
    batch 1 with the state carried (``batch=1``), or random-phase windows in batches."""
    cfg = load_config(ROOT / "experiments" / "tutorial.yaml", {"model.cell": "rnn"})
    if batch == 1:
        return cfg
    return cfg.replace({"data.protocol": "default", "train.batch_size": batch})


def default_config(cell: str = "lstm") -> ExperimentConfig:
    """A trial of the main job at the default hidden size."""
    return load_config(ROOT / "experiments" / "default.yaml", {"model.cell": cell})


def pipeline_step(cfg: ExperimentConfig, device: str = "cpu", graph: bool = False,
                  n_windows: int = 60) -> tuple[StepFn, StepRunner]:
    """A zero-argument function running one of the pipeline's training steps per call, over
    ``n_windows`` windows in a cycle, exactly as ``fit`` does (state carried when stateful)."""
    dcfg, tcfg = cfg.data, cfg.train
    stateful = dcfg.protocol == "tutorial"
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg.model).to(device)
    runner = StepRunner(model, make_optimizer(model, tcfg.lr, graph), tcfg.grad_clip,
                        graph=graph, strict=graph)
    xs, ys = (t.to(device) for t in make_train_batches(dcfg, n_windows,
                                                        1 if stateful else tcfg.batch_size))
    box: dict = {"i": 0, "state": None}

    def step() -> None:
        i = box["i"] % n_windows
        skip = dcfg.warmup if (not stateful or box["i"] == 0) else 0
        out = runner.step(xs[i], ys[i], box["state"], skip)
        if stateful:
            box["state"] = detach_state(out)
        box["i"] += 1

    return step, runner


def seconds_per_step(step: StepFn, n: int, cuda: bool = False) -> float:
    """Wall seconds per call of ``step`` over ``n`` calls (synchronised on CUDA)."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def compare(contenders: dict[str, tuple[StepFn, bool]], n: int, rounds: int,
            warmup: int = 20) -> dict[str, float]:
    """Median milliseconds per step of each contender, rounds interleaved.

    Args:
        contenders: name -> (step function, runs on CUDA).
        n: steps per round.
        rounds: rounds per contender.
        warmup: untimed steps first (allocator, caches, CUDA graph capture).
    """
    for step, cuda in contenders.values():
        seconds_per_step(step, warmup, cuda)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (step, cuda) in contenders.items():
            times[name].append(seconds_per_step(step, n, cuda) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def train_step_speedup(n: int, rounds: int, batch: int = 64) -> dict:
    """The tutorial's step against ours at its configuration, on the CPU, plus samples per
    second of our batched step (same cell, size and window length) against the tutorial's."""
    tutorial = TutorialTrainer()
    ours, _ = pipeline_step(tutorial_config())
    batched, _ = pipeline_step(tutorial_config(batch))
    ms = compare({"tutorial": (tutorial.step, False), "ours": (ours, False),
                  "batched": (batched, False)}, n, rounds)
    return {
        "value": ms["tutorial"] / ms["ours"],
        "goal": ">= 1.5",
        "config": "rnn, hidden 32, batch 1, 10 points, lr 0.01, state carried, CPU",
        "tutorial_ms_per_step": ms["tutorial"],
        "ours_ms_per_step": ms["ours"],
        "batched": {
            "batch_size": batch,
            "ms_per_step": ms["batched"],
            "step_cost_vs_batch_1": ms["batched"] / ms["ours"],
            "samples_per_s": batch / ms["batched"] * 1e3,
            "tutorial_samples_per_s": 1 / ms["tutorial"] * 1e3,
            "samples_per_s_ratio": (batch / ms["batched"]) / (1 / ms["tutorial"]),
        },
        "steps_per_round": n,
        "rounds": rounds,
    }


def machine_noise(chunks: int = 12, n: int = 300) -> dict:
    """How much the machine itself moves: the same default-config lstm steps (a trial's work,
    bare, one thread, nothing else in the process), timed in ``chunks`` back-to-back chunks of
    ``n`` steps. On the 2026-12-03 VM, idle, chunks of 0.45-0.7 s differed by 26-50 % within one
    run, pinned to either core or not: a ratio of two rates measured in turn (parallel_scaling)
    cannot be trusted closer than that, whatever the code does."""
    step, _ = pipeline_step(default_config())
    seconds_per_step(step, 50)
    ms = [seconds_per_step(step, n) * 1e3 for _ in range(chunks)]
    return {"ms_per_step": ms, "median_ms": statistics.median(ms),
            "spread": max(ms) / min(ms) - 1, "chunks": chunks, "steps_per_chunk": n,
            "config": "lstm, hidden 32, batch 64, 20 points, CPU, 1 thread"}


def device_steps(n: int, rounds: int, cells: tuple[str, ...] = ("rnn", "lstm", "gru")) -> dict:
    """Per-step milliseconds of a default-config trial: CPU, and where there is a GPU, CUDA
    eager and CUDA graph; plus the tutorial's step and ours at its configuration on each."""
    out: dict = {}
    cuda = torch.cuda.is_available()
    for cell in cells:
        cfg = default_config(cell)
        contenders = {"cpu": (pipeline_step(cfg, "cpu")[0], False)}
        if cuda:
            contenders["cuda_eager"] = (pipeline_step(cfg, "cuda")[0], True)
            graphed, runner = pipeline_step(cfg, "cuda", graph=True)
            contenders["cuda_graph"] = (graphed, True)
        ms = compare(contenders, n, rounds)
        if cuda:
            ms["graph_speedup_vs_eager"] = ms["cuda_eager"] / ms["cuda_graph"]
            ms["cuda_graph_vs_cpu"] = ms["cpu"] / ms["cuda_graph"]
            ms["graph_captured"] = runner.graphed
        out[f"{cell}_h32_b64_t20"] = ms
    tut = {"tutorial_cpu": (TutorialTrainer().step, False),
           "ours_cpu": (pipeline_step(tutorial_config())[0], False)}
    if cuda:
        tut["tutorial_cuda"] = (TutorialTrainer("cuda").step, True)
        tut["ours_cuda"] = (pipeline_step(tutorial_config(), "cuda")[0], True)
    out["tutorial_config_ms"] = compare(tut, n, rounds)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({"train_step_speedup": train_step_speedup(200, 3),
                      "device_steps": device_steps(100, 3)}, indent=2))
