"""The study storage (pipeline/storage.py): URLs checked and masked, one object per URL with
its locks (in this user's own folder), SQLite tuned, and every scheme opened for a real
study."""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import run_as

from pipeline import tuning
from pipeline.storage import Storage, check_storage_url, lock_folder, mask_url, storage_lock


def test_storage_urls_are_checked_and_masked():
    with pytest.raises(ValueError, match="unknown storage scheme"):
        check_storage_url("redis://localhost/0")
    with pytest.raises(ValueError, match="unknown storage scheme"):
        Storage("optuna.db")
    check_storage_url("postgresql+psycopg2://u:p@127.0.0.1/db")
    masked = mask_url("postgresql+psycopg2://user:s3cret@host:5432/db")
    assert "s3cret" not in masked and masked.startswith("postgresql+psycopg2://user:***@host")


def test_a_storage_resolves_its_url_once():
    storage = Storage("postgresql://user:s3cret@host/db")
    assert storage.sqlalchemy_url == "postgresql+psycopg2://user:s3cret@host/db"
    assert "s3cret" not in storage.masked and "s3cret" not in repr(storage)
    assert storage.journal_path is None
    assert Storage("journal:///tmp/x.log").journal_path == "/tmp/x.log"


def test_a_named_lock_is_held_by_one_holder_at_a_time(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path}/o.db")
    order = []

    def other():
        with Storage(storage.url).lock("finalize:s"):  # another worker, its own object
            order.append("other")

    with storage.lock("finalize:s"):
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        order.append("first")
    thread.join(5)
    assert order == ["first", "other"]
    with storage.lock("finalize:s"), storage.lock("report:s"):  # names are independent
        pass


def test_sqlite_storage_writes_ahead(tmp_path):
    storage = tuning.make_storage(f"sqlite:///{tmp_path}/o.db")
    optuna.create_study(storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    mode = sqlite3.connect(tmp_path / "o.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_journal_storage_runs_and_resumes_a_real_study(tiny_cfg, tracking_store, tmp_path):
    from pipeline.tracking import Tracker

    url = f"journal:///{tmp_path}/optuna.log"
    cfg = tiny_cfg.replace({"study.storage": url, "study.n_trials": 2})
    tracker = Tracker("journal")
    job, _ = tracker.job_run_id("job")
    outcome = tuning.run_study(cfg, "rnn", tracker, job, Storage(url))
    assert outcome.best_trial is not None and outcome.best_run_id
    assert (tmp_path / "optuna.log").stat().st_size > 0
    more = cfg.replace({"study.n_trials": 3})
    tuning.run_study(more, "rnn", tracker, job, Storage(url))  # resumed from the file
    study = optuna.load_study(study_name=f"{cfg.study.name}-rnn",
                              storage=tuning.make_storage(url))
    assert len(study.trials) == 3


LOCK = ("from pipeline.storage import storage_lock, lock_folder\n"
        "with storage_lock('sqlite:///{db}', 'finalize:x'):\n"
        "    print('held', lock_folder())\n")


def test_lock_folder_is_this_users_own(tmp_path):
    folder = lock_folder()
    info = folder.stat()
    assert folder.parent == Path(tempfile.gettempdir())
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    before = set(folder.iterdir())
    with storage_lock(f"sqlite:///{tmp_path}/x.db", "a"):
        assert len(set(folder.iterdir()) - before) == 1  # its lock file is in there


def test_a_second_os_user_takes_locks_in_its_own_folder(other_user, shared_tmp):
    """Before: the first user's /tmp/cellstudy-locks (0755) stopped every other user."""
    tmp_path = shared_tmp
    with storage_lock(f"sqlite:///{tmp_path}/optuna.db", "finalize:x"):  # root's first
        pass
    os.chmod(tmp_path, 0o777)
    done = run_as(other_user, LOCK.format(db=tmp_path / "optuna.db"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("held "), done.stdout
    folder = done.stdout.split()[-1]
    assert Path(folder) != lock_folder()
    info = Path(folder).stat()
    assert info.st_uid != os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
