"""Figures (pipeline/plots.py): returned, never saved or logged here; each draws what it says."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from pipeline.data import make_eval_set, tutorial_windows
from pipeline.plots import comparison_figure, prediction_figure, tutorial_figure


@pytest.fixture
def ws(tiny_cfg):
    return make_eval_set(tiny_cfg.data, tiny_cfg.data.val)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_prediction_figure_draws_target_and_prediction_per_window(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fig = prediction_figure(ws, ws.y * 0.5, 3, "lstm", n_windows=2)
    (ax,) = fig.axes
    assert ax.get_title() == "lstm"
    assert len(ax.lines) >= 4  # target and prediction for each of the two windows
    np.testing.assert_allclose(ax.lines[1].get_ydata(), ws.y[0, :, 0] * 0.5)
    assert _png(fig).startswith(b"\x89PNG")
    assert list(tmp_path.iterdir()) == []  # nothing written
    seq_len = ws.x.shape[1]  # windows laid end to end: a tick where each one starts
    inside = [t for t in ax.get_xticks() if 0 <= t <= 2 * seq_len]
    assert inside == [0, seq_len, 2 * seq_len][:len(inside)] and len(inside) >= 2


def test_comparison_figure_has_one_panel_per_set(ws):
    sets = {"a": ws, "b": ws}
    preds = {"zero": {s: np.zeros_like(w.y) for s, w in sets.items()},
             "lstm": {s: w.y for s, w in sets.items()}}
    fig = comparison_figure(sets, preds, "champions")
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["test set a", "test set b"]
    assert _png(fig)


def test_tutorial_figure_has_one_panel_per_cell_with_its_note():
    windows = tutorial_windows(0, 6)
    fig = tutorial_figure(windows, {"rnn": windows.y, "lstm": windows.y * 0.9},
                          {"rnn": "cliff 0.2"}, "the tutorial")
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["rnn: cliff 0.2", "lstm: "]
    assert _png(fig)
