"""Command line: ``python -m pipeline {tune,train,evaluate} ...``; the one place where config,
core, tracking and tuning are wired together.

    python -m pipeline tune --config experiments/default.yaml --cells lstm,gru --n-trials 30
    python -m pipeline train --config experiments/tutorial.yaml --cell rnn
    python -m pipeline evaluate --model-uri models:/sin2cos-lstm@champion --data all

Heavy imports (torch, mlflow, optuna) happen inside the commands, so ``--help`` answers fast.
Bad input ends with one line on stderr and exit status 2, before any run or study is created.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from pipeline import interrupts, secrets, workers
from pipeline.config import ConfigError, ExperimentConfig, load_config

log = logging.getLogger("pipeline")

DEFAULT_CONFIG = "experiments/default.yaml"
STORAGE_ENV = "CELLSTUDY_STORAGE"
"""Environment variable read for the Optuna storage URL when ``--storage`` is not given."""


HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
"""MLflow's HTTP retry and timeout settings the CLI starts with, unless the environment has
its own (MLflow's defaults: 7 retries, backoff factor 2, 120 s)."""


class UsageError(Exception):
    """Bad input caught before any work: reported in one line, exit status 2."""


def _optional(kind: type) -> Any:
    """An argparse type that reads an empty string as 'not given' (MLproject defaults)."""

    def parse(text: str) -> Any:
        if text.strip() == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="experiment YAML (default: %(default)s)")
    p.add_argument("--device", type=_optional(str),
                   help="auto, cpu or cuda (overrides train.device)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field by dotted name, e.g. --set train.steps=200")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Tune, train and evaluate recurrent cells (rnn, lstm, gru) on sin -> cos, "
                    "tracked in MLflow, tuned with Optuna.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tune = sub.add_parser("tune", help="one Optuna study per cell; registers each champion")
    _add_common(tune)
    tune.add_argument("--cells", type=_optional(str), help="comma-separated, e.g. rnn,lstm,gru")
    # Underscore spellings too: `mlflow run -P n_trials=5` appends `--n_trials 5` (MLproject).
    tune.add_argument("--n-trials", "--n_trials", type=_optional(int),
                      help="total trials per study (a resumed study runs only the missing ones)")
    tune.add_argument("--storage", type=_optional(str),
                      help=f"Optuna storage URL (default: ${STORAGE_ENV}, else the config's)")
    tune.add_argument("--study-name", "--study_name", type=_optional(str),
                      help="study name prefix; each cell's study is <name>-<cell>")
    tune.add_argument("--workers", default="1", metavar="N|auto",
                      help="worker processes sharing the studies; auto: one per idle core on a "
                           f"CPU, but no more than one per {workers.STEPS_PER_CPU_WORKER} "
                           f"training steps or per {workers.RUNS_PER_CPU_WORKER} runs of the job "
                           "(whichever allows more); "
                           f"{workers.CUDA_WORKERS_PER_GPU} per card on CUDA (default: 1)")
    tune.add_argument("--trials-at-once", "--trials_at_once", default="1", metavar="N|auto",
                      help="trials each worker process trains at once, each in a thread of its "
                           "own; auto: the idle cores its workers leave on a CPU, one per "
                           f"{workers.WINDOWS_PER_CPU_THREAD} windows (steps x batch) the job "
                           "trains at most; "
                           "1 on CUDA (default: 1)")
    tune.add_argument(workers.WORKER_FLAG, dest="worker_index", type=int,
                      help=argparse.SUPPRESS)
    tune.add_argument(workers.COUNT_FLAG, dest="worker_count", type=int, default=1,
                      help=argparse.SUPPRESS)

    train = sub.add_parser("train", help="one tracked training run at a given hidden size and lr")
    _add_common(train)
    train.add_argument("--cell", type=_optional(str), help="rnn, lstm or gru")
    train.add_argument("--hidden-size", "--hidden_size", type=_optional(int),
                       help="overrides model.hidden_size")
    train.add_argument("--lr", type=_optional(float), help="overrides train.lr")
    train.add_argument("--register", action="store_true",
                       help="register the model and offer it for the champion alias")

    ev = sub.add_parser("evaluate", help="score a logged or registered model on held-out data")
    ev.add_argument("--model-uri", required=True, help="e.g. models:/sin2cos-lstm@champion")
    ev.add_argument("--config", default=DEFAULT_CONFIG, help="experiment YAML with the data sets")
    ev.add_argument("--data", default="all", help="val, a test set's name, or all (default)")
    ev.add_argument("--plot", type=_optional(str), help="save a prediction plot (PNG) here")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--input", type=_optional(str), metavar="FILE",
                    help="predict on your own sin values instead (.npy or .json, shaped "
                         "(batch, T, 1) or (batch, T)); prints the output's shape")
    ev.add_argument("--output", type=_optional(str), metavar="FILE.npy",
                    help="with --input: save the predicted cos values here")
    return parser


