"""The state of a PostgreSQL database in the manifest's terms, read in one snapshot: exact row
counts and order-independent checksums of every table (``row64`` or ``md5``, on several
sessions sharing an exported snapshot), indexes, constraints and sequences."""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from tminus.backups._postgres_db import _USER_SCHEMAS, _connect, _ident
from tminus.backups.base import BackupError, SchemaObject, SequenceEntry, TableEntry
from tminus.backups.compare import DbState

__all__ = ["CHECKSUMS", "CHECKSUM_CHAIN64", "CHECKSUM_MD5", "CHECKSUM_ROW64"]


#: Checksum algorithms (``Manifest.details["checksum"]``). A manifest without the key (format 1)
#: used ``md5``; format 2 manifests name ``row64`` or (new backups, PostgreSQL >= 14)
#: ``chain64``, which sees the same changes for less server CPU.
CHECKSUM_CHAIN64 = "chain64"
CHECKSUM_ROW64 = "row64"
CHECKSUM_MD5 = "md5"
CHECKSUMS = (CHECKSUM_CHAIN64, CHECKSUM_ROW64, CHECKSUM_MD5)

#: Types whose own hash function sees exactly what their text output shows, so ``chain64`` and
#: ``row64`` hash their values without printing them: int2, int4, int8, oid, bool, "char",
#: date, time, timestamp, timestamptz, uuid, bytea, text, varchar (the last two under COLLATE
#: "C", so a case-insensitive collation cannot hide a change). Anything else (numeric: 1.5 =
#: 1.50; float: -0 = 0; jsonb; enums, whose hash is their OID; domains, arrays…) is hashed as
#: text.
_EXACT_TYPES = frozenset({21, 23, 20, 26, 16, 18, 1082, 1083, 1114, 1184, 2950, 17, 25, 1043})
_TEXT_TYPES = frozenset({25, 1043})

#: A table to checksum: schema, name, and its columns as (name, type oid, NOT NULL) in attnum
#: order.
_Col = tuple[str, int, bool]
_Rel = tuple[str, str, tuple[_Col, ...]]


def _row_hash(columns: tuple[_Col, ...]) -> sql.Composable:
    """``row64``'s hash of one row: ``hash_record_extended`` over the row's columns (exact
    types as they are, the rest as text), then mixed once more through ``hashtextextended``.
    The record hash combines its columns linearly (``h * 31 + h_i``), so a plain sum over rows
    would only add up column sums and miss two rows swapping a value; the second hash makes
    each row's contribution depend on the whole row."""
    parts: list[sql.Composable] = []
    for name, typ, _ in columns:
        col = sql.SQL("t.{}").format(sql.Identifier(name))
        if typ in _TEXT_TYPES:
            parts.append(sql.SQL('{} COLLATE "C"').format(col))
        elif typ in _EXACT_TYPES:
            parts.append(col)
        else:
            parts.append(sql.SQL('{}::text COLLATE "C"').format(col))
    return sql.SQL("hashtextextended(hash_record_extended(ROW({}), 0)::text, 0)").format(
        sql.SQL(", ").join(parts)
    )


#: ``chain64``: exact types whose hash function PostgreSQL exposes with a seed, as (function,
#: the value a NULL is hashed as; the NULL itself is told apart by the row's null mask).
_SEEDED: dict[int, tuple[str, str]] = {
    21: ("hashint2extended", "0::int2"),
    23: ("hashint4extended", "0::int4"),
    20: ("hashint8extended", "0::int8"),
    26: ("hashoidextended", "0::oid"),
    18: ("hashcharextended", "''::\"char\""),
    1083: ("time_hash_extended", "'00:00'::time"),
    1114: ("timestamp_hash_extended", "'epoch'::timestamp"),
    2950: ("uuid_hash_extended", "'00000000-0000-0000-0000-000000000000'::uuid"),
    25: ("hashtextextended", "''::text"),
    1043: ("hashtextextended", "''::text"),
}
#: ``chain64``: date, timestamptz and bytea, exact types whose hash functions take no SQL
#: argument of their type, are hashed together by one ``hash_record_extended``; bool goes
#: through int4.
_RECORD_TYPES = frozenset({1082, 1184, 17})
_BOOL = 16
#: Null mask bits per word (an int4 that the last links of the chain hash).
_MASK_BITS = 30


