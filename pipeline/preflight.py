"""One validation pass before anything is written: the resolved config's cross-field rules and
every external name a command will use (store URLs and folders, registry names and aliases,
devices, files to read or write, model URIs). The config's own dataclasses check each field
(type, range, finiteness); what needs two fields, the file system, an installed package or
MLflow's naming rules is checked here, so that ``cli.py`` can run it for every command before
the first run, study, store file or model version exists.

Every failure is one ``PreflightError`` line that names the field (or flag) and the value.

    >>> from pipeline import preflight
    >>> preflight.check_config(cfg, "tune")                   # doctest: +SKIP

The size limits below are deliberate: they refuse what cannot fit in a machine's memory (or is
a typo, ``1e9`` for ``1e3``) up front, rather than letting the first trial that tries to
allocate it fail. Each is far above anything the studies need (documented in
``docs/inputs-and-faults.md``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline import storage
from pipeline.config import (
    MAX_SEED,
    TUTORIAL_POINTS,
    ExperimentConfig,
    load_config,
    resolve_path,
)
from pipeline.secrets import mask_url

MAX_ELEMENTS = 2**27
"""Most float32 values one tensor of a run may hold (512 MB): the training schedule (steps x
batch x seq_len points, drawn up front), a batch's activations (batch x seq_len x hidden x
layers) and an evaluation set's (n x seq_len x hidden). The default job's largest is 2**20."""
MAX_WINDOW = 100_000
"""Most points per window (data.seq_len, a test set's seq_len): backpropagation through time
keeps every step's state."""

URI_SCHEME_PACKAGES = {
    "s3": "boto3", "gs": "google.cloud.storage", "wasbs": "azure.storage.blob",
    "wasb": "azure.storage.blob", "abfss": "azure.storage.filedatalake", "hdfs": "pyarrow",
    "viewfs": "pyarrow", "sftp": "pysftp", "oss": "oss2", "dbfs": "databricks.sdk",
}
"""Artifact URI schemes MLflow reads through an optional package: a model URI naming one is
refused in one line when the package is missing, instead of an ImportError traceback."""


class PreflightError(ValueError):
    """Bad input found before any work: one line naming the field or flag and its value."""


def _fail(message: str) -> None:
    raise PreflightError(message)


# -- the config -------------------------------------------------------------------------------


def check_config(cfg: ExperimentConfig, command: str) -> None:
    """The cross-field rules of a resolved config, for ``command`` (tune, train, evaluate).

    Raises:
        PreflightError: the first rule broken, in one line.
    """
    check_sizes(cfg, command)
    check_device(cfg.train.device)
    if command == "tune":
        last = cfg.train.seed + cfg.report.seeds  # the report retrains with seeds up to this
        if last > MAX_SEED:
            _fail(f"train.seed + report.seeds = {last} exceeds the largest seed {MAX_SEED}")
        check_storage_target("study.storage", cfg.study.storage)
        check_tutorial_config(cfg)
        from pipeline.storage import lock_folder

        lock_folder()  # the workers' file locks: this user's own folder, or a clear refusal


def check_sizes(cfg: ExperimentConfig, command: str) -> None:
    """Refuses a config whose tensors cannot fit in memory (see MAX_ELEMENTS, MAX_WINDOW)."""
    d, t = cfg.data, cfg.train
    searched = cfg.study.space.get("model.hidden_size") if command == "tune" else None
    # A tune sizes its tensors for the widest hidden size it may try.
    hidden = int(searched.high) if searched else cfg.model.hidden_size
    where = "study.space.model.hidden_size.high" if searched else "model.hidden_size"
    seq_len = TUTORIAL_POINTS if d.protocol == "tutorial" else d.seq_len
    batch = 1 if d.protocol == "tutorial" else t.batch_size
    for name, spec_len in [("data.seq_len", d.seq_len),
                           *((f"data.tests {s.name}: seq_len", s.seq_len) for s in d.tests),
                           ("data.val: seq_len", d.val.seq_len)]:
        if spec_len > MAX_WINDOW:
            _fail(f"{name} = {spec_len} exceeds {MAX_WINDOW} points per window")
    products = [
        ("train.steps x train.batch_size x data.seq_len", t.steps * batch * seq_len),
        (f"train.batch_size x data.seq_len x {where} x model.num_layers",
         batch * seq_len * hidden * cfg.model.num_layers),
    ]
    for spec in (d.val, *d.tests):
        points = spec.n * (spec.seq_len or d.seq_len)
        products.append((f"eval set {spec.name}: n x seq_len x {where}", points * hidden))
    for what, value in products:
        if value > MAX_ELEMENTS:
            _fail(f"{what} = {value:,} values exceeds the limit of {MAX_ELEMENTS:,} "
                  "(a tensor of 512 MB): lower one of them")


def check_device(device: str) -> None:
    """``cuda`` asked for on a machine where torch sees none."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        _fail("train.device 'cuda' asked for, but torch sees no CUDA device")


def check_tutorial_config(cfg: ExperimentConfig) -> None:
    """The report's tutorial protocol must exist and load now, not after the whole study."""
    if not cfg.report.tutorial_config or cfg.report.tutorial_seeds == 0:
        return
    try:
        path = resolve_path(cfg.report.tutorial_config)
        found = path.is_file()
    except (OSError, ValueError) as err:  # a NUL byte, a folder this user may not enter
        _fail(f"report.tutorial_config {cfg.report.tutorial_config!r} is not usable: {err}")
    if not found:
        _fail(f"report.tutorial_config {cfg.report.tutorial_config!r} does not exist "
              f"(looked in the working directory and in {path.parent})")
    try:
        tcfg = load_config(path, {"train.device": cfg.train.device})
    except ValueError as err:
        _fail(f"report.tutorial_config does not load: {err}")
    check_sizes(tcfg, "train")


# -- stores -----------------------------------------------------------------------------------


def _sqlite_file(url: str) -> str | None:
    """The database file of a ``sqlite:`` URL; None for an in-memory database."""
    rest = url.partition(":")[2]
    path = rest.removeprefix("///") if rest.startswith("///") else ""
    path = path.split("?", 1)[0]
    return None if path in ("", ":memory:") else unquote(path)


def check_writable_file(field: str, path: str | os.PathLike) -> None:
    """A file the job will create or write: its folder must exist and take new files (the
    journal and WAL files of SQLite are created beside the database), and the file, where it
    exists, must be writable. Root passes ``os.access`` checks everywhere except read-only
    mounts, which is what a real write would find too."""
    try:
        _check_writable_file(field, Path(path).expanduser().absolute())
    except OSError as err:  # a folder on the way that this user may not enter, a bad name
        _fail(f"{field}: cannot use {path}: {err.strerror or err}")


def _check_writable_file(field: str, path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        _fail(f"{field}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path,
                                                                                   os.W_OK)):
        _fail(f"{field}: {path if path.exists() else folder} is not writable")
    if path.is_dir():
        _fail(f"{field}: {path} is a folder, not a file")


def check_storage_target(field: str, url: str) -> None:
    """A storage URL that names no database (``sqlite://``: in memory, gone when the process
    ends, invisible to other workers), or a file in a missing or read-only folder."""
    scheme = storage.scheme(url)
    if scheme == "sqlite":
        path = _sqlite_file(url)
        if path is None:
            _fail(f"{field} {mask_url(url)!r} names no database file "
                  "(an in-memory store keeps nothing): use sqlite:///path/to/file.db")
        check_writable_file(field, path)
    elif scheme == "journal":
        path = url.split(":", 1)[1].removeprefix("//")
        if not path:
            _fail(f"{field} {mask_url(url)!r} names no journal file: use journal:///path/file.log")
        check_writable_file(field, path)


def tracking_uri() -> str:
    """The tracking URI MLflow will use, read without importing MLflow: its environment
    variable, else MLflow 3's default, a SQLite database in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or "sqlite:///mlflow.db"


def check_tracking_target(uri: str | None = None) -> None:
    """A local tracking store (SQLite, a folder of files) that cannot be written is refused in
    one line here; MLflow would otherwise retry for minutes, warning each time. MLflow makes
    a SQLite store's missing folders itself: the nearest existing one must take them."""
    uri = uri or tracking_uri()
    try:
        _check_tracking_target(uri)
    except OSError as err:
        _fail(f"MLFLOW_TRACKING_URI: cannot use {mask_url(uri)}: {err.strerror or err}")


def _check_tracking_target(uri: str) -> None:
    scheme = storage.scheme(uri).lower() if ":" in uri else ""
    if scheme == "sqlite":
        path = _sqlite_file(uri)
        if path is None:
            _fail(f"MLFLOW_TRACKING_URI {mask_url(uri)!r} names no database file "
                  "(an in-memory store keeps nothing): use sqlite:///path/to/mlflow.db")
        target = Path(path).expanduser().absolute()
    elif scheme in ("", "file"):
        target = Path(unquote(urlsplit(uri).path) if scheme else uri).expanduser().absolute()
    else:
        return  # a server or a database: check_tracking_reachable asks it
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_file() and existing != target:
        _fail(f"MLFLOW_TRACKING_URI: {existing} is a file, not a folder")
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK) or (target.is_file()
                                                    and not os.access(target, os.W_OK)):
        _fail(f"MLFLOW_TRACKING_URI: {target if target.is_file() else folder} is not writable "
              f"(tracking store {mask_url(uri)})")


# -- files and URIs of evaluate ---------------------------------------------------------------


def check_plot_path(flag: str, path: str) -> None:
    """An image to write: a format matplotlib can write, in a folder that exists."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        _fail(f"{flag} {path!r}: unknown image format {suffix!r} "
              f"(valid: {', '.join(sorted(formats))})")
    check_writable_file(flag, path)


def check_model_uri(uri: str) -> None:
    """A model URI whose scheme needs a package that is not installed."""
    if not uri.strip():
        _fail("--model-uri is empty")
    scheme = urlsplit(uri).scheme.lower()
    package = URI_SCHEME_PACKAGES.get(scheme)
    if package and not _installed(package):
        _fail(f"--model-uri {mask_url(uri)!r}: the {scheme}:// scheme needs the package "
              f"{package.split('.')[0]!r}, which is not installed")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing
        return False
