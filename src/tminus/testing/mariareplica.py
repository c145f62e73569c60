"""A MariaDB primary and its replica, both started by the test in a temporary directory (never
the machine's server): ``mariadb-install-db`` two data directories, start two ``mariadbd`` on
free ports (the primary with a binary log), and point the replica at the primary's first
binary log. Both are stopped (SIGTERM, then SIGKILL) at the end.

``root`` has no password, over TCP on 127.0.0.1 (``url``) and the servers' sockets.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tminus.testing._service import find_binary, stop_process

__all__ = ["MariaReplicaError", "MariaReplication"]

START_TIMEOUT_S = 30.0


class MariaReplicaError(RuntimeError):
    """The MariaDB primary or replica could not be made or started."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    def __init__(self, tmp: Path, name: str, server_id: int) -> None:
        self.dir = tmp / name
        self.data = self.dir / "data"
        self.sock = self.dir / "mysqld.sock"
        self.port = _free_port()
        self.name = name
        self.server_id = server_id
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/mysql"

    def install(self) -> subprocess.Popen[bytes]:
        self.dir.mkdir(parents=True)
        tool = find_binary(
            "mariadb-install-db",
            ["/usr/bin/mariadb-install-db"],
            "mariadb-server",
            MariaReplicaError,
        )
        return subprocess.Popen(
            [
                tool,
                "--no-defaults",
                f"--datadir={self.data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "install.log", "wb"),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": str(self.dir)},  # two bootstraps share no temp files
        )

    def start(self, *extra: str) -> None:
        binary = find_binary(
            "mariadbd", ["/usr/sbin/mariadbd"], "mariadb-server", MariaReplicaError
        )
        self.proc = subprocess.Popen(
            [
                binary,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.sock}",
                f"--tmpdir={self.dir}",
                f"--pid-file={self.dir / 'mysqld.pid'}",
                "--user=root",
                f"--server-id={self.server_id}",
                "--innodb-buffer-pool-size=16M",
                "--skip-name-resolve",
                f"--log-error={self.dir / 'error.log'}",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def connect(self) -> Any:
        import pymysql  # type: ignore[import-untyped]

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise MariaReplicaError(f"the MariaDB {self.name} exited: {self._log_tail()}")
            try:
                return pymysql.connect(
                    unix_socket=str(self.sock), user="root", autocommit=True, connect_timeout=2
                )
            except pymysql.MySQLError as exc:
                if time.monotonic() > deadline:
                    raise MariaReplicaError(
                        f"the MariaDB {self.name} did not accept connections within "
                        f"{START_TIMEOUT_S:g}s: {exc}"
                    ) from exc
                time.sleep(0.2)

    def _log_tail(self) -> str:
        try:
            lines = (self.dir / "error.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no error log)"
        return " | ".join(lines[-4:])

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)
        self.proc = None


class MariaReplication:
    """``primary`` and ``replica`` (each with ``url``, ``port``, ``connect()``)."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tminus-mariarepl-"))
        self.primary = _Server(self.tmp, "primary", 1)
        self.replica = _Server(self.tmp, "replica", 2)

    def __enter__(self) -> MariaReplication:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        installs = [self.primary.install(), self.replica.install()]
        for server, proc in zip((self.primary, self.replica), installs, strict=True):
            try:
                rc = proc.wait(START_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                raise MariaReplicaError("mariadb-install-db did not finish in time") from exc
            if rc != 0:
                log = (server.dir / "install.log").read_text(errors="replace")
                raise MariaReplicaError(f"mariadb-install-db failed: {log.strip()[-300:]}")
        self.primary.start("--log-bin=mysql-bin", "--binlog-format=ROW")
        self.replica.start("--read-only=0", "--relay-log=relay-bin")
        p = self.primary.connect()
        try:
            with p.cursor() as cur:
                for sql in (
                    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'",
                    "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION",
                    "CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1'",
                    "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'",
                ):
                    cur.execute(sql)
        finally:
            p.close()
        r = self.replica.connect()
        try:
            with r.cursor() as cur:  # from the first binary log: the users above replicate too
                cur.execute(
                    f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.primary.port},"
                    " MASTER_USER='repl', MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=4,"
                    " MASTER_CONNECT_RETRY=1"
                )
                cur.execute("START SLAVE")
        finally:
            r.close()
        self.wait_running()

    def wait_running(self, timeout: float = 20.0) -> None:
        """Until both replication threads run and the replica has caught up."""
        import pymysql

        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = self.replica.connect()
            try:
                with r.cursor(pymysql.cursors.DictCursor) as cur:
                    cur.execute("SHOW SLAVE STATUS")
                    status = cur.fetchone() or {}
            finally:
                r.close()
            if (
                status.get("Slave_IO_Running") == "Yes"
                and status.get("Slave_SQL_Running") == "Yes"
                and status.get("Seconds_Behind_Master") == 0
            ):
                return
            time.sleep(0.2)
        raise MariaReplicaError(
            f"the MariaDB replica did not start replicating within {timeout:g}s: "
            f"IO {status.get('Slave_IO_Running')}, SQL {status.get('Slave_SQL_Running')}, "
            f"{status.get('Last_IO_Error') or status.get('Last_SQL_Error') or ''}"
        )

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
