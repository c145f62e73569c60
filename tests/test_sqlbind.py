"""The SQL lexer and binder (:mod:`tminus.plan.sqlbind`) and `tminus check`'s SQL rules
(:mod:`tminus.plan.lint_sql`), issue #13 item 2.

The lexer tests are pure (no database); what the drivers do with the bound values is in
tests/test_injection_sql.py, on real PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import Tm
from tminus.plan.interpolate import Reference, Resolver
from tminus.plan.sqlbind import (
    Bound,
    SqlBindError,
    bind_statements,
    convert_param,
    describe_sql,
)

HOSTILE = "x'); DROP TABLE victims; --"
VALUES = {
    "note": HOSTILE,
    "t": "victims",
    "n": "5",
    "neg": "-1",
    "dotted": "public.victims",
    "q": 'we"ird`name',
    "nul": "a\0b",
    "ctl": "a\nb",
    "sq": "a'; DROP TABLE t; --",
    "bs": "a\\",
}


def _look(ref: Reference) -> str:
    return VALUES[ref.name]


def _bind(
    text: str, dialect: str = "postgres", params: dict[str, object] | None = None
) -> list[Bound]:
    out = bind_statements(text, dialect, _look, params or {})  # type: ignore[arg-type]
    assert out is not None
    return out


@pytest.mark.parametrize("dialect", ["postgres", "mysql", "sqlite"])
def test_a_reference_in_a_literal_becomes_one_bound_value(dialect: str) -> None:
    [b] = _bind("INSERT INTO victims (note) VALUES ('${note}')", dialect)
    assert b.render("pyformat") == "INSERT INTO victims (note) VALUES (%(_v1)s)"
    assert b.render("named") == "INSERT INTO victims (note) VALUES (:_v1)"
    assert b.values == {"_v1": HOSTILE}
    # partial: the literal's content, '' unescaped, with the value put in
    [b] = _bind("SELECT 'it''s ${t}-${n}!'", dialect)
    assert b.values == {"_v1": "it's victims-5!"}


def test_mysql_literals_decode_backslash_escapes_and_double_quotes() -> None:
    [b] = _bind(r"""SELECT 'a\n\'${n}\%', "b""${t}" """, "mysql")
    assert b.values == {"_v1": "a\n'5\\%", "_v2": 'b"victims'}
    # on PostgreSQL a backslash is an ordinary character and "…" is an identifier
    [b] = _bind(r"""SELECT 'a\n${n}', "b""${t}" """, "postgres")
    assert b.values == {"_v1": "a\\n5"}
    assert b.render("named") == 'SELECT :_v1, "b""victims" '


@pytest.mark.parametrize(
    ("dialect", "text", "sql"),
    [
        ("postgres", 'SELECT * FROM "${q}"', 'SELECT * FROM "we""ird`name"'),
        ("sqlite", 'SELECT * FROM "${q}"', 'SELECT * FROM "we""ird`name"'),
        ("mysql", "SELECT * FROM `${q}`", 'SELECT * FROM `we"ird``name`'),
        ("sqlite", "SELECT * FROM `${q}`", 'SELECT * FROM `we"ird``name`'),
    ],
)
def test_a_reference_in_a_quoted_identifier_is_escaped(dialect: str, text: str, sql: str) -> None:
    [b] = _bind(text, dialect)
    assert b.render("named") == sql and b.values == {}


@pytest.mark.parametrize("name", ["nul", "ctl", "sq", "bs"])
def test_an_identifier_value_with_nul_control_quote_or_backslash_is_refused(name: str) -> None:
    """Mutation: drop the ' / backslash test in ``_ident_value``: sq and bs pass (fails)."""
    with pytest.raises(SqlBindError, match=r"NUL|control|backslash"):
        _bind('SELECT * FROM "${' + name + '}"')


def test_unquoted_values_are_numbers_or_identifiers_only() -> None:
    [b] = _bind("SELECT * FROM ${t} JOIN ${dotted} LIMIT ${n}")
    assert b.render("pyformat") == "SELECT * FROM victims JOIN public.victims LIMIT 5"
    for name in ("note", "neg", "q"):  # a negative number could make `-${n}` a comment
        with pytest.raises(SqlBindError, match="not a number or a plain identifier") as e:
            _bind(f"SELECT 1 - ${{{name}}}")
        assert e.value.hint and "'${" in e.value.hint and "params:" in e.value.hint


