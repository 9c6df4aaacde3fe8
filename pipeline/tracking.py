"""Everything MLflow: runs and their nesting, params, batched metrics, figures, checkpoints,
the logged pyfunc model, and the registry's champion alias.

Runs are made and ended through ``MlflowClient`` with an explicit ``mlflow.parentRunId`` tag
rather than the fluent ``start_run(nested=True)`` stack: the stack is per thread and per
process, so parallel trials and distributed workers would lose their parent.

    >>> from pipeline.tracking import Tracker
    >>> tracker = Tracker("sin2cos")                       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

# Per-download progress bars would bury the study's own progress bar.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402

from pipeline import serving  # noqa: E402

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""Read by the MLflow 3.17 UI: with ``custom_model_development`` the experiment opens on its
training runs instead of the GenAI overview."""
MODEL_TRAINING_KIND = "custom_model_development"
CHECKPOINT_DIR = "checkpoint"
"""Artifact folder of each completed trial's best weights, so the study's best model can be
logged later by any worker, from any process."""
_BATCH_LIMIT = 1000  # log_batch takes at most 1000 metrics per call


def pip_requirements() -> list[str]:
    """What a logged model needs, given explicitly: inferring it costs seconds per model."""
    import torch

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", "pyyaml"]


class MetricBuffer:
    """A training callback that keeps (step, metrics) in memory and writes them in one
    ``log_batch``: one ``log_metric`` call per value costs about 3 ms on SQLite."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.pending: list[Metric] = []

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    def flush(self) -> None:
        """Writes everything pending; safe to call more than once."""
        for i in range(0, len(self.pending), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=self.pending[i : i + _BATCH_LIMIT])
        self.pending = []


class Tracker:
    """One experiment's runs, reached through one client.

    Args:
        experiment: experiment name; under ``mlflow run`` the project run's experiment is used.
    """

    def __init__(self, experiment: str) -> None:
        self.client = MlflowClient()
        # Under `mlflow run` the project's run already exists and names the experiment.
        self.project_run_id = os.environ.get("MLFLOW_RUN_ID")
        if self.project_run_id:
            self.experiment_id = self.client.get_run(self.project_run_id).info.experiment_id
        else:
            self.experiment_id = _experiment_id(self.client, experiment)
        _mark_model_training(self.client, self.experiment_id)
        # One thread renders and uploads trial figures (see log_figure).
        self._figures = ThreadPoolExecutor(max_workers=1, thread_name_prefix="figures")
        self._pending: list[Future] = []

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, name: str, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None) -> str:
        """Creates a RUNNING run, nested under ``parent_run_id`` when given; returns its id."""
        all_tags = {MLFLOW_RUN_NAME: name, **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def job_run_id(self, name: str) -> tuple[str, bool]:
        """The job's run: the project's run under ``mlflow run``, else a new one.

        Returns:
            (run id, whether this process owns it and must end it).
        """
        if self.project_run_id:
            self.client.set_tag(self.project_run_id, MLFLOW_RUN_NAME, name)
            return self.project_run_id, False
        return self.start_run(name, tags={"cellstudy.level": "job"}), True

    @contextlib.contextmanager
    def ending(self, run_id: str,
               killed_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Ends ``run_id`` with the status its block earned: FINISHED; KILLED for the
        exceptions in ``killed_on`` and for interrupts; FAILED otherwise, the reason in the
        ``failure_reason`` tag. The exception propagates."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit) as err:
            self._end(run_id, RunStatus.KILLED, "interrupted", err)
            raise
        except killed_on as err:
            self._end(run_id, RunStatus.KILLED, "pruned", err)
            raise
        except BaseException as err:
            self._end(run_id, RunStatus.FAILED, "failure", err)
            raise
        else:
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def _end(self, run_id: str, status: int, kind: str, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}"[:5000]
        try:
            self.client.set_tag(run_id, f"{kind}_reason", reason)
            self.client.set_terminated(run_id, RunStatus.to_string(status))
        except Exception:  # a dead store must not hide the original error
            log.exception("could not end run %s", run_id)

    # -- logging ------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: dict[str, Any],
                   tags: dict[str, str] | None = None) -> None:
        """Logs params (values stringified) and tags in one call."""
        self.client.log_batch(
            run_id,
            params=[Param(k, _param_value(v)) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Logs final (unstepped) metrics in one call; non-finite values are skipped."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
        self.client.log_batch(run_id, metrics=batch)

    def metric_buffer(self, run_id: str) -> MetricBuffer:
        return MetricBuffer(self.client, run_id)

    def log_figure(self, run_id: str, figure: Any, path: str, background: bool = False) -> None:
        """Renders ``figure`` (a Figure, or a callable that makes one) to PNG and logs it as an
        artifact of ``run_id``.

        Building and rendering a figure costs 0.3-0.5 s, a fifth of a default trial: with
        ``background`` both happen in this tracker's figure thread, overlapping the next
        trial's training (torch releases the GIL inside its kernels, so one thread draws while
        the other trains). ``wait_for_figures`` waits for them.
        """

        def log() -> None:
            self.client.log_figure(run_id, figure() if callable(figure) else figure, path)

        if background:
            self._pending.append(self._figures.submit(log))
        else:
            log()

    def wait_for_figures(self) -> None:
        """Waits until every background figure is logged; a failed upload is logged, not
        raised: a missing picture must not fail a study whose numbers are all in."""
        pending, self._pending = self._pending, []
        for future in pending:
            try:
                future.result()
            except Exception:
                log.exception("a prediction figure could not be logged")

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, enabled: bool,
                       sampling_interval: float = 10.0) -> Iterator[bool]:
        """Logs MLflow's system metrics (CPU, memory, and GPU utilisation and memory through
        ``nvidia-ml-py``) to ``run_id`` while the block runs, so the UI shows how busy the card
        was. MLflow's own ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true`` turns it on anywhere.

        Yields:
            Whether a monitor runs (False where disabled or ``psutil`` is missing).
        """
        from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

        monitor = None
        if enabled or MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get():
            try:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

                monitor = SystemMetricsMonitor(run_id, sampling_interval=sampling_interval,
                                               resume_logging=True)
                monitor.start()
            except Exception as err:  # psutil missing, no NVML: the study goes on without
                log.warning("system metrics not logged: %s", err)
                monitor = None
        try:
            yield monitor is not None
        finally:
            if monitor is not None:
                monitor.finish()

    # -- checkpoints and models ---------------------------------------------------------------

    def log_checkpoint(self, run_id: str, state_dict: dict, model_config: dict) -> None:
        """Stores a trial's best weights (a few hundred KB) under ``checkpoint/``."""
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state_dict, Path(tmp) / "weights.pt")
            (Path(tmp) / "model_config.json").write_text(json.dumps(model_config))
            self.client.log_artifacts(run_id, tmp, CHECKPOINT_DIR)

    def load_checkpoint(self, run_id: str) -> tuple[dict, dict]:
        """A run's checkpoint: (state dict on the CPU, model config as a dict)."""
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(self.client.download_artifacts(run_id, CHECKPOINT_DIR, tmp))
            state = torch.load(local / "weights.pt", map_location="cpu", weights_only=True)
            return state, json.loads((local / "model_config.json").read_text())

    def log_model(self, run_id: str, dst: Path | None = None) -> str:
        """Logs the run's checkpoint as a pyfunc model with a (-1, -1, 1) float32 signature.

        Returns:
            The model URI.
        """
        from mlflow.models import Model, ModelSignature
        from mlflow.types import Schema, TensorSpec

        spec = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, 1))])
        with tempfile.TemporaryDirectory() as tmp:
            local = self.client.download_artifacts(run_id, CHECKPOINT_DIR, tmp)
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.pyfunc,
                run_id=run_id,
                python_model=serving.__file__,
                artifacts={serving.WEIGHTS: f"{local}/weights.pt",
                           serving.MODEL_CONFIG: f"{local}/model_config.json"},
                # The wrapper imports the package: ship it inside the model.
                code_paths=[str(Path(__file__).parent)],
                signature=ModelSignature(inputs=spec, outputs=spec),
                input_example=np.sin(np.linspace(0, 3, 10, dtype=np.float32))[None, :, None],
                pip_requirements=pip_requirements(),
            )
        return info.model_uri

    def promote(self, name: str, model_uri: str, val_mse: float, alias: str,
                tags: dict[str, str]) -> tuple[str, bool]:
        """Registers ``model_uri`` under ``name`` and moves ``alias`` to it only if it beats the
        current holder on validation and loads and predicts correctly shaped output.

        Returns:
            (the new version, whether the alias moved to it).
        """
        version = mlflow.register_model(model_uri, name, tags={"val_mse": str(val_mse), **tags})
        try:
            current = self.champion(name, alias)
            best = float(current.tags.get("val_mse", "inf")) if current else math.inf
            if val_mse >= best:
                log.info("%s v%s (val %.3g) does not beat %s v%s (val %.3g)", name,
                         version.version, val_mse, alias, current.version, best)
                return str(version.version), False
            _check_loads(f"models:/{name}/{version.version}")
            self.client.set_registered_model_alias(name, alias, version.version)
        except BaseException:
            # Interrupted, or the model does not load: no version is left half-registered
            # (offered but never judged), and the alias stays where it was.
            self._drop_version(name, version.version)
            raise
        return str(version.version), True

    def _drop_version(self, name: str, version: str) -> None:
        try:
            self.client.delete_model_version(name, version)
        except Exception:  # the original error matters more
            log.exception("could not delete %s v%s", name, version)

    def champion(self, name: str, alias: str) -> Any | None:
        """The version ``alias`` points at, or None."""
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None


