"""``tune --workers N|auto``: one command, N worker processes sharing the cells' studies.

The parent (``cli.cmd_tune``) validates the input, starts N ``python -m pipeline -q tune ...
--workers 1`` processes (``Pool``) and creates both stores once (Optuna's tables and studies,
MLflow's schema, experiment and job run) while they import; only then are they let go (the job
run's id on their stdin), each walking the cells from a different one, so trials of all three
cells run at once. While they run, the parent shows one progress display (read from the Optuna
storage: workers run quiet), forwards SIGINT/SIGTERM to them, and stops them all if one fails;
once they are done it writes the job report, once, and prints it.

    python -m pipeline tune --config experiments/default.yaml --workers auto

``--trials-at-once K`` runs K such workers as threads inside each process (``run_in_threads``):
thread t of process p is worker ``p * K + t``, so the cells, the claims and the report's
shares work out as for K times as many processes, without their start-up.

Imports neither MLflow nor Optuna: the display reads the studies, and a waiting worker warms
up, through callables handed in by the caller.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline import interrupts

if TYPE_CHECKING:
    from pipeline.config import ExperimentConfig

AUTO = "auto"
WORKER_FLAG = "--worker-index"
"""Hidden flag the parent gives each worker: its index (which cell it starts at) and the sign
that a parent owns the job run, the display and the report."""
COUNT_FLAG = "--worker-count"
"""Hidden flag: how many workers there are (each trains its share of the report's runs)."""
CUDA_WORKERS_PER_GPU = 8
"""Workers per CUDA card for ``auto``. A default trial's graphed step is ~0.1 ms of the card,
so a lone process leaves it idle while it does its bookkeeping (store writes, figures,
checkpoint); several processes overlap one's bookkeeping with the others' training. Measured
on an H200 host (16 cores, default main job, fresh stores, ``bench/gpu_speed.py``): 4 workers
55.5 and 55.9 s (its 60 trials in 25.4 s), 8 workers 52.3 s (21.4 s); 1 worker over 150 s."""
STEPS_PER_CPU_WORKER = 10_000
"""Training steps a job must hold for each CPU worker ``auto`` starts, unless its runs call for
more (``RUNS_PER_CPU_WORKER``): a worker's own start-up (imports, the first optimizer, its
studies' wrap-up) costs about 6-8 s of a core, and where the trials train enough to keep a
thread busy, a second trial at once in the same process (``WINDOWS_PER_CPU_THREAD``) uses the
second core without it. Measured on the idle 2-core machine (``bench/crossover.py``, 10 lstm
trials at batch 64, 3 interleaved rounds, 2026-12-03): two threads beat two processes in jobs
of 1 650-13 200 steps (1.24-1.56x against one trial at a time, processes 1.08-1.49x), and two
processes win from about 26 400 (1.70x against 1.61x); the main job (180 000 steps) runs
2 x 1."""
RUNS_PER_CPU_WORKER = 15
"""Tracked runs a job must hold for each CPU worker ``auto`` starts, whatever their steps:
every run pays the same bookkeeping (about half a second on one core: its run, metrics,
figure, checkpoints), which only a process of its own takes off the first one's interpreter.
Measured on the idle 2-core machine (``bench/crossover.py``, 3 interleaved rounds,
2026-12-03), two processes against one: the tutorial config's 75 short runs 1.24x, 1.29x and
1.10x (three sessions), 45 of them 1.34x, 30 of them 1.07x; the smoke job's 21 runs 0.80x,
0.80x and 0.72x: a second worker from 30 runs on. Between 21 and 45 runs the VM's noise
(+-20 % from one job to the next) decides: 25 runs of 300 batch-1 steps gave 0.92x in one
session and 1.26x in the next."""
WINDOWS_PER_CPU_THREAD = 48_000
"""Windows a job must train (steps x batch size, ``job_windows``) for each trial at once
``auto`` gives a CPU worker: a thread has no start-up of its own, but threads share one
interpreter, so a second one pays only where a step is mostly torch's kernels (which let the
interpreter go), and short trials' bookkeeping only queues on it. The batch says which: bare
training steps of a hidden-32 lstm in two threads against one (``bench/crossover.py
--bare-threads``, median of 7 rounds) ran 1.27x at batch 1, 1.18x at batch 16, 1.47x at
batch 64 (1.78x at hidden 96; single rounds 0.96-1.36x at batch 1, 1.17-1.66x at batch 64).
Measured on the idle 2-core machine (``bench/crossover.py``, 3 interleaved rounds,
2026-12-03), one process with two trials at once against one: 10 lstm trials at batch 64 in
550 steps 1.11x (not in every round), in 1 100 steps 1.07x (not in every round), in 1 650
steps (105 600 windows) 1.24x and 1.31x (two sessions), in 3 300 steps 1.27x; at batch 1,
the tutorial config (2 700 windows) 0.89x, 0.95x and 0.84x, 25 runs of 300 steps (4 500)
0.88x and 1.07x; at batch 16, the smoke job (7 200) 0.83x and 0.71x."""
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60.0
"""How long stopped workers get to end their runs before they are killed."""


class WorkerFailed(RuntimeError):
    """A worker exited with an error; the message is its last line of output."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_count(text: str, flag: str = "--workers") -> str | int:
    """``auto`` or a positive integer, as given to ``flag`` (``--workers``,
    ``--trials-at-once``).

    Raises:
        ValueError: with a one-line message.
    """
    text = text.strip().lower()
    if text in ("", AUTO):
        return AUTO
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{flag} takes 'auto' or a positive integer, got {text!r}")
    return n


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(spec: str | int, device: str, threads: int, gpus: int = 0,
                    load: float | None = None, job_steps: int | None = None,
                    job_runs: int | None = None) -> int:
    """How many workers ``--workers`` means here.

    Args:
        spec: ``auto`` or a number.
        device: the resolved training device (``cpu`` or ``cuda``).
        threads: torch threads per worker (``train.threads``).
        gpus: CUDA cards visible.
        load: how many cores are busy; sampled now (``busy_cores``) when None.
        job_steps: the training steps the job holds (``job_steps``).
        job_runs: the tracked runs the job holds (``job_runs``). With neither, no limit.

    Returns:
        ``spec`` itself when a number. For ``auto`` on a CPU, one worker per ``threads`` idle
        cores (cores minus the busy ones, at least one): every worker pays its own start-up
        (imports, the first optimizer) again, which is only won back on a core nobody else is
        using.
        Measured on 2 cores with the neighbours at load 2-4: the issue's 10-trial job took
        31-35 s with one worker, 47-49 s with two. And no more than the job's size pays for:
        one per ``STEPS_PER_CPU_WORKER`` steps or per ``RUNS_PER_CPU_WORKER`` runs, whichever
        allows more. On CUDA, ``CUDA_WORKERS_PER_GPU`` per card, never more than there are
        cores.
    """
    if spec != AUTO:
        return int(spec)
    cores = usable_cores()
    if device == "cuda":
        return max(1, min(cores, CUDA_WORKERS_PER_GPU * max(1, gpus)))
    load = busy_cores() if load is None else load
    idle = int(cores - load + 0.5)  # rounded: a core 60% busy is not taken
    n = min(idle, cores) // max(1, threads)
    if job_steps is not None or job_runs is not None:
        n = min(n, max((job_steps or 0) // STEPS_PER_CPU_WORKER,
                       (job_runs or 0) // RUNS_PER_CPU_WORKER))
    return max(1, n)


def resolve_trials_at_once(spec: str | int, device: str, threads: int, workers: int,
                           n_trials: int, load: float, job_windows: int | None = None) -> int:
    """How many trials each worker process trains at once (``--trials-at-once``), each in a
    thread of its own.

    Args:
        spec: ``auto`` or a number.
        device: the resolved training device (``cpu`` or ``cuda``).
        threads: torch threads per trial (``train.threads``).
        workers: worker processes (``resolve_workers``).
        n_trials: trials per study.
        load: how many cores are busy (``busy_cores``), sampled when the workers were counted.
        job_windows: the windows the job trains (``job_windows``); no limit when None.

    Returns:
        ``spec`` itself when a number. For ``auto`` on a CPU, the idle cores the worker
        processes leave, shared among them (at least one trial each, at most ``n_trials``),
        and no more than one per ``WINDOWS_PER_CPU_THREAD`` windows of the job in all: a thread
        costs no start-up of its own (no imports, no store to open, no second optimizer
        warm-up), so it pays where a second process does not, if the trials are long enough
        to train side by side. On CUDA, 1: several trials on one card, each on its own
        stream, are not measured yet.
    """
    if spec != AUTO:
        return int(spec)
    if device == "cuda":
        return 1
    idle = int(usable_cores() - load + 0.5)
    share = min(idle // max(1, threads) // max(1, workers), n_trials)
    if job_windows is not None:
        share = min(share, job_windows // WINDOWS_PER_CPU_THREAD // max(1, workers))
    return max(1, share)


def run_in_threads(work: Callable[[int], Any], count: int) -> list[Any]:
    """Runs ``work(0)`` ... ``work(count - 1)`` at once, each in a thread of its own, and
    returns their results in that order.

    The calling thread only waits: signal handlers run there, and a pending signal reaches
    the threads at their next safe point (``interrupts.check``), where their open runs end
    KILLED. If one thread fails, the others are told to stop the same way, and its error is
    raised here once they have.

    Raises:
        BaseException: the first thread's error that was not a stop (else that stop).
    """
    results: list[Any] = [None] * count
    errors: list[BaseException | None] = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            errors[i] = err
            if not isinstance(err, KeyboardInterrupt):
                interrupts.stop()  # the others stop at their next safe point

    threads = [threading.Thread(target=run, args=(i,), name=f"trials-{i}")
               for i in range(count)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(POLL_SECONDS)
    except KeyboardInterrupt:
        # A second signal: the threads got the first and stop at their next safe point;
        # leaving before they have would leave their runs RUNNING.
        for t in threads:
            t.join(STOP_GRACE_SECONDS)
        raise
    finally:
        interrupts.resume()  # a failed thread's stop was for its siblings only
    failed = [e for e in errors if e is not None]
    if failed:
        raise next((e for e in failed if not isinstance(e, KeyboardInterrupt)), failed[0])
    return results


def job_steps(n_trials: int, cells: int, steps: int, seeds: int) -> int:
    """The training steps of a job at most (no trial pruned): every trial of every cell's
    study, and the report's seed retrains, which the workers share too."""
    return (n_trials + seeds) * cells * steps


def job_runs(n_trials: int, cells: int, seeds: int, tutorial_seeds: int) -> int:
    """The tracked training runs of a job at most: every trial, the report's seed retrains and
    its tutorial replays, of every cell. Each pays the same bookkeeping (its run, stepped
    metrics, a figure, checkpoints), however few steps it trains."""
    return (n_trials + seeds + tutorial_seeds) * cells


def job_windows(steps: int, batch_size: int) -> int:
    """The windows (sequences) a job trains at most: its steps (``job_steps``) times the batch.
    What a step costs in torch's kernels, which threads run side by side, grows with it."""
    return steps * batch_size


class JobSize(NamedTuple):
    """What ``auto`` sizes a job by: ``job_steps``, ``job_runs`` and ``job_windows``."""

    steps: int
    runs: int
    windows: int


def job_size(cfg: ExperimentConfig) -> JobSize:
    """The size of ``tune``'s job for ``cfg``: its studies, the report's seed retrains and
    its tutorial replays (none without ``report.tutorial_config``, as the report runs them)."""
    cells, seeds = len(cfg.study.cells), cfg.report.seeds
    steps = job_steps(cfg.study.n_trials, cells, cfg.train.steps, seeds)
    tutorial_seeds = cfg.report.tutorial_seeds if cfg.report.tutorial_config else 0
    return JobSize(steps, job_runs(cfg.study.n_trials, cells, seeds, tutorial_seeds),
                   job_windows(steps, cfg.train.batch_size))


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """The machine's CPU time so far (``/proc/stat``, in clock ticks), and this process's own
    (seconds), at one moment: ``busy_cores`` measures from one to now."""

    idle: int
    total: int
    own: float
    at: float


def cpu_sample() -> CpuSample | None:
    """The CPU times now; None where there is no ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    own = os.times()
    # idle + iowait, and all but guest time (already counted in user time)
    return CpuSample(sum(fields[3:5]), sum(fields[:8]), own.user + own.system,
                     time.monotonic())


def busy_cores(since: CpuSample | None = None, sample_seconds: float = 0.3) -> float:
    """How many cores other processes keep busy: the share of CPU time not idle, less this
    process's own, times the cores. Not the 1-minute load average, which still counts the
    command that ended a moment ago: measured, ``bench/run.py`` (one process at a time on 2
    cores) kept it at 1.0, so ``auto`` chose one worker for every job it timed. Where there is
    no ``/proc/stat``, the load average.

    Args:
        since: where the span starts; ``tune`` samples as it starts, so that its own imports
            (seconds) are the span and nothing waits. None, or a span shorter than
            ``sample_seconds``, waits out the rest (a sleep of 0.3 s was on every ``auto``
            command's path).
        sample_seconds: the shortest span measured.
    """
    first = since or cpu_sample()
    if first is not None:
        time.sleep(max(0.0, sample_seconds - (time.monotonic() - first.at)))
    last = cpu_sample()
    if first is None or last is None or last.total <= first.total:
        return os.getloadavg()[0]
    ticks = last.total - first.total
    own = (last.own - first.own) * os.sysconf("SC_CLK_TCK")
    others = max(0.0, ticks - (last.idle - first.idle) - own)
    return others / ticks * (os.cpu_count() or 1)


def worker_argv(argv: Sequence[str], index: int, at_once: int = 1) -> list[str]:
    """The command line of worker ``index``: the parent's own, quiet, as one worker that
    trains ``at_once`` trials at once (the parent's count: ``auto`` would count again, on
    cores its siblings are starting on)."""
    return [sys.executable, "-m", "pipeline", "-q", *argv, "--workers", "1",
            "--trials-at-once", str(at_once), WORKER_FLAG, str(index)]


def rotated(cells: Sequence[str], index: int | None) -> list[str]:
    """The cells in the order worker ``index`` walks them: starting at a different cell per
    worker, so that N workers spread over the studies instead of queuing on the first."""
    if not index:
        return list(cells)
    k = index % len(cells)
    return [*cells[k:], *cells[:k]]


class Progress:
    """One progress display for the whole job, read from the Optuna storage: on a terminal one
    line redrawn in place, elsewhere a line each time a count changes (logs stay readable).

    Args:
        count: returns finished trials per study (name -> count) when called.
        total: trials per study.
        names: the studies, in display order.
        enabled: False shows nothing (``--quiet``).
    """

    def __init__(self, count: Callable[[], dict[str, int]], total: int, names: Sequence[str],
                 enabled: bool = True) -> None:
        self.count, self.total, self.names = count, total, list(names)
        self.enabled, self.last, self.start = enabled, "", time.monotonic()
        self.live = enabled and sys.stderr.isatty()  # a line to redraw is on screen
        self.lock = threading.Lock()  # worker output and the display share stderr

    def update(self) -> None:
        if not self.enabled:
            return
        try:
            done = self.count()
        except Exception:  # a busy store: the next poll will do
            return
        n = sum(min(done.get(name, 0), self.total) for name in self.names)
        per_study = " ".join(f"{name.rsplit('-', 1)[-1]} {done.get(name, 0)}/{self.total}"
                             for name in self.names)
        line = f"trials {n}/{self.total * len(self.names)}: {per_study}"
        with self.lock:
            if self.live:
                elapsed = time.monotonic() - self.start
                sys.stderr.write(f"\r{line}  [{elapsed:.0f} s]\033[K")
                sys.stderr.flush()
            elif line != self.last:
                print(line, file=sys.stderr)
            self.last = line

    def write(self, line: str) -> None:
        """Prints a line above the display."""
        with self.lock:
            print(f"\r\033[K{line}" if self.live else line, file=sys.stderr)

    def close(self) -> None:
        self.update()
        if self.live:
            print(file=sys.stderr)
        self.enabled = self.live = False  # closed once, even when closed twice


@contextlib.contextmanager
def polling(progress: Progress, every: float = 1.0) -> Iterator[None]:
    """Updates ``progress`` from a thread while the block runs (the one-process job)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            progress.update()

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        progress.close()


class _Worker:
    """One worker process; its merged output is kept, and relayed line by line once a display
    is attached (``Pool.run``)."""

    def __init__(self, index: int, argv: list[str]) -> None:
        self.index = index
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.progress: Progress | None = None
        # Its own session: a Ctrl-C in the terminal reaches the parent only, which forwards it
        # once; reaching both, each worker would count two signals and stop at once.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        self.reader = threading.Thread(target=self._relay, daemon=True)
        self.reader.start()

    def _relay(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip()
            if line.strip():
                self.tail.append(line)
                if self.progress is None:
                    print(f"worker {self.index}: {line}", file=sys.stderr)
                else:
                    self.progress.write(f"worker {self.index}: {line}")

    def send(self, job_run_id: str) -> None:
        """Gives the worker its job run (see ``wait_for_parent``); one that already died is
        left to ``Pool.run`` to report."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(job_run_id + "\n")
            self.proc.stdin.close()

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def last_line(self) -> str:
        self.reader.join(timeout=5)
        errors = [line for line in self.tail if line.startswith("error:")]
        line = (errors or list(self.tail) or [f"exit status {self.proc.returncode}"])[-1]
        return line.removeprefix("error: ")


class Pool:
    """N workers, started as soon as the parent knows how many: their imports (seconds) then
    overlap the parent's creation of the stores. Each waits for its job run's id on stdin
    (``wait_for_parent``) before touching any store; should the parent fail first (bad input
    found later, a signal), its exit closes their stdin and they leave without a trace.

    Args:
        argv: the parent's command line (after ``python -m pipeline``).
        n: how many workers.
    """

    def __init__(self, argv: Sequence[str], n: int, at_once: int = 1) -> None:
        self.workers = [_Worker(i, [*worker_argv(argv, i, at_once), COUNT_FLAG, str(n)])
                        for i in range(n)]

    def abandon(self) -> None:
        """Ends workers that were never let go (the parent failed before the job began): they
        have touched no store, so they are simply stopped, not left to find out."""
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
        for w in self.workers:
            w.proc.wait()

    def run(self, job_run_id: str, progress: Progress) -> None:
        """Lets the workers go and supervises them to the end.

        Raises:
            KeyboardInterrupt: the parent got SIGINT/SIGTERM; every worker was told and ended.
            WorkerFailed: a worker failed; the others were stopped (their runs end KILLED).
        """
        for w in self.workers:
            w.progress = progress
            w.send(job_run_id)
        _supervise(self.workers, progress)


def wait_for_parent(warm_up: Callable[[], None]) -> None:
    """In a worker: runs ``warm_up`` (the heavy imports, the CUDA context: nothing that
    touches a store), then waits for the parent's job run id on stdin
    and names it the way ``mlflow run`` does (``MLFLOW_RUN_ID``), so that the worker neither
    creates nor ends the job run. Leaves quietly (exit 0) if the parent gave up first.

    The parent starts its workers before it checks and creates the stores, so all of this
    overlaps its own work. Measured on the 2-core machine (smoke job, 2 workers, py-spy):
    after the go, each worker spent 1.15 s importing MLflow's SQL store and 1.07 s waiting on
    the store lock while the other did the same, and its first trial 1.3 s importing
    ``torch._dynamo`` for the fused Adam."""
    warm_up()
    line = sys.stdin.readline().strip()
    if not line:
        raise SystemExit(0)
    os.environ["MLFLOW_RUN_ID"] = line


def _supervise(workers: list[_Worker], progress: Progress) -> None:
    forwarded = 0
    failed: _Worker | None = None
    try:
        while any(w.proc.poll() is None for w in workers):
            if interrupts.pending() and not forwarded:
                forwarded = interrupts.pending()
                for w in workers:
                    w.signal(forwarded)
            if failed is None:
                failed = next((w for w in workers if w.proc.poll() not in (None, 0)), None)
                if failed is not None and not forwarded:
                    forwarded = signal.SIGTERM  # the others stop at their next safe point
                    for w in workers:
                        w.signal(signal.SIGTERM)
            progress.update()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        # A second signal: the user insists, and so are the workers told (they stop at once).
        _stop_now(workers)
        raise
    interrupts.check()  # stopped by a signal: the caller ends the job run KILLED
    failed = failed or next((w for w in workers if w.proc.returncode), None)
    if failed is not None:
        raise WorkerFailed(f"worker {failed.index} failed: {failed.last_line()}",
                           failed.proc.returncode)


def _stop_now(workers: list[_Worker]) -> None:
    for w in workers:
        w.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()


def finished_counts(studies: Sequence[Any], is_finished: Callable[[Any], bool],
                    ) -> Callable[[], dict[str, int]]:
    """A ``Progress.count`` over Optuna studies: finished trials per study name."""

    def count() -> dict[str, int]:
        return {s.study_name: sum(map(is_finished, s.get_trials(deepcopy=False)))
                for s in studies}

    return count
