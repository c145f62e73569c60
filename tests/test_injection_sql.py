"""SQL injection (issue #13, item 2) on real PostgreSQL, MariaDB and SQLite.

The findings: ``--var "note=x'); DROP TABLE victims; --"`` in ``INSERT … VALUES ('${note}')``
dropped the table, and a value in a ``sql`` check changed its result. Now a ``${…}`` inside a
string literal is bound (the literal becomes one driver parameter), ``params:`` are bound, and
an unquoted value that is not a number or an identifier is refused before anything runs.

Mutation tried for every test here: in ``tminus.plan.sqlbind.bind_statement`` splice the literal
raw (``parts.append(("sql", "'" + value + "'"))`` instead of the bind): the CLI regressions
fail (the table is dropped or the INSERT is a syntax error; the check counts 1), and the
property tests fail at once (a quote in the value). Second mutation: accept any unquoted
value (drop the SAFE_NUMBER/SAFE_IDENT test): the refusal tests fail (the DELETE deletes
every row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Tm
from tminus.plan.interpolate import Resolver
from tminus.plan.sqlbind import SqlBindError, prepare
from tminus.sqlrun import run_query, run_statements

HOSTILE = "x'); DROP TABLE victims; --"

PLAN = """\
name: inj
environment: test
variables: {{note: hello, who: nobody, id: "1"}}
targets:
  databases:
    app: {{kind: {kind}, url: "{url}"}}
checks:
  owned:
    source: sql
    database: app
    query: SELECT count(*) FROM victims WHERE owner = '${{who}}'
    expect: "== 0"
  owned_param:
    source: sql
    database: app
    query: SELECT count(*) FROM victims WHERE owner = :who
    params: {{who: "${{who}}"}}
    expect: "== 0"
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: sql
        database: app
        statements: "INSERT INTO victims (owner, note) VALUES ('alice', '${{note}}')"
      - kind: sql
        database: app
        statements: "INSERT INTO victims (owner, note) VALUES (:owner, :note)"
        params: {{owner: bob, note: "${{note}}"}}
operations:
  wipe:
    params: {{id: {{type: str, required: true}}}}
    steps:
      - {{kind: sql, database: app, statements: "DELETE FROM victims WHERE id = ${{id}}"}}
  annotate:
    params: {{note: {{type: str, required: true}}}}
    steps:
      - kind: sql
        database: app
        statements: "INSERT INTO victims (owner, note) VALUES ('op', '${{note}}')"
"""


def _tables(kind: str, url: str) -> int:
    q = {
        "postgres": "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        "mariadb": "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
        "sqlite": "SELECT count(*) FROM sqlite_master "
        "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    }[kind]
    return int(run_query(kind, url, q)[0][0])


def _create(kind: str, url: str) -> None:
    ident = {
        "postgres": "id SERIAL PRIMARY KEY",
        "mariadb": "id INT AUTO_INCREMENT PRIMARY KEY",
        "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    }[kind]
    tail = " CHARACTER SET utf8mb4" if kind == "mariadb" else ""
    run_statements(
        kind,
        url,
        [
            f"CREATE TABLE victims ({ident}, owner VARCHAR(100), note TEXT){tail}",
            "CREATE TABLE other (a INT)",
        ],
        transaction=False,
    )


@pytest.fixture(params=["postgres", "mariadb", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, url) of a fresh database holding the tables ``victims`` and ``other``."""
    kind = str(request.param)
    if kind == "postgres":
        url = str(request.getfixturevalue("pg_url"))
    elif kind == "mariadb":
        url = str(request.getfixturevalue("mysql_url"))
    else:
        url = f"sqlite:///{tmp_path / 'app.db'}"
    _create(kind, url)
    return kind, url


def _plan(tm: Tm, db: tuple[str, str]) -> str:
    kind, url = db
    (tm.cwd / "p.yaml").write_text(PLAN.format(kind=kind, url=url))
    return "p.yaml"


def _rows(db: tuple[str, str]) -> list[tuple[Any, ...]]:
    kind, url = db
    return run_query(kind, url, "SELECT owner, note FROM victims ORDER BY id")


def test_a_hostile_var_in_a_literal_is_stored_not_run(tm: Tm, db: tuple[str, str]) -> None:
    """The finding itself, through the CLI: both spellings (`'${note}'` and `params:`)."""
    plan = _plan(tm, db)
    proc = tm("run", plan, "--var", f"note={HOSTILE}")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert _tables(*db) == 2
    assert _rows(db) == [("alice", HOSTILE), ("bob", HOSTILE)]


