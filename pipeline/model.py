"""One sequence regressor over a table of recurrent cells.

Imports torch only; it never learns that Optuna or MLflow exist.

    >>> import torch
    >>> from pipeline.model import SeqRegressor
    >>> y, state = SeqRegressor("gru", 16)(torch.zeros(2, 5, 1))
    >>> tuple(y.shape)
    (2, 5, 1)
"""

from __future__ import annotations

import torch
from torch import nn

CELL_TYPES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
"""The cells a study can compare; ``rnn`` is the tanh cell of the tutorial."""

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
"""A cell's hidden state: h, or (h, c) for the LSTM."""


class SeqRegressor(nn.Module):
    """Maps a (batch, T, 1) input to a (batch, T, 1) output through one recurrent cell.

    Args:
        cell: a key of ``CELL_TYPES``.
        hidden_size: width of the hidden state.
        num_layers: stacked recurrent layers.
    """

    def __init__(self, cell: str, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        if cell not in CELL_TYPES:
            raise ValueError(f"unknown cell {cell!r} (valid: {', '.join(CELL_TYPES)})")
        self.cell = cell
        self.rnn = CELL_TYPES[cell](1, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Runs the cell over the whole sequence, then the head over every step at once.

        The tutorial applies its ``Linear`` in a Python loop over time steps and stacks the
        results; one call on the (batch, T, hidden) output computes the same in one kernel.

        Args:
            x: (batch, T, 1) inputs.
            state: the state to continue from; None starts from zeros.

        Returns:
            (predictions of shape (batch, T, 1), the final state).
        """
        out, state = self.rnn(x, state)
        return self.head(out), state


def detach_state(state: State) -> State:
    """Cuts the graph behind a carried state, so backprop stops at the window boundary
    (truncated BPTT) instead of reaching through every window seen so far."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()
