"""The registered champion behind MLflow's real scoring server, as the README serves it:
``mlflow models serve -m models:/sin2cos-lstm@champion --env-manager local`` on 127.0.0.1, one
JSON request, and the answer checked against ``mlflow.pyfunc.load_model`` on the same input."""

from __future__ import annotations

import json
import urllib.request

import mlflow
import numpy as np
import pytest
from conftest import subprocess_env

from pipeline.config import ModelConfig, to_dict
from pipeline.tracking import Tracker
from pipeline.train import build_model

pytestmark = pytest.mark.slow


def test_the_scoring_server_answers_like_the_loaded_model(tracking_store, tmp_path):
    from servers import scoring_server

    tracker = Tracker("serving")
    cfg = ModelConfig(cell="lstm", hidden_size=8)
    run_id = tracker.start_run("lstm-trial-0")
    tracker.log_checkpoint(run_id, build_model(cfg).state_dict(), to_dict(cfg))
    version, moved = tracker.promote("sin2cos-lstm", tracker.log_model(run_id), 0.1,
                                     "champion", {})
    assert moved
    uri = "models:/sin2cos-lstm@champion"

    t = np.linspace(0, 6, 40, dtype=np.float32)
    x = np.stack([np.sin(t), np.sin(2 * t)])[..., None]  # (2, 40, 1)
    body = json.dumps({"inputs": x.tolist()}).encode()
    env = subprocess_env(tmp_path)  # the store tracking_store made, under tmp_path
    with scoring_server(uri, env, tmp_path / "serve") as url:
        request = urllib.request.Request(f"{url}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            served = np.asarray(json.loads(resp.read())["predictions"], dtype=np.float32)
    assert served.shape == x.shape
    expected = mlflow.pyfunc.load_model(uri).predict(x)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(served) > 0  # an answer that depends on the input, not a constant
