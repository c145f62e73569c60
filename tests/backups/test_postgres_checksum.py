"""The PostgreSQL checksums (format 2: ``chain64`` for new backups, ``row64`` before it) against
the real server: what they detect, on which types they hash values as they are and where they
must print them, how ``chain64`` tells a NULL from the value it is hashed as, that parallel
sessions sharing one snapshot give the same answer as one session, and that older manifests
(``row64``; format 1, ``md5``) are still verified with their own algorithm."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from tests.backups.conftest import pg_content, pg_exec
from tminus.backups import BackupError, Manifest, get_driver
from tminus.backups.postgres import (
    CHECKSUM_CHAIN64,
    CHECKSUM_MD5,
    CHECKSUM_ROW64,
    PostgresDriver,
    _connect,
    _state,
)

HASHED = [CHECKSUM_CHAIN64, CHECKSUM_ROW64]  # the algorithms that hash values by type


def _checksums(url: str, algorithm: str, jobs: int = 1) -> dict[str, tuple[int, str]]:
    conn = _connect(url)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snap = None
        if jobs > 1:
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            snap = str(row[0])
        state = _state(conn, algorithm, url=url, snapshot=snap, jobs=jobs)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {t.name: (t.rows, t.checksum) for t in state.tables}


def test_new_backups_record_the_chain64_algorithm_and_format_2(
    pg_seeded: str, tmp_path: Path
) -> None:
    m = get_driver("postgres").backup(pg_seeded, tmp_path, jobs=3)
    raw = json.loads((tmp_path / m.id / "manifest.json").read_text())
    assert raw["format"] == 2 and raw["details"]["checksum"] == "chain64"
    assert Manifest.load(tmp_path / m.id).format == 2
    # the parallel backup's checksums are those of one session
    ours = {t.name: (t.rows, t.checksum) for t in m.tables}
    assert ours == _checksums(pg_seeded, CHECKSUM_CHAIN64)
    assert ours != _checksums(pg_seeded, CHECKSUM_ROW64)


@pytest.mark.parametrize("algorithm", [*HASHED, CHECKSUM_MD5])
@pytest.mark.parametrize(
    ("change", "table"),
    [
        ("UPDATE users SET score = score + 0.01 WHERE id = 1234", "public.users"),
        ("UPDATE users SET name = NULL WHERE id = 1", "public.users"),  # value → NULL
        ("UPDATE users SET avatar = NULL WHERE id = 2", "public.users"),
        # two rows swap a value: same multiset of values per column, different rows
        (
            "UPDATE orders SET amount = CASE id WHEN 10 THEN (SELECT amount FROM orders "
            "WHERE id = 11) ELSE (SELECT amount FROM orders WHERE id = 10) END "
            "WHERE id IN (10, 11)",
            "public.orders",
        ),
        # one row dropped and another duplicated: the count stays the same
        (
            "DELETE FROM audit WHERE id = 5; INSERT INTO audit (id, payload, at) "
            "SELECT 5, payload, at FROM audit WHERE id = 6",
            "public.audit",
        ),
        ("UPDATE audit SET payload = payload || '{\"k\": 0}' WHERE id = 7", "public.audit"),
    ],
)
def test_checksum_detects_a_changed_row(
    pg_seeded: str, algorithm: str, change: str, table: str
) -> None:
    before = _checksums(pg_seeded, algorithm)
    with psycopg.connect(pg_seeded, autocommit=True) as conn:
        conn.execute(change.encode())  # may hold two statements
    after = _checksums(pg_seeded, algorithm)
    assert after[table] != before[table]
    assert after[table][0] == before[table][0]  # the count alone would not have seen it
    assert {k: v for k, v in after.items() if k != table} == {
        k: v for k, v in before.items() if k != table
    }


TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE kinds (
    id int8 PRIMARY KEY, n numeric, f float8, j jsonb, js json, m mood,
    name text COLLATE nocase, v varchar(20), c char(4), b bytea, u uuid, ts timestamptz,
    d date, tm time, iv interval, arr int[], dom positive, ok bool
);
INSERT INTO kinds SELECT g, g * 1.5, g / 3.0, jsonb_build_object('k', g), json_build_object('k', g),
    (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3], 'Name ' || g, 'v' || g, 'c' || g % 10,
    decode(md5(g::text), 'hex'), md5(g::text)::uuid,
    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 hour', date '2026-01-01' + g,
    time '00:00' + g * interval '1 minute', g * interval '1 day', ARRAY[g, g + 1], g, g % 2 = 0
FROM generate_series(1, 200) g;
"""


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE kinds SET n = 3.00 WHERE id = 2",  # 3.0 → 3.00: equal numbers, other text
        "UPDATE kinds SET f = '-0' WHERE id = 3",  # 0 → -0 (the setup made it 0): equal floats
        "UPDATE kinds SET f = '-0' WHERE id = 3 AND f <> 0",  # changes no row: same checksum
        "UPDATE kinds SET f = f + 1e-15 WHERE id = 4",
        "UPDATE kinds SET name = upper(name) WHERE id = 5",  # equal under the collation
        "UPDATE kinds SET js = '{\"k\":5}' WHERE id = 5",  # json keeps its spacing
        "UPDATE kinds SET m = 'happy' WHERE id = 7",
        "UPDATE kinds SET c = 'zz' WHERE id = 8",
        "UPDATE kinds SET b = b || '\\x00'::bytea WHERE id = 8",
        "UPDATE kinds SET ts = ts + interval '1 microsecond' WHERE id = 10",
        "UPDATE kinds SET iv = interval '24 hours' WHERE id = 1",  # = '1 day', other text
        "UPDATE kinds SET arr = ARRAY[12, 11] WHERE id = 11",
        "UPDATE kinds SET dom = 1000 WHERE id = 12",
        "UPDATE kinds SET id = id + 4294967296 WHERE id = 13",
        "UPDATE kinds SET ok = NOT ok, v = NULL WHERE id = 14",
    ],
)
@pytest.mark.parametrize("algorithm", HASHED)
def test_hashed_checksums_see_every_change_the_text_would_show(
    pg_db: str, change: str, algorithm: str
) -> None:
    pg_exec(pg_db, TYPES, "UPDATE kinds SET f = 0 WHERE id = 3")
    before = _checksums(pg_db, algorithm)["public.kinds"]
    with psycopg.connect(pg_db, autocommit=True) as conn:
        updated = conn.execute(change.encode()).rowcount
    after = _checksums(pg_db, algorithm)["public.kinds"]
    assert (after != before) == (updated > 0), (change, updated)