def _overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = _yaml_value(value)
    for attr, key in flags.items():
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = value
    return out


def _yaml_value(text: str) -> Any:
    """A --set value read as YAML, so ``[1e-4, 1e-2]`` is a list; the config converts types."""
    import yaml

    if not text.strip():  # YAML reads "" as null, which would take a searched path out
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load(args: argparse.Namespace, flags: dict[str, str]) -> ExperimentConfig:
    """The config file with --set and the command's own flags applied on top."""
    cfg = load_config(args.config, _overrides(args, flags))
    secrets.hide(cfg.study.storage)  # a config file may hold a password too
    return cfg


def _refuse_searched(overrides: dict[str, Any], cfg: ExperimentConfig) -> None:
    """A study sets each ``study.space`` path per trial, so a value given for one would be
    silently ignored: it is refused, with the way to fix the value instead."""
    for key in overrides:
        if key in cfg.study.space:
            raise UsageError(f"--set {key}: {key} is searched by study.space; to fix it, take "
                             f"it out of the space too: --set study.space.{key}=null")


def _setup_torch(cfg: ExperimentConfig) -> None:
    import torch

    torch.set_num_threads(cfg.train.threads)


def _preflight(cfg: ExperimentConfig | None, command: str, *, storage: str | None = None,
               registry: bool = False) -> None:
    """Every check that needs no store, then the stores' reachability: all before the first
    write (pipeline/preflight.py says what is checked). A local tracking store that cannot be
    written, and the registry's naming rules, are found here too.

    Args:
        cfg: the resolved config (None for ``evaluate --input``, which reads none).
        command: tune, train or evaluate.
        storage: the Optuna storage URL to reach (tune).
        registry: whether models will be registered under the config's names.
    """
    _preflight_input(cfg, command, registry=registry)
    _preflight_stores(storage=storage, registry=registry)


def _preflight_input(cfg: ExperimentConfig | None, command: str, *,
                     registry: bool = False) -> None:
    """``_preflight``'s checks that need no store: the config, where runs would be written,
    the registry's naming rules."""
    from pipeline import preflight

    try:
        if cfg is not None:
            preflight.check_config(cfg, command)
        preflight.check_tracking_target()
        if registry and cfg is not None:
            from pipeline.tracking import check_registry_names

            check_registry_names([cfg.tracking.registry_name(cell)
                                  for cell in cfg.study.cells], cfg.tracking.alias)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _preflight_stores(*, storage: str | None = None, registry: bool = False) -> None:
    """``_preflight``'s checks of the stores: reachable (a new local store is created)."""
    try:
        if storage:
            from pipeline.storage import check_storage_reachable

            check_storage_reachable(storage)
        from pipeline.tracking import check_registry_reachable, check_tracking_reachable

        check_tracking_reachable()
        if registry:
            check_registry_reachable()
    except ValueError as err:
        raise UsageError(str(err)) from None


