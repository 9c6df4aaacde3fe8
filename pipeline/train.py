"""Fit and score a SeqRegressor; the trainer knows nothing of logging or tuning.

Whatever watches a run (metric logging, an Optuna pruner, a progress bar) is a callback called
as ``callback(step, {"train/loss": ..., "val/mse": ...})`` after each validation pass; a
callback may stop training by raising (a pruner raises ``optuna.TrialPruned``).

    >>> from pipeline.config import ExperimentConfig
    >>> from pipeline.train import fit
    >>> result = fit(ExperimentConfig())                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import ExperimentConfig, ModelConfig, TrainConfig
from pipeline.data import Windows, make_train_batches, masked_mse, validation_set
from pipeline.model import SeqRegressor, State, detach_state

Callback = Callable[[int, dict[str, float]], None]
StepHook = Callable[[int, torch.Tensor], None]
"""Called after every optimizer step with (step, the prediction made for the step's windows
before the update); predictions are kept on eager steps only (not on CUDA-graph replays)."""

log = logging.getLogger(__name__)

_SEEDING = threading.Lock()
"""torch's default generator is one per process: runs trained at once in threads (``tune
--trials-at-once``) take turns to seed it and draw their initial weights, so that a run's
weights depend on its seed alone."""
_CAPTURING = threading.Lock()
"""One CUDA graph capture at a time per process: ``torch.cuda.graph`` synchronizes the device
and empties the allocator's cache before it captures, which must not happen inside another
thread's capture."""


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
    cuda_graph: bool = False
    """Whether its steps were replayed from a captured CUDA graph."""
    final_lr: float = math.nan
    """The learning rate after the last step (what the schedule ended at)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is present, else the CPU; ``cuda`` without one fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(name)


def warm_up(device: torch.device) -> None:
    """Pays a process's one-time costs of training on ``device`` before the first run does:
    the first fused Adam imports ``torch._dynamo`` (1.3 s on the 2-core machine), and the
    first CUDA call makes the context."""
    param = torch.zeros(1, device=device, requires_grad=True)
    torch.optim.Adam([param], lr=0.1, fused=True)


def build_model(cfg: ModelConfig,
                state_dict: dict[str, torch.Tensor] | None = None) -> SeqRegressor:
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


GRAPH_WARMUP_STEPS = 3
"""Real training steps run eagerly on a side stream before a CUDA graph is captured: they
initialise Adam's state, cuDNN and cuBLAS workspaces, so capture records steady-state work."""


def use_cuda_graph(mode: str, device: torch.device, stateful: bool) -> bool:
    """Whether a run captures its training step in a CUDA graph.

    Args:
        mode: ``TrainConfig.cuda_graph``: auto, on or off.
        device: the device it trains on.
        stateful: True for the tutorial protocol, whose step carries a hidden state of changing
            provenance from window to window (and scores the warm-up on the first only).

    Raises:
        ValueError: ``on`` where a graph cannot be used.
    """
    possible = device.type == "cuda" and not stateful
    if mode == "on" and not possible:
        why = "a CUDA device" if device.type != "cuda" else "the default (stateless) protocol"
        raise ValueError(f"train.cuda_graph=on needs {why}")
    return possible and mode != "off"


# Torch warns that the warm-up's gradient nodes were made on another stream than the captured
# backward's and that this "may incur synchronization": the graph path is measured at 15-20x
# the eager step on an H100 (docs/performance.md), so the warning only alarms users.
warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")


