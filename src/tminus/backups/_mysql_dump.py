"""The dump and the load of the mysql backup driver: the dump tool run under the locked snapshot
handshake (the manifest's state computed in a snapshot proven identical to the dump's, see
:mod:`tminus.backups.mysql`) with its output gzipped and checked as it streams, and a dump
piped into the ``mariadb``/``mysql`` client."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

import pymysql  # type: ignore[import-untyped]

from tminus import work
from tminus.backups._mysql_db import MysqlUrl, _defaults_file
from tminus.backups._mysql_state import _state
from tminus.backups.base import BackupError, Manifest
from tminus.backups.compare import DbState
from tminus.backups.tools import kill_tool, mask, tail

#: Nothing public: the mysql driver's own helpers.
__all__: list[str] = []

DUMP_FILE = "dump.sql.gz"
_COMPLETED = b"-- Dump completed"
_DATA_MARK = b"-- Dumping data for table `"
_HANDSHAKE_TIMEOUT = 60.0


def _dump(
    conn: Any, argv: list[str], out: Path
) -> tuple[DbState, list[str], tuple[int, str, bool, set[str]]]:
    """Take the locked snapshot handshake, run the dump into ``out`` and compute the state
    in our snapshot meanwhile. Returns the state, non-transactional tables and (exit status,
    stderr, completed marker seen, tables with data)."""
    db = argv[-1]
    with conn.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 30")
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        try:
            cur.execute("FLUSH TABLES WITH READ LOCK")
        except pymysql.MySQLError as exc:
            raise BackupError(
                f"cannot block writes for the consistent snapshot "
                f"(FLUSH TABLES WITH READ LOCK): {exc}",
                hint="grant the RELOAD privilege to the backup user",
            ) from None
    proc: subprocess.Popen[bytes] | None = None
    started = threading.Event()
    err_lines: list[str] = []
    box: dict[str, Any] = {"completed": False, "dumped": set(), "error": None}

    def read_err(stream: IO[bytes]) -> None:
        after_start = False
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            err_lines.append(line)
            if after_start or "Retrieving table structure" in line:
                started.set()
            if "-- Starting transaction" in line:
                after_start = True
        started.set()

    def copy_out(stream: IO[bytes]) -> None:
        try:
            last = b""
            with gzip.open(out, "wb", compresslevel=6) as gz:
                for line in stream:
                    gz.write(line)
                    if line.startswith(_DATA_MARK):
                        box["dumped"].add(line[len(_DATA_MARK) :].rstrip(b"`\r\n").decode())
                    if line.strip():
                        last = line
            box["completed"] = last.startswith(_COMPLETED)
        except BaseException as exc:  # surfaced by the caller
            box["error"] = exc
            for _ in stream:  # keep draining so the tool cannot block
                pass

    threads: list[threading.Thread] = []
    try:
        with conn.cursor() as cur:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        proc = work.popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        threads = [
            threading.Thread(target=read_err, args=(proc.stderr,), daemon=True),
            threading.Thread(target=copy_out, args=(proc.stdout,), daemon=True),
        ]
        for t in threads:
            t.start()
        if not started.wait(_HANDSHAKE_TIMEOUT):
            raise BackupError(
                f"the dump tool did not start its transaction within {_HANDSHAKE_TIMEOUT:g}s"
            )
    except BaseException:
        if proc is not None:
            kill_tool(proc)
        raise
    finally:
        with conn.cursor() as cur:
            cur.execute("UNLOCK TABLES")  # our snapshot and the dump's are now taken
    assert proc is not None
    try:
        state, non_tx = _state(conn, db)
        with conn.cursor() as cur:
            cur.execute("COMMIT")
    except BaseException:
        kill_tool(proc)
        raise
    finally:
        rc = proc.wait()
        for t in threads:
            t.join()
    if box["error"] is not None:
        raise BackupError(f"cannot write the dump: {box['error']}")
    return state, non_tx, (rc, "\n".join(err_lines), box["completed"], box["dumped"])


def _load(client: str, manifest: Manifest, backup_dir: Path, u: MysqlUrl, db: str) -> None:
    """Pipe the dump into the client connected to schema ``db``; check its exit status."""
    with _defaults_file(u) as opts:
        argv = [
            client, *opts, "--batch", "--default-character-set=utf8mb4", db,
        ]  # fmt: skip
        with tempfile.TemporaryFile() as errf:
            proc = work.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf)
            assert proc.stdin is not None
            broken = False
            try:
                with gzip.open(backup_dir / DUMP_FILE, "rb") as gz:
                    shutil.copyfileobj(gz, proc.stdin, 1 << 20)
            except BrokenPipeError:
                broken = True
            except (OSError, EOFError) as exc:
                kill_tool(proc)
                raise BackupError(f"cannot read {DUMP_FILE}: {exc}") from None
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    broken = True
            rc = proc.wait()
            errf.seek(0)
            err = errf.read().decode("utf-8", "replace")
    if rc != 0 or broken:
        raise BackupError(
            mask(f"{Path(argv[0]).name} failed (exit {rc}) loading the dump: {tail(err)}",
                 [u.password])
        )  # fmt: skip