def cmd_tune(args: argparse.Namespace) -> int:
    started = workers.cpu_sample()  # ``auto`` counts the busy cores over the imports below
    # A URL with a password is better kept out of argv and out of MLproject params (which
    # `mlflow run` logs as they are): workers may take it from the environment instead.
    args.storage = args.storage or os.environ.get(STORAGE_ENV) or None
    cfg = load(args, {"cells": "study.cells", "n_trials": "study.n_trials",
                      "storage": "study.storage", "study_name": "study.name",
                      "device": "train.device"})
    _refuse_searched(_overrides(args, {}), cfg)
    from pipeline.storage import Storage

    try:  # the storage's scheme first: it needs no heavy import, so it is refused at once
        spec = workers.parse_count(args.workers)
        at_once_spec = workers.parse_count(args.trials_at_once, "--trials-at-once")
        storage = Storage(cfg.study.storage)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.worker_index is not None:
        # The parent checked the input and makes the stores and the job run meanwhile.
        workers.wait_for_parent(functools.partial(_warm_up, cfg))
    _preflight_input(cfg, "tune", registry=True)
    _setup_torch(cfg)
    if args.worker_index is not None:  # the parent resolved both counts
        n, at_once = 1, int(at_once_spec)
    else:
        n, at_once = _n_workers(spec, at_once_spec, cfg, started)
    # Started before the stores are checked and made: their imports (seconds each) overlap
    # the parent's; they touch no store before the parent hands them the job run.
    pool = workers.Pool(args.argv, n, at_once) if n > 1 else None
    try:
        _preflight_stores(storage=cfg.study.storage, registry=True)
    except BaseException:
        if pool is not None:
            pool.abandon()
        raise
    from pipeline import tuning

    tuning.configure_logs(args.quiet)
    from pipeline.render import summary_table
    from pipeline.report import share_report_runs
    from pipeline.tracking import Tracker

    tracker = Tracker(cfg.tracking.experiment, entry_point="python -m pipeline tune")
    tuning.make_storage(storage, cfg.study.heartbeat_interval, cfg.study.grace_period,
                        tuning.mark_lost_runs(tracker))
    if args.worker_index is not None:  # the parent made the job run; MLFLOW_RUN_ID names it
        job_run, owned = tracker.project_run_id, False
    else:
        job_run, owned = tuning.job_run(tracker, cfg, storage, f"tune-{cfg.study.name}")
    progress = _progress(cfg, storage, enabled=not args.quiet)
    with tracker.ending(job_run) if owned else contextlib.nullcontext():
        if pool is not None:  # every store exists now: the workers only open them
            log.info("%d workers, %d trials per study", n, cfg.study.n_trials)
            with contextlib.closing(progress):
                pool.run(job_run, progress)
        pooled = args.worker_index is not None

        def work(index: int | None, count: int) -> list[tuning.StudyOutcome]:
            """One worker's part: every cell's study, starting at its own cell, then (a
            worker of a parent's pool) its share of the report's seed retrains and tutorial
            runs; the parent writes the summary and the report, and finds them done."""
            outcomes = []
            for cell in workers.rotated(cfg.study.cells, index):
                log.info("study %s-%s: %d trials in all", cfg.study.name, cell,
                         cfg.study.n_trials)
                outcomes.append(tuning.run_study(cfg, cell, tracker, job_run, storage))
            interrupts.check()  # a signal received during the last study's wrap-up
            if pooled:
                share_report_runs(cfg, outcomes, tracker, job_run, index or 0, count)
            return outcomes

        # After N workers each study is done, and only read back here. A worker process's
        # trials at once are workers too: thread t of process p is p * at_once + t.
        first = (args.worker_index or 0) * at_once
        count = args.worker_count * at_once
        with workers.polling(progress) if n == 1 else contextlib.nullcontext():
            if pool is None and at_once > 1:
                log.info("%d trials at once, %d trials per study", at_once,
                         cfg.study.n_trials)
                outcomes = workers.run_in_threads(lambda t: work(first + t, count),
                                                  at_once)[0]
            else:
                outcomes = work(args.worker_index, count)
        interrupts.check()
        if pooled:
            return 0
        table = summary_table(outcomes, cfg)
        tracker.log_text(job_run, table, "summary.md")
        # Baselines, seed retrains of each champion, the tutorial's claims: report.md; written
        # by one worker of N (the others print the summary).
        report = tuning.report_once(cfg, storage, functools.partial(
            _job_report, cfg, outcomes, tracker, job_run, at_once if pool is None else 1))
    print(report or f"{table}\nThe job report (report.md on run {job_run}) was already "
                    "written, by another worker or an earlier run.")
    return 0


def _job_report(cfg: ExperimentConfig, outcomes: list, tracker: Any, job_run: str,
                at_once: int) -> str:
    """The job report, by the one process that writes it (``tuning.report_once``). With
    trials at once and no pool, this process's threads first train the report's runs between
    them, inside the report's turn: shared outside it, processes started by hand with
    ``--trials-at-once`` would each train them all at the same moment."""
    from pipeline.report import job_report, share_report_runs

    if at_once > 1:
        workers.run_in_threads(lambda t: share_report_runs(cfg, outcomes, tracker, job_run, t,
                                                           at_once), at_once)
    return job_report(cfg, outcomes, tracker, job_run)


def _warm_up(cfg: ExperimentConfig) -> None:
    """What a worker does while it waits for the parent, off the job's critical path: torch,
    MLflow and Optuna, then what its first store calls and its first trial would import
    (MLflow's and Optuna's SQL stores, ``torch._dynamo`` for the first fused Adam: about 1 s
    each on the 2-core machine), and the CUDA context."""
    import pipeline.report  # noqa: F401 - the report's share of the runs
    from pipeline import tuning
    from pipeline.train import resolve_device, warm_up

    tuning.warm_up()
    warm_up(resolve_device(cfg.train.device))