def test_hashed_checksums_verify_a_restore_into_another_database(
    pg_db: str, tmp_path: Path
) -> None:
    """Enum values hash by OID and a scratch database has other OIDs: hashed as text, they
    compare; so do the other printed types. Both a new (``chain64``) and a ``row64`` manifest.

    Mutation tried: ``_algorithm`` answering ``chain64`` whatever the manifest names (the
    ``row64`` manifest then fails to verify)."""
    pg_exec(pg_db, TYPES)
    drv = get_driver("postgres")
    m = drv.backup(pg_db, tmp_path, jobs=2)
    assert m.details["checksum"] == CHECKSUM_CHAIN64
    assert drv.verify(m, tmp_path / m.id, pg_db).ok
    older = _checksums(pg_db, CHECKSUM_ROW64)
    raw = json.loads(m.to_json())
    raw["details"]["checksum"] = CHECKSUM_ROW64
    raw["tables"] = [
        {"name": n, "rows": rows, "checksum": ck} for n, (rows, ck) in sorted(older.items())
    ]
    (tmp_path / m.id / "manifest.json").write_text(json.dumps(raw))
    assert drv.verify(Manifest.load(tmp_path / m.id), tmp_path / m.id, pg_db).ok


@pytest.mark.parametrize("algorithm", HASHED)
def test_checksum_ignores_row_order(pg_seeded: str, algorithm: str) -> None:
    before = _checksums(pg_seeded, algorithm)
    pg_exec(pg_seeded, "CLUSTER orders USING orders_user_idx")  # rewrites in another order
    assert _checksums(pg_seeded, algorithm) == before


