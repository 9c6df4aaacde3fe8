"""The registered model: a small ``mlflow.pyfunc.PythonModel`` over a state dict.

Why not ``mlflow.pytorch.log_model``: MLflow 3.17 saves in the ``pt2`` format by default, which
fixes the sequence length to the input example's and loads back as a GraphModule. A state dict
plus this wrapper takes any T and loads on any device.

The contract other tools rely on::

    model = mlflow.pyfunc.load_model("models:/sin2cos-lstm@champion")
    y = model.predict(x)   # x: float32 (batch, T, 1) sin values, T >= 1 -> (batch, T, 1) cos

Each call starts from a fresh hidden state. The model is logged "from code": MLflow stores
this file and runs it at load time (``set_model`` below) instead of unpickling an object, and
the package travels inside the model (``code_paths``); so this module imports only the core
and ``mlflow.pyfunc``.
"""

from __future__ import annotations

import json

import mlflow.models
import mlflow.pyfunc

# Defined without MLflow so the CLI checks input before importing it.
from pipeline.inputs import as_sequences

WEIGHTS = "weights"
"""Artifact key of the state dict (``torch.save``)."""
MODEL_CONFIG = "model_config"
"""Artifact key of the ModelConfig as JSON."""


class Sin2CosModel(mlflow.pyfunc.PythonModel):
    """Predicts cos from sin sequences with a trained SeqRegressor, on the CPU."""

    # MLflow 3 would wrap predict for type-hint validation and, finding none, print a warning
    # on every import and every load (breaking one-line CLI errors). The signature given at
    # logging time is what validates input; this is the switch MLflow's own ChatModel uses.
    _skip_type_hint_validation = True

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import torch

        from pipeline.config import ModelConfig
        from pipeline.train import build_model

        with open(context.artifacts[MODEL_CONFIG]) as f:
            cfg = ModelConfig(**json.load(f))
        state = torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True)
        self.model = build_model(cfg, state).eval()

    # No type hints on predict: MLflow would try to derive a schema from them; the signature
    # given at logging time is the one that holds.
    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import torch

        x = torch.from_numpy(as_sequences(model_input))
        with torch.inference_mode():
            return self.model(x)[0].numpy()


mlflow.models.set_model(Sin2CosModel())
