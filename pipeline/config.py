"""Typed, frozen experiment configuration, loaded from YAML with dotted overrides.

An experiment file is a small diff over the defaults below: any key it leaves out keeps its
default, any key it names that does not exist is an error. Values are converted by the field's
declared type, because PyYAML reads ``1e-3`` as the string ``"1e-3"``.

    >>> from pipeline.config import load_config
    >>> cfg = load_config("experiments/smoke.yaml", {"train.lr": "3e-3"})

The search space of a study is data too: ``study.space`` maps dotted config paths to
distributions, and Optuna's parameter names are those paths, so a trial's params rebuild its
config with ``cfg.replace(trial.params)``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CELLS = ("rnn", "lstm", "gru")
PROTOCOLS = ("default", "tutorial")
DEVICES = ("auto", "cpu", "cuda")
GRAPH_MODES = ("auto", "on", "off")
SCHEDULES = ("constant", "cosine")
EVAL_KINDS = ("random", "tutorial")
SPACE_TYPES = ("float", "int")
TUTORIAL_POINTS = 10
"""Points per window of the tutorial's protocol (each spans [s*pi, (s+1)*pi])."""
MAX_HIDDEN = 4096
"""Largest hidden size accepted (model.hidden_size, the top of its study.space range): an LSTM this
wide already holds 134M weights (0.5 GB, three times that with Adam's state); wider is a typo
(``1e9``), refused up front rather than found by the first trial that cannot allocate it."""
MAX_LAYERS = 16
"""Most stacked recurrent layers accepted."""
MAX_SEED = 2**32 - 1
"""NumPy's seeds are unsigned 32-bit integers."""


class ConfigError(ValueError):
    """A configuration problem, with a one-line message that names it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_range(name: str, bounds: tuple[float, float], *, positive: bool = True) -> None:
    low, high = bounds
    _check(math.isfinite(low) and math.isfinite(high),
           f"{name} must be finite, got [{low}, {high}]")
    if positive:
        _check(low > 0 and high > 0, f"{name} must be positive, got [{low}, {high}]")
    _check(low <= high, f"{name} is reversed: low {low} > high {high}")


def _check_seed(name: str, seed: int) -> None:
    _check(0 <= seed <= MAX_SEED, f"{name} must be in [0, 2**32 - 1], got {seed}")


def _check_name(name: str, value: str) -> None:
    """A name that becomes part of run, study or model names: not empty, no surrounding blanks
    or control characters (MLflow and Optuna accept them, then show them as nothing)."""
    _check(bool(value.strip()), f"{name} is empty")
    _check(value == value.strip() and value.isprintable(),
           f"{name} has blanks around it or control characters: {value!r}")


@dataclass(frozen=True)
class EvalSetConfig:
    """One held-out set of windows, drawn once from its own seed."""

    name: str
    """Metric namespace: scores are logged as ``test/<name>/mse``."""
    kind: str = "random"
    """``random``: independent windows at random phases, each from a fresh hidden state;
    ``tutorial``: the tutorial's consecutive windows over [s*pi, (s+1)*pi], state carried."""
    n: int = 256
    """Number of windows."""
    seq_len: int = 0
    """Points per window; 0 means the training window length."""
    spacing: tuple[float, float] = (0.0, 0.0)
    """Range of the time step between points; (0, 0) means the training range."""
    frequency: tuple[float, float] = (0.0, 0.0)
    """Range of the angular frequency; (0, 0) means the training range."""
    start: int = 0
    """For ``tutorial`` sets: index s of the first window (the tutorial trains on s = 0..59)."""

    def __post_init__(self) -> None:
        _check(re.fullmatch(r"[A-Za-z0-9_.\-]+", self.name) is not None,
               f"eval set name {self.name!r} invalid: it names metrics (test/<name>/mse), so "
               "letters, digits, _ - . only")
        _check(self.kind in EVAL_KINDS, f"eval set {self.name}: unknown kind {self.kind!r} "
               f"(valid: {', '.join(EVAL_KINDS)})")
        _check(self.n > 0, f"eval set {self.name}: n must be positive, got {self.n}")
        _check(self.seq_len >= 0, f"eval set {self.name}: seq_len must be >= 0")
        _check(self.start >= 0, f"eval set {self.name}: start must be >= 0, got {self.start}")
        for name in ("spacing", "frequency"):
            bounds = getattr(self, name)
            if bounds != (0.0, 0.0):
                _check_range(f"eval set {self.name}: {name}", bounds)


