"""The pyfunc wrapper (pipeline/serving.py): loads a checkpoint from its artifacts and predicts
(batch, T, 1) from a fresh state, reading input as the CLI does."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline import serving
from pipeline.config import ModelConfig, to_dict
from pipeline.train import build_model


@pytest.fixture
def wrapped(tmp_path, monkeypatch):
    # What MLflow does at load time: the shipped package on sys.path (serving.py says why).
    monkeypatch.syspath_prepend(str(serving.shipped_code(tmp_path / "code").parent))
    cfg = ModelConfig(cell="gru", hidden_size=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "model_config.json").write_text(json.dumps(to_dict(cfg)))
    artifacts = {serving.WEIGHTS: str(tmp_path / "weights.pt"),
                 serving.MODEL_CONFIG: str(tmp_path / "model_config.json")}
    context = SimpleNamespace(artifacts=artifacts)
    out = serving.Sin2CosModel()
    out.load_context(context)
    return out, model


def test_predicts_what_the_trained_model_predicts(wrapped):
    out, model = wrapped
    x = np.sin(np.linspace(0, 3, 10, dtype=np.float32))[None, :, None]
    y = out.predict(None, x)
    assert y.shape == (1, 10, 1)
    with torch.inference_mode():
        np.testing.assert_allclose(y, model(torch.from_numpy(x))[0].numpy(), rtol=1e-6)


def test_reads_input_as_the_cli_does(wrapped):
    out, _ = wrapped
    assert out.predict(None, [[0.0, 0.5, 1.0]]).shape == (1, 3, 1)  # (batch, T), a list
    with pytest.raises(Exception, match="shaped"):  # the shipped copy's InputError
        out.predict(None, np.zeros((2, 3, 2)))
