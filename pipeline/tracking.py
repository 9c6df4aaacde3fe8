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
import importlib
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
from mlflow.utils.mlflow_tags import (  # noqa: E402
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_PROJECT_ENTRY_POINT,
    MLFLOW_RUN_NAME,
    MLFLOW_RUN_NOTE,
)

from pipeline import secrets, serving, storage  # noqa: E402

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""Read by the MLflow 3.17 UI: with ``custom_model_development`` the experiment opens on its
training runs instead of the GenAI overview."""
MODEL_TRAINING_KIND = "custom_model_development"
CHECKPOINT_DIR = "checkpoint"
"""Artifact folder of each completed trial's best weights, so the study's best model can be
logged later by any worker, from any process."""
_BATCH_LIMIT = 1000  # log_batch takes at most 1000 metrics per call
LIVE_FLUSH_SECONDS = 5.0
"""How often a training run's buffered metrics are written while it trains, so its curves
grow in the UI: one ``log_batch`` per 5 s costs well under 1% of the time."""
CONFIG_ARTIFACT = "config.yaml"
"""The resolved config of a run, on every level (job, study, trial)."""
_INHERITED_PREFIXES = ("mlflow.source.", "mlflow.project.", "mlflow.user", "mlflow.gitRepoURL")
"""Tags of the project's run (under ``mlflow run``) that its nested runs carry too."""


def pip_requirements() -> list[str]:
    """What a logged model needs, given explicitly: inferring it costs seconds per model."""
    import torch

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", "pyyaml"]


class MetricBuffer:
    """A training callback that keeps (step, metrics) in memory and writes them in batches:
    one ``log_metric`` call per value costs about 3 ms on SQLite. What is pending is written
    every ``every`` seconds while training goes on (live curves in the UI), and by ``flush``.

    Args:
        client: the tracking client.
        run_id: the run the metrics belong to.
        every: seconds between writes while training; 0 writes at every callback.
    """

    def __init__(self, client: MlflowClient, run_id: str,
                 every: float = LIVE_FLUSH_SECONDS) -> None:
        self._client, self.run_id, self.every = client, run_id, every
        self.pending: list[Metric] = []
        self._last = time.monotonic()

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        self.pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if time.monotonic() - self._last >= self.every:
            self.flush()

    def flush(self) -> None:
        """Writes everything pending; safe to call more than once."""
        for i in range(0, len(self.pending), _BATCH_LIMIT):
            self._client.log_batch(self.run_id, metrics=self.pending[i : i + _BATCH_LIMIT])
        self.pending = []
        self._last = time.monotonic()


