"""Storage URLs and the locks shared by every worker of a study; imports no Optuna, so the CLI
can check a URL (scheme, reachability) in a fraction of a second, before the heavy imports.

The locks make the few one-time steps of a distributed study (creating the database's tables,
the study's MLflow runs, registering its champion) happen once however many workers race to
them. On PostgreSQL a lock is a session-level advisory lock in the study's own database: it
works across machines, and the server drops it when the holder's connection dies, so a worker
killed mid-step never leaves it held. Other storages (SQLite, journal files) live on one machine,
and an ``flock`` on a file under the temp folder does the same there.

    >>> storage = Storage("postgresql://u:p@db/optuna")     # doctest: +SKIP
    >>> with storage.lock("finalize:sin2cos-lstm"):
    ...     ...                                             # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "journal")


class Storage:
    """A study storage resolved once from its URL and handed down: its SQLAlchemy URL, its
    named locks, the tuning of its engine, and (set by ``tuning.open_storage``, the only place
    that imports Optuna) the Optuna storage opened on it.

    Args:
        url: the Optuna storage URL.

    Raises:
        ValueError: a scheme Optuna cannot open.
    """

    def __init__(self, url: str) -> None:
        check_storage_url(url)
        self.url = url
        self.sqlalchemy_url = sqlalchemy_url(url)
        self.optuna: Any = None
        """The Optuna storage on this URL, once opened."""

    def __repr__(self) -> str:  # a password must not reach a log through a repr
        return f"Storage({self.masked!r})"

    @property
    def masked(self) -> str:
        """The URL with its password replaced by ``***``, for logs and params."""
        return mask_url(self.url)

    @property
    def journal_path(self) -> str | None:
        """The file of a ``journal:///path`` storage, None for a database."""
        if not self.url.startswith("journal:"):
            return None
        return self.url.split(":", 1)[1].removeprefix("//")

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """The lock ``name`` (``finalize:<study>``) among every user of this storage."""
        return storage_lock(self.sqlalchemy_url, name)

    def check_reachable(self, timeout: int = 5) -> None:
        """See ``check_storage_reachable``."""
        check_storage_reachable(self.url, timeout)

    def tune_engine(self, engine: Any) -> None:
        """SQLite only: every ``trial.report`` is a commit, 16 a trial; in SQLite's default
        rollback-journal mode each commit waits for several fsyncs. Write-ahead logging with
        ``synchronous=NORMAL`` waits for none (a power cut may lose the last commits, never
        corrupt the file) and lets workers on one machine read while another writes."""
        if not self.sqlalchemy_url.startswith("sqlite:"):
            return
        import sqlalchemy

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        sqlalchemy.event.listen(engine, "connect", on_connect)
        engine.dispose()  # connections opened before the listener reconnect with it
        # The process leaves without tearing down (pipeline/__main__.py), which would leave
        # its connections open: SQLite then keeps the last commits in optuna.db-wal instead of
        # folding them into optuna.db, and a copy of optuna.db alone lacks them. Closed at
        # exit (before that last handler: atexit runs the later ones first); by a weak
        # reference, so an engine dropped earlier (tests make hundreds) is not kept open.
        ref = weakref.ref(engine)
        atexit.register(lambda: (found := ref()) is not None and found.dispose())


def scheme(url: str) -> str:
    """A store URL's database, without its driver: ``postgresql`` for
    ``postgresql+psycopg2://...``."""
    return url.split(":", 1)[0].split("+", 1)[0]


def check_storage_url(url: str) -> None:
    """Refuses a storage URL whose scheme Optuna cannot open, before anything is created.

    Raises:
        ValueError: with a one-line message.
    """
    if ":" not in url or scheme(url) not in STORAGE_SCHEMES:
        raise ValueError(f"unknown storage scheme in {mask_url(url)!r} "
                         f"(valid: {', '.join(s + '://' for s in STORAGE_SCHEMES)})")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``: storage URLs are logged and printed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def mask_text(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (if any) replaced by ``***``: error messages from
    drivers may quote the URL they were given."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")
    return text


def sqlalchemy_url(url: str) -> str:
    """The storage URL as SQLAlchemy should read it: SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, and we ship psycopg2."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def check_storage_reachable(url: str, timeout: int = 5, what: str = "the Optuna storage") -> None:
    """Connects once to a database storage, so a wrong host, port, password or database is
    reported before any study or run exists. Journal files need no check. ``what`` names the
    store in the message (the MLflow tracking store uses this check too).

    Raises:
        ValueError: with a one-line message, the password masked.
    """
    if url.startswith("journal:"):
        return
    if url.startswith("sqlite:"):
        # Connecting would create the file: check its folder instead.
        folder = os.path.dirname(os.path.abspath(url.partition(":///")[2] or "."))
        if not os.access(folder, os.W_OK):
            raise ValueError(f"cannot create the Optuna storage {url}: "
                             f"folder {folder} does not exist or is not writable")
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    url = sqlalchemy_url(url)
    args = {"connect_timeout": timeout} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=args)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as err:  # any driver, any failure: one line, no secrets
        cause = getattr(err, "orig", None) or err
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ValueError(mask_text(f"cannot reach {what} {mask_url(url)}: {first}",
                                   url)) from None


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (PostgreSQL's bigint)."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _is_postgres(url: str) -> bool:
    return scheme(url) == "postgresql"


@contextlib.contextmanager
def storage_lock(url: str, name: str) -> Iterator[None]:
    """Holds the lock ``name`` among all users of the storage at ``url``, waiting for it.

    Args:
        url: the storage's SQLAlchemy URL (``postgresql+psycopg2://...`` gets an advisory
            lock).
        name: what is locked, e.g. ``finalize:<study name>``.
    """
    locker = _pg_lock if _is_postgres(url) else _file_lock
    with locker(url, name):
        yield


@contextlib.contextmanager
def _pg_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    # NullPool: closing the connection really disconnects, which is what releases the lock
    # if the unlock below never runs.
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            key = {"k": _key(name)}
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), key)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), key)
                conn.commit()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _file_lock(url: str, name: str) -> Iterator[None]:
    path = _lock_path(url, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _lock_path(url: str, name: str) -> Path:
    """One lock file per (storage file, name), outside the user's folders. The URL's path is
    made absolute so that workers started from different folders agree."""
    scheme, _, rest = url.partition(":")
    path = rest.removeprefix("///") if scheme == "sqlite" else rest.removeprefix("//")
    where = f"{scheme}:{os.path.abspath(path)}" if path else url
    digest = hashlib.sha256(f"{where}\0{name}".encode()).hexdigest()[:24]
    return lock_folder() / f"{digest}.lock"


def lock_folder() -> Path:
    """This user's lock folder, ``<tmp>/cellstudy-locks-<uid>``, mode 0700. One shared world
    folder would belong to whoever made it first and lock every other user out (and let them
    tamper with each other's locks); a folder of the same name that another user made first
    is refused rather than used.

    Raises:
        ValueError: the folder exists but belongs to someone else or is open to others.
    """
    folder = Path(tempfile.gettempdir()) / f"cellstudy-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if info.st_uid != os.getuid() or not folder.is_dir() or info.st_mode & 0o022:
        raise ValueError(f"lock folder {folder} is not this user's own private folder: "
                         "remove it or set TMPDIR to a folder of your own")
    return folder
