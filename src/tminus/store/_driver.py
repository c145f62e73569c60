"""The records written for every step (its start, each process group it spawns, its end),
sent through the database driver itself.

SQLAlchemy's per-statement machinery (execution context, result set-up, events, the
``begin``/``commit`` bookkeeping) cost about three times the database's own work on these
records: a SQLite step's three transactions took 0.44 ms through SQLAlchemy Core and 0.14 ms
through ``sqlite3`` (``bench/engine_overhead.py``, issue #20 item 4). Here the very statements
SQLAlchemy would send, compiled by it once per dialect and with its own type processors (so
the rows are byte for byte what the rest of the store writes and reads), go straight to the
DBAPI cursor of the store's one connection, in the same transactions as before:

* SQLite: ``BEGIN IMMEDIATE`` … ``COMMIT`` (the write lock taken at once, as :meth:`Store.tx`);
* PostgreSQL: one round trip per transaction: its statements bound on the client (psycopg's
  ``ClientCursor``, libpq's quoting) and sent as one query with their ``BEGIN``, the
  ``SET LOCAL synchronous_commit TO OFF`` of an unflushed one and ``COMMIT``.

A driver error rolls the transaction back and is raised as SQLAlchemy's ``DBAPIError`` (as
every other store call raises it); a broken PostgreSQL connection is invalidated, so the next
call reconnects. Each counted commit passes the fault point, as :meth:`Store.tx` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

if TYPE_CHECKING:
    from tminus.store._connect import StoreBase

__all__ = ["DriverTx", "Prepared", "driver_tx"]

#: The PostgreSQL statement of a transaction whose commit need not wait for its WAL flush.
NO_FLUSH = "SET LOCAL synchronous_commit TO OFF"


@dataclass(frozen=True)
class Prepared:
    """A statement compiled for one dialect: its SQL, and its parameters in the order the
    driver takes them (names, for a named paramstyle), each with its type processor (None:
    sent as it is) and, for a value written in the statement itself (``state="running"``),
    that value."""

    sql: str
    params: tuple[tuple[str, Callable[[Any], Any] | None, tuple[Any, ...]], ...]
    positional: bool

    @classmethod
    def compile(cls, stmt: ClauseElement, dialect: Dialect, keys: Sequence[str] = ()) -> Prepared:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        positional = compiled.positiontup is not None
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        params = []
        for name in compiled.positiontup or binds:
            bind = binds[name]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            params.append((name, proc, () if bind.required else (bind.value,)))
        return cls(compiled.string, tuple(params), positional)

    def args(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The driver's parameters for ``values`` (by name)."""
        out = []
        for name, proc, fixed in self.params:
            value = fixed[0] if fixed else values[name]
            out.append(value if proc is None else proc(value))
        if self.positional:
            return out
        return dict(zip((p[0] for p in self.params), out, strict=True))


