"""A PostgreSQL primary and its streaming replica, both started by the test in a temporary
directory (never the machine's cluster): ``initdb`` a primary on a free port
(``wal_level=replica``), ``pg_basebackup -R`` a replica on another free port, and stop both
with ``pg_ctl -m immediate`` at the end. The servers run as the ``postgres`` user (``runuser``
when the test runs as root), with trust authentication on 127.0.0.1 only.

Usage::

    with PgPrimary() as primary:           # a primary without any replica
        ...
        with PgReplica(primary) as replica:
            ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tminus.testing._service import find_binary

__all__ = ["PgPrimary", "PgReplica", "PgReplicaError"]

BIN_DIRS = (
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)
START_TIMEOUT_S = 30.0


class PgReplicaError(RuntimeError):
    """The primary or the replica could not be made or started."""


def _bin(name: str) -> str:
    return find_binary(
        name,
        [f"{d}/{name}" for d in BIN_DIRS],
        "postgresql",
        PgReplicaError,
        f"PostgreSQL's {name}",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> list[str]:
    """The prefix that runs a command as ``postgres`` (nothing when already not root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PgReplicaError("runuser is not installed (Debian package: util-linux)")
    return [runuser, "-u", "postgres", "--"]


def _run(args: list[str], what: str, timeout: float = START_TIMEOUT_S) -> None:
    try:
        proc = subprocess.run(
            [*_as_postgres(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise PgReplicaError(f"{what} did not finish within {timeout:g}s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise PgReplicaError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))


class _Cluster:
    """One server: its data directory, port and log; stopped with ``-m immediate``."""

    role = "server"

    def __init__(self, *, timeout_s: float = START_TIMEOUT_S) -> None:
        #: How long initdb (or pg_basebackup) and the start may take (more on a loaded machine).
        self.timeout_s = timeout_s
        self.port = _free_port()
        self.tmp: Path | None = None
        self.data: Path | None = None
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _make_dir(self) -> Path:
        tmp = Path(tempfile.mkdtemp(prefix=f"tminus-pg{self.role}-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PgReplicaError("there is no 'postgres' user to run PostgreSQL") from exc
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        tmp.chmod(0o700)
        self.tmp = tmp
        return tmp

    def _start(self) -> None:
        assert self.data is not None
        log = self.data.parent / "server.log"
        _run(
            [
                _bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(log),
                "-w",
                "-t",
                str(int(self.timeout_s)),
                "-o",
                f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1",
                "start",
            ],
            f"starting the PostgreSQL {self.role} on port {self.port}",
            self.timeout_s + 5,
        )
        self.started = True

    def stop(self) -> None:
        if self.started and self.data is not None:
            with contextlib.suppress(PgReplicaError):
                _run(
                    [_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                    f"stopping the PostgreSQL {self.role}",
                    20,
                )
            self.started = False
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PgPrimary(_Cluster):
    """A fresh primary: ``wal_level=replica``, room for replicas, trust auth on 127.0.0.1."""

    role = "primary"

    def __enter__(self) -> PgPrimary:
        try:
            tmp = self._make_dir()
            self.data = tmp / "data"
            _run(
                [
                    _bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                "initdb of the PostgreSQL primary",
                self.timeout_s,
            )
            conf = self.data / "postgresql.conf"
            with conf.open("a") as f:
                f.write(
                    "\nwal_level = replica\nmax_wal_senders = 5\nfsync = off\n"
                    "max_connections = 30\nhot_standby = on\nwal_sender_timeout = 10s\n"
                )
            with (self.data / "pg_hba.conf").open("a") as f:
                f.write("host replication all 127.0.0.1/32 trust\n")
            self._start()
        except BaseException:
            self.stop()
            raise
        return self


class PgReplica(_Cluster):
    """A streaming replica of ``primary`` made with ``pg_basebackup -R``."""

    role = "replica"

    def __init__(self, primary: PgPrimary, *, timeout_s: float = START_TIMEOUT_S) -> None:
        super().__init__(timeout_s=timeout_s)
        self.primary = primary

    def __enter__(self) -> PgReplica:
        try:
            tmp = self._make_dir()
            self.data = tmp / "data"
            _run(
                [
                    _bin("pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.primary.port),
                    "-U",
                    "postgres",
                    "-D",
                    str(self.data),
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                    "-c",
                    "fast",
                ],
                "pg_basebackup of the replica",
                self.timeout_s,
            )
            with (self.data / "postgresql.auto.conf").open("a") as f:
                f.write(
                    "\nwal_receiver_status_interval = 1s\nhot_standby_feedback = on\n"
                    "primary_conninfo = 'host=127.0.0.1 port="
                    f"{self.primary.port} user=postgres application_name=tminus_replica'\n"
                )
            self._start()
            self.wait_streaming()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_streaming(self, timeout: float = 20.0) -> None:
        """Until the primary lists this replica as streaming."""
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(self.primary.url, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.2)
        raise PgReplicaError(f"the replica did not start streaming within {timeout:g}s")