WIDE_COLUMNS = 35  # two null-mask words


def _wide(not_null: bool) -> str:
    """A table whose columns cover each way ``chain64`` hashes a value (seeded by type, bool
    through int4, the record of date/timestamptz/bytea, as text), then enough int4 columns
    for a second null-mask word; every column NOT NULL or none."""
    nn = " NOT NULL" if not_null else ""
    cols = [
        f"id int8{nn}", f"i int4{nn}", f"s text{nn}", f"v varchar(9){nn}", f"ok bool{nn}",
        f"d date{nn}", f"ts timestamptz{nn}", f"b bytea{nn}", f"n numeric{nn}", f"j jsonb{nn}",
    ]  # fmt: skip
    cols += [f"c{k} int4{nn}" for k in range(len(cols), WIDE_COLUMNS)]
    fill = ", ".join(["0"] * (WIDE_COLUMNS - 10))
    return (
        f"CREATE TABLE wide ({', '.join(cols)});"
        f"INSERT INTO wide SELECT g, g, 's' || g, 'v' || g % 7, g % 2 = 0,"
        f" date '2026-01-01' + g, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 h',"
        f" decode(md5(g::text), 'hex'), g / 4.0, jsonb_build_object('k', g), {fill}"
        f" FROM generate_series(1, 50) g"
    )


def test_chain64_declared_not_null_or_not_hashes_alike(pg_db: str) -> None:
    """The same rows, without NULLs, give the same checksum whether the columns are declared
    NOT NULL (no mask bit, no coalesce) or not: a restore whose schema matches compares, and a
    schema difference is reported as one, not as changed data.

    Mutation tried: the mask words counted from the nullable columns only (fails)."""
    pg_exec(pg_db, _wide(not_null=False))
    nullable = _checksums(pg_db, CHECKSUM_CHAIN64)["public.wide"]
    pg_exec(pg_db, "DROP TABLE wide", _wide(not_null=True))
    assert _checksums(pg_db, CHECKSUM_CHAIN64)["public.wide"] == nullable


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE wide SET s = '' WHERE id = 1",  # then s = NULL: NULL hashes as ''
        "UPDATE wide SET i = 0 WHERE id = 1",
        "UPDATE wide SET ok = false WHERE id = 1",
        "UPDATE wide SET j = '{}' WHERE id = 1",
        "UPDATE wide SET c34 = 0 WHERE id = 1",  # the second mask word
    ],
)
def test_chain64_tells_null_from_the_value_it_is_hashed_as(pg_db: str, change: str) -> None:
    """Mutations tried: the null mask left out (fails all but the jsonb case, where NULL and
    ``{}`` print differently anyway), only the first mask word hashed (fails on ``c34``)."""
    pg_exec(pg_db, _wide(not_null=False), change)
    before = _checksums(pg_db, CHECKSUM_CHAIN64)["public.wide"]
    column = change.split()[3]
    pg_exec(pg_db, f"UPDATE wide SET {column} = NULL WHERE id = 1")
    assert _checksums(pg_db, CHECKSUM_CHAIN64)["public.wide"] != before


