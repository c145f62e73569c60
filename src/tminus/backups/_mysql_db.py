"""MariaDB/MySQL connections of the mysql backup driver: the target URL's parts, a pymysql
connection that a cancelled step KILLs, the client options with the password in a private
defaults file, and the catalog queries of a live schema's shape."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pymysql  # type: ignore[import-untyped]

from tminus.backups.base import BackupError, redact_url
from tminus.backups.tools import mask
from tminus.sqlrun import cancel_on_cancel

__all__ = ["MysqlUrl"]


@dataclass(frozen=True)
class MysqlUrl:
    """The parts of ``mysql://user:password@host:port/database?unix_socket=…``."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    socket: str | None = None

    @classmethod
    def parse(cls, url: str) -> MysqlUrl:
        parts = urlsplit(url)
        if parts.scheme.split("+", 1)[0] not in ("mysql", "mariadb"):
            raise BackupError(f"not a mysql:// or mariadb:// URL: {redact_url(url)}")
        query = dict(parse_qsl(parts.query))
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password) if parts.password else query.get("password"),
            database=unquote(parts.path.lstrip("/")),
            socket=query.get("unix_socket"),
        )


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _connect(u: MysqlUrl, *, database: str | None = None) -> Any:
    try:
        conn = pymysql.connect(
            host=u.host,
            port=u.port,
            user=u.user,
            password=u.password or "",
            database=database,
            unix_socket=u.socket,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=10,
        )
    except pymysql.MySQLError as exc:
        raise BackupError(
            mask(f"cannot connect to {u.host}:{u.port}: {exc}", [u.password])
        ) from None
    cancel_on_cancel(conn)  # a cancelled backup/restore (tminus.work) KILLs its query
    return conn


def _rows(conn: Any, query: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, args)
        return list(cur.fetchall())


def _schema_shape(conn: Any, database: str, tables: set[str]) -> dict[str, Any]:
    """What the data needs, per table (see ``no_data_loss``): its columns, its indexes' key
    columns in order (with uniqueness), and its named constraints (primary key, foreign keys,
    checks). Index names are recorded but compared by columns: InnoDB drops the index it
    created implicitly for a foreign key when another index starts with the key's columns."""
    columns: dict[str, list[str]] = {t: [] for t in tables}
    for t, c in _rows(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
        (database,),
    ):
        if t in columns:
            columns[t].append(c)
    index_columns: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in tables}
    for t, name, non_unique, col in _rows(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COALESCE(COLUMN_NAME, '(expression)') "
        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
        "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        (database,),
    ):
        if t in index_columns:
            entry = index_columns[t].setdefault(
                name, {"columns": [], "unique": not int(non_unique)}
            )
            entry["columns"].append(col)
    constraints: dict[str, dict[str, str]] = {t: {} for t in tables}
    for t, name, ctype in _rows(
        conn,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE "
        "FROM information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s "
        "AND CONSTRAINT_TYPE <> 'UNIQUE'",
        (database,),
    ):
        if t in constraints:
            constraints[t][name] = str(ctype).lower()
    return {"columns": columns, "index_columns": index_columns, "constraints": constraints}


@contextmanager
def _defaults_file(u: MysqlUrl) -> Iterator[list[str]]:
    """Client options, with the password in a private defaults file (first argument)."""
    with tempfile.TemporaryDirectory(prefix="tminus-my-") as d:
        path = Path(d) / "client.cnf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("[client]\n")
            if u.password:
                escaped = u.password.replace("\\", "\\\\").replace('"', '\\"')
                f.write(f'password="{escaped}"\n')
        args = [f"--defaults-extra-file={path}", f"--user={u.user}"]
        if u.socket:
            args.append(f"--socket={u.socket}")
        else:
            args += [f"--host={u.host}", f"--port={u.port}"]
        yield args


def _session(conn: Any) -> None:
    with conn.cursor() as cur:
        try:  # MySQL 8 caches information_schema.TABLES (AUTO_INCREMENT) for a day
            cur.execute("SET SESSION information_schema_stats_expiry = 0")
        except pymysql.MySQLError:
            pass