def _n_workers(spec: str | int, at_once_spec: str | int, cfg: ExperimentConfig,
               started: workers.CpuSample | None = None) -> tuple[int, int]:
    """Worker processes, and trials each trains at once (``--workers``, ``--trials-at-once``);
    ``auto`` counts the cores other processes kept busy since ``started``."""
    import torch

    from pipeline.train import resolve_device

    device = resolve_device(cfg.train.device).type
    size = workers.job_size(cfg)
    auto = workers.AUTO in (spec, at_once_spec) and device != "cuda"
    load = workers.busy_cores(started) if auto else 0.0  # one sample for both counts
    n = workers.resolve_workers(spec, device, cfg.train.threads,
                                torch.cuda.device_count() if device == "cuda" else 0,
                                load=load, job_steps=size.steps, job_runs=size.runs)
    return n, workers.resolve_trials_at_once(at_once_spec, device, cfg.train.threads, n,
                                             cfg.study.n_trials, load, job_windows=size.windows)


def _progress(cfg: ExperimentConfig, storage: Any, enabled: bool) -> workers.Progress:
    """The job's one progress bar: finished trials per study, read from the Optuna storage."""
    from pipeline import tuning

    studies = [tuning.open_study(cfg, cell, storage) for cell in cfg.study.cells]
    return workers.Progress(workers.finished_counts(studies, tuning.is_finished),
                            cfg.study.n_trials, [s.study_name for s in studies], enabled)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load(args, {"cell": "model.cell", "hidden_size": "model.hidden_size",
                      "lr": "train.lr", "device": "train.device"})
    _preflight(cfg.replace({"study.cells": [cfg.model.cell]}), "train", registry=args.register)
    _setup_torch(cfg)
    from pipeline.data import validation_set
    from pipeline.runs import tracked_fit
    from pipeline.tracking import Tracker, model_description

    tracker = Tracker(cfg.tracking.experiment, entry_point="python -m pipeline train")
    name = f"{cfg.model.cell}-train-h{cfg.model.hidden_size}"
    run_id, owned = tracker.job_run_id(name)
    # The run stays open for the model and the registry: a failed registration fails it.
    with tracker.ending(run_id) if owned else contextlib.nullcontext():
        val = validation_set(cfg.data)
        done = tracked_fit(tracker, cfg, name, val=val, run_id=run_id,
                           owned=False, tags={"cellstudy.level": "train"},
                           callbacks=[_progress_line(args.quiet), interrupts.callback])
        uri = tracker.log_model(run_id, name=name)
        if args.register:
            reg = cfg.tracking.registry_name(cfg.model.cell)
            from pipeline.evaluation import zero_reference

            zero = zero_reference(cfg, val)
            version, moved = tracker.promote(reg, uri, done.result.best_val,
                                             cfg.tracking.alias,
                                             {"run_id": run_id, "cell": cfg.model.cell},
                                             reference=zero)
            tracker.describe_model(reg, model_description(cfg.model.cell, reg,
                                                          cfg.tracking.alias, cfg.data.warmup))
            refused = (f"; alias {cfg.tracking.alias} not set: val MSE "
                       f"{done.result.best_val:.3g} is not below predicting zero ({zero:.3g})"
                       if done.result.best_val >= zero else "")
            print(f"registered {reg} v{version}"
                  + (f" as @{cfg.tracking.alias}" if moved else "") + refused)
    result = done.result
    print(f"{name}: val/mse_best {result.best_val:.4g} at step {result.best_step} on "
          f"{result.device} in {result.seconds:.1f} s; run {run_id}; model {uri}")
    return 0


def _progress_line(quiet: bool):
    def callback(step: int, metrics: dict[str, float]) -> None:
        if not quiet:
            print(f"step {step:5d}  train/loss {metrics['train/loss']:.4g}  "
                  f"val/mse {metrics['val/mse']:.4g}", file=sys.stderr)

    return callback


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline import preflight

    try:
        preflight.check_model_uri(args.model_uri)
        if args.output:
            preflight.check_writable_file("--output", args.output)
        if args.plot:
            preflight.check_plot_path("--plot", args.plot)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.input:
        return _predict_file(args.model_uri, args.input, args.output)
    cfg = load(args, {})
    names = ["val", *(t.name for t in cfg.data.tests)]
    chosen = names if args.data == "all" else [args.data]
    if chosen[0] not in names:
        raise UsageError(f"unknown data set {args.data!r} (valid: all, {', '.join(names)})")
    _preflight(cfg, "evaluate")
    from pipeline.evaluation import evaluate_uri

    rows, fig = evaluate_uri(args.model_uri, cfg, chosen, plot=args.plot is not None)
    print(f"{'data set':<12} {'model MSE':>12} {'zero':>10} {'linear rule':>12}")
    for name, mse, zero, rule in rows:
        print(f"{name:<12} {mse:>12.4g} {zero:>10.4g} {rule:>12.3g}")
    if fig is not None:
        fig.savefig(args.plot, dpi=100)
        print(f"plot saved to {args.plot}")
    return 0