@pytest.mark.parametrize(
    ("dialect", "text", "where"),
    [
        ("postgres", "SELECT 1 -- ${n}\n", "a comment"),
        ("postgres", "SELECT 1 /* /* nested */ ${n} */", "a comment"),
        ("mysql", "SELECT 1 # ${n}", "a comment"),
        ("postgres", "DO $body$ BEGIN PERFORM ${n}; END $body$", "a dollar-quoted body"),
        ("postgres", "SELECT E'${n}'", "a prefixed literal"),
        ("mysql", "SELECT _utf8mb4'${n}'", "a prefixed literal"),
        ("sqlite", "SELECT [${t}] FROM x", "a [bracketed] identifier"),
    ],
)
def test_references_where_no_value_can_go_are_refused(dialect: str, text: str, where: str) -> None:
    with pytest.raises(SqlBindError, match=re.escape(f"inside {where}")):
        _bind(text, dialect)


def test_mysql_double_dash_needs_a_space_to_be_a_comment() -> None:
    [b] = _bind("SELECT 1--${n}", "mysql")  # 1 minus minus 5 in MySQL: code, not a comment
    assert b.render("named") == "SELECT 1--5"
    with pytest.raises(SqlBindError, match="comment"):
        _bind("SELECT 1--${n}", "postgres")


def test_placeholders_casts_and_splitting() -> None:
    params = {"p": 3}
    stmts = _bind(
        "SELECT ':p;', x::int, :p, a[1:n] FROM t /* ; */; -- ;\nSELECT :p::text;", params=params
    )
    assert [s.render("pyformat") for s in stmts] == [
        "SELECT ':p;', x::int, %(p)s, a[1:n] FROM t /* ; */",
        " -- ;\nSELECT %(p)s::text",
    ]
    assert all(s.values == {"p": 3} for s in stmts)
    with pytest.raises(SqlBindError, match=":nope is not a parameter"):
        _bind("SELECT :nope, '${n}'")


def test_sql_without_references_runs_as_written() -> None:
    assert bind_statements("SELECT 'a:b', 100 % 3; SELECT 2", "postgres", _look, {}) is None
    # params declared but not used by this statement: as written too
    assert bind_statements("CREATE TABLE t (a int)", "postgres", _look, {"p": 1}) is None


def test_escaped_references_and_percent_signs() -> None:
    [b] = _bind("SELECT '$${literal}', '${n}%', 10 % 3")
    assert b.render("pyformat") == "SELECT '${literal}', %(_v1)s, 10 %% 3"
    assert b.render("named") == "SELECT '${literal}', :_v1, 10 % 3"
    assert b.values == {"_v1": "5%"}


def test_generated_names_never_clash_with_params() -> None:
    [b] = _bind("SELECT :_v1, '${n}'", params={"_v1": "mine"})
    assert b.values == {"_v1": "mine", "_v2": "5"}


def test_param_types() -> None:
    assert convert_param("42", "int") == 42
    assert convert_param(" 7 ", "int") == 7
    assert convert_param("1.5", "float") == 1.5
    assert convert_param("0.10", "decimal") == Decimal("0.10")
    assert convert_param("yes", "bool") is True
    assert convert_param("2024-02-29", "date") == date(2024, 2, 29)
    assert convert_param("2024-02-29T10:00:00", "timestamp") == datetime(2024, 2, 29, 10)
    assert convert_param(None, "null") is None
    assert convert_param(5, "str") == "5"
    assert convert_param(5, None) == 5
    for value, type_ in [
        ("abc", "int"),
        (True, "int"),
        ("nan", "decimal"),
        ("x", "bool"),
        ("2024-13-01", "date"),
        ("v", "null"),
        (None, "int"),
    ]:
        with pytest.raises(ValueError):
            convert_param(value, type_)


def test_describe_masks_nothing_itself_but_shows_markers_and_values() -> None:
    r = Resolver.for_plan({"note": HOSTILE}, {"pw": "s3cret-value"}, env={})
    shown = describe_sql("UPDATE u SET pw = '${pw}' WHERE note = '${note}'", r, {})
    assert shown.startswith("UPDATE u SET pw = :_v1 WHERE note = :_v2 [")
    assert r.mask(shown).count("s3cret-value") == 0 and "***" in r.mask(shown)
    refused = describe_sql("SELECT ${note}", r, {})
    assert "refused, nothing would run" in refused