@contextlib.contextmanager
def store_creation(uri: str | None = None) -> Iterator[None]:
    """Serialises the first touches of the tracking store among processes: on a new SQLite or
    PostgreSQL store, MLflow runs its schema migrations on first use, and two processes doing so
    at once fail ("duplicate column name", "_alembic_tmp_... already exists"). The lock is the
    one Optuna's storage uses (an advisory lock on PostgreSQL, a file lock otherwise)."""
    from pipeline.storage import sqlalchemy_url, storage_lock

    with storage_lock(sqlalchemy_url(uri or mlflow.get_tracking_uri()), "mlflow-store"):
        yield


def _experiment_id(client: MlflowClient, name: str) -> str:
    """Gets or creates the experiment ``name``; another worker creating it first is fine."""
    with store_creation(client.tracking_uri):
        found = client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        try:
            return client.create_experiment(name)
        except MlflowException:  # a worker on another machine won the race (server store)
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


def _mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tags the experiment for the UI once: workers starting together would otherwise insert
    the same tag at once, and SQLite refuses the second ("UNIQUE constraint failed")."""
    with store_creation(client.tracking_uri):
        tags = client.get_experiment(experiment_id).tags
        if tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def check_tracking_reachable(timeout: int = 5) -> None:
    """Asks the tracking store for one experiment, without retries, so an unreachable server
    or database is reported at once instead of after minutes of retries, before any run exists.

    Raises:
        ValueError: with a one-line message, credentials in the URI masked.
    """
    from urllib.parse import urlsplit

    uri = mlflow.get_tracking_uri()
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        with store_creation(uri):  # the first touch of a new store migrates it
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # any store, any failure: one line, no secrets
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        password = urlsplit(uri).password
        message = f"cannot reach the MLflow tracking store {uri}: {first}"
        raise ValueError(message.replace(password, "***") if password else message) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_loads(uri: str) -> None:
    """Loads a version and predicts once: an alias must never point at a broken model."""
    model = mlflow.pyfunc.load_model(uri)
    x = np.zeros((2, 3, 1), dtype=np.float32)
    out = np.asarray(model.predict(x))
    if out.shape != x.shape or not np.isfinite(out).all():
        raise MlflowException(f"{uri} predicts shape {out.shape}, expected {x.shape}")


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)


def load_pyfunc(uri: str) -> Any:
    """``mlflow.pyfunc.load_model``, with a bad URI reported in one line."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LookupError(f"cannot load model {uri!r}: {first}") from None
