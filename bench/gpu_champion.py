"""The CUDA-trained champion of bench/gpu_check.sh's study, loaded and run with no GPU visible."""
import json

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient

assert not torch.cuda.is_available()
client = MlflowClient()
trials = client.search_runs([e.experiment_id for e in client.search_experiments()],
                            "tags.`cellstudy.level` = 'trial'")
studies = client.search_runs([e.experiment_id for e in client.search_experiments()],
                             "tags.`cellstudy.level` = 'study'")
model = mlflow.pyfunc.load_model("models:/sin2cos-lstm@champion")
x = np.sin(np.linspace(0, 6, 40, dtype=np.float32))[None, :, None]
y = np.asarray(model.predict(x))
print(json.dumps({
    "trial_devices": sorted({r.data.tags.get("device") for r in trials}),
    "gpu_system_metrics": sorted(k for r in studies for k in r.data.metrics
                                 if k.startswith("system/gpu")),
    "champion_predicts_on_cpu": bool(y.shape == x.shape and np.isfinite(y).all()),
    "champion_mse_vs_cos": float(np.mean((y[0, 3:, 0] - np.cos(np.linspace(0, 6, 40))[3:]) ** 2)),
}))
