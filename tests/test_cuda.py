"""Training-step paths: the lean eager step equals the plain loop exactly; CUDA graphs are used
where they can be and match eager; elsewhere the trainer falls back to eager.

The CUDA tests run only where torch sees a GPU (``bench/gpu_check.sh`` runs this file there);
on the CPU they are skipped and the fallback tests run instead.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from pipeline.config import ExperimentConfig
from pipeline.data import make_eval_set, make_train_batches
from pipeline.model import detach_state
from pipeline.train import (
    OutOfMemory,
    build_model,
    fit,
    out_of_memory_as_failure,
    score,
    use_cuda_graph,
)

CELLS = ("rnn", "lstm", "gru")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cfg(tiny_cfg: ExperimentConfig, cell: str, device: str = "cpu", **extra) -> ExperimentConfig:
    return tiny_cfg.replace({"model.cell": cell, "model.hidden_size": 16, "train.lr": 0.02,
                             "train.steps": 30, "train.eval_every": 10, "train.device": device,
                             **extra})


def _reference_fit(cfg: ExperimentConfig, fused: bool = True
                   ) -> tuple[list[tuple[int, dict]], dict]:
    """The trainer as it was before the lean path: the plain eager loop, every step alike;
    with ``fused=False`` also the looped Adam it used."""
    tcfg, dcfg = cfg.train, cfg.data
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, fused=fused)
    stateful = dcfg.protocol == "tutorial"
    xs, ys = make_train_batches(dcfg, tcfg.steps, 1 if stateful else tcfg.batch_size)
    val = make_eval_set(dcfg, dcfg.val)
    history, loss_sum, n, state = [], torch.zeros(()), 0, None
    best_val, best = math.inf, {}
    for step in range(1, tcfg.steps + 1):
        skip = dcfg.warmup if (not stateful or step == 1) else 0
        pred, new_state = model(xs[step - 1], state)
        if stateful:
            state = detach_state(new_state)
        loss = F.mse_loss(pred[:, skip:], ys[step - 1][:, skip:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        optimizer.step()
        loss_sum += loss.detach()
        n += 1
        if step % tcfg.eval_every and step != tcfg.steps:
            continue
        history.append((step, {"train/loss": loss_sum.item() / n,
                               "val/mse": score(model, val, dcfg.warmup)}))
        loss_sum.zero_()
        n = 0
        if history[-1][1]["val/mse"] < best_val:
            best_val = history[-1][1]["val/mse"]
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return history, best


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("protocol", ["default", "tutorial"])
def test_lean_eager_step_gives_identical_results(tiny_cfg, cell, protocol):
    """Speed-only changes to the step (no slicing when nothing is cut, the runner) must not
    move a single bit of the run."""
    extra = ({"data.protocol": "tutorial", "data.seq_len": 10, "data.warmup": 0,
              "train.grad_clip": 0} if protocol == "tutorial" else {})
    cfg = _cfg(tiny_cfg, cell, **extra)
    history, best = _reference_fit(cfg)
    result = fit(cfg)
    assert result.history == history  # every loss and score, bit for bit
    assert not result.cuda_graph
    for key, value in best.items():
        assert torch.equal(result.state_dict[key], value)


def test_fused_adam_matches_the_looped_adam_to_rounding(tiny_cfg):
    """Fused Adam is the one speed change that is not bit for bit: same rule, other rounding."""
    cfg = _cfg(tiny_cfg, "lstm")
    looped, _ = _reference_fit(cfg, fused=False)
    for (s1, m1), (s2, m2) in zip(looped, fit(cfg).history, strict=True):
        assert s1 == s2
        assert m2["val/mse"] == pytest.approx(m1["val/mse"], rel=1e-4)
        assert m2["train/loss"] == pytest.approx(m1["train/loss"], rel=1e-4)


def test_graph_mode_selection_falls_back_to_eager():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_cuda_graph("auto", cpu, stateful=False)
    assert not use_cuda_graph("off", cuda, stateful=False)
    assert not use_cuda_graph("auto", cuda, stateful=True)  # carried state: eager
    assert use_cuda_graph("auto", cuda, stateful=False)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        use_cuda_graph("on", cpu, stateful=False)
    with pytest.raises(ValueError, match="stateless"):
        use_cuda_graph("on", cuda, stateful=True)


def test_cuda_graph_on_without_gpu_is_refused(tiny_cfg):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        fit(_cfg(tiny_cfg, "lstm", **{"train.cuda_graph": "on"}))


def test_auto_graph_on_cpu_trains_eagerly(tiny_cfg):
    result = fit(_cfg(tiny_cfg, "gru", **{"train.cuda_graph": "auto"}))
    assert result.device == "cpu" and not result.cuda_graph


@needs_cuda
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_graph_matches_eager(tiny_cfg, cell):
    eager = fit(_cfg(tiny_cfg, cell, "cuda", **{"train.cuda_graph": "off"}))
    graphed = fit(_cfg(tiny_cfg, cell, "cuda", **{"train.cuda_graph": "on"}))
    assert graphed.cuda_graph and not eager.cuda_graph
    assert graphed.device.startswith("cuda")
    for (s1, m1), (s2, m2) in zip(eager.history, graphed.history, strict=True):
        assert s1 == s2
        assert m2["val/mse"] == pytest.approx(m1["val/mse"], rel=1e-3, abs=1e-6)
        assert m2["train/loss"] == pytest.approx(m1["train/loss"], rel=1e-3, abs=1e-6)
    for key, value in eager.state_dict.items():
        assert graphed.state_dict[key].device.type == "cpu"
        torch.testing.assert_close(graphed.state_dict[key], value, rtol=1e-3, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("extra", [{"train.schedule": "cosine"},
                                   {"train.schedule": "cosine", "train.lr_warmup_steps": 8}])
def test_scheduled_lr_reaches_the_graph_replays(tiny_cfg, extra):
    """A captured fused Adam reads a tensor lr that the scheduler fills in place: the graphed
    run follows the schedule step by step, as the eager run does."""
    eager = fit(_cfg(tiny_cfg, "lstm", "cuda", **{"train.cuda_graph": "off", **extra}))
    graphed = fit(_cfg(tiny_cfg, "lstm", "cuda", **{"train.cuda_graph": "on", **extra}))
    assert graphed.cuda_graph
    assert graphed.final_lr == pytest.approx(eager.final_lr, abs=1e-9)
    for (_, m1), (_, m2) in zip(eager.history, graphed.history, strict=True):
        assert m2["train/lr"] == pytest.approx(m1["train/lr"], rel=1e-6)
        assert m2["val/mse"] == pytest.approx(m1["val/mse"], rel=1e-3, abs=1e-6)
    for key, value in eager.state_dict.items():
        torch.testing.assert_close(graphed.state_dict[key], value, rtol=1e-3, atol=1e-5)


@needs_cuda
def test_graphed_runs_trained_at_once_in_threads_match_runs_trained_alone(tiny_cfg):
    """``tune --trials-at-once`` on a card: each thread's run on its own stream, the graphs
    captured in turn while the other threads train. Each run gets what it gets alone, to
    the graphs' tolerance, and every one was graphed."""
    import threading

    from pipeline.workers import run_in_threads

    cfgs = [_cfg(tiny_cfg, cell, "cuda", **{"train.seed": seed, "train.steps": 60,
                                            "train.cuda_graph": "on"})
            for seed in range(2) for cell in CELLS]
    alone = [fit(cfg) for cfg in cfgs]
    start = threading.Barrier(len(cfgs))

    def run(i: int):
        start.wait(60)
        return fit(cfgs[i])

    together = run_in_threads(run, len(cfgs))  # raises the first thread's error
    for a, b in zip(alone, together, strict=True):
        assert b.cuda_graph
        assert b.best_val == pytest.approx(a.best_val, rel=1e-3, abs=1e-6)
        for key, value in a.state_dict.items():
            torch.testing.assert_close(b.state_dict[key], value, rtol=1e-3, atol=1e-5)