# --- tminus check --------------------------------------------------------------------------

BAD_PLAN = """\
name: inj
environment: test
variables:
  note: hello
  unsafe: "a b"
targets:
  databases:
    app: {kind: postgres, url: "postgresql://postgres@127.0.0.1/x"}
checks:
  two:
    source: sql
    database: app
    query: "SELECT 1; SELECT '${note}'"
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: sql
        database: app
        statements:
          - "SELECT 1 /* ${note} */"
          - "DO $$ BEGIN RAISE NOTICE '${note}'; END $$"
          - "INSERT INTO t VALUES (:nte, 'ok')"
          - "SELECT * FROM t LIMIT ${unsafe}"
        params: {note: "${note}", n: {value: abc, type: int}}
"""


def test_check_rejects_unsafe_sql_with_position_and_hint(tm: Tm) -> None:
    """Mutation: `sql_problems` returning no problems: exit 0, no sql-* codes (fails)."""
    Path(tm.cwd / "bad.yaml").write_text(BAD_PLAN)
    proc = tm("check", "bad.yaml")
    assert proc.returncode == 2, proc
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "bad.yaml:21:13: error[sql-reference-unsafe]: ${note} is inside a comment" in out
    assert "bad.yaml:22:13: error[sql-reference-unsafe]: ${note} is inside a dollar-quoted" in out
    assert "hint: write it as a parameter: params: {note: '${note}'} and :note in the SQL" in out
    assert "bad.yaml:23:13: error[sql-unknown-param]: :nte is not a parameter" in out
    assert "did you mean 'note'?" in out
    assert "bad.yaml:25:18: error[sql-unused-param]: parameter 'note' is not used" in out
    assert "error[sql-bad-param]: parameter 'n': 'abc' is not an integer" in out
    assert "bad.yaml:13:12: error[sql-statements]" in out
    assert "warning[sql-unquoted-value]: ${unsafe} is unquoted" in out


GOOD_PLAN = """\
name: ok
environment: test
variables: {note: hello, limit: 10}
targets:
  databases:
    app: {kind: mariadb, url: "mysql://root@127.0.0.1/x"}
checks:
  owned:
    source: sql
    database: app
    query: SELECT count(*) FROM t WHERE note = :note AND day < :day
    params: {note: "${note}", day: {value: "2024-01-01", type: date}}
    expect: "== 0"
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: sql
        database: app
        statements:
          - "INSERT INTO `t` (note, n) VALUES ('${note}', :n)"
          - SELECT * FROM t LIMIT ${limit}
        params: {n: {value: "${limit}", type: int}}
"""


def test_check_accepts_bound_sql(tm: Tm) -> None:
    Path(tm.cwd / "ok.yaml").write_text(GOOD_PLAN)
    proc = tm("check", "ok.yaml", "--strict")
    assert proc.returncode == 0, proc


DRY_PLAN = """\
name: dry
environment: test
variables: {note: hello}
secrets: {pw: "${env:DRY_PW}"}
targets:
  databases:
    app: {kind: sqlite, url: "sqlite:///app.db"}
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: sql
        database: app
        statements:
          - "UPDATE users SET pw = '${pw}', note = :note WHERE id = 1"
          - "SELECT 1"
        params: {note: "${note}"}
"""


def test_the_dry_run_shows_markers_and_values_with_secrets_masked(tm: Tm) -> None:
    Path(tm.cwd / "p.yaml").write_text(DRY_PLAN)
    proc = tm(
        "run",
        "p.yaml",
        "--dry-run",
        "--var",
        "note=x'); DROP TABLE users; --",
        env={"DRY_PW": "s3cret-value-xyz"},
    )
    assert proc.returncode == 0, proc
    assert "s3cret-value-xyz" not in proc.stdout + proc.stderr
    assert (
        "on app: UPDATE users SET pw = :_v1, note = :note WHERE id = 1 "
        "[_v1='***', note=\"x'); DROP TABLE users; --\"]; SELECT 1"
    ) in proc.stdout, proc.stdout
    assert not (tm.cwd / "app.db").exists()