class Tracker:
    """One experiment's runs, reached through one client that no other module sees: the rest
    of the pipeline asks for runs, params, metrics, figures, scores and models in its own words.

    Args:
        experiment: experiment name; under ``mlflow run`` the project run's experiment is used.
        entry_point: what started the runs (e.g. ``python -m pipeline tune``), recorded as
            ``mlflow.project.entryPoint`` where ``mlflow run`` did not set it.
    """

    def __init__(self, experiment: str, entry_point: str | None = None) -> None:
        self._client = MlflowClient()
        self.entry_point = entry_point
        self._provenance: dict[str, str] | None = None
        self._datasets: dict[tuple[str, int], tuple[np.ndarray, Any]] = {}
        # Under `mlflow run` the project's run already exists and names the experiment.
        self.project_run_id = os.environ.get("MLFLOW_RUN_ID")
        if self.project_run_id:
            self.experiment_id = self._client.get_run(self.project_run_id).info.experiment_id
        else:
            self.experiment_id = _experiment_id(self._client, experiment)
        _mark_model_training(self._client, self.experiment_id)
        self.end_runs_of_dead_workers()
        # One thread renders and uploads trial figures (see log_figure).
        self._figures = ThreadPoolExecutor(max_workers=1, thread_name_prefix="figures")
        self._pending: list[Future] = []

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, name: str, parent_run_id: str | None = None,
                  tags: dict[str, str] | None = None) -> str:
        """Creates a RUNNING run, nested under ``parent_run_id`` when given; returns its id.

        The run carries the provenance tags fluent ``mlflow.start_run`` would give it (see
        ``provenance``): runs made through the client get none of them otherwise."""
        all_tags = {**self.provenance(), MLFLOW_RUN_NAME: name, WORKER_TAG: _worker(),
                    **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self._client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    @contextlib.contextmanager
    def run(self, name: str, parent_run_id: str | None = None,
            tags: dict[str, str] | None = None,
            killed_on: tuple[type[BaseException], ...] = ()) -> Iterator[str]:
        """A new run for the block, ended with the status the block earned (see ``ending``).

        Yields:
            The run's id.
        """
        run_id = self.start_run(name, parent_run_id, tags)
        with self.ending(run_id, killed_on):
            yield run_id

    def resume_run(self, run_id: str) -> None:
        """Marks an existing run RUNNING again (a resumed study, another worker's job)."""
        self._client.update_run(run_id, status="RUNNING")

    def fail_run(self, run_id: str, reason: str) -> None:
        """Ends a run FAILED from outside its block (its worker was lost), the reason in the
        ``failure_reason`` tag."""
        self._client.set_tag(run_id, "failure_reason", reason)
        self._client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

    def metrics_and_tags(self, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
        """A run's latest metrics and its tags."""
        data = self._client.get_run(run_id).data
        return dict(data.metrics), dict(data.tags)

    def scores(self, run_id: str, prefix: str = "test/") -> dict[str, float]:
        """The run's latest metrics whose names start with ``prefix`` (its test scores)."""
        metrics, _ = self.metrics_and_tags(run_id)
        return {k: v for k, v in metrics.items() if k.startswith(prefix)}

    def end_runs_of_dead_workers(self) -> list[str]:
        """Ends FAILED the RUNNING runs that a process of this machine started and that is gone
        (SIGKILL, out-of-memory killer, power cut): nothing else would ever end them. Runs of
        live processes, and of other machines, are left alone (Optuna's heartbeats find the
        trials of those).

        Returns:
            The ids of the runs ended.
        """
        host = _worker().rsplit(":", 2)[0]
        try:
            runs = self._client.search_runs(
                [self.experiment_id], max_results=1000,
                filter_string=f"attributes.status = 'RUNNING' and "
                              f"tags.`{WORKER_TAG}` LIKE '{host}:%'")
        except MlflowException:  # a store without tag search: nothing to reap
            return []
        ended = []
        for run in runs:
            worker = run.data.tags.get(WORKER_TAG, "")
            if worker.rsplit(":", 2)[0] != host or _alive(worker):
                continue
            self._end(run.info.run_id, RunStatus.FAILED, "failure",
                      ProcessLookupError(f"its worker {worker} died before ending it"))
            ended.append(run.info.run_id)
        if ended:
            log.warning("%d run(s) of dead workers ended FAILED", len(ended))
        return ended

    def provenance(self) -> dict[str, str]:
        """Where this process's runs come from: MLflow's own run context providers (source
        name and type, user, git commit, branch and repository; what fluent ``start_run``
        adds), the project run's source and entry point under ``mlflow run``, whether the git
        checkout had uncommitted changes, and the entry point. Resolved once per process."""
        if self._provenance is None:
            from mlflow.tracking.context.registry import resolve_tags

            tags = {k: v for k, v in resolve_tags().items() if k != MLFLOW_RUN_NAME}
            if self.project_run_id:
                project = self._client.get_run(self.project_run_id).data.tags
                tags.update({k: v for k, v in project.items()
                             if k.startswith(_INHERITED_PREFIXES)})
            if MLFLOW_GIT_COMMIT not in tags:  # started from elsewhere (a notebook, pytest):
                tags.update(_package_git())     # the checkout of the code that runs is what counts
            dirty = _git_dirty(Path(__file__).parent) if MLFLOW_GIT_COMMIT in tags else None
            if dirty is not None:
                tags[MLFLOW_GIT_DIRTY] = str(dirty).lower()
            if self.entry_point:
                tags.setdefault(MLFLOW_PROJECT_ENTRY_POINT, self.entry_point)
            self._provenance = tags
        return self._provenance

    def describe(self, run_id: str, markdown: str) -> None:
        """Sets the run's description (the UI's Description box, ``mlflow.note.content``)."""
        self._client.set_tag(run_id, MLFLOW_RUN_NOTE, markdown)

    def job_run_id(self, name: str) -> tuple[str, bool]:
        """The job's run: the project's run under ``mlflow run``, else a new one.

        Returns:
            (run id, whether this process owns it and must end it).
        """
        if self.project_run_id:
            self._client.set_tag(self.project_run_id, MLFLOW_RUN_NAME, name)
            if MLFLOW_GIT_DIRTY in self.provenance():  # the one tag `mlflow run` does not set
                self._client.set_tag(self.project_run_id, MLFLOW_GIT_DIRTY,
                                    self.provenance()[MLFLOW_GIT_DIRTY])
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
            self._client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    def _end(self, run_id: str, status: int, kind: str, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}"[:5000]
        try:
            self._client.set_tag(run_id, f"{kind}_reason", reason)
            self._client.set_terminated(run_id, RunStatus.to_string(status))
        except Exception as end_err:  # a dead store must not hide the original error
            # One line: the job's own error says what happened; the next start ends the run.
            log.info("could not end run %s: %s", run_id, _first_line(end_err))

    # -- logging ------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: dict[str, Any],
                   tags: dict[str, str] | None = None) -> None:
        """Logs params (values stringified) and tags in one call; a URL password in any
        value is masked (a config's storage URL is a param like any other)."""
        self._client.log_batch(
            run_id,
            params=[Param(k, secrets.mask(_param_value(v))) for k, v in params.items()],
            tags=[RunTag(k, secrets.mask(str(v))) for k, v in (tags or {}).items()],
        )

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        """Logs final (unstepped) metrics in one call; non-finite values are skipped."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
        self._client.log_batch(run_id, metrics=batch)

    def metric_buffer(self, run_id: str, every: float = LIVE_FLUSH_SECONDS) -> MetricBuffer:
        """A training callback that writes the run's stepped metrics every ``every`` s."""
        return MetricBuffer(self._client, run_id, every)

    def log_config(self, run_id: str, config: dict[str, Any]) -> None:
        """Logs the resolved config as the run's ``config.yaml`` artifact, secrets masked (a
        password may sit in any URL-valued field, not only the storage's)."""
        import yaml

        text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
        self._client.log_text(run_id, secrets.mask(text), CONFIG_ARTIFACT)

    def log_datasets(self, run_id: str, datasets: dict[str, tuple[np.ndarray, np.ndarray]],
                     context: str) -> None:
        """Records the data a run used as MLflow datasets (name, digest, shape), in one call.

        Args:
            run_id: the run.
            datasets: name -> (sin inputs, cos targets).
            context: what the run used them for: ``validation`` or ``test``.
        """
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = [DatasetInput(self._dataset(name, x, y),
                               tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
                  for name, (x, y) in datasets.items()]
        try:
            self._client.log_inputs(run_id, datasets=inputs)
        except MlflowException as err:
            # MLflow's store looks a dataset up and inserts it if missing, in two steps: two
            # workers logging the same new dataset at once both insert, and one fails on the
            # unique key (seen on 4 workers starting the tutorial runs together). Its
            # transaction was rolled back; again, it finds the other's row and links it.
            if not _duplicate_key(err):
                raise
            self._client.log_inputs(run_id, datasets=inputs)

    def _dataset(self, name: str, x: np.ndarray, y: np.ndarray) -> Any:
        """The dataset entity of (x, y), made once per array: its digest hashes the data."""
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.numpy_dataset import from_numpy

        key = (name, id(x))
        if key not in self._datasets:
            dataset = from_numpy(x, targets=y, name=name,
                                 source=CodeDatasetSource(self.provenance()))
            self._datasets[key] = (x, dataset._to_mlflow_entity())  # x kept: its id stays unique
        return self._datasets[key][1]

    def log_figure(self, run_id: str, figure: Any, path: str, background: bool = False,
                   tight: bool = False) -> None:
        """Renders ``figure`` (a Figure, or a callable that makes one) to PNG and logs it as an
        artifact of ``run_id``.

        Building and rendering a figure costs 0.3-0.6 s on 2 cores: with ``background`` both
        happen in this tracker's figure thread, overlapping the next trial's training (torch
        releases the GIL inside its kernels, so one thread draws while the other trains).
        ``wait_for_figures`` waits for them. ``tight`` saves the bounding box of everything
        drawn, so labels that stick out (Optuna's) are not clipped. Built and drawn holding
        ``plots.DRAWING``: other threads may be drawing too.
        """
        save_kwargs = {"bbox_inches": "tight"} if tight else None

        # Imported here: pipeline.plots brings matplotlib and torch (about 1.5 s), which the
        # commands that only check or load from the stores never need.
        from pipeline.plots import DRAWING

        def log() -> None:
            with DRAWING:
                self._client.log_figure(run_id, figure() if callable(figure) else figure, path,
                                       save_kwargs=save_kwargs)

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
            except Exception as err:
                log.warning("a prediction figure could not be logged: %s", _first_line(err))

    def log_png(self, run_id: str, png: bytes, path: str) -> None:
        """Logs a figure already rendered to PNG (what ``log_figure`` would write) as the
        artifact ``path``: a figure the caller also embeds is drawn once, not twice."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            local.write_bytes(png)
            folder = Path(path).parent
            self._client.log_artifact(run_id, str(local),
                                      None if folder == Path(".") else folder.as_posix())

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self._client.log_text(run_id, secrets.mask(text), path)

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, enabled: bool,
                       sampling_interval: float = 10.0) -> Iterator[bool]:
        """Logs MLflow's system metrics (CPU, memory, and GPU utilisation and memory through
        ``nvidia-ml-py``) to ``run_id`` while the block runs, so the UI shows how busy the card
        was. MLflow's public switches turn it on: ``log_system_metrics`` of fluent
        ``start_run`` (resuming ``run_id``) here, and ``mlflow.enable_system_metrics_logging()``
        or ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true`` anywhere.

        Fluent ``start_run`` ends the run it resumed when the block ends; the caller's
        ``ending`` then sets the status the whole run earned.

        Yields:
            Whether a monitor runs (False where disabled or ``psutil`` is missing).
        """
        from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

        if not (enabled or MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get()):
            yield False
            return
        mlflow.set_system_metrics_sampling_interval(sampling_interval)
        try:
            import psutil  # noqa: F401 - what every system metric needs
        except ImportError as err:
            log.warning("system metrics not logged: %s", err)
            yield False
            return
        with mlflow.start_run(run_id=run_id, nested=True, log_system_metrics=True):
            yield True

    # -- checkpoints and models ---------------------------------------------------------------

    def log_checkpoint(self, run_id: str, state_dict: dict, model_config: dict) -> None:
        """Stores a trial's best weights (a few hundred KB) under ``checkpoint/``."""
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state_dict, Path(tmp) / "weights.pt")
            (Path(tmp) / "model_config.json").write_text(json.dumps(model_config))
            self._client.log_artifacts(run_id, tmp, CHECKPOINT_DIR)

    def load_checkpoint(self, run_id: str) -> tuple[dict, dict]:
        """A run's checkpoint: (state dict on the CPU, model config as a dict)."""
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(self._client.download_artifacts(run_id, CHECKPOINT_DIR, tmp))
            state = torch.load(local / "weights.pt", map_location="cpu", weights_only=True)
            return state, json.loads((local / "model_config.json").read_text())

    def log_array(self, run_id: str, array: np.ndarray, path: str) -> None:
        """A small array (a replay's predictions) as a JSON artifact: values round-trip
        exactly, and the run's page shows them."""
        self._client.log_dict(run_id, {"dtype": str(array.dtype), "values": array.tolist()},
                              path)

    def load_array(self, run_id: str, path: str) -> np.ndarray:
        """An array ``log_array`` stored, with its dtype."""
        from mlflow.artifacts import load_dict

        stored = load_dict(self._client.get_run(run_id).info.artifact_uri + "/" + path)
        return np.asarray(stored["values"], dtype=stored["dtype"])

    def log_model(self, run_id: str, name: str = "model") -> str:
        """Logs the run's checkpoint as a pyfunc model with a (-1, -1, 1) float32 signature.

        Args:
            run_id: the run holding the checkpoint.
            name: the logged model's name, what the UI lists it by (e.g. ``lstm-trial-7``).

        Returns:
            The model URI.
        """
        from mlflow.models import Model, ModelSignature
        from mlflow.types import Schema, TensorSpec

        spec = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, 1))])
        with tempfile.TemporaryDirectory() as tmp:
            local = self._client.download_artifacts(run_id, CHECKPOINT_DIR, tmp)
            code = serving.shipped_code(Path(tmp) / "code")
            # Model.log would put a new logged model in the process's active experiment (the
            # Default one), out of sight of this experiment's Models tab: it is made here.
            logged = self._client.create_logged_model(
                self.experiment_id, name=name, source_run_id=run_id,
                params=self._client.get_run(run_id).data.params)
            info = Model.log(
                artifact_path=None,
                name=name,
                model_id=logged.model_id,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                python_model=serving.__file__,
                artifacts={serving.WEIGHTS: f"{local}/weights.pt",
                           serving.MODEL_CONFIG: f"{local}/model_config.json"},
                # Only the serving code, under a name of its own (serving.py says why).
                code_paths=[str(code)],
                signature=ModelSignature(inputs=spec, outputs=spec),
                input_example=np.sin(np.linspace(0, 3, 10, dtype=np.float32))[None, :, None],
                pip_requirements=pip_requirements(),
            )
        return info.model_uri

    def promote(self, name: str, model_uri: str, val_mse: float, alias: str,
                tags: dict[str, str], reference: float = math.inf) -> tuple[str, bool]:
        """Registers ``model_uri`` under ``name`` and moves ``alias`` to it only if it beats
        ``reference`` (the zero baseline's validation MSE: a model worse than predicting 0 is no
        champion, even the first) and the current holder on validation, and loads and predicts
        correctly shaped output. A version refused for the reference is kept, tagged
        ``alias_refused`` with the reason, and a warning says so.

        Returns:
            (the new version, whether the alias moved to it).
        """
        version = mlflow.register_model(model_uri, name, tags={"val_mse": str(val_mse), **tags})
        try:
            if not val_mse < reference:
                reason = (f"val MSE {val_mse:.3g} is not below the zero baseline's "
                          f"{reference:.3g}")
                self._client.set_model_version_tag(name, version.version, "alias_refused",
                                                  reason)
                log.warning("%s v%s registered, alias %s not set: %s", name, version.version,
                            alias, reason)
                return str(version.version), False
            current = self.champion(name, alias)
            best = float(current.tags.get("val_mse", "inf")) if current else math.inf
            if val_mse >= best:
                log.info("%s v%s (val %.3g) does not beat %s v%s (val %.3g)", name,
                         version.version, val_mse, alias, current.version, best)
                return str(version.version), False
            _check_loads(f"models:/{name}/{version.version}")
            self._client.set_registered_model_alias(name, alias, version.version)
        except BaseException:
            # Interrupted, or the model does not load: no version is left half-registered
            # (offered but never judged), and the alias stays where it was.
            self._drop_version(name, version.version)
            raise
        return str(version.version), True

    def describe_model(self, name: str, description: str, version: str | None = None) -> None:
        """Sets the Markdown description of a registered model, or of one of its versions."""
        if version is None:
            self._client.update_registered_model(name, description=description)
        else:
            self._client.update_model_version(name, version, description=description)

    def _drop_version(self, name: str, version: str) -> None:
        try:
            self._client.delete_model_version(name, version)
        except Exception:  # the original error matters more
            log.exception("could not delete %s v%s", name, version)

    def finished_run(self, parent_run_id: str, key: str) -> str | None:
        """The FINISHED run under ``parent_run_id`` tagged ``cellstudy.key`` = ``key``, or
        None: a rerun after an interruption finds what the interrupted run already logged."""
        found = self._client.search_runs(
            [self.experiment_id], max_results=1,
            filter_string=f"tags.`cellstudy.key` = '{key}' and "
                          f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}' and "
                          "attributes.status = 'FINISHED'")
        return found[0].info.run_id if found else None

    def champion(self, name: str, alias: str) -> Any | None:
        """The version ``alias`` points at, or None."""
        try:
            return self._client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None