@dataclass(frozen=True)
class DataConfig:
    """How windows of sin (input) and cos (target) are made."""

    protocol: str = "default"
    """``default``: random-phase windows in batches, stateless; ``tutorial``: the seed's 60
    consecutive windows over [s*pi, (s+1)*pi], batch 1, hidden state carried between them."""
    seq_len: int = 20
    """Points per training window (the tutorial uses 10)."""
    spacing: tuple[float, float] = (0.1, 0.4)
    """Training range of the time step between consecutive points."""
    frequency: tuple[float, float] = (0.5, 1.5)
    """Training range of the angular frequency. Only the product frequency * spacing, the phase
    step between points, reaches the model, so both ranges together set what it must handle."""
    warmup: int = 2
    """Leading points of each window left out of the loss and every metric: the points before
    the first knowable one. cos t is not a function of one sin value; with the phase step d
    unknown, three consecutive values s0, s1, s2 fix it at the third (2 cos d = (s0 + s2) / s1,
    then cos t2 = (s2 cos d - s1) / sin d), so points 0 and 1 are left out and point 2 is the
    first scored. 0 scores every point, as the tutorial does."""
    val: EvalSetConfig = EvalSetConfig(name="val", n=256)
    """The validation set: model selection and pruning look at it only."""
    tests: tuple[EvalSetConfig, ...] = (
        EvalSetConfig(name="in_dist", n=512),
        EvalSetConfig(name="wide_step", n=512, spacing=(0.4, 0.6)),
        EvalSetConfig(name="long", n=128, seq_len=100),
        EvalSetConfig(name="tutorial", kind="tutorial", n=20, start=60),
    )
    """Held-out test sets, scored once for each study's best model."""
    seed: int = 0
    """Seed of every data set; the validation and test sets derive their own from it."""

    def __post_init__(self) -> None:
        _check(self.protocol in PROTOCOLS,
               f"unknown data.protocol {self.protocol!r} (valid: {', '.join(PROTOCOLS)})")
        _check(self.seq_len > 0, f"data.seq_len must be positive, got {self.seq_len}")
        _check_range("data.spacing", self.spacing)
        _check_range("data.frequency", self.frequency)
        _check(0 <= self.warmup < self.seq_len,
               f"data.warmup must be in [0, seq_len), got {self.warmup}")
        _check(len(self.tests) > 0, "data.tests is empty: the studies' best models are scored "
               "on the test sets, so at least one is needed")
        names = [t.name for t in self.tests]
        _check(len(set(names)) == len(names), f"data.tests names repeat: {names}")
        _check_seed("data.seed", self.seed)
        for where, spec in [("data.val", self.val), *(("data.tests", t) for t in self.tests)]:
            # A set whose points all fall in the warm-up scores nothing: NaN metrics, exit 0.
            points = self.scored_points(spec)
            _check(points > self.warmup, f"{where}: set {spec.name!r} has {points} points per "
                   f"window, not more than data.warmup = {self.warmup}: nothing would be scored")

    def scored_points(self, spec: EvalSetConfig) -> int:
        """Points of the longest stretch a set's warm-up applies to: one window of a stateless
        set, all of a tutorial set's consecutive windows (its state is carried)."""
        if spec.kind == "tutorial":
            return spec.n * TUTORIAL_POINTS
        return spec.seq_len or self.seq_len


