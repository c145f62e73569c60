"""``no_data_loss`` compares what the data needs, on real MariaDB and PostgreSQL (issue #12).

MariaDB (InnoDB) creates an index for a foreign key implicitly, and drops it by itself when
another index that starts with the key's columns is added: that is no loss. A dropped index
(whose columns no longer lead any index), a dropped unique key, a dropped constraint, a
dropped column and lost rows still are.

Mutation tried: compare index *names* again (make ``compare_snapshots`` take the old
``else`` branch always): ``test_mariadb_implicit_fk_index_is_not_a_loss`` fails with
"index child.fk_parent is gone"; and dropping the unique-key check in ``_compare_shape`` makes
the dropped-unique-key cases fail."""

from __future__ import annotations

from typing import Any

from tminus.backups.registry import get_driver
from tminus.sources.no_data_loss import compare_snapshots

from .conftest import my_exec, pg_exec

MY_SCHEMA = """
CREATE TABLE parent (id INT PRIMARY KEY, code VARCHAR(20) NOT NULL, UNIQUE KEY uq_code (code))
    ENGINE=InnoDB;
CREATE TABLE child (
    id INT PRIMARY KEY, parent_id INT NOT NULL, kind INT NOT NULL, note VARCHAR(20),
    CONSTRAINT fk_parent FOREIGN KEY (parent_id) REFERENCES parent (id),
    CONSTRAINT ck_kind CHECK (kind >= 0),
    KEY idx_note (note)
) ENGINE=InnoDB;
INSERT INTO parent VALUES (1, 'a'), (2, 'b');
INSERT INTO child VALUES (1, 1, 0, 'x'), (2, 2, 1, 'y');
"""

PG_SCHEMA = """
CREATE TABLE parent (id int PRIMARY KEY, code text NOT NULL CONSTRAINT uq_code UNIQUE);
CREATE TABLE child (
    id int PRIMARY KEY, parent_id int NOT NULL CONSTRAINT fk_parent REFERENCES parent (id),
    kind int NOT NULL CONSTRAINT ck_kind CHECK (kind >= 0), note text
);
CREATE INDEX idx_parent ON child (parent_id);
CREATE INDEX idx_note ON child (note);
INSERT INTO parent VALUES (1, 'a'), (2, 'b');
INSERT INTO child VALUES (1, 1, 0, 'x'), (2, 2, 1, 'y');
"""


def _my(url: str, *statements: str) -> None:
    my_exec(url.rsplit("/", 1)[-1], *statements)


def _problems(kind: str, url: str, before: dict[str, Any], **allow: set[str]) -> list[str]:
    now = get_driver(kind).snapshot(url)
    return compare_snapshots(
        before,
        now,
        declared=[],
        allow_rows=allow.get("rows", set()),
        allow_missing=allow.get("missing", set()),
        label="app",
    )


def _seed_my(url: str) -> dict[str, Any]:
    _my(url, *[s for s in MY_SCHEMA.split(";") if s.strip()])
    return get_driver("mysql").snapshot(url)


def test_mariadb_implicit_fk_index_is_not_a_loss(my_db: str) -> None:
    before = _seed_my(my_db)
    assert "child.fk_parent" in before["indexes"]  # InnoDB's implicit index of the FK
    _my(my_db, "ALTER TABLE child ADD INDEX idx_parent_kind (parent_id, kind)")
    now = get_driver("mysql").snapshot(my_db)
    assert "child.fk_parent" not in now["indexes"]  # InnoDB dropped it by itself
    assert _problems("mysql", my_db, before) == []


def test_mariadb_real_losses_are_still_found(my_db: str) -> None:
    before = _seed_my(my_db)
    _my(my_db, "ALTER TABLE child DROP INDEX idx_note")
    assert _problems("mysql", my_db, before) == [
        "app: index child.idx_note is gone (no index starts with (note))"
    ]
    assert _problems("mysql", my_db, before, missing={"child.idx_note"}) == []
    _my(my_db, "ALTER TABLE child ADD INDEX idx_note_kind (note, kind)")
    assert _problems("mysql", my_db, before) == []  # covered again
    _my(my_db, "ALTER TABLE parent DROP INDEX uq_code, ADD INDEX idx_code (code)")
    assert _problems("mysql", my_db, before) == ["app: unique key parent.uq_code (code) is gone"]
    _my(
        my_db,
        "ALTER TABLE parent ADD UNIQUE KEY uq_code (code)",
        "ALTER TABLE child DROP CONSTRAINT ck_kind",
    )
    assert _problems("mysql", my_db, before) == ["app: check constraint child.ck_kind is gone"]
    _my(
        my_db,
        "ALTER TABLE child ADD CONSTRAINT ck_kind CHECK (kind >= 0)",
        "ALTER TABLE child DROP FOREIGN KEY fk_parent",
    )
    assert _problems("mysql", my_db, before) == [
        "app: foreign key constraint child.fk_parent is gone"
    ]
    _my(
        my_db,
        "ALTER TABLE child ADD CONSTRAINT fk_parent FOREIGN KEY (parent_id) REFERENCES parent (id)",
        "ALTER TABLE child DROP COLUMN note",
        "DELETE FROM child WHERE id = 2",
    )
    got = _problems("mysql", my_db, before)
    assert "app: column child.note is gone" in got
    assert "app: child lost 1 row(s)" in got


def _seed_pg(url: str) -> dict[str, Any]:
    pg_exec(url, PG_SCHEMA)
    return get_driver("postgres").snapshot(url)


def test_postgres_index_replaced_by_a_covering_one_is_not_a_loss(pg_db: str) -> None:
    before = _seed_pg(pg_db)
    pg_exec(
        pg_db, "CREATE INDEX idx_parent_kind ON child (parent_id, kind)", "DROP INDEX idx_parent"
    )
    assert _problems("postgres", pg_db, before) == []


def test_postgres_real_losses_are_still_found(pg_db: str) -> None:
    before = _seed_pg(pg_db)
    pg_exec(pg_db, "DROP INDEX idx_note")
    assert _problems("postgres", pg_db, before) == [
        "app: index public.child.idx_note is gone (no index starts with (note))"
    ]
    assert _problems("postgres", pg_db, before, missing={"public.idx_note"}) == []
    pg_exec(
        pg_db,
        "CREATE INDEX idx_note ON child (note)",
        "ALTER TABLE parent DROP CONSTRAINT uq_code",
    )
    assert _problems("postgres", pg_db, before) == [
        "app: unique key public.parent.uq_code (code) is gone"
    ]
    pg_exec(
        pg_db,
        "ALTER TABLE parent ADD CONSTRAINT uq_code UNIQUE (code)",
        "ALTER TABLE child DROP CONSTRAINT fk_parent, DROP CONSTRAINT ck_kind",
    )
    assert sorted(_problems("postgres", pg_db, before)) == [
        "app: check constraint public.child.ck_kind is gone",
        "app: foreign key constraint public.child.fk_parent is gone",
    ]
    pg_exec(
        pg_db,
        "ALTER TABLE child ADD CONSTRAINT fk_parent FOREIGN KEY (parent_id) REFERENCES parent",
        "ALTER TABLE child ADD CONSTRAINT ck_kind CHECK (kind >= 0)",
        "ALTER TABLE child DROP COLUMN note",
        "DELETE FROM child WHERE id = 2",
    )
    got = _problems("postgres", pg_db, before)
    assert "app: column public.child.note is gone" in got
    assert "app: public.child lost 1 row(s)" in got
    # dropping the column dropped idx_note too: reported as well
    assert "app: index public.child.idx_note is gone (no index starts with (note))" in got
