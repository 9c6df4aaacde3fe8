"""``tune --workers N``: N processes sharing the studies on fresh SQLite stores, hand-started
workers racing to create the stores, SIGTERM to the parent, and a failing worker; and
``--trials-at-once K``: K trials in threads of one process, the same way."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, reaped, subprocess_env

from pipeline import cli, interrupts, tuning, workers

SMOKE = str(ROOT / "experiments" / "smoke.yaml")
CELLS = ("rnn", "lstm", "gru")
LEAN_REPORT = ["--set", "report.seeds=1", "--set", "report.tutorial_seeds=0"]


def _tune(tmp_path: Path, *extra: str, quiet: bool = False) -> list[str]:
    return [sys.executable, "-m", "pipeline", *(["-q"] if quiet else []), "tune",
            "--config", SMOKE, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
            *LEAN_REPORT, *extra]


def _runs(db: Path) -> list[tuple[str, str]]:
    """(cellstudy.level, status) of every run in the tracking store."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT t.value, r.status FROM runs r JOIN tags t ON "
                            "t.run_uuid = r.run_uuid AND t.key = 'cellstudy.level'").fetchall()
    conn.close()
    return rows


def _studies(tmp_path: Path) -> dict[str, optuna.Study]:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    return {cell: optuna.load_study(study_name=f"sin2cos-smoke-{cell}", storage=storage)
            for cell in CELLS}


def _distinct_configs(study: optuna.Study) -> bool:
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    return len(set(params)) == len(params)


def _each_study_done_once(tmp_path: Path) -> tuple[list[tuple[str, str]], Counter]:
    """Checks the smoke job's three studies (3 trials each, none over, no configuration
    twice) and its one job run; returns the runs and their count per level."""
    for cell, study in _studies(tmp_path).items():
        assert len(study.trials) == 3, f"{cell}: exactly the configured trials, none over"
        assert all(t.state.is_finished() for t in study.trials)
        assert _distinct_configs(study), f"{cell}: a configuration was trained twice"
    runs = _runs(tmp_path / "mlflow.db")
    levels = Counter(level for level, _ in runs)
    assert levels["job"] == 1 and levels["study"] == len(CELLS) and levels["trial"] == 9
    return runs, levels


