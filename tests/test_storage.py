"""Storage helpers: URL masking and the file locks that workers of one machine share."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from conftest import run_as

from pipeline.storage import lock_folder, storage_lock

LOCK = ("from pipeline.storage import storage_lock, lock_folder\n"
        "with storage_lock('sqlite:///{db}', 'finalize:x') as held:\n"
        "    print('held' if held else 'not held', lock_folder())\n")


def test_lock_folder_is_this_users_own():
    folder = lock_folder()
    info = folder.stat()
    assert folder.parent == Path(tempfile.gettempdir())
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    with storage_lock("sqlite:///x.db", "a") as held:
        assert held
        with storage_lock("sqlite:///x.db", "a", wait=False) as again:
            assert not again, "the same lock taken twice"


def test_a_second_os_user_takes_locks_in_its_own_folder(other_user, shared_tmp):
    """Before: the first user's /tmp/cellstudy-locks (0755) stopped every other user."""
    tmp_path = shared_tmp
    with storage_lock(f"sqlite:///{tmp_path}/optuna.db", "finalize:x") as held:  # root's first
        assert held
    os.chmod(tmp_path, 0o777)
    done = run_as(other_user, LOCK.format(db=tmp_path / "optuna.db"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("held "), done.stdout
    folder = done.stdout.split()[-1]
    assert Path(folder) != lock_folder()
    info = Path(folder).stat()
    assert info.st_uid != os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
