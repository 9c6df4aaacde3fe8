"""Fit and score a SeqRegressor; the trainer knows nothing of logging or tuning.

Whatever watches a run (metric logging, an Optuna pruner, a progress bar) is a callback called
as ``callback(step, {"train/loss": ..., "val/mse": ...})`` after each validation pass; a
callback may stop training by raising (a pruner raises ``optuna.TrialPruned``).

    >>> from pipeline.config import ExperimentConfig
    >>> from pipeline.train import fit
    >>> result = fit(ExperimentConfig())                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import ExperimentConfig, ModelConfig
from pipeline.data import Windows, make_eval_set, make_train_batches, masked_mse
from pipeline.model import SeqRegressor, detach_state

Callback = Callable[[int, dict[str, float]], None]


class DivergedError(RuntimeError):
    """The loss or the validation error became NaN or infinite."""


@dataclass
class FitResult:
    """What a finished training run hands back."""

    best_val: float
    """Lowest validation MSE reached; the run is scored by it."""
    best_step: int
    """Step at which it was reached."""
    state_dict: dict[str, torch.Tensor]
    """Weights at ``best_step``, on the CPU."""
    device: str
    """Device it trained on."""
    seconds: float
    """Wall time of the training loop, validation included."""
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    """Every (step, metrics) the callbacks saw."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is present, else the CPU; ``cuda`` without one fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(name)


def build_model(cfg: ModelConfig, state_dict: dict[str, torch.Tensor] | None = None) -> SeqRegressor:
    """A fresh model of ``cfg``, loaded with ``state_dict`` when given."""
    model = SeqRegressor(cfg.cell, cfg.hidden_size, cfg.num_layers)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


@torch.inference_mode()
def predict(model: SeqRegressor, ws: Windows) -> np.ndarray:
    """Predictions for every window, each from a fresh state; consecutive windows run as one
    long sequence, which is exactly carrying the state from each window into the next."""
    return predict_windows(lambda x: model(torch.from_numpy(x).to(_device_of(model)))[0]
                           .cpu().numpy(), ws)


def predict_windows(predict_fn: Callable[[np.ndarray], np.ndarray], ws: Windows) -> np.ndarray:
    """Applies a (batch, T, 1) -> (batch, T, 1) predictor to ``ws``, chaining stateful ones."""
    if not ws.stateful:
        return predict_fn(ws.x)
    n, t, _ = ws.x.shape
    return predict_fn(ws.x.reshape(1, n * t, 1)).reshape(n, t, 1)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def score(model: SeqRegressor, ws: Windows, warmup: int) -> float:
    """Masked MSE of ``model`` on ``ws`` (warm-up points left out)."""
    return masked_mse(predict(model, ws), ws, warmup)


def fit(cfg: ExperimentConfig, callbacks: Iterable[Callback] = (),
        val: Windows | None = None) -> FitResult:
    """Trains ``cfg.model`` with Adam on MSE, validating every ``cfg.train.eval_every`` steps.

    Args:
        cfg: the whole experiment config (data, model and train sections are read).
        callbacks: called with (step, metrics) after each validation pass.
        val: the validation windows; drawn from ``cfg.data.val`` when None.

    Returns:
        The best validation MSE, its step and weights.

    Raises:
        DivergedError: the training loss or the validation MSE is not finite.
    """
    tcfg, dcfg = cfg.train, cfg.data
    device = resolve_device(tcfg.device)
    torch.manual_seed(tcfg.seed)
    model = build_model(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    stateful = dcfg.protocol == "tutorial"
    batch = 1 if stateful else tcfg.batch_size
    xs, ys = (t.to(device) for t in make_train_batches(dcfg, tcfg.steps, batch))
    val = val if val is not None else make_eval_set(dcfg, dcfg.val)
    callbacks = list(callbacks)

    best_val, best_step, best_state = math.inf, 0, None
    history: list[tuple[int, dict[str, float]]] = []
    # Summed on the device and read once per validation pass: an .item() per step would
    # stall the GPU on every step.
    loss_sum, n_summed = torch.zeros((), device=device), 0
    state = None
    start = time.perf_counter()
    for step in range(1, tcfg.steps + 1):
        # The warm-up is cut from every window, except that with a carried state only the
        # first window lacks context.
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
        n_summed += 1
        if step % tcfg.eval_every and step != tcfg.steps:
            continue
        train_loss = loss_sum.item() / n_summed
        loss_sum.zero_()
        n_summed = 0
        val_mse = score(model, val, dcfg.warmup)
        if not (math.isfinite(train_loss) and math.isfinite(val_mse)):
            raise DivergedError(f"loss became {train_loss}, val/mse {val_mse} at step {step}")
        if val_mse < best_val:
            best_val, best_step = val_mse, step
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        metrics = {"train/loss": train_loss, "val/mse": val_mse}
        history.append((step, metrics))
        for callback in callbacks:
            callback(step, metrics)
    assert best_state is not None  # the last step always validates
    return FitResult(
        best_val=best_val,
        best_step=best_step,
        state_dict={k: v.cpu() for k, v in best_state.items()},
        device=str(device),
        seconds=time.perf_counter() - start,
        history=history,
    )