def _chain_hash(columns: tuple[_Col, ...]) -> sql.Composable:
    """``chain64``'s hash of one row: each column hashed by its type's own hash function (the
    exact types of :data:`_EXACT_TYPES`) or as text, **seeded with the hash of the columns
    before it**, so that each link depends on the whole row so far (``row64`` builds a record
    per row, hashes it, and hashes the text of that hash again). date, timestamptz and bytea
    are hashed together by ``hash_record_extended`` seeded with the chain. A null mask (one
    bit per column, 30 columns a word) closes the chain, so a NULL differs from the value it
    is hashed as. A row without NULLs hashes alike whether or not its columns are declared
    NOT NULL: such a column's bit and ``coalesce`` are left out."""
    h: sql.Composable = sql.SQL("0::int8")
    record: list[sql.Composable] = []
    words: list[list[sql.Composable]] = [[] for _ in range(0, max(1, len(columns)), _MASK_BITS)]
    for i, (name, typ, not_null) in enumerate(columns):
        col: sql.Composable = sql.SQL("t.{}").format(sql.Identifier(name))
        if not not_null:
            words[i // _MASK_BITS].append(
                sql.SQL("CASE WHEN {} IS NULL THEN {} ELSE 0 END").format(
                    col, sql.Literal(1 << (i % _MASK_BITS))
                )
            )
        if typ in _RECORD_TYPES:
            record.append(col)  # hash_record_extended hashes a NULL as 0
            continue
        if typ in _SEEDED:
            fn, null = _SEEDED[typ]
        elif typ == _BOOL:
            fn, null, col = "hashint4extended", "0::int4", sql.SQL("{}::int4").format(col)
        else:
            fn, null, col = "hashtextextended", "''::text", sql.SQL("{}::text").format(col)
        value = col if not_null else sql.SQL("coalesce({}, {})").format(col, sql.SQL(null))
        if fn == "hashtextextended":
            value = sql.SQL('{} COLLATE "C"').format(value)
        h = sql.SQL("{}({}, {})").format(sql.SQL(fn), value, h)
    if record:
        h = sql.SQL("hash_record_extended(ROW({}), {})").format(sql.SQL(", ").join(record), h)
    for word in words:
        mask = sql.SQL(" + ").join(word) if word else sql.SQL("0")
        h = sql.SQL("hashint4extended({}, {})").format(mask, h)
    return h


def _checksum_query(algorithm: str, rel: _Rel) -> sql.Composed:
    """Exact row count and the sums a table's checksum is made of, in one scan.

    ``chain64`` and ``row64`` sum :func:`_chain_hash` or :func:`_row_hash` over the rows
    exactly (``sum(bigint)`` is numeric).
    ``md5`` (format 1 manifests) sums both 64-bit halves of ``md5((t.*)::text)`` (the whole row
    as text, even when a column is named ``t``); ``OFFSET 0`` keeps the planner from inlining
    the subquery, which would compute the md5 once per sum.
    """
    schema, name, columns = rel
    table = _ident(schema, name)
    if algorithm in (CHECKSUM_ROW64, CHECKSUM_CHAIN64):
        row = _row_hash(columns) if algorithm == CHECKSUM_ROW64 else _chain_hash(columns)
        return sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {} t").format(row, table)
    return sql.SQL(
        "SELECT count(*),"
        " coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0),"
        " coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)"
        " FROM (SELECT md5((t.*)::text) AS h FROM {} t OFFSET 0) s"
    ).format(table)


def _table_entry(conn: psycopg.Connection[Any], algorithm: str, rel: _Rel) -> TableEntry:
    row = conn.execute(_checksum_query(algorithm, rel)).fetchone()
    assert row is not None
    if algorithm in (CHECKSUM_ROW64, CHECKSUM_CHAIN64):
        text = f"{algorithm}:{int(row[1])}"
    else:
        text = f"{int(row[1])}:{int(row[2])}"
    return TableEntry(f"{rel[0]}.{rel[1]}", int(row[0]), hashlib.md5(text.encode()).hexdigest())


def _import_snapshot(url: str, snapshot: str) -> psycopg.Connection[Any]:
    """A new session whose transaction sees exactly the exported ``snapshot``."""
    conn = _connect(url)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    except BaseException:
        conn.close()
        raise
    return conn


def _table_entries(
    conn: psycopg.Connection[Any],
    rels: list[_Rel],
    algorithm: str,
    *,
    url: str | None,
    snapshot: str | None,
    jobs: int,
    gate: Callable[[int, int], None] | None = None,
    single: bool = False,
) -> list[TableEntry]:
    """Counts and checksums of ``rels`` (largest first). With ``jobs > 1`` and an exported
    ``snapshot``, ``jobs - 1`` more sessions import the snapshot and take tables from the same
    queue as ``conn``, so every table is read in the same instant as on one connection.
    ``gate(tables, k)`` is called by the ``k``-th session (``conn`` is 0) before its first
    table, while tables are left; it may wait, or raise to stop every session. ``single``:
    each session one backend, without parallel workers (``SET LOCAL``: only the transaction
    of ``snapshot``)."""
    todo = deque(rels)
    out: dict[tuple[str, str], TableEntry] = {}
    lock = threading.Lock()
    failed = threading.Event()

    def opened(k: int) -> bool:
        """Whether session ``k`` may start: tables are left and its gate let it through."""
        if gate is None:
            return True
        with lock:
            if not todo:
                return False
        try:
            gate(len(rels), k)
        except BaseException:
            failed.set()
            raise
        return True

    def work(c: psycopg.Connection[Any]) -> None:
        if single:
            c.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        while not failed.is_set():
            with lock:
                if not todo:
                    return
                rel = todo.popleft()
            try:
                entry = _table_entry(c, algorithm, rel)
            except BaseException:
                failed.set()
                raise
            out[(rel[0], rel[1])] = entry

    def helper(k: int) -> None:
        assert url is not None and snapshot is not None
        if not opened(k) or failed.is_set():
            return
        try:
            c = _import_snapshot(url, snapshot)
        except BaseException:
            failed.set()
            raise
        try:
            work(c)
            c.execute("COMMIT")
        finally:
            c.close()

    extra = min(jobs, len(rels)) - 1 if url is not None and snapshot is not None else 0
    if extra <= 0:
        if opened(0):
            work(conn)
    else:
        with ThreadPoolExecutor(max_workers=extra, thread_name_prefix="tminus-checksum") as pool:
            # each helper in a copy of this context: its sessions join the cancel scope
            futures = [
                pool.submit(contextvars.copy_context().run, helper, k) for k in range(1, extra + 1)
            ]
            try:
                if opened(0):
                    work(conn)
            finally:
                errors = [f.exception() for f in futures]
            for exc in errors:
                if exc is not None:
                    raise exc
    return [out[key] for key in sorted(out)]  # (schema, name) order, as the catalog lists