# -- choosing and starting workers (fast) -------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("", "auto"), ("3", 3)])
def test_workers_flag_reads_auto_or_a_count(text, expected):
    assert workers.parse_count(text) == expected


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5"])
def test_bad_workers_flag_is_refused_in_one_line(text):
    with pytest.raises(ValueError, match="positive integer"):
        workers.parse_count(text)


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--trials-at-once", "none")])
def test_bad_count_flag_exits_2_before_any_store_is_written(tmp_path, monkeypatch, capsys,
                                                            flag, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = cli.main(["tune", "--config", SMOKE, "--storage",
                     f"sqlite:///{tmp_path / 'optuna.db'}", flag, value])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {flag} takes 'auto' or a positive integer, got '{value}'"]
    assert not list(tmp_path.iterdir()), "nothing is written for bad input"


def test_auto_is_one_worker_per_idle_core_on_a_cpu(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 8)
    assert workers.resolve_workers("auto", "cpu", threads=1, load=0.1) == 8
    assert workers.resolve_workers("auto", "cpu", threads=2, load=0.1) == 4
    assert workers.resolve_workers("auto", "cpu", threads=1, load=3.2) == 5
    assert workers.resolve_workers("auto", "cpu", threads=1, load=12.0) == 1, "at least one"
    assert workers.resolve_workers(3, "cpu", threads=1, load=12.0) == 3, "a number is kept"
    small = workers.job_steps(n_trials=10, cells=1, steps=300, seeds=1)   # the peer's job
    big = workers.job_steps(n_trials=20, cells=3, steps=3000, seeds=5)    # the main job
    assert workers.resolve_workers("auto", "cpu", threads=1, load=0.1, job_steps=small) == 1, \
        "a small job pays a second worker's start-up without winning it back"
    assert workers.resolve_workers("auto", "cpu", threads=1, load=0.1, job_steps=big) == 8
    assert workers.resolve_workers(4, "cpu", threads=1, load=0.1, job_steps=small) == 4
    # Many short runs: their bookkeeping, not their steps, is what a second process shares.
    tutorial = workers.job_runs(n_trials=10, cells=3, seeds=5, tutorial_seeds=10)
    smoke = workers.job_runs(n_trials=3, cells=3, seeds=2, tutorial_seeds=2)
    assert (tutorial, smoke) == (75, 21)
    assert workers.resolve_workers("auto", "cpu", threads=1, load=0.1, job_steps=2_700,
                                   job_runs=tutorial) == 5, "a worker per 15 runs"
    assert workers.resolve_workers("auto", "cpu", threads=1, load=0.1, job_steps=450,
                                   job_runs=smoke) == 1
    assert workers.resolve_workers("auto", "cpu", threads=1, load=0.1, job_steps=big,
                                   job_runs=smoke) == 8, "whichever allows more"
    monkeypatch.setattr(workers, "usable_cores", lambda: 16)  # the H100/H200 hosts
    assert workers.resolve_workers("auto", "cuda", threads=1, gpus=1) == \
        workers.CUDA_WORKERS_PER_GPU
    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    assert workers.resolve_workers("auto", "cuda", threads=1, gpus=1) == 2, "never above cores"


def test_job_size_counts_what_the_report_runs_too():
    from pipeline.config import load_config

    cfg = load_config(ROOT / "experiments" / "tutorial.yaml")
    # 10 trials + 5 seed retrains of 60 batch-1 steps, and 10 tutorial replays, per cell
    assert workers.job_size(cfg) == (2_700, 75, 2_700)
    no_replays = cfg.replace({"report.tutorial_config": "", "train.batch_size": 4})
    assert workers.job_size(no_replays) == (2_700, 45, 10_800), \
        "no tutorial replays where the report runs none"


def test_auto_trials_at_once_fill_the_cores_the_workers_leave(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    # The peer's job on 2 idle cores: one process (too small for a second), two threads.
    assert workers.resolve_trials_at_once("auto", "cpu", threads=1, workers=1, n_trials=10,
                                          load=0.1) == 2
    assert workers.resolve_trials_at_once("auto", "cpu", threads=1, workers=2, n_trials=20,
                                          load=0.1) == 1, "the main job: a process per core"
    assert workers.resolve_trials_at_once("auto", "cpu", threads=1, workers=1, n_trials=10,
                                          load=1.2) == 1, "a busy core is not taken"
    assert workers.resolve_trials_at_once("auto", "cpu", threads=2, workers=1, n_trials=10,
                                          load=0.1) == 1, "torch threads count"
    peer = workers.job_windows(workers.job_steps(n_trials=10, cells=1, steps=300, seeds=1), 64)
    smoke = workers.job_windows(workers.job_steps(n_trials=3, cells=3, steps=30, seeds=2), 16)
    assert workers.resolve_trials_at_once("auto", "cpu", threads=1, workers=1, n_trials=10,
                                          load=0.1, job_windows=peer) == 2
    assert workers.resolve_trials_at_once("auto", "cpu", threads=1, workers=1, n_trials=3,
                                          load=0.1, job_windows=smoke) == 1, \
        "short trials' bookkeeping only queues on one interpreter"
    batch_1 = workers.job_windows(workers.job_steps(n_trials=10, cells=1, steps=300, seeds=5), 1)
    assert workers.resolve_trials_at_once("auto", "cpu", threads=1, workers=1, n_trials=10,
                                          load=0.1, job_windows=batch_1) == 1, \
        "the peer's steps at batch 1: the interpreter, not the kernels, is what they wait on"
    monkeypatch.setattr(workers, "usable_cores", lambda: 16)
    assert workers.resolve_trials_at_once("auto", "cpu", threads=1, workers=1, n_trials=3,
                                          load=0.0) == 3, "never more than a study's trials"
    assert workers.resolve_trials_at_once("auto", "cuda", threads=1, workers=8, n_trials=20,
                                          load=0.0) == 1, "not measured on a card yet"
    assert workers.resolve_trials_at_once(4, "cpu", threads=1, workers=2, n_trials=1,
                                          load=9.0) == 4, "a number is kept"


def test_threads_return_their_results_in_order():
    assert workers.run_in_threads(lambda i: i * i, 4) == [0, 1, 4, 9]


def test_a_failing_thread_stops_its_siblings_and_its_error_is_raised():
    """The sibling loops until told to stop at a safe point (as a trial does between
    validations); the caller gets the failing thread's own error, not the stop."""
    started = threading.Event()
    stopped = []

    def work(i):
        if i == 0:
            started.wait(10)
            raise ValueError("worker thread 0 broke")
        started.set()
        try:
            while True:
                interrupts.check()
                time.sleep(0.01)
        except KeyboardInterrupt:
            stopped.append(i)
            raise

    with interrupts.deferred():
        with pytest.raises(ValueError, match="thread 0 broke"):
            workers.run_in_threads(work, 2)
        assert stopped == [1]
        # The siblings' stop is over, and it was no signal: the process is not stopping, and
        # a user's Ctrl-C after it is a first one (honoured at a safe point, not at once).
        interrupts.check()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler has run, and raised nothing
        assert interrupts.pending() == signal.SIGINT


def test_a_signal_stops_every_thread_at_its_safe_point():
    ready = threading.Barrier(3)

    def work(i):
        ready.wait(10)
        while True:
            interrupts.check()
            time.sleep(0.01)

    def signal_soon():
        ready.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)

    with interrupts.deferred(), pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        threading.Thread(target=signal_soon).start()
        workers.run_in_threads(work, 2)


def test_each_worker_starts_at_another_cell():
    firsts = [workers.rotated(CELLS, i)[0] for i in range(3)]
    assert sorted(firsts) == sorted(CELLS)
    assert all(sorted(workers.rotated(CELLS, i)) == sorted(CELLS) for i in range(5))
    assert workers.rotated(CELLS, None) == list(CELLS)


def test_progress_off_a_terminal_prints_a_line_per_change(capsys):
    counts = {"s-rnn": 1, "s-gru": 0}
    progress = workers.Progress(lambda: dict(counts), 3, ["s-rnn", "s-gru"])
    progress.update()
    progress.update()  # nothing new: no line
    counts["s-gru"] = 2
    progress.close()
    progress.close()  # closing twice draws nothing more
    assert capsys.readouterr().err.splitlines() == ["trials 1/6: rnn 1/3 gru 0/3",
                                                    "trials 3/6: rnn 1/3 gru 2/3"]


def test_quiet_progress_prints_nothing(capsys):
    progress = workers.Progress(lambda: {"s-rnn": 1}, 3, ["s-rnn"], enabled=False)
    progress.update()
    progress.close()
    assert capsys.readouterr().err == ""


# -- whole jobs (slow: real processes, real stores) ---------------------------------------------

@pytest.mark.slow
def test_two_workers_on_fresh_stores_do_the_job_exactly_once(tmp_path):
    done = subprocess.run(_tune(tmp_path, "--workers", "2", "--set", "report.seeds=2",
                                "--set", "report.tutorial_seeds=2"),
                          cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # The processes leave without tearing down, but close their SQLite connections first:
    # every commit is in optuna.db itself, none left behind in a write-ahead log (checked
    # before this test opens the study and makes one of its own).
    assert not list(tmp_path.glob("*.db-wal")) and not list(tmp_path.glob("*.db-shm"))
    runs, levels = _each_study_done_once(tmp_path)
    assert levels["seeds"] == len(CELLS), "the report's retrains ran once, not once per worker"
    assert levels["seed"] == 2 * len(CELLS), "each seed retrain once, by one worker"
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        starts = dict(conn.execute(
            "SELECT t.value, MIN(r.start_time) FROM runs r JOIN tags t ON t.run_uuid = "
            "r.run_uuid AND t.key = 'cellstudy.level' GROUP BY t.value").fetchall())
        trained_by = dict(conn.execute(
            "SELECT l.value, COUNT(DISTINCT t.value) FROM runs r JOIN tags l ON l.run_uuid ="
            " r.run_uuid AND l.key = 'cellstudy.level' JOIN tags t ON t.run_uuid = r.run_uuid"
            " AND t.key = 'cellstudy.worker' GROUP BY l.value").fetchall())
    for level in ("seed", "tutorial-seed"):
        assert starts[level] < starts["baseline"], f"the workers trained the {level} runs first"
        assert trained_by[level] == 2, f"both workers trained their share of the {level} runs"
    assert levels["tutorial-seed"] == 2 * len(CELLS), "each tutorial run once, by one worker"
    assert not [r for r in runs if r[1] == "RUNNING"], runs
    assert done.stdout.count("## ") >= 1 and "already written" not in done.stdout
    assert "worker 0" not in done.stdout, "workers print nothing; the parent prints the report"
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        versions = conn.execute("SELECT name FROM model_versions").fetchall()
    assert sorted(v[0] for v in versions) == [f"sin2cos-{c}" for c in sorted(CELLS)]


def _trial_spans(db: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT r.start_time, r.end_time FROM runs r JOIN tags t ON "
                            "t.run_uuid = r.run_uuid AND t.key = 'cellstudy.level' "
                            "AND t.value = 'trial'").fetchall()
    conn.close()
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("n_workers", ["1", "2"])
def test_trials_at_once_on_fresh_stores_do_the_job_exactly_once(tmp_path, n_workers):
    """Two trials at once in each process (threads), alone or in each of two workers: the
    same records as one at a time, and trials really overlap."""
    done = subprocess.run(_tune(tmp_path, "--workers", n_workers, "--trials-at-once", "2",
                                "--set", "report.seeds=2", "--set", "report.tutorial_seeds=1",
                                "--set", "train.steps=300"),
                          cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    runs, levels = _each_study_done_once(tmp_path)
    assert levels["seeds"] == len(CELLS) and levels["seed"] == 2 * len(CELLS)
    assert levels["tutorial-seed"] == len(CELLS)
    assert not [r for r in runs if r[1] in ("RUNNING", "FAILED")], runs  # pruned: KILLED
    spans = sorted(_trial_spans(tmp_path / "mlflow.db"))
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), "no two trials ran at once"
    assert done.stdout.count("## ") >= 1 and "already written" not in done.stdout
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        versions = conn.execute("SELECT name FROM model_versions").fetchall()
    assert sorted(v[0] for v in versions) == [f"sin2cos-{c}" for c in sorted(CELLS)]


@pytest.mark.slow
def test_hand_started_workers_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    """MLflow's schema migration and the experiment's creation used to race: one of two
    workers started together on a new store died every time."""
    env = subprocess_env(tmp_path)
    args = _tune(tmp_path, "--cells", "gru", "--set", "train.steps=20", quiet=True)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    runs = _runs(tmp_path / "mlflow.db")
    assert Counter(level for level, _ in runs)["job"] == 1
    assert not [r for r in runs if r[1] == "RUNNING"]
    # Each process builds its own sampler from the same seed: the three used to draw the
    # same first configuration and train it three times.
    study = optuna.load_study(study_name="sin2cos-smoke-gru",
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 3 and _distinct_configs(study), study.trials


@pytest.mark.slow
def test_hand_started_workers_with_trials_at_once_train_the_reports_runs_once(tmp_path):
    """Each hand-started process trains the report's runs in its threads only in its turn
    to write the report, so two processes finishing together do not both train them."""
    env = subprocess_env(tmp_path)
    args = _tune(tmp_path, "--cells", "gru", "--trials-at-once", "2", "--set",
                 "train.steps=40", "--set", "report.seeds=2", "--set", "report.tutorial_seeds=2",
                 quiet=True)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    runs = _runs(tmp_path / "mlflow.db")
    levels = Counter(level for level, _ in runs)
    assert levels["job"] == 1 and levels["trial"] == 3
    assert levels["seed"] == 2 and levels["tutorial-seed"] == 2, levels
    assert not [r for r in runs if r[1] in ("RUNNING", "FAILED")], runs


def _wait_for_a_running_trial(db: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db) as conn:
                if conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'"
                                ).fetchone()[0]:
                    return
        except sqlite3.OperationalError:  # not created yet
            pass
        time.sleep(0.3)
    raise TimeoutError("no trial started")


@pytest.mark.slow
@pytest.mark.parametrize("how", [("--workers", "2"), ("--trials-at-once", "2")],
                         ids=["workers", "trials-at-once"])
def test_sigterm_to_the_parent_leaves_nothing_running_and_a_rerun_finishes(tmp_path, how):
    args = _tune(tmp_path, *how, "--cells", "rnn,gru",
                 "--set", "train.steps=3000", "--set", "train.eval_every=50")
    env = subprocess_env(tmp_path)
    parent = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    with reaped(parent):
        _wait_for_a_running_trial(tmp_path / "optuna.db")
        time.sleep(1.0)
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=120)
    assert parent.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err.splitlines()[-1]
    runs = _runs(tmp_path / "mlflow.db")
    assert not [r for r in runs if r[1] == "RUNNING"], runs
    assert ("job", "KILLED") in runs and ("trial", "KILLED") in runs
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for cell in ("rnn", "gru"):
        study = optuna.load_study(study_name=f"sin2cos-smoke-{cell}", storage=storage)
        assert not [t for t in study.trials if t.state.name == "RUNNING"]

    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    for cell in ("rnn", "gru"):
        study = optuna.load_study(study_name=f"sin2cos-smoke-{cell}", storage=storage)
        assert tuning.counted_trials(study) == 3
    runs = _runs(tmp_path / "mlflow.db")
    assert not [r for r in runs if r[1] == "RUNNING"], runs
    assert Counter(level for level, _ in runs)["job"] == 1, "the rerun resumes the job run"
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        versions = conn.execute("SELECT name FROM model_versions").fetchall()
    assert sorted(v[0] for v in versions) == ["sin2cos-gru", "sin2cos-rnn"]


@pytest.mark.slow
def test_a_failing_worker_fails_the_job_with_its_one_line_error(tmp_path, monkeypatch, capsys):
    """Worker 1 gets a config its parent never saw (as if its machine had another file): it
    refuses it in one line, the parent stops the other worker and exits non-zero with that
    line; the job run ends FAILED, nothing stays RUNNING."""
    real = workers.worker_argv

    def argv(parent_argv, index, at_once=1):
        extra = ["--set", "train.steps=-5"] if index == 1 else []
        return [*real(parent_argv, index, at_once), *extra]

    monkeypatch.setattr(workers, "worker_argv", argv)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    code = cli.main(["-q", "tune", "--config", SMOKE, "--storage",
                     f"sqlite:///{tmp_path / 'optuna.db'}", *LEAN_REPORT, "--workers", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: worker 1 failed: ") and "train.steps" in err[-1], err
    runs = _runs(tmp_path / "mlflow.db")
    assert ("job", "FAILED") in runs
    assert not [r for r in runs if r[1] == "RUNNING"], runs


def test_busy_cores_sees_a_core_busy_now():
    """A process spinning on one core is counted at once (the 1-minute load average would
    take a minute to see it, and a minute to forget it)."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        busy = workers.busy_cores(sample_seconds=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.6 <= busy <= (os.cpu_count() or 1)


def test_busy_cores_since_a_sample_leaves_out_this_process_and_does_not_wait():
    """``tune`` samples as it starts and counts over its own imports: the core this process
    kept busy meanwhile is not another's, and the span already past is not waited for again.
    The same span with a child spinning instead counts that core."""
    def spin_here(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    started = workers.cpu_sample()
    spin_here(0.6)
    before = time.monotonic()
    own = workers.busy_cores(started)
    assert time.monotonic() - before < 0.1, "a span of 0.6 s was waited for again"

    started = workers.cpu_sample()
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.6)
        child = workers.busy_cores(started)
    finally:
        spin.kill()
        spin.wait()
    # Relative, so that neighbours busy in both spans cancel out: counted, this process's
    # spin would weigh as much as the child's.
    assert child - own >= 0.5, (own, child)


@pytest.mark.slow
def test_a_store_refused_after_the_workers_started_stops_them_and_writes_nothing(tmp_path):
    """The parent starts its workers before it checks the stores (their imports overlap its
    own): an unreachable Optuna database is still one line and exit 2, with no store file
    written and no worker left behind."""
    marker = f"never-{os.getpid()}-{time.monotonic_ns()}"
    args = [sys.executable, "-m", "pipeline", "-q", "tune", "--config", SMOKE,
            "--storage", "postgresql://cellstudy@127.0.0.1:1/none", "--workers", "2",
            "--study-name", marker]
    done = subprocess.run(args, cwd=tmp_path, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "mlruns").exists()
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # a process that ended meanwhile
            continue
        if marker in text:
            left.append(text)
    assert not left, left