def test_a_hostile_value_cannot_change_a_check_result(tm: Tm, db: tuple[str, str]) -> None:
    kind, url = db
    run_statements(
        kind, url, ["INSERT INTO victims (owner, note) VALUES ('alice', 'n')"], transaction=True
    )
    plan = _plan(tm, db)
    for check in ("owned", "owned_param"):
        hostile = tm("check", plan, "--run-check", check, "--var", "who=x' OR '1'='1")
        assert f"PASS      {check}  0" in hostile.stdout, (hostile.stdout, hostile.stderr)
        # the same check does see a real owner: the value is used, as a value
        real = tm("check", plan, "--run-check", check, "--var", "who=alice")
        assert f"CRITICAL  {check}  1, expected == 0" in real.stdout, real.stdout


def test_an_unquoted_hostile_value_is_refused_before_anything_runs(
    tm: Tm, db: tuple[str, str]
) -> None:
    """Operation params follow the same rule: ``DELETE … WHERE id = ${id}``."""
    kind, url = db
    run_statements(
        kind, url, ["INSERT INTO victims (owner, note) VALUES ('a', 'n')"] * 3, transaction=True
    )
    plan = _plan(tm, db)
    proc = tm("op", "run", plan, "wipe", "--param", "id=1 OR 1=1", "--yes")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "nothing was run" in out and "is not a number or a plain identifier" in out, out
    assert "Traceback" not in out
    assert len(_rows(db)) == 3
    ok = tm("op", "run", plan, "wipe", "--param", "id=2", "--yes")
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert len(_rows(db)) == 2
    op = tm("op", "run", plan, "annotate", "--param", f"note={HOSTILE}", "--yes")
    assert op.returncode == 0, (op.stdout, op.stderr)
    assert _rows(db)[-1] == ("op", HOSTILE) and _tables(kind, url) == 2


# --- the property: the statement's effect is the same whatever the value -------------------

_NASTY = [
    HOSTILE,
    "'",
    "''",
    "\\",
    "\\'",
    "'; DELETE FROM victims; --",
    "' OR '1'='1",
    "*/ DROP TABLE other; /*",
    "-- ",
    "$$; DROP TABLE other; $$",
    "${note}",
    "%s %(x)s %%",
    ":note ::text",
    '`"',
    "é ü 𝄞 😀 ñ",
    " trailing ",
]
_CHARS = list("'\"\\;-/*%:$`#{}()[] \n\tabZ0é€😀")
VALUES = st.one_of(
    st.sampled_from(_NASTY),
    st.text(alphabet=st.sampled_from(_CHARS), max_size=30),
    st.text(max_size=20),
    st.just("nul\0inside"),
)
TEMPLATES = [
    ("INSERT INTO victims (owner, note) VALUES ('lit', '${note}')", "{}", {}),
    (
        "INSERT INTO victims (owner, note) VALUES ('part', 'pre-''${note}''-post')",
        "pre-'{}'-post",
        {},
    ),
    ("INSERT INTO victims (owner, note) VALUES ('param', :note)", "{}", {"note": "${note}"}),
]


def _property(kind: str, url: str, value: str) -> None:
    r = Resolver(variables={"note": value}, env={})
    before = _tables(kind, url)
    run_statements(kind, url, ["DELETE FROM victims"], transaction=True)
    for template, expected, params in TEMPLATES:
        try:
            stmts = prepare([template], kind, r, params)
        except SqlBindError as exc:
            assert "\0" in value and "NUL" in str(exc)
            continue
        assert "\0" not in value
        run_statements(kind, url, stmts, transaction=True)
        got = run_query(kind, url, "SELECT note FROM victims ORDER BY id DESC LIMIT 1")
        assert got == [(expected.format(value),)]
    assert _tables(kind, url) == before
    n = run_query(kind, url, "SELECT count(*) FROM victims")[0][0]
    assert n == (0 if "\0" in value else len(TEMPLATES))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=VALUES)
def test_property_hostile_values_are_stored_exactly(db: tuple[str, str], value: str) -> None:
    """Any text through a whole literal, a partial literal and a param: stored as written,
    the tables unchanged; a NUL is refused with a clear message (nothing runs)."""
    _property(*db, value)
