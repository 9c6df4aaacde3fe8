"""The peer: the straightforward Optuna + MLflow script a user would write from MLflow's docs
and Optuna's examples, doing the work of cellstudy's benchmark job, for ``peer_speedup``.

    python bench/peer.py --trials 10 --steps 300        # MLFLOW_TRACKING_URI picks the store

Same work as ``python -m pipeline tune --cells lstm --n-trials 10 --set train.steps=300``
with pruning off: an LSTM (then a linear head) on sin -> cos windows of 20 points at random
phases (time step 0.1-0.4 x frequency 0.5-1.5, the first 2 points not scored), batch 64, Adam,
validation on 256 windows every 25 steps, hidden size in [8, 128] and lr in [1e-3, 1e-1], both
log-scaled, TPE with seed 0. Written the way the docs show it, on purpose: an Optuna study in
memory (``pytorch_simple.py``), one fluent ``mlflow.start_run(nested=True)`` per trial,
``mlflow.log_metric`` at each validation step, a matplotlib figure per trial through
``mlflow.log_figure``, and the best model logged with ``mlflow.pytorch.log_model``'s defaults
(plus the input example its default format asks for) and registered. Nothing here is tuned
for speed; that is the point of the comparison.
"""

from __future__ import annotations

import argparse
import copy

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import mlflow.pytorch  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

SEQ_LEN, WARMUP, BATCH, EVAL_EVERY = 20, 2, 64, 25


def windows(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n windows of sin (inputs) and cos (targets), shaped (n, SEQ_LEN, 1)."""
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    step = rng.uniform(0.1, 0.4, size=n) * rng.uniform(0.5, 1.5, size=n)
    theta = phase + step[:, None] * np.arange(SEQ_LEN)[None, :]
    x = torch.tensor(np.sin(theta), dtype=torch.float32).unsqueeze(-1)
    y = torch.tensor(np.cos(theta), dtype=torch.float32).unsqueeze(-1)
    return x, y


class Net(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(1, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--experiment", default="peer")
    parser.add_argument("--model-name", default="peer-lstm")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)  # as cellstudy's workers: one thread per process

    train_x, train_y = windows(np.random.default_rng(1), args.steps * BATCH)
    val_x, val_y = (t.to(device) for t in windows(np.random.default_rng(2), 256))
    best: dict = {}

    def objective(trial: optuna.Trial) -> float:
        hidden_size = trial.suggest_int("hidden_size", 8, 128, log=True)
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        with mlflow.start_run(nested=True, run_name=f"trial-{trial.number}") as run:
            mlflow.log_params({"hidden_size": hidden_size, "lr": lr, "batch_size": BATCH,
                               "steps": args.steps})
            torch.manual_seed(0)
            model = Net(hidden_size).to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            loss_fn = nn.MSELoss()
            best_val, best_state = float("inf"), None
            for step in range(1, args.steps + 1):
                i = (step - 1) * BATCH
                x, y = train_x[i:i + BATCH].to(device), train_y[i:i + BATCH].to(device)
                optimizer.zero_grad()
                loss = loss_fn(model(x)[:, WARMUP:], y[:, WARMUP:])
                loss.backward()
                optimizer.step()
                if step % EVAL_EVERY == 0 or step == args.steps:
                    model.eval()
                    with torch.no_grad():
                        val = loss_fn(model(val_x)[:, WARMUP:], val_y[:, WARMUP:]).item()
                    model.train()
                    mlflow.log_metric("train_loss", loss.item(), step=step)
                    mlflow.log_metric("val_mse", val, step=step)
                    trial.report(val, step)
                    if val < best_val:
                        best_val, best_state = val, copy.deepcopy(model.state_dict())
            mlflow.log_metric("best_val_mse", best_val)
            model.load_state_dict(best_state)
            with torch.no_grad():
                pred = model(val_x[:4]).cpu().numpy()
            fig, ax = plt.subplots()
            ax.plot(val_y[:4, :, 0].cpu().numpy().T, "k-")
            ax.plot(pred[:, :, 0].T, "--")
            ax.set_title(f"hidden {hidden_size}, lr {lr:.2g}: val MSE {best_val:.2e}")
            mlflow.log_figure(fig, "val_predictions.png")
            plt.close(fig)
            if best_val < best.get("val", float("inf")):
                best.update(val=best_val, run_id=run.info.run_id, model=model)
        return best_val

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name="optuna-study"):
        study = optuna.create_study(direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=0))
        study.optimize(objective, n_trials=args.trials)
        mlflow.log_params(study.best_params)
        mlflow.log_metric("best_val_mse", study.best_value)
    with mlflow.start_run(run_id=best["run_id"]):
        # MLflow 3's default format (pt2, a traced graph) needs an input example.
        mlflow.pytorch.log_model(best["model"].cpu(), name="model",
                                 input_example=val_x[:1].cpu().numpy(),
                                 registered_model_name=args.model_name)
    print(f"best trial {study.best_trial.number}: {study.best_params}, "
          f"val MSE {study.best_value:.3g}")


if __name__ == "__main__":
    main()
