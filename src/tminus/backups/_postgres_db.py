"""PostgreSQL connections of the postgres backup driver: a psycopg session with pinned text
output (so that two sessions print values identically) that a cancelled step cancels, the
password-less URL the libpq tools get, and the catalog queries of a live database's shape."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from tminus.backups.base import BackupError, redact_url, url_password
from tminus.backups.tools import mask
from tminus.sqlrun import cancel_on_cancel, pg_session_setup

#: Nothing public: the postgres driver's own helpers.
__all__: list[str] = []

_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET search_path = pg_catalog",
)
_USER_SCHEMAS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_%'
"""


def _schema_shape(conn: psycopg.Connection[Any], tables: set[str]) -> dict[str, Any]:
    """What the data needs, per table ``schema.table`` (see ``no_data_loss``): its columns,
    its indexes' key columns in order (expressions as text, with uniqueness), and its named
    constraints other than unique ones (primary key, foreign keys, checks, exclusions)."""
    columns: dict[str, list[str]] = {t: [] for t in tables}
    for s, t, c in conn.execute(
        f"""
        SELECT n.nspname, c.relname, a.attname FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_SCHEMAS}
        ORDER BY 1, 2, a.attnum
        """
    ):
        columns.setdefault(f"{s}.{t}", []).append(c)
    index_columns: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in tables}
    for s, t, name, unique, cols in conn.execute(
        f"""
        SELECT n.nspname, c.relname, i.relname, x.indisunique,
               ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true)
                     FROM generate_series(1, x.indnkeyatts) AS k ORDER BY k)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND {_USER_SCHEMAS}
        """
    ):
        index_columns.setdefault(f"{s}.{t}", {})[name] = {
            "columns": list(cols),
            "unique": bool(unique),
        }
    constraints: dict[str, dict[str, str]] = {t: {} for t in tables}
    kinds = {"p": "primary key", "f": "foreign key", "c": "check", "x": "exclusion"}
    for s, t, name, ctype in conn.execute(
        f"""
        SELECT n.nspname, c.relname, k.conname, k.contype FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND k.contype IN ('p', 'f', 'c', 'x') AND {_USER_SCHEMAS}
        """
    ):
        constraints.setdefault(f"{s}.{t}", {})[name] = kinds[str(ctype)]
    return {"columns": columns, "index_columns": index_columns, "constraints": constraints}


def _libpq_url(url: str) -> str:
    """A URL libpq tools accept, without the password."""
    u = redact_url(url)
    if u.startswith("postgresql+psycopg://"):
        u = "postgresql://" + u.split("://", 1)[1]
    return u


def _connect(url: str) -> psycopg.Connection[Any]:
    if url.startswith("postgresql+psycopg://"):
        url = "postgresql://" + url.split("://", 1)[1]
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise BackupError(
            mask(f"cannot connect to {redact_url(url)}: {exc}", [url_password(url)])
        ) from None
    for s in _SESSION:
        conn.execute(s)
    # A cancelled backup/restore/verify (tminus.work.in_thread) cancels this session's query.
    pg_session_setup(conn)
    cancel_on_cancel(conn)
    return conn


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    if row is None:
        raise BackupError(f"no result from {query!r}")
    return row[0]


def _ident(*parts: str) -> sql.Composable:
    return sql.Identifier(*parts)