class StepRunner:
    """Runs optimizer steps: forward, masked MSE, backward, clipping, Adam.

    Eager on every device; with ``graph`` it runs the first ``GRAPH_WARMUP_STEPS`` steps
    eagerly on a side stream, captures the step once with ``torch.cuda.graph`` and replays it
    for every later step, so each step costs one graph launch instead of dozens of kernel
    launches. The steps taken are the same ones either way (the warm-up steps are real
    training steps), so a graph changes the speed, not the run. If capture fails the runner
    stays eager, unless ``strict``.

    The mean training loss is summed on the device (``loss_sum``): reading it every step with
    ``.item()`` would stall the GPU once per step.

    Given the run's ``batches`` and its learning rates (``lr_after``), the graph also takes
    each step's windows from the batches and sets the next step's learning rate itself, from a
    step counter on the device: a replay is then the whole step. Copying the windows in and
    stepping torch's scheduler on the host (its ``get_lr`` reads the lr tensor back, a sync)
    took about 0.26 ms of a 0.37-ms graphed step on the H200 host, the replay 0.11 ms.

    Args:
        model: the model, already on its device.
        optimizer: its optimizer (Adam with ``capturable=True`` when ``graph``).
        grad_clip: max gradient norm; 0 disables clipping.
        graph: capture the step in a CUDA graph.
        strict: raise when capture fails instead of staying eager.
        batches: the run's (inputs, targets), (steps, batch, T, 1) on the device; with them,
            ``step``'s ``index`` says which one a step takes.
        lr_after: the learning rate after each step (``lr_after_steps``), on the device; None
            for a constant lr.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 grad_clip: float, graph: bool = False, strict: bool = False,
                 batches: tuple[torch.Tensor, torch.Tensor] | None = None,
                 lr_after: torch.Tensor | None = None) -> None:
        self.model, self.optimizer, self.grad_clip = model, optimizer, grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = _device_of(model)
        self.loss_sum = torch.zeros((), device=device)
        self.graph_wanted, self.strict = graph, strict
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps_done = 0
        self._summed_until = 0
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._side = torch.cuda.Stream(device) if graph else None
        self._batches, self._lr_after = batches, lr_after
        self._index: torch.Tensor | None = None
        """The step a replay takes, 0-based, on the device, when the graph reads the batches."""
        self.last_prediction: torch.Tensor | None = None
        """The prediction of the last eager step, made before its optimizer update (what the
        tutorial plots); not kept on graph replays."""

    @property
    def graphed(self) -> bool:
        """Whether steps are now replayed from a captured graph."""
        return self.graph is not None

    def _eager(self, x: torch.Tensor, y: torch.Tensor, state: State | None,
               skip: int) -> State:
        pred, new_state = self.model(x, state)
        self.last_prediction = pred.detach()
        # Slicing costs two kernels and their backward: skip it when nothing is cut.
        if skip:
            pred, y = pred[:, skip:], y[:, skip:]
        loss = F.mse_loss(pred, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.loss_sum += loss.detach()
        return new_state

    def step(self, x: torch.Tensor, y: torch.Tensor, state: State | None = None,
             skip: int = 0, index: int | None = None) -> State | None:
        """One optimizer step on windows ``x`` -> ``y``; returns the cell's final state
        (None when replayed from a graph, which runs stateless windows only).

        Args:
            x: (batch, T, 1) inputs on the model's device.
            y: (batch, T, 1) targets.
            state: the state to continue from (None starts from zeros).
            skip: leading points of each window left out of the loss.
            index: which of ``batches`` ``x`` and ``y`` are (0-based); the steps must then
                take the batches in order, one each, as ``fit`` does.
        """
        self.steps_done += 1
        if self.graph_wanted and self.steps_done > GRAPH_WARMUP_STEPS:
            self._capture(x, y, skip, index)
        if self.graph is not None:
            if self._index is None:
                static_x, static_y = self._static  # type: ignore[misc]
                static_x.copy_(x)
                static_y.copy_(y)
            self.graph.replay()
            return None
        if self.graph_wanted:
            # Eager warm-up on a side stream, as torch.cuda.graphs documents: lazy
            # initialisation must not happen inside the capture.
            assert self._side is not None
            self._side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._side):
                out = self._eager(x, y, state, skip)
            torch.cuda.current_stream().wait_stream(self._side)
            return out
        return self._eager(x, y, state, skip)

    def _capture(self, x: torch.Tensor, y: torch.Tensor, skip: int, index: int | None
                 ) -> None:
        """Records one step into a graph; nothing runs during capture, so the step being
        taken is then replayed. On failure the runner stays eager (or raises if strict)."""
        self.graph_wanted = False
        static = (torch.empty_like(x), torch.empty_like(y))
        graph = torch.cuda.CUDAGraph()
        if self._batches is not None and index is not None:
            self._index = torch.tensor([index], device=x.device)
        # Gradients must be allocated inside the capture, from the graph's private pool.
        self.optimizer.zero_grad(set_to_none=True)
        try:
            # On the runner's own side stream (torch.cuda.graph's default capture stream is
            # one for the whole process), erring only on this thread's unsafe calls: other
            # threads go on training while this one captures.
            with _CAPTURING, torch.cuda.graph(graph, stream=self._side,
                                              capture_error_mode="thread_local"):
                if self._index is None:
                    self._eager(static[0], static[1], None, skip)
                else:
                    self._indexed_step(skip)
        except Exception as err:  # noqa: BLE001 - any capture failure means: stay eager
            self._index = None
            self.optimizer.zero_grad(set_to_none=True)
            if self.strict:
                raise RuntimeError(f"CUDA graph capture failed: {err}") from err
            log.warning("CUDA graph capture failed, training eagerly: %s", err)
            return
        self.graph, self._static = graph, static

    def _indexed_step(self, skip: int) -> None:
        """The step a graph records when it reads the batches: this step's windows, the
        update, the next step's learning rate, then the counter moved on."""
        assert self._batches is not None and self._index is not None
        xs, ys = self._batches
        self._eager(xs.index_select(0, self._index).squeeze(0),
                    ys.index_select(0, self._index).squeeze(0), None, skip)
        if self._lr_after is not None:
            lr = self._lr_after.index_select(0, self._index).squeeze(0)
            for group in self.optimizer.param_groups:
                group["lr"].copy_(lr)
        self._index.add_(1)

    def mean_loss(self) -> float:
        """The mean training loss since the last call (one host sync)."""
        n = self.steps_done - self._summed_until
        value = self.loss_sum.item() / max(n, 1)
        self.loss_sum.zero_()
        self._summed_until = self.steps_done
        return value