def _predict_file(uri: str, path: str, output: str | None) -> int:
    """Runs a model on an array read from ``path``; input of the wrong type or shape is
    converted when that is unambiguous (float64, a nested list, a (batch, T) array) and
    refused in one line otherwise, before the model is loaded."""
    import json

    import numpy as np

    # Only NumPy before the input is checked: bad input is refused in a fraction of a second,
    # MLflow (seconds to import) is loaded only for input that will be used.
    from pipeline.inputs import InputError, as_sequences

    try:
        raw = json.loads(open(path).read()) if path.endswith(".json") else np.load(path)
        x = as_sequences(raw)
    except InputError as err:
        raise UsageError(f"{path}: {err}") from None
    except (OSError, ValueError) as err:  # missing file, not .npy, malformed JSON
        raise UsageError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    _preflight(None, "evaluate")  # a models:/ or runs:/ URI is read from the tracking store
    from pipeline.tracking import load_pyfunc

    y = np.asarray(load_pyfunc(uri).predict(x))
    print(f"input {tuple(np.shape(raw))} read as {x.shape} float32; output {y.shape}")
    if output:
        np.save(output, y)
        print(f"predictions saved to {output}")
    return 0


COMMANDS = {"tune": cmd_tune, "train": cmd_train, "evaluate": cmd_evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything can print: every URL password known, stdout and stderr masking them.
    secrets.hide_environment()
    for arg in argv if argv is not None else sys.argv[1:]:
        secrets.hide(arg, arg.partition("=")[2])  # --storage=URL, --set study.storage=URL
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = secrets.MaskedStream(sys.stdout), secrets.MaskedStream(sys.stderr)
    try:
        return _main(argv)
    except Exception as err:
        if _store_lost(err):  # a fault, not a bug: one line, as for bad input
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
            print(f"error: a store stopped answering mid-job ({type(err).__name__}: {first}); "
                  "run again once it is back: runs left open are ended FAILED then",
                  file=sys.stderr)
            return 1
        import traceback  # a bug: its traceback is shown, through the masking stream

        traceback.print_exc()
        return 1
    finally:
        sys.stdout, sys.stderr = streams


LOST_STORE = ("ConnectionError", "MaxRetryError", "NewConnectionError", "OperationalError",
              "ConnectionRefusedError", "ReadTimeout", "ConnectTimeout")
"""Exception type names (matched by name: the CLI imports neither requests nor SQLAlchemy)
that mean a tracking server or database went away during the job."""


def _store_lost(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it was raised from is a lost connection to a store;
    MLflow wraps them in MlflowException, whose text still names them."""
    seen = 0
    while err is not None and seen < 10:
        text = str(err)
        if type(err).__name__ in LOST_STORE or "Max retries exceeded" in text or \
                "Failed to establish a new connection" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what workers are started with
    # MLflow sets its own loggers to INFO when imported, which the loop below cannot undo.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow retries a failed HTTP request 7 times with exponential backoff and waits 120 s on
    # each: a tracking server that dies mid-job took minutes to report. Bounded here (a dead
    # server is reported within seconds, a hung one within about a minute); a user's own
    # settings win.
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "optuna", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # SIGTERM (a scheduler, `kill`, a container stop) unwinds like Ctrl-C: open runs end KILLED.
    # Both are honored at safe points only (pipeline/interrupts.py says why); evaluate has no
    # run to end and writes nothing, so Ctrl-C stops it at once, as usual.
    deferred = interrupts.deferred() if args.command != "evaluate" else contextlib.nullcontext()
    try:
        with deferred:
            return COMMANDS[args.command](args)
    except (ConfigError, UsageError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except workers.WorkerFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print("interrupted: open runs were ended as KILLED; run again to resume",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if str(err) == "SIGTERM" else signal.SIGINT)