def _duplicate_key(err: BaseException) -> bool:
    """Whether a store refused a row for a unique key another writer just took (SQLite's and
    PostgreSQL's wording)."""
    text = str(err)
    return "UNIQUE constraint failed" in text or "duplicate key value" in text


WORKER_TAG = "cellstudy.worker"
"""Run tag: ``host:pid:start`` of the process that started the run (``start`` is the process's
start time in clock ticks since boot, so a recycled pid is not taken for the same process)."""


def _start_ticks(pid: int) -> str:
    """The start time of process ``pid`` from /proc, or "" where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _worker() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _alive(worker: str) -> bool:
    """Whether the process named by a ``host:pid:start`` tag of this machine still runs."""
    try:
        _, pid, start = worker.rsplit(":", 2)
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):  # not ours to judge: another user's live process
        return True
    return not start or _start_ticks(int(pid)) == start


def check_registry_names(names: list[str], alias: str) -> None:
    """Registered model names and the alias, judged by MLflow's own validators (``latest`` and
    ``v<N>`` aliases are reserved, names may not hold ``/`` or ``:``), before training: the
    registry would refuse them only when the study's best model is offered.

    Raises:
        ValueError: one line naming the config field and the value.
    """
    from mlflow.utils import validation

    checks = [("tracking.registry_prefix", name, validation._validate_model_name)
              for name in names]
    checks += [("tracking.alias", alias, validation._validate_model_alias_name),
               ("tracking.alias", alias, validation._validate_model_alias_name_reserved)]
    for field, value, check in checks:
        try:
            check(value)
        except MlflowException as err:
            raise ValueError(f"{field}: MLflow's registry refuses {value!r}: "
                             f"{err.message.splitlines()[0]}") from None


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


def model_description(cell: str, registered_name: str, alias: str, warmup: int) -> str:
    """The registered model's description (Markdown): what it maps, its pyfunc contract, how
    to load and serve it. Here, beside the registry calls, because it is about MLflow: the
    snippet it shows imports mlflow.

    Args:
        cell: the cell the model's study tuned.
        registered_name: the registered model's name.
        alias: the champion alias.
        warmup: leading points of each window that are not scored (``data.warmup``).
    """
    return f"""**{cell.upper()} sequence regressor: sin(t) → cos(t)**, the best of a cellstudy \
