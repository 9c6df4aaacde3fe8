"""The tutorial's implementation, kept as the benchmark's baseline (never used by the pipeline).

From the blog post this project grew from (``shared/seed``): an ``nn.RNN`` of hidden size 32
whose ``Linear`` head is applied in a Python loop over time steps and ``torch.stack``-ed; batch 1,
10 points per window over [s*pi, (s+1)*pi], Adam at lr 0.01 on MSE, the hidden state carried
from window to window (``Variable(h_state.data)``, i.e. detached). Plotting is left out: the
benchmark times training steps only.

    python bench/tutorial_ref.py        # a few hundred steps, prints ms per step
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

TIME_STEP = 10
INPUT_SIZE = 1
HIDDEN = 32
LR = 0.01


class TutorialRNN(nn.Module):
    """The tutorial's model, as written there (``Variable`` dropped: it is a no-op now)."""

    def __init__(self, hidden_size: int = HIDDEN) -> None:
        super().__init__()
        self.rnn = nn.RNN(input_size=INPUT_SIZE, hidden_size=hidden_size, num_layers=1,
                          batch_first=True)
        self.fc = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor, h_state: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        r_out, h_state = self.rnn(x, h_state)
        outs = []
        for time_step in range(r_out.size(1)):
            outs.append(self.fc(r_out[:, time_step, :]))
        return torch.stack(outs, dim=1), h_state


def tutorial_windows(n: int = 60, device: str | torch.device = "cpu"
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The tutorial's windows s = 0..n-1 as (x, y) tensors of shape (1, 10, 1)."""
    out = []
    for step in range(n):
        steps = np.linspace(step * np.pi, (step + 1) * np.pi, TIME_STEP, dtype=np.float32)
        x = torch.from_numpy(np.sin(steps)[np.newaxis, :, np.newaxis]).to(device)
        y = torch.from_numpy(np.cos(steps)[np.newaxis, :, np.newaxis]).to(device)
        out.append((x, y))
    return out


class TutorialTrainer:
    """The tutorial's training loop, one step per call (window ``i`` of 60, cycling)."""

    def __init__(self, device: str | torch.device = "cpu", seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = TutorialRNN().to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.criterion = nn.MSELoss()
        self.windows = tutorial_windows(device=device)
        self.h_state: torch.Tensor | None = None
        self.i = 0

    def step(self) -> torch.Tensor:
        x, y = self.windows[self.i % len(self.windows)]
        self.i += 1
        prediction, h_state = self.model(x, self.h_state)
        self.h_state = h_state.detach()
        loss = self.criterion(prediction, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss


if __name__ == "__main__":
    torch.set_num_threads(1)
    trainer = TutorialTrainer()
    for _ in range(50):
        trainer.step()
    start = time.perf_counter()
    for _ in range(500):
        trainer.step()
    print(f"tutorial: {(time.perf_counter() - start) / 500 * 1e3:.3f} ms per step")