def _state(
    conn: psycopg.Connection[Any],
    algorithm: str = CHECKSUM_ROW64,
    *,
    url: str | None = None,
    snapshot: str | None = None,
    jobs: int = 1,
    known: dict[tuple[str, str], TableEntry] | None = None,
    gate: Callable[[int, int], None] | None = None,
    single: bool = False,
) -> DbState:
    """Catalog, exact counts and checksums as seen by ``conn``'s current snapshot (shared with
    ``jobs - 1`` more sessions on ``url`` when ``snapshot`` names it, see
    :func:`_table_entries`). ``known``: entries of ``(schema, table)`` already computed (a
    restore checksums each table as its data lands), not read again; every other table of the
    catalog is. ``gate`` and ``single``: see :func:`_table_entries` (a backup's sessions wait
    for room beside pg_dump, one backend each)."""
    if algorithm not in CHECKSUMS:
        raise BackupError(f"unknown checksum algorithm {algorithm!r}")
    rows = conn.execute(
        f"""
        SELECT n.nspname, c.relname, a.attname, a.atttypid::int, a.attnotnull FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind = 'r' AND {_USER_SCHEMAS}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY pg_table_size(c.oid) DESC, 1, 2, a.attnum
        """
    ).fetchall()
    columns: dict[tuple[str, str], list[_Col]] = {}
    for schema, name, col, typ, not_null in rows:  # largest table first, columns in order
        cols = columns.setdefault((str(schema), str(name)), [])
        if col is not None:
            cols.append((str(col), int(typ), bool(not_null)))
    done = {key: e for key, e in (known or {}).items() if key in columns}
    rels = [(s, n, tuple(cols)) for (s, n), cols in columns.items() if (s, n) not in done]
    tables = _table_entries(
        conn, rels, algorithm, url=url, snapshot=snapshot, jobs=jobs, gate=gate, single=single
    )
    if done:  # (schema, name) order, as _table_entries returns them
        order = {f"{s}.{n}": (s, n) for s, n in columns}
        tables = sorted([*tables, *done.values()], key=lambda e: order[e.name])
    indexes = [
        SchemaObject(f"{s}.{i}", f"{s}.{t}", d)
        for s, t, i, d in conn.execute(
            f"""
            SELECT n.nspname, t.relname, c.relname, pg_get_indexdef(c.oid)
            FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_SCHEMAS} ORDER BY 1, 2, 3
            """
        )
    ]
    constraints = [
        SchemaObject(name, f"{s}.{t}", d)
        for s, t, name, d in conn.execute(
            f"""
            SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_SCHEMAS} ORDER BY 1, 2, 3
            """
        )
    ]
    sequences: list[SequenceEntry] = []
    for s_schema, s_name, t_schema, t_name, col in conn.execute(
        f"""
        SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname
        FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class t ON t.oid = d.refobjid
        LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE s.relkind = 'S' AND {_USER_SCHEMAS} ORDER BY 1, 2
        """
    ).fetchall():
        r = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(_ident(s_schema, s_name))
        ).fetchone()
        assert r is not None
        last = int(r[0]) if r[1] else int(r[0]) - 1  # not called: nextval returns last_value
        max_value = None
        if t_name is not None and col is not None:
            m = conn.execute(
                sql.SQL("SELECT max({}) FROM {}").format(_ident(col), _ident(t_schema, t_name))
            ).fetchone()
            max_value = None if m is None or m[0] is None else int(m[0])
        sequences.append(
            SequenceEntry(
                f"{s_schema}.{s_name}",
                f"{t_schema}.{t_name}" if t_name else None,
                col,
                last,
                max_value,
            )
        )
    return DbState(tables, indexes, constraints, sequences)
