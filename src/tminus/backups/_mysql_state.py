"""The state of a MariaDB/MySQL schema in the manifest's terms, read in the connection's current
snapshot: exact row counts and order-independent checksums of every table, indexes,
constraints and ``AUTO_INCREMENT`` counters, and the tables no snapshot covers (MyISAM, Aria)."""

from __future__ import annotations

import hashlib
from typing import Any

import pymysql  # type: ignore[import-untyped]

from tminus.backups._mysql_db import _q, _rows
from tminus.backups.base import SchemaObject, SequenceEntry, TableEntry
from tminus.backups.compare import DbState

#: Nothing public: the mysql driver's own helpers.
__all__: list[str] = []


def _state(conn: Any, db: str) -> tuple[DbState, list[str]]:
    """Catalog, exact counts and checksums of schema ``db`` in ``conn``'s current snapshot;
    also the tables whose engine is not transactional."""
    tables: list[TableEntry] = []
    non_tx: list[str] = []
    rels = _rows(
        conn,
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (db,),
    )
    cols: dict[str, list[str]] = {}
    for t, col in _rows(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
        (db,),
    ):
        cols.setdefault(t, []).append(col)
    for name, engine in rels:
        if str(engine or "").lower() not in ("innodb", "xtradb", "rocksdb", "ndbcluster"):
            non_tx.append(name)
        row_expr = ", ".join(f"QUOTE({_q(c)})" for c in cols[name])
        (count, s1, s2) = _rows(
            conn,
            "SELECT COUNT(*),"
            " COALESCE(SUM(CAST(CONV(SUBSTRING(h, 1, 16), 16, 10) AS UNSIGNED)), 0),"
            " COALESCE(SUM(CAST(CONV(SUBSTRING(h, 17, 16), 16, 10) AS UNSIGNED)), 0)"
            f" FROM (SELECT MD5(CONCAT_WS(',', {row_expr})) AS h FROM {_q(db)}.{_q(name)}) x",
        )[0]
        digest = hashlib.md5(f"{int(s1)}:{int(s2)}".encode()).hexdigest()
        tables.append(TableEntry(name, int(count), digest))
    indexes: dict[tuple[str, str], list[str]] = {}
    unique: dict[tuple[str, str], str] = {}
    for t, idx, non_unique, col, sub, itype in _rows(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE "
        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
        "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        (db,),
    ):
        indexes.setdefault((t, idx), []).append(f"{col}({sub})" if sub else str(col))
        unique[(t, idx)] = f"{'' if int(non_unique) else 'UNIQUE '}{itype}"
    index_objs = [
        SchemaObject(idx, t, f"{unique[(t, idx)]} ({', '.join(c)})")
        for (t, idx), c in sorted(indexes.items())
    ]
    cons: dict[tuple[str, str], list[str]] = {}
    for t, name, ctype in _rows(
        conn,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE "
        "FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA = %s",
        (db,),
    ):
        cons[(t, name)] = [str(ctype)]
    for t, name, col, rt, rc in _rows(
        conn,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, "
        "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION",
        (db,),
    ):
        cons.setdefault((t, name), ["KEY"]).append(f"{col}" + (f"->{rt}.{rc}" if rt else ""))
    try:  # MariaDB; MySQL 8 has no TABLE_NAME here (TABLE_CONSTRAINTS still lists them)
        checks = _rows(
            conn,
            "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE "
            "FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s",
            (db,),
        )
    except pymysql.MySQLError:
        checks = []
    for t, name, clause in checks:
        cons.setdefault((t, name), ["CHECK"]).append(str(clause))
    constraint_objs = [
        SchemaObject(name, t, " ".join(parts)) for (t, name), parts in sorted(cons.items())
    ]
    sequences: list[SequenceEntry] = []
    for t, col, auto in _rows(
        conn,
        "SELECT c.TABLE_NAME, c.COLUMN_NAME, t.AUTO_INCREMENT FROM information_schema.COLUMNS c "
        "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA "
        "AND t.TABLE_NAME = c.TABLE_NAME WHERE c.TABLE_SCHEMA = %s "
        "AND c.EXTRA LIKE '%%auto_increment%%' ORDER BY 1",
        (db,),
    ):
        m = _rows(conn, f"SELECT MAX({_q(col)}) FROM {_q(db)}.{_q(t)}")[0][0]
        sequences.append(
            SequenceEntry(
                f"{t}.auto_increment",
                t,
                col,
                None if auto is None else int(auto) - 1,
                None if m is None else int(m),
            )
        )
    return DbState(tables, index_objs, constraint_objs, sequences), non_tx
