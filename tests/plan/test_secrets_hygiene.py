"""Secrets put where tminus shows them (issue #13, item 7): `tminus check` warns about a
password in `variables:` or in a URL's userinfo outside `secrets:`, and a URL's password is
masked in everything tminus prints, logs and stores, wherever it came from.

The run test uses the machine's real PostgreSQL (trust auth: the password in the URL is sent
and ignored), so the unmasked URL really reaches the driver while the output masks it.

Mutations tried (each made a test here fail, then was restored):

- the ``secret_problems`` hook removed from ``validate_plan``: no warning —
  ``test_check_warns``, ``test_strict_fails_on_a_password_in_a_url``;
- ``looks_secret`` returning True for any name: ``home: ${env:HOME}`` and ``token_ttl`` warn —
  ``test_no_warning_for_what_is_not_a_secret``;
- ``_url_problem`` accepting plain variables (the ``plain`` branch removed):
  ``test_check_warns[url-from-plain-variable]``;
- ``mask_url_passwords`` left out of ``Masker.mask``: the password from the environment is
  printed by the run step and stored — ``test_a_url_password_is_masked_at_run_time``,
  ``test_masker_masks_url_passwords_without_secrets``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Tm
from tminus.plan.interpolate import MASK, Masker, mask_url_passwords
from tminus.plan.lint_secrets import looks_secret
from tminus.plan.loader import load_plan, load_plan_text

ROOT = Path(__file__).resolve().parents[2]
PHASES = "phases:\n  - name: one\n    steps:\n      - {kind: run, command: 'true'}\n"
SECRETS = "secrets:\n  db_pw: ${env:DB_PW}\n"
CODES = ("secret-in-variables", "password-in-url")


def warnings(text: str) -> list[tuple[str, int, int, str]]:
    result = load_plan_text(text, "p.yaml")
    assert result.plan is not None, result.problems
    return [
        (p.code, p.line or 0, p.column or 0, p.message) for p in result.problems if p.code in CODES
    ]


@pytest.mark.parametrize(
    ("body", "code", "line", "column", "says"),
    [
        pytest.param(
            "variables:\n  db_password: ${env:SHOP_DB}\n",
            "secret-in-variables",
            3,
            16,
            "variable 'db_password' takes ${env:SHOP_DB}",
            id="secret-name-from-env",
        ),
        pytest.param(
            "variables:\n  db: ${env:PGPASSWORD}\n",
            "secret-in-variables",
            3,
            7,
            "takes ${env:PGPASSWORD}",
            id="secret-env-name",
        ),
        pytest.param(
            "variables:\n  signing: ${file:keys/deploy.pem}\n",
            "secret-in-variables",
            3,
            12,
            "takes ${file:keys/deploy.pem}",
            id="secret-file",
        ),
        pytest.param(
            "variables:\n  api_token: abc123\n",
            "secret-in-variables",
            3,
            14,
            "looks like a secret written in clear",
            id="literal-secret-name",
        ),
        pytest.param(
            "variables:\n  url: postgresql://app:${env:PW}@db/shop\n",
            "password-in-url",
            3,
            8,
            "comes from ${env:PW}, outside 'secrets:'",
            id="url-from-env",
        ),
        pytest.param(
            "variables:\n  url: 'mysql://app:hunter2@db:3306/shop'\n",
            "password-in-url",
            3,
            8,
            "a password is written in clear in this URL",
            id="url-literal",
        ),
        pytest.param(
            "targets:\n  databases:\n    app: {kind: postgres, url: 'postgresql://u:pw1@h/x'}\n",
            "password-in-url",
            4,
            32,
            "written in clear",
            id="url-literal-in-targets",
        ),
        pytest.param(
            "variables:\n  cache: x\n  url: redis://:${cache}@cache:6379/0\n",
            "password-in-url",
            4,
            8,
            "comes from variable 'cache', not from a secret",
            id="url-from-plain-variable",
        ),
        pytest.param(
            "variables:\n  url: https://u:${file:/etc/pw}@h/\n",
            "password-in-url",
            3,
            8,
            "comes from ${file:/etc/pw}",
            id="url-from-file-with-colon-and-slash",
        ),
    ],
)
def test_check_warns(body: str, code: str, line: int, column: int, says: str) -> None:
    found = warnings("name: demo\n" + body + PHASES)
    assert [(c, ln, col) for c, ln, col, _ in found] == [(code, line, column)], found
    assert says in found[0][3]


def test_a_url_in_a_step_command_is_checked() -> None:
    text = "name: demo\nphases:\n  - name: one\n    steps:\n"
    text += "      - {kind: run, command: 'psql postgresql://app:s3cret@db/shop -c 1'}\n"
    assert [(c, ln) for c, ln, _, _ in warnings(text)] == [("password-in-url", 5)]


@pytest.mark.parametrize(
    "body",
    [
        SECRETS + "variables:\n  url: postgresql://app:${db_pw}@db/shop\n",
        SECRETS + "variables:\n  url: redis://:${db_pw}@cache/0\n",
        "secrets:\n  url: postgresql://app:${env:PW}@db/shop\n",  # inside secrets: fine
        "variables:\n  home: ${env:HOME}\n  token_ttl: 5m\n  key_prefix: app\n",
        "variables:\n  url: postgresql://app@db/shop\n  mail: ssh://git@host:22/x\n",
        "variables:\n  db_password: ''\n  url: https://h/path:x@y\n",
        "variables:\n  src: ${env:SOURCE_DIR:-.tminus/src}\n  passes: 3\n",
    ],
)
def test_no_warning_for_what_is_not_a_secret(body: str) -> None:
    assert warnings("name: demo\n" + body + PHASES) == []


def test_the_examples_have_no_secret_warnings() -> None:
    for plan in sorted((ROOT / "examples").rglob("*.yaml")):
        result = load_plan(plan)
        if result.plan is None:
            continue  # not a plan (an inventory, …)
        bad = [p.format() for p in result.problems if p.code in CODES]
        assert bad == [], plan


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("db_password", True),
        ("DB_PASSWORD", True),
        ("PGPASSWORD", True),
        ("MYSQL_PWD", True),
        ("api-token", True),
        ("apikey", True),
        ("secret_key", True),
        ("ssh_key", True),
        ("key", False),
        ("token_ttl", False),
        ("bypass", False),
        ("passes", False),
    ],
)
def test_looks_secret(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_strict_fails_on_a_password_in_a_url(tm: Tm) -> None:
    plan = tm.cwd / "p.yaml"
    plan.write_text("name: demo\nvariables:\n  url: mysql://u:pw2@h/x\n" + PHASES)
    ok = tm("check", str(plan), check=0)
    assert "warning[password-in-url]" in ok.stdout + ok.stderr
    strict = tm("check", str(plan), "--strict", "--output", "json", check=2)
    report = json.loads(strict.stdout)
    assert report["ok"] is False
    assert "password-in-url" in [p["code"] for p in report["problems"]]
    assert report["errors"] == 0


# --- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://app:hunter2@db/shop", f"postgresql://app:{MASK}@db/shop"),
        ("redis://:s3cret@127.0.0.1:6379/0", f"redis://:{MASK}@127.0.0.1:6379/0"),
        ("a mysql+pymysql://u:p%40ss@h x", f"a mysql+pymysql://u:{MASK}@h x"),
        ("raw at: https://u:p@ss@h/x", f"raw at: https://u:{MASK}@h/x"),
        ("two a://u:1@h b://v:2@k", f"two a://u:{MASK}@h b://v:{MASK}@k"),
        ("no password postgresql://app@db/shop", "no password postgresql://app@db/shop"),
        ("a port https://h:8443/x@y", "a port https://h:8443/x@y"),
    ],
)
def test_masker_masks_url_passwords_without_secrets(text: str, masked: str) -> None:
    assert mask_url_passwords(text) == masked
    assert Masker().mask(text) == masked
    assert Masker().mask_data({"k": [text]}) == {"k": [masked]}


RUN_PLAN = """\
name: url-secrets
environment: test
targets:
  databases:
    app: {kind: postgres, url: "${db_url}"}
