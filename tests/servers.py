"""Real servers for the tests: a throw-away PostgreSQL 15 cluster and an ``mlflow server`` on it,
both bound to 127.0.0.1, started by the tests and stopped afterwards.

    python tests/servers.py          # starts both, prints their URLs, stops them on Enter

PostgreSQL's ``initdb`` refuses to run as root, so when the tests run as root the cluster is made
and run by the ``postgres`` user (``runuser``) in folders handed to it; fsync is off because the
data is thrown away.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("CELLSTUDY_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
PASSWORD = "s3cret-Pw-4-tests"
"""The test role's password: the security tests search every store and output for it."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_pg_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse root; as any other user they run as that user.
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _hand_over(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, PG_USER, PG_USER)


def postgres_available() -> str | None:
    """None when a cluster can be started here, else why not."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql-15)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


@dataclass
class Postgres:
    """A running cluster: ``url(db)`` gives a SQLAlchemy URL with the test role's password."""

    port: int
    user: str
    password: str

    def url(self, db: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """Creates database ``name`` (owned by the test role); returns its URL."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                password=self.password, dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@contextmanager
def postgres(user: str = "cellstudy", password: str = PASSWORD) -> Iterator[Postgres]:
    """A fresh PostgreSQL 15 cluster on its own port, with a password role; removed afterwards.

    Its data, socket and log live in a folder of its own under the system temp folder, not
    under pytest's ``tmp_path``: that one is private to root, and the cluster runs as postgres.

    Args:
        user: the role the tests connect as (a superuser, password-authenticated over TCP).
        password: its password.
    """
    root = Path(tempfile.mkdtemp(prefix="cellstudy-pg-"))
    data, sock, logfile = root / "data", root / "sock", root / "postgres.log"
    for path in (data, sock):
        path.mkdir()
    for path in (root, data, sock):
        _hand_over(path)
    pwfile = root / "pw"
    pwfile.write_text(password)
    _hand_over(pwfile)
    try:
        _run(_as_pg_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", user,
                          "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                          "--no-sync"]))
        pwfile.unlink()
        port = free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200")
        _run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(logfile),
                          "-o", opts, "-w", "-t", "60", "start"]))
        try:
            yield Postgres(port, user, password)
        finally:
            subprocess.run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "-w", "stop"]), capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{Path(cmd[cmd.index('--') + 1] if '--' in cmd else cmd[0]).name} "
                           f"failed ({done.returncode}): {done.stderr.strip() or done.stdout}")


@dataclass
class MlflowServer:
    """A running ``mlflow server``."""

    url: str
    process: subprocess.Popen
    artifacts: Path
    log: Path


def wait_healthy(url: str, process: subprocess.Popen | None, timeout: float = 90.0) -> None:
    """Polls ``GET /health`` until it answers OK; fails early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")


@contextmanager
def mlflow_server(backend_uri: str, root: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` on ``backend_uri``, lean (one worker, no job runner), on 127.0.0.1
    with MLflow's security middleware left on; artifacts proxied into ``root/artifacts``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    artifacts, logfile = root / "artifacts", root / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)]
    with open(logfile, "wb") as out:
        # Its own process group: uvicorn forks, and stopping must reach every child.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=root, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", proc, artifacts, logfile)
    try:
        wait_healthy(server.url, proc)
        yield server
    finally:
        _stop_group(proc)


@contextmanager
def scoring_server(model_uri: str, env: dict[str, str], root: Path,
                   timeout: float = 180.0) -> Iterator[str]:
    """``mlflow models serve -m model_uri --env-manager local`` on 127.0.0.1 and a free port,
    as the README shows it; yields its URL once ``/ping`` answers, stops it afterwards.

    Args:
        model_uri: e.g. ``models:/sin2cos-lstm@champion``.
        env: the server's environment (its ``MLFLOW_TRACKING_URI`` resolves the URI).
        root: where its log goes (``scoring-server.log``).
        timeout: seconds to wait for it to answer.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    logfile = root / "scoring-server.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"scoring server exited ({proc.returncode}): "
                                   f"{logfile.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not answering after {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def dump_database(pg: Postgres, db: str) -> str:
    """Every row of every table of ``db`` as text, to search for leaked secrets."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password,
                            dbname=db)
    lines = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            for (table,) in cur.fetchall():
                cur.execute(f'SELECT * FROM "{table}"')
                lines.extend(f"{table}: {row!r}" for row in cur.fetchall())
    finally:
        conn.close()
    return "\n".join(lines)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        with postgres() as pg:
            t1 = time.monotonic()
            backend = pg.create_database("mlflow")
            with mlflow_server(backend, Path(tmp) / "mlflow") as server:
                t2 = time.monotonic()
                print(f"postgres {pg.url('mlflow')} ({t1 - t0:.1f} s); "
                      f"mlflow {server.url} ({t2 - t1:.1f} s)")
                if sys.stdin.isatty():
                    input("Enter stops both ")