@pytest.mark.parametrize(
    "change",
    [
        # two rows swap a value of each kind of link: the multiset per column stays the same
        "UPDATE wide w SET i = o.i FROM wide o WHERE (w.id, o.id) IN ((1, 2), (2, 1))",
        "UPDATE wide w SET s = o.s FROM wide o WHERE (w.id, o.id) IN ((1, 2), (2, 1))",
        "UPDATE wide w SET ts = o.ts FROM wide o WHERE (w.id, o.id) IN ((1, 2), (2, 1))",
        "UPDATE wide w SET n = o.n FROM wide o WHERE (w.id, o.id) IN ((1, 2), (2, 1))",
        # one row's two columns of one type swap values: same multiset in the row
        "UPDATE wide SET c20 = 5, c21 = 0 WHERE id = 3",
        # values inside the date/timestamptz/bytea record change
        "UPDATE wide SET d = date '2026-01-01', ts = '2026-01-01 00:00:00+00' WHERE id = 4",
    ],
)
def test_chain64_sees_values_move_between_rows_and_columns(pg_db: str, change: str) -> None:
    """Mutation tried: the links combined by XOR, each seeded with 0, instead of each seeded
    with the chain so far (fails the swap of two columns in one row; the swaps between rows
    are still seen through the null mask's last hash)."""
    pg_exec(pg_db, _wide(not_null=False), "UPDATE wide SET c20 = 0, c21 = 5 WHERE id = 3")
    before = _checksums(pg_db, CHECKSUM_CHAIN64)["public.wide"]
    with psycopg.connect(pg_db, autocommit=True) as conn:
        assert conn.execute(change.encode()).rowcount > 0
    assert _checksums(pg_db, CHECKSUM_CHAIN64)["public.wide"] != before


@pytest.mark.parametrize("jobs", [2, 4])
def test_parallel_sessions_share_one_snapshot(pg_seeded: str, jobs: int) -> None:
    """Helpers import the exported snapshot: a write committed after it is invisible to every
    session, so the parallel result equals the serial one taken before the write."""
    serial = _checksums(pg_seeded, CHECKSUM_CHAIN64)
    conn = _connect(pg_seeded)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        pg_exec(pg_seeded, "DELETE FROM orders WHERE id <= 100", "DELETE FROM audit")
        state = _state(conn, CHECKSUM_CHAIN64, url=pg_seeded, snapshot=str(row[0]), jobs=jobs)
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert {t.name: (t.rows, t.checksum) for t in state.tables} == serial
    assert _checksums(pg_seeded, CHECKSUM_CHAIN64, jobs=jobs)["public.audit"][0] == 0


def test_a_format_1_manifest_is_still_verified_with_md5(pg_seeded: str, tmp_path: Path) -> None:
    """A backup written before format 2 (md5 checksums, no ``details.checksum``) restores and
    verifies; a changed row is still found."""
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path)
    legacy = _checksums(pg_seeded, CHECKSUM_MD5)
    assert legacy != _checksums(pg_seeded, CHECKSUM_CHAIN64)
    raw = json.loads(m.to_json())
    raw["format"] = 1
    del raw["details"]["checksum"]
    raw["tables"] = [
        {"name": n, "rows": rows, "checksum": ck} for n, (rows, ck) in sorted(legacy.items())
    ]
    (tmp_path / m.id / "manifest.json").write_text(json.dumps(raw))
    old = Manifest.load(tmp_path / m.id)
    assert old.format == 1 and "checksum" not in old.details
    assert drv.verify(old, tmp_path / m.id, pg_seeded).ok
    before = pg_content(pg_seeded)
    pg_exec(pg_seeded, "UPDATE orders SET note = 'changed' WHERE id = 3")
    assert any(p.startswith("table public.orders: checksum") for p in drv.compare(old, pg_seeded))
    PostgresDriver().restore(old, tmp_path / m.id, pg_seeded, jobs=2)
    assert pg_content(pg_seeded) == before


def test_unknown_algorithm_and_newer_format_are_refused(pg_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path)
    odd = replace(m, details={**m.details, "checksum": "crc7"})
    with pytest.raises(BackupError, match="checksum algorithm 'crc7'"):
        drv.compare(odd, pg_seeded)
    raw = json.loads(m.to_json())
    raw["format"] = 3
    with pytest.raises(BackupError, match="unsupported manifest format 3"):
        Manifest.from_json(json.dumps(raw))