class DriverTx:
    """The statements of one transaction, sent on the driver's cursor as they come
    (SQLite: in process, no round trip to save)."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.sql = ""

    def execute(self, prepared: Prepared, params: Mapping[str, Any]) -> None:
        self.sql = prepared.sql
        self.cursor.execute(prepared.sql, prepared.args(params))

    def rowcount(self, prepared: Prepared, params: Mapping[str, Any]) -> int:
        """Execute, and the number of rows it changed."""
        self.execute(prepared, params)
        return int(self.cursor.rowcount)

    def commit(self) -> None:
        self.cursor.execute("COMMIT")


class BatchTx(DriverTx):
    """PostgreSQL: the statements of one transaction, bound on the client by psycopg's
    ``ClientCursor.mogrify`` (libpq's quoting) and sent with their ``BEGIN`` and ``COMMIT`` as
    one simple query: one round trip per transaction. Sending a statement at a time took
    2.6 times as long, and psycopg's pipeline mode was no faster here (0.43 vs 0.17 ms for a
    transaction of two inserts, in-process CPU 0.27 vs 0.07 ms).
    A statement whose row count is needed is sent at once (with what came before it)."""

    def __init__(self, cursor: Any, *, flush: bool) -> None:
        super().__init__(cursor)
        self.pending = ["BEGIN", *([] if flush else [NO_FLUSH])]

    def execute(self, prepared: Prepared, params: Mapping[str, Any]) -> None:
        self.sql = prepared.sql
        self.pending.append(self.cursor.mogrify(prepared.sql, prepared.args(params)))

    def rowcount(self, prepared: Prepared, params: Mapping[str, Any]) -> int:
        self._send()
        super().execute(prepared, params)
        return int(self.cursor.rowcount)

    def _send(self, *last: str) -> None:
        self.pending.extend(last)
        if self.pending:
            self.cursor.execute(";\n".join(self.pending))
            self.pending = []

    def commit(self) -> None:
        self._send("COMMIT")


_prepared: dict[tuple[str, str], Prepared] = {}


def prepared(
    name: str, dialect: Dialect, build: Callable[[], tuple[ClauseElement, Sequence[str]]]
) -> Prepared:
    """The statement ``name`` compiled for ``dialect`` (once per process and dialect)."""
    key = (name, dialect.name)
    found = _prepared.get(key)
    if found is None:
        stmt, keys = build()
        found = _prepared[key] = Prepared.compile(stmt, dialect, keys)
    return found


@contextmanager
def driver_tx(store: StoreBase, *, count: bool = True, flush: bool = True) -> Iterator[DriverTx]:
    """A write transaction on the driver of the store's connection, committed on exit (see
    the module's docstring; ``count`` and ``flush`` as for :meth:`Store.tx`)."""
    conn = store._connection()
    dbapi = conn.connection.dbapi_connection
    if conn.in_transaction() or dbapi is None:  # not expected: the store's calls never nest
        raise RuntimeError("driver_tx: the store's connection is already in a transaction")
    postgres = conn.dialect.name == "postgresql"
    tx = DriverTx(None)  # (what the error says if the transaction cannot even begin)
    try:
        if postgres:
            # The whole transaction is sent as one query with its own BEGIN and COMMIT: the
            # driver must not add its own (it would in its default mode: one more round trip).
            dbapi.autocommit = True
            tx = BatchTx(_client_cursor(dbapi), flush=flush)
        else:
            tx = DriverTx(dbapi.cursor())
            tx.sql = "BEGIN IMMEDIATE"
            tx.cursor.execute(tx.sql)
        try:
            yield tx
        except BaseException:
            if not postgres:
                with contextlib.suppress(Exception):
                    tx.cursor.execute("ROLLBACK")
            raise
        tx.commit()
    except conn.dialect.loaded_dbapi.Error as exc:
        _after_error(store, conn, dbapi, postgres)
        raise DBAPIError.instance(
            tx.sql,
            None,
            exc,
            conn.dialect.loaded_dbapi.Error,
            connection_invalidated=conn.invalidated,
            dialect=conn.dialect,
        ) from exc
    except BaseException:
        _after_error(store, conn, dbapi, postgres)
        raise
    finally:
        if postgres and not dbapi.closed:
            with contextlib.suppress(Exception):
                dbapi.autocommit = False
    if count:
        store._after_commit()


def _client_cursor(dbapi: Any) -> Any:
    import psycopg

    return psycopg.ClientCursor(dbapi)


def _after_error(store: StoreBase, conn: Connection, dbapi: Any, postgres: bool) -> None:
    """Roll back what a failed PostgreSQL transaction left open (a statement that failed
    after the batch's BEGIN leaves it open and aborted); a broken connection is invalidated
    (the store reconnects on its next call)."""
    if not postgres:
        return
    try:
        if not dbapi.closed:
            dbapi.execute("ROLLBACK")
    except Exception:
        pass
    if dbapi.closed or getattr(dbapi, "broken", False):
        with contextlib.suppress(Exception):
            conn.invalidate()
        store._conn = None