@needs_cuda
def test_cuda_run_matches_cpu_run_to_tolerance(tiny_cfg):
    cpu = fit(_cfg(tiny_cfg, "lstm"))
    gpu = fit(_cfg(tiny_cfg, "lstm", "cuda"))
    assert gpu.cuda_graph
    assert math.isclose(gpu.best_val, cpu.best_val, rel_tol=1e-2)


@needs_cuda
def test_tutorial_protocol_on_cuda_stays_eager(tiny_cfg):
    cfg = _cfg(tiny_cfg, "rnn", "cuda", **{"data.protocol": "tutorial", "data.seq_len": 10,
                                            "data.warmup": 0})
    result = fit(cfg)
    assert not result.cuda_graph and math.isfinite(result.best_val)


@needs_cuda
def test_cuda_out_of_memory_becomes_one_line_and_frees_the_card(tiny_cfg):
    """A real CUDA allocation failure, not a raised exception: the process is held to 64 MiB
    above what it holds already (torch's own cap), a trial far larger than that fails with
    ``OutOfMemory``, and the card is usable again for the next trial, as a study needs."""
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()  # what earlier tests in this process still hold
    total = torch.cuda.get_device_properties(0).total_memory
    # The cap applies to what the caching allocator reserves, not to live tensors alone.
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_reserved() + 64 * 2**20)
                                               / total)
    try:
        big = _cfg(tiny_cfg, "lstm", "cuda", **{"model.hidden_size": 2048,
                                                 "train.batch_size": 4096})
        with pytest.raises(OutOfMemory, match="^out of memory: ") as caught:
            with out_of_memory_as_failure():
                fit(big)
        assert "\n" not in str(caught.value)
        assert torch.cuda.memory_allocated() - before < 16 * 2**20, \
            "the failed trial's tensors are freed"
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    # The next trial, uncapped as on a card the failed one no longer holds (under the 64 MiB
    # cap even this one's first 32 MiB block did not fit, on the H200).
    small = fit(_cfg(tiny_cfg, "lstm", "cuda"))
    assert math.isfinite(small.best_val)


def test_system_metrics_are_logged_to_the_run(tracking_store, monkeypatch):
    """What a GPU study run gets (here forced on the CPU): MLflow's system metrics."""
    import time

    # MLflow's environment variable would override the interval this test asks for.
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)

    from pipeline.tracking import Tracker

    tracker = Tracker("sysmetrics")
    run_id = tracker.start_run("study")
    with tracker.system_metrics(run_id, enabled=True, sampling_interval=0.2) as running:
        time.sleep(0.7)
    assert running
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics)
    if torch.cuda.is_available():
        assert any(k.startswith("system/gpu_0_utilization") for k in metrics)


def test_system_metrics_off_logs_nothing(tracking_store, monkeypatch):
    from pipeline.tracking import Tracker

    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    tracker = Tracker("sysmetrics")
    run_id = tracker.start_run("study")
    with tracker.system_metrics(run_id, enabled=False) as running:
        pass
    assert not running
    assert not MlflowClient().get_run(run_id).data.metrics