variables:
  db_url: "PGURL"
phases:
  - name: one
    steps:
      - kind: sql
        database: app
        statements: "CREATE TABLE IF NOT EXISTS masked_ok (id int)"
      - kind: run
        name: show the url
        command: echo "connecting to ${db_url}"
      - kind: run
        name: fail with the url
        command: echo "cannot use ${db_url}" >&2; exit 3
    rollback:
      - kind: run
        command: echo "rolled back ${db_url}"
"""


def test_a_url_password_is_masked_at_run_time(tm: Tm, pg_url: str) -> None:
    import psycopg

    secret = "Pw-from-env-8812"
    scheme, rest = pg_url.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user}:${{env:TM_DB_PW}}@{host}"
    plan = tm.cwd / "p.yaml"
    plan.write_text(RUN_PLAN.replace("PGURL", url))
    check = tm("check", str(plan), check=0)
    assert "warning[password-in-url]" in check.stdout + check.stderr
    env = {"TM_DB_PW": secret}
    dry = tm("run", str(plan), "--dry-run", env=env)
    run = tm("run", str(plan), env=env)
    assert run.returncode == 1, run.stderr  # the third step fails: rolled back
    log = tm("log", "url-secrets-1", "--output", "json")
    status = tm("status", "url-secrets-1", "--output", "json")
    for proc in (dry, run, log, status):
        assert secret not in proc.stdout + proc.stderr
    shown = run.stdout + run.stderr + log.stdout
    assert f"{user}:{MASK}@{host}" in shown  # the URL is there, its password masked
    for f in (tm.cwd / ".tminus").rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    # the password did reach the database driver: the sql step ran
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('masked_ok')").fetchone() == ("masked_ok",)