def make_optimizer(model: torch.nn.Module, lr: float, graph: bool) -> torch.optim.Adam:
    """Adam, fused: one kernel updates every parameter, where the default implementation
    loops over them in Python (about 0.7 ms a step on the CPU for our six tensors, a quarter of
    a tutorial-sized step). Same update rule; results agree with the looped Adam to float
    rounding, not bit for bit. ``capturable`` keeps the step count on the GPU, which graph
    capture requires.

    With ``graph`` the learning rate is a tensor on the device: a captured step would bake a
    float lr into the graph, so a schedule would never reach the replays; torch's schedulers
    ``fill_`` a tensor lr in place, which the graph reads at every replay."""
    if graph:
        device = _device_of(model)
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=device),
                                fused=True, capturable=True)
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


LR_WARMUP_START = 0.01
"""Share of ``train.lr`` the linear learning-rate warm-up starts from."""


def make_scheduler(optimizer: torch.optim.Optimizer, tcfg: TrainConfig
                   ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """torch's own schedulers for ``train.schedule`` and ``train.lr_warmup_steps``, stepped
    once per optimizer step; None for a constant lr without warm-up (nothing to step).

    ``cosine`` is ``CosineAnnealingLR`` over the steps after the warm-up, reaching 0 at the
    last step; the warm-up is ``LinearLR`` from ``LR_WARMUP_START * lr``; both together are
    chained by ``SequentialLR``.
    """
    sched = torch.optim.lr_scheduler
    warm = tcfg.lr_warmup_steps
    parts: list[sched.LRScheduler] = []
    if warm:
        parts.append(sched.LinearLR(optimizer, start_factor=LR_WARMUP_START, end_factor=1.0,
                                    total_iters=warm))
    if tcfg.schedule == "cosine":
        parts.append(sched.CosineAnnealingLR(optimizer, T_max=tcfg.steps - warm))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return sched.SequentialLR(optimizer, parts, milestones=[warm])


def lr_after_steps(tcfg: TrainConfig) -> list[float]:
    """The learning rate after each of ``tcfg.steps`` steps, as ``make_scheduler``'s
    schedulers set it: torch's own schedulers stepped on a stand-in optimizer with a float lr,
    as an eager run's (about 30 ms for 3000 steps; with a tensor lr, 1 s), so a graph that sets
    the rates itself follows the eager run's schedule, rounded to float32."""
    stand_in = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=tcfg.lr)
    scheduler = make_scheduler(stand_in, tcfg)
    if scheduler is None:
        return [tcfg.lr] * tcfg.steps
    with warnings.catch_warnings():  # "scheduler stepped before the optimizer": no training
        warnings.simplefilter("ignore")
        rates = []
        for _ in range(tcfg.steps):
            scheduler.step()
            rates.append(current_lr(stand_in))
    return rates


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate the next step will use (a float, whether the lr is a tensor)."""
    return float(optimizer.param_groups[0]["lr"])


def reached(err: BaseException) -> FitResult | None:
    """What a run stopped by ``err`` (a pruner, an interrupt) had reached: its best weights so
    far, for a plot of the state it got to; None if it stopped before its first validation."""
    return getattr(err, "fit_result", None)


def fit(cfg: ExperimentConfig, callbacks: Iterable[Callback] = (),
        val: Windows | None = None, on_step: StepHook | None = None,
        keep: str = "best") -> FitResult:
    """Trains ``cfg.model`` with Adam on MSE, validating every ``cfg.train.eval_every`` steps.

    On CUDA the training step is captured in a CUDA graph when ``cfg.train.cuda_graph`` allows
    (see ``StepRunner``).

    Args:
        cfg: the whole experiment config (data, model and train sections are read).
        callbacks: called with (step, metrics) after each validation pass.
        val: the validation windows; drawn from ``cfg.data.val`` when None.
        on_step: called after every step (the tutorial's replay keeps each prediction).
        keep: ``best`` returns the best-validation weights, ``last`` those after the last
            step (what the tutorial keeps).

    Returns:
        The best validation MSE, its step and the weights kept. An exception that stops
        training (a callback's, an interrupt) carries what was reached (``reached(err)``).

    Raises:
        DivergedError: the training loss or the validation MSE is not finite.
        ValueError: ``train.cuda_graph=on`` where no graph can be used.
    """
    device = resolve_device(cfg.train.device)
    with _own_stream(device):
        return _fit(cfg, device, list(callbacks), val, on_step, keep)


def _own_stream(device: torch.device) -> contextlib.AbstractContextManager:
    """On CUDA, a stream of the run's own: runs trained at once in threads (``tune
    --trials-at-once``) then overlap on the card, instead of queuing on the default stream,
    which waits for every other."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream(device))


def _fit(cfg: ExperimentConfig, device: torch.device, callbacks: list[Callback],
         val: Windows | None, on_step: StepHook | None, keep: str) -> FitResult:
    tcfg, dcfg = cfg.train, cfg.data
    stateful = dcfg.protocol == "tutorial"
    graph = use_cuda_graph(tcfg.cuda_graph, device, stateful)
    with _SEEDING:
        torch.manual_seed(tcfg.seed)
        model = build_model(cfg.model)
    model = model.to(device)
    optimizer = make_optimizer(model, tcfg.lr, graph)
    scheduler = make_scheduler(optimizer, tcfg)
    batch = 1 if stateful else tcfg.batch_size
    xs, ys = (t.to(device) for t in make_train_batches(dcfg, tcfg.steps, batch))
    lr_after = (torch.tensor(lr_after_steps(tcfg), device=device)
                if graph and scheduler is not None else None)
    runner = StepRunner(model, optimizer, tcfg.grad_clip, graph=graph,
                        strict=tcfg.cuda_graph == "on", batches=(xs, ys), lr_after=lr_after)
    val = val if val is not None else validation_set(dcfg)

    best_val, best_step, best_state = math.inf, 0, None
    history: list[tuple[int, dict[str, float]]] = []
    state = None
    start = time.perf_counter()

    def result(weights: dict[str, torch.Tensor]) -> FitResult:
        return FitResult(best_val=best_val, best_step=best_step,
                         state_dict={k: v.cpu() for k, v in weights.items()},
                         device=str(device), seconds=time.perf_counter() - start,
                         history=history, cuda_graph=runner.graphed,
                         final_lr=current_lr(optimizer))

    try:
        for step in range(1, tcfg.steps + 1):
            # The warm-up is cut from every window, except that with a carried state only the
            # first window lacks context.
            skip = dcfg.warmup if (not stateful or step == 1) else 0
            new_state = runner.step(xs[step - 1], ys[step - 1], state, skip, index=step - 1)
            if stateful:
                state = detach_state(new_state)
            if scheduler is not None and not runner.graphed:
                scheduler.step()  # eager steps: host side; a graph sets the lr itself
            if on_step is not None and runner.last_prediction is not None:
                on_step(step, runner.last_prediction)
            if step % tcfg.eval_every and step != tcfg.steps:
                continue
            train_loss = runner.mean_loss()
            val_mse = score(model, val, dcfg.warmup)
            if not (math.isfinite(train_loss) and math.isfinite(val_mse)):
                raise DivergedError(f"loss became {train_loss}, val/mse {val_mse} at step {step}")
            if val_mse < best_val:
                best_val, best_step = val_mse, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            metrics = {"train/loss": train_loss, "val/mse": val_mse}
            if scheduler is not None:  # a constant lr is a param; a scheduled one a curve
                metrics["train/lr"] = current_lr(optimizer)
            history.append((step, metrics))
            for callback in callbacks:
                callback(step, metrics)
    except BaseException as err:
        if best_state is not None and not isinstance(err, DivergedError):
            err.fit_result = result(best_state)  # type: ignore[attr-defined]
        raise
    assert best_state is not None  # the last step always validates
    return result(model.state_dict() if keep == "last" else best_state)

class OutOfMemory(RuntimeError):
    """A run could not allocate its tensors (CPU or CUDA): its configuration is too large for
    this machine. A study fails that trial, with this reason, and goes on."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: ``torch.OutOfMemoryError`` (CUDA),
    ``MemoryError`` (NumPy, Python), or the ``RuntimeError`` torch's CPU allocator raises."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


@contextlib.contextmanager
def out_of_memory_as_failure() -> Iterator[None]:
    """Turns an allocation failure inside the block into ``OutOfMemory`` (one line, the
    tensors freed, the CUDA cache emptied), so the caller can fail one trial and go on."""
    try:
        yield
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        del err  # its traceback holds the frames, and they the tensors
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(f"out of memory: {reason[:300]}") from None