Optuna study of the `{cell}` cell. Version `@{alias}` is the best on validation so far.

**pyfunc contract.** Input: float32 array `(batch, T, 1)` of sin values, any `T >= 1` \
(a `(batch, T)` array or nested list is read as one feature per step). Output: float32 \
`(batch, T, 1)`, the predicted cos values. Each call starts from a fresh hidden state; the \
first {warmup} points of a window are not scored: three sin values fix cos only at the third.

```python
import mlflow, numpy as np
model = mlflow.pyfunc.load_model("models:/{registered_name}@{alias}")
t = np.linspace(0, 6, 40, dtype=np.float32)
y = model.predict(np.sin(t)[None, :, None])   # (1, 40, 1) ≈ cos(t)
```

Served: `mlflow models serve -m models:/{registered_name}@{alias} --env-manager local`, then \
POST `{{"inputs": [[[0.0], [0.2], [0.39]]]}}` to `/invocations`."""


SERVER_SQL_SCHEMES = ("postgresql", "mysql", "mssql")
"""Tracking URI schemes of a database server (MLflow's SQL store, reached over the network)."""


def warm_up() -> None:
    """Imports MLflow's SQL stores when the tracking URI is a database (SQLAlchemy and
    alembic: about 0.7 s on the 2-core machine, 1 s under a profiler), so that a worker's
    first store call, made once the parent lets it go, does not (``cli._warm_up``); and maps
    the installed distributions, which a champion's ``log_model`` would."""
    if storage.scheme(mlflow.get_tracking_uri()) in ("sqlite", *SERVER_SQL_SCHEMES):
        # By name: an ``import mlflow.store...`` here would make ``mlflow`` a local name.
        importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
        importlib.import_module("mlflow.store.model_registry.sqlalchemy_store")
    # log_model checks the model's pip requirements against every installed distribution
    # (importlib.metadata.packages_distributions: 2.5 s on the lent H200 host with its many
    # packages), once a process: MLflow caches the map, and a waiting worker can fill it.
    importlib.import_module("mlflow.utils.requirements_utils")._init_modules_to_packages_map()


def check_tracking_reachable(timeout: int = 5) -> None:
    """Asks the tracking store for one experiment, without retries, so an unreachable server
    or database is reported at once instead of after minutes of retries, before any run exists.

    Raises:
        ValueError: with a one-line message, credentials in the URI masked.
    """
    from urllib.parse import urlsplit

    uri = mlflow.get_tracking_uri()
    if storage.scheme(uri) in SERVER_SQL_SCHEMES:
        # MLflow's SQL store retries its first connection for minutes: one attempt, bounded.
        storage.check_storage_reachable(uri, timeout, what="the MLflow tracking store")
    try:
        with _one_quick_try(timeout), store_creation(uri):  # a new store migrates on first use
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # any store, any failure: one line, no secrets
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        password = urlsplit(uri).password
        message = f"cannot reach the MLflow tracking store {uri}: {first}"
        raise ValueError(message.replace(password, "***") if password else message) from None


@contextlib.contextmanager
def _one_quick_try(timeout: int) -> Iterator[None]:
    """MLflow's HTTP client without retries and with ``timeout`` inside the block, so an
    unreachable server is reported at once; the environment is restored after."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    saved = {k: os.environ.get(k) for k in quick}
    os.environ.update(quick)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_registry_reachable(timeout: int = 5) -> None:
    """Asks the model registry (``MLFLOW_REGISTRY_URI``, else the tracking store) for one
    model, without retries: a job that will register its champions learns that it cannot
    before it trains, not after.

    Raises:
        ValueError: with a one-line message, the password masked.
    """
    from mlflow.tracking._model_registry.utils import get_registry_uri

    uri = get_registry_uri()
    try:
        with _one_quick_try(timeout):
            MlflowClient(registry_uri=uri).search_registered_models(max_results=1)
    except Exception as err:  # any registry, any failure: one line, no secrets
        raise ValueError(secrets.mask(f"cannot reach the MLflow model registry "
                                      f"{secrets.mask_url(uri)}: {_first_line(err)}")) from None


def _check_loads(uri: str) -> None:
    """Loads a version and predicts once: an alias must never point at a broken model."""
    model = mlflow.pyfunc.load_model(uri)
    x = np.zeros((2, 3, 1), dtype=np.float32)
    out = np.asarray(model.predict(x))
    if out.shape != x.shape or not np.isfinite(out).all():
        raise MlflowException(f"{uri} predicts shape {out.shape}, expected {x.shape}")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]

def _package_git() -> dict[str, str]:
    """Git commit, branch and repository of this package's checkout, as MLflow's own git
    context provider reads them for the entry file; empty outside a checkout."""
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_REPO_URL

    path = str(Path(__file__).parent)
    found = {MLFLOW_GIT_COMMIT: get_git_commit(path), MLFLOW_GIT_BRANCH: get_git_branch(path),
             MLFLOW_GIT_REPO_URL: get_git_repo_url(path)}
    return {k: v for k, v in found.items() if v}


def _git_dirty(path: Path) -> bool | None:
    """Whether the git checkout holding ``path`` has uncommitted changes to tracked files
    (GitPython, which MLflow itself uses), or None outside a checkout."""
    try:
        import git

        return git.Repo(path, search_parent_directories=True).is_dirty(untracked_files=False)
    except Exception:  # no git, not a checkout: no flag rather than a wrong one
        return None


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)


def load_pyfunc(uri: str) -> Any:
    """``mlflow.pyfunc.load_model``, with a bad URI reported in one line."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LookupError(f"cannot load model {uri!r}: {first}") from None
