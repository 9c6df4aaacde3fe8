"""The registered model: a small ``mlflow.pyfunc.PythonModel`` over a state dict.

Why not ``mlflow.pytorch.log_model``: MLflow 3.17 saves in the ``pt2`` format by default, which
fixes the sequence length to the input example's and loads back as a GraphModule. A state dict
plus this wrapper takes any T and loads on any device.

The contract other tools rely on::

    model = mlflow.pyfunc.load_model("models:/sin2cos-lstm@champion")
    y = model.predict(x)   # x: float32 (batch, T, 1) sin values, T >= 1 -> (batch, T, 1) cos

Each call starts from a fresh hidden state. The model is logged "from code": MLflow stores
this file and runs it at load time (``set_model`` below) instead of unpickling an object. The
code it needs travels inside the model (``code_paths``) as the package ``cellstudy_sin2cos``:
copies of ``pipeline/model.py`` and ``pipeline/inputs.py`` only (``shipped_code``), under a name
that no other project's ``pipeline`` package can shadow or be shadowed by where it is served.
So this module imports nothing of ``pipeline`` at load time: only ``mlflow.pyfunc``, torch,
and the shipped package, which MLflow puts on ``sys.path`` before running this file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow.models
import mlflow.pyfunc

SHIPPED_PACKAGE = "cellstudy_sin2cos"
"""The name the serving code travels under inside a logged model."""
SHIPPED_MODULES = ("model.py", "inputs.py")
"""What of ``pipeline`` a model needs at serving time: the network and the input check."""
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
        from cellstudy_sin2cos.model import SeqRegressor

        with open(context.artifacts[MODEL_CONFIG]) as f:
            cfg = json.load(f)
        state = torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True)
        self.model = SeqRegressor(cfg["cell"], cfg["hidden_size"], cfg.get("num_layers", 1))
        self.model.load_state_dict(state)
        self.model.eval()

    # No type hints on predict: MLflow would try to derive a schema from them; the signature
    # given at logging time is the one that holds.
    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import torch
        from cellstudy_sin2cos.inputs import as_sequences

        x = torch.from_numpy(as_sequences(model_input))
        with torch.inference_mode():
            return self.model(x)[0].numpy()


def shipped_code(folder: Path) -> Path:
    """Writes the package a logged model carries (``code_paths``) into ``folder``.

    Returns:
        The package folder, ``folder/cellstudy_sin2cos``.
    """
    package = Path(folder) / SHIPPED_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        '"""The serving code of a cellstudy model (copied from the pipeline package)."""\n')
    source = Path(__file__).parent
    for name in SHIPPED_MODULES:
        shutil.copy(source / name, package / name)
    return package


mlflow.models.set_model(Sin2CosModel())
