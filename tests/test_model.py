"""Model: every cell, any sequence length, carried state, and the tutorial's per-step head."""

from __future__ import annotations

import pytest
import torch

from pipeline.model import CELL_TYPES, SeqRegressor, detach_state

CELLS = list(CELL_TYPES)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T", [1, 10, 37])
def test_maps_batch_T_1_to_batch_T_1(cell, T):
    y, state = SeqRegressor(cell, 8)(torch.randn(3, T, 1))
    assert tuple(y.shape) == (3, T, 1)
    h = state[0] if cell == "lstm" else state
    assert tuple(h.shape) == (1, 3, 8)


@pytest.mark.parametrize("cell", CELLS)
def test_carrying_state_equals_one_long_sequence(cell):
    torch.manual_seed(0)
    model = SeqRegressor(cell, 8)
    x = torch.randn(1, 20, 1)
    whole, _ = model(x)
    first, state = model(x[:, :10])
    second, _ = model(x[:, 10:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


@pytest.mark.parametrize("cell", CELLS)
def test_head_over_whole_sequence_matches_tutorial_loop(cell):
    model = SeqRegressor(cell, 8)
    x = torch.randn(2, 7, 1)
    ours, _ = model(x)
    out, _ = model.rnn(x)
    loop = torch.stack([model.head(out[:, t, :]) for t in range(out.size(1))], dim=1)
    torch.testing.assert_close(ours, loop)


def test_detached_state_has_no_graph():
    model = SeqRegressor("lstm", 4)
    _, state = model(torch.randn(1, 3, 1))
    assert all(s.grad_fn is not None for s in state)
    assert all(s.grad_fn is None for s in detach_state(state))


def test_unknown_cell_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: rnn, lstm, gru"):
        SeqRegressor("transformer", 4)