@dataclass(frozen=True)
class ModelConfig:
    """The sequence regressor: one recurrent cell and a linear head."""

    cell: str = "lstm"
    """Recurrent cell: rnn, lstm or gru."""
    hidden_size: int = 32
    """Width of the hidden state."""
    num_layers: int = 1
    """Stacked recurrent layers."""

    def __post_init__(self) -> None:
        _check(self.cell in CELLS, f"unknown cell {self.cell!r} (valid: {', '.join(CELLS)})")
        _check(self.hidden_size > 0, f"model.hidden_size must be positive, got {self.hidden_size}")
        _check(self.num_layers > 0, f"model.num_layers must be positive, got {self.num_layers}")
        _check(self.hidden_size <= MAX_HIDDEN,
               f"model.hidden_size must be at most {MAX_HIDDEN}, got {self.hidden_size}")
        _check(self.num_layers <= MAX_LAYERS,
               f"model.num_layers must be at most {MAX_LAYERS}, got {self.num_layers}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run."""

    lr: float = 0.01
    """Adam's learning rate."""
    steps: int = 400
    """Optimizer steps (for the tutorial protocol: windows, one per step)."""
    batch_size: int = 64
    """Windows per step (the tutorial protocol always uses 1)."""
    eval_every: int = 25
    """Steps between validation passes; also the pruner's reporting interval."""
    schedule: str = "constant"
    """Learning-rate schedule over ``steps``: ``constant`` keeps ``lr``; ``cosine`` decays it
    from ``lr`` to 0 along half a cosine (torch's ``CosineAnnealingLR``), after the warm-up."""
    lr_warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from lr/100 to ``lr`` before the schedule (torch's
    ``LinearLR``); 0 for none. Not ``data.warmup``, which counts points of a window."""
    grad_clip: float = 1.0
    """Max gradient norm: recurrent nets explode now and then, and one bad step should not
    waste a trial. 0 disables clipping."""
    seed: int = 0
    """Seed of the weights; the same for every trial, so trials differ only by their params."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 1
    """Torch CPU threads per process: at these sizes one is as fast as two."""
    cuda_graph: str = "auto"
    """Capture the training step in a CUDA graph: ``auto`` on CUDA with the default protocol
    (eager elsewhere, and if capture fails), ``on`` (an error where it cannot), ``off``. At
    these sizes a GPU waits on kernel launches, which a graph replays in one."""

    def __post_init__(self) -> None:
        _check(math.isfinite(self.lr) and self.lr > 0, f"train.lr must be positive, got {self.lr}")
        _check(self.steps > 0, f"train.steps must be positive, got {self.steps}")
        _check(self.batch_size > 0, f"train.batch_size must be positive, got {self.batch_size}")
        _check(self.eval_every > 0, f"train.eval_every must be positive, got {self.eval_every}")
        _check(self.schedule in SCHEDULES, f"unknown train.schedule {self.schedule!r} "
               f"(valid: {', '.join(SCHEDULES)})")
        _check(0 <= self.lr_warmup_steps < self.steps,
               f"train.lr_warmup_steps must be in [0, steps), got {self.lr_warmup_steps}")
        _check(self.grad_clip >= 0, f"train.grad_clip must be >= 0, got {self.grad_clip}")
        _check_seed("train.seed", self.seed)
        _check(self.device in DEVICES,
               f"unknown train.device {self.device!r} (valid: {', '.join(DEVICES)})")
        _check(self.threads > 0, f"train.threads must be positive, got {self.threads}")
        _check(self.cuda_graph in GRAPH_MODES, f"unknown train.cuda_graph {self.cuda_graph!r} "
               f"(valid: {', '.join(GRAPH_MODES)})")


@dataclass(frozen=True)
class Distribution:
    """The range one config field is searched over (one entry of ``study.space``)."""

    low: float
    """Lowest value tried."""
    high: float
    """Highest value tried."""
    log: bool = False
    """Sample on a log scale (for scales such as the learning rate or a width)."""
    type: str = "float"
    """``float`` or ``int``: the type of the config field it sets."""

    def __post_init__(self) -> None:
        _check(self.type in SPACE_TYPES,
               f"unknown type {self.type!r} (valid: {', '.join(SPACE_TYPES)})")
        _check(math.isfinite(self.low) and math.isfinite(self.high),
               f"bounds must be finite, got [{self.low}, {self.high}]")
        _check(not self.log or self.low > 0,
               f"a log range must be positive, got [{self.low}, {self.high}]")
        _check(self.low <= self.high, f"range is reversed: low {self.low} > high {self.high}")
        if self.type == "int":
            _check(float(self.low).is_integer() and float(self.high).is_integer(),
                   f"int bounds must be whole numbers, got [{self.low}, {self.high}]")
            # Logged and shown as 8, not 8.0, however the file wrote them.
            object.__setattr__(self, "low", int(self.low))
            object.__setattr__(self, "high", int(self.high))


DEFAULT_SPACE = {
    "model.hidden_size": Distribution(8, 128, log=True, type="int"),
    "train.lr": Distribution(1e-3, 3e-2, log=True),
}


@dataclass(frozen=True)
class StudyConfig:
    """The per-cell Optuna studies: cells are the scientific parameter, hidden size and learning
    rate the nuisance parameters tuned away inside each study."""

    cells: tuple[str, ...] = CELLS
    """Cells to study, one study each."""
    n_trials: int = 20
    """Total trials per study (a resumed study runs only the missing ones)."""
    name: str = "sin2cos"
    """Study name prefix: the study of a cell is named ``<name>-<cell>``."""
    storage: str = "sqlite:///optuna.db"
    """Optuna storage URL, shared by all workers of a study."""
    space: dict[str, Distribution] = field(default_factory=lambda: dict(DEFAULT_SPACE))
    """The nuisance parameters: dotted config path -> the range it is searched over. The path
    is also the Optuna param's, the trial run's MLflow param's and the report's name for it."""
    sampler_seed: int = 0
    """Seed of the TPE sampler; trial n draws from (seed, n), so that workers sharing a study
    draw configurations of their own."""
    pruner_startup_trials: int = 5
    """Trials that run to the end before the median pruner may stop any."""
    pruner_warmup_steps: int = 100
    """Steps of each trial before it may be pruned."""
    report_every: int = 0
    """Steps between a trial's reports of its best-so-far to Optuna (what the pruner and
    optuna-dashboard read), a multiple of ``train.eval_every``; 0 reports every validation.
    Each report is a storage commit (9 ms each on the H200 host's sandboxed disk, 60 a
    default trial at every validation): MLflow still gets every validation."""
    heartbeat_interval: int = 30
    """Seconds between a running trial's heartbeats in a database storage."""
    grace_period: int = 120
    """Seconds without a heartbeat after which a RUNNING trial counts as lost (its worker died)
    and is failed, so the study goes on without it."""

    def __post_init__(self) -> None:
        _check(len(self.cells) > 0, "study.cells is empty")
        for cell in self.cells:
            _check(cell in CELLS, f"unknown cell {cell!r} in study.cells "
                   f"(valid: {', '.join(CELLS)})")
        _check(len(set(self.cells)) == len(self.cells), f"study.cells repeat: {self.cells}")
        _check(self.n_trials > 0, f"n_trials must be positive, got {self.n_trials}")
        _check_name("study.name", self.name)
        _check(bool(self.storage.strip()), "study.storage is empty")
        _check(len(self.space) > 0, "study.space is empty")
        width = self.space.get("model.hidden_size")
        if width is not None:  # a typo (1e9) is refused here, not by the trial it cannot fit
            _check(width.high <= MAX_HIDDEN, f"study.space.model.hidden_size must stay within "
                   f"[1, {MAX_HIDDEN}], got [{width.low}, {width.high}]")
        _check_seed("study.sampler_seed", self.sampler_seed)
        _check(self.pruner_startup_trials >= 0, "study.pruner_startup_trials must be >= 0, "
               f"got {self.pruner_startup_trials}")
        _check(self.pruner_warmup_steps >= 0, "study.pruner_warmup_steps must be >= 0, "
               f"got {self.pruner_warmup_steps}")
        _check(self.report_every >= 0, "study.report_every must be >= 0, "
               f"got {self.report_every}")
        _check(self.heartbeat_interval > 0, "study.heartbeat_interval must be positive")
        _check(self.grace_period > self.heartbeat_interval,
               "study.grace_period must exceed study.heartbeat_interval")


@dataclass(frozen=True)
class TrackingConfig:
    """Where and how runs and models are recorded."""

    experiment: str = "sin2cos"
    """MLflow experiment (ignored under ``mlflow run``, which picks the experiment itself)."""
    registry_prefix: str = "sin2cos"
    """Registered models are named ``<prefix>-<cell>``."""
    alias: str = "champion"
    """Alias that points at each cell's best version."""
    plot_windows: int = 4
    """Held-out windows drawn in each prediction plot."""

    def registry_name(self, cell: str) -> str:
        """The registered model of ``cell``: ``<registry_prefix>-<cell>``."""
        return f"{self.registry_prefix}-{cell}"

    def __post_init__(self) -> None:
        _check_name("tracking.experiment", self.experiment)
        _check_name("tracking.registry_prefix", self.registry_prefix)
        _check_name("tracking.alias", self.alias)
        _check(self.plot_windows > 0, "tracking.plot_windows must be positive")


@dataclass(frozen=True)
class ReportConfig:
    """What the job reports once its studies are done (``pipeline/report.py``)."""

    seeds: int = 5
    """Weight seeds (train.seed + 1, + 2, ...) each cell's champion configuration is retrained
    with; test MSE is reported as their mean and 95% interval."""
    tutorial_config: str = "experiments/tutorial.yaml"
    """The tutorial's protocol, where the cliff metric and the blog's claims are measured; a
    relative path is looked up in the working directory, then in the repository. Empty skips."""
    tutorial_seeds: int = 10
    """Seeds of each cell at the tutorial's protocol (0 skips it)."""
    edge: float = 0.1
    """Share of each log-scaled search range, at either end, where a best trial is on the edge."""

    def __post_init__(self) -> None:
        _check(self.seeds > 0, f"report.seeds must be positive, got {self.seeds}")
        _check(self.tutorial_seeds >= 0, f"report.tutorial_seeds must be >= 0, "
               f"got {self.tutorial_seeds}")
        _check(0 <= self.edge < 0.5, f"report.edge must be in [0, 0.5), got {self.edge}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one job needs; ``experiments/*.yaml`` are diffs over these defaults."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        for path, dist in self.study.space.items():
            _check_searchable(path, dist)
            self._check_bounds(path, dist)
        # Reports can only happen where training validates, and every trial must report at the
        # same steps: the median pruner compares trials step by step.
        _check(self.study.report_every % self.train.eval_every == 0,
               f"study.report_every ({self.study.report_every}) must be a multiple of "
               f"train.eval_every ({self.train.eval_every})")

    def _check_bounds(self, path: str, dist: Distribution) -> None:
        """Both ends of a searched range must be values the field itself accepts (an lr of -1
        would otherwise fail the first trial that draws it, after the stores were made): each
        is set into the field's section, whose own checks judge it."""
        *parents, name = path.split(".")
        section: Any = self
        for part in parents:
            section = getattr(section, part)
        for bound in (dist.low, dist.high):
            value = int(bound) if dist.type == "int" else bound
            try:
                dataclasses.replace(section, **{name: value})
            except ConfigError as err:
                raise ConfigError(f"study.space.{path}: {value} is outside what the field "
                                  f"accepts ({err})") from None

    def replace(self, overrides: dict[str, Any]) -> ExperimentConfig:
        """Returns a copy with dotted keys (``train.lr``) set, converted by field type.

        Args:
            overrides: dotted key -> value (strings are parsed as the field's type).
        """
        tree = to_dict(self)
        for key, value in overrides.items():
            _set_dotted(tree, key, value)
        return _build(ExperimentConfig, tree, "")


def _check_searchable(path: str, dist: Distribution) -> None:
    """A search-space path must name a numeric field of the config, of the distribution's type;
    the cell is the scientific parameter (one study each), never a searched one."""
    _check(path != "model.cell", "study.space cannot search model.cell: the cell is the "
           "scientific parameter, one study each (set study.cells)")
    cls: Any = ExperimentConfig
    for part in path.split("."):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        _check(part in hints, f"study.space.{path}: no such config field")
        cls = hints[part]
    _check(cls in (int, float), f"study.space.{path}: not a numeric field")
    _check(cls is float or dist.type == "int",
           f"study.space.{path}: an int field, give it type: int")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (the inverse of loading)."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """The config as ``{"train.lr": 0.01, ...}``, for MLflow params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        elif isinstance(node, list | tuple) and node and isinstance(node[0], dict):
            for item in node:
                walk(f"{prefix}.{item['name']}", {k: v for k, v in item.items() if k != "name"})
        else:
            out[prefix] = list(node) if isinstance(node, tuple) else node

    walk("", to_dict(cfg))
    return out


REPO = Path(__file__).resolve().parents[1]
"""The repository root: relative config paths are also looked up there."""


def resolve_path(path: str) -> Path:
    """``path`` as given if it exists, else relative to the repository (the report's
    ``report.tutorial_config``)."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else REPO / given


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Loads an experiment file over the defaults, then applies dotted overrides.

    Args:
        path: a YAML file whose top-level keys are sections of ExperimentConfig.
        overrides: dotted key -> value, applied after the file.

    Raises:
        ConfigError: missing or malformed file, unknown key, or a value of the wrong type.
    """
    import yaml  # only the loaders need it; `--help` does not

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader()) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:  # unreadable: permissions, a folder's race
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except _DuplicateKey as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: malformed YAML{where}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        cfg = _build(ExperimentConfig, tree, "")
        return cfg.replace(overrides or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _unique_key_loader() -> type:
    """PyYAML's safe loader, except that a key given twice in one mapping (at any depth) is an
    error: the plain loader keeps the last and silently drops the first."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: set[str] = set()
            for key_node, _ in node.value:
                key = repr(self.construct_object(key_node, deep=True))
                if key in seen:
                    raise _DuplicateKey(f"key {key} given twice "
                                        f"(line {key_node.start_mark.line + 1})")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


class _DuplicateKey(ConfigError):
    pass


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Sets ``key`` in ``tree``; a key of ``study.space`` holds dots itself (``train.lr``), so
    the longest part of the rest that names a key is taken at each level."""
    parts = key.split(".")
    node: Any = tree
    while parts:
        if not isinstance(node, dict):
            raise ConfigError(f"unknown key {key!r}")
        n = next((n for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in node), 0)
        if n == 0:
            raise ConfigError(f"unknown key {key!r}")
        name, parts = ".".join(parts[:n]), parts[n:]
        if not parts:
            # A section takes a mapping (a space entry is checked as a Distribution instead).
            if (isinstance(node[name], dict) and not isinstance(value, dict)
                    and not key.startswith("study.space.")):
                fields = ", ".join(f"{key}.{field}" for field in node[name])
                raise ConfigError(f"{key} is a section, not a field: set one of {fields}")
            node[name] = value
        node = node[name]


def _build(cls: type, tree: Any, prefix: str) -> Any:
    """Builds dataclass ``cls`` from a mapping, converting each value by its field's type."""
    if isinstance(tree, cls):
        return tree
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {tree!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - fields)
    if unknown:
        where = f"{prefix}." if prefix else ""
        valid = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {where}{unknown[0]!r} (valid: {valid})")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in tree
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix or 'config'} needs {', '.join(missing)}")
    kwargs = {name: _convert(hints[name], value, f"{prefix}.{name}" if prefix else name)
              for name, value in tree.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        # An eval set's own checks cannot know where it sits (data.val, data.tests): say it.
        if prefix and not str(err).startswith(prefix.split(".")[0]):
            raise ConfigError(f"{prefix}: {err}") from None
        raise


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is dict:
        # Only study.space: dotted path -> distribution. A null entry is dropped, so
        # `--set study.space.train.lr=null` fixes a field that the file searches.
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        item = typing.get_args(tp)[1]
        out = {}
        for name, entry in value.items():
            if entry is not None:
                try:
                    out[str(name)] = _convert(item, entry, f"{key}.{name}")
                except ConfigError as err:
                    message = str(err)
                    where = f"{key}.{name}"
                    raise ConfigError(message if message.startswith(where)
                                      else f"{where}: {message}") from None
        return out
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {list(value)!r}")
        return tuple(_convert(a, v, key) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value) if tp is float else _to_int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be {tp.__name__}, got {value!r}") from None
        # NaN passes every `x > 0` check by failing it silently, inf every upper bound: no
        # field of ours means anything non-finite, so it is refused here, for all of them.
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - our own schema


def _to_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        number = float(value)
        if number.is_integer():
            return int(number)
    raise ValueError(value)
