"""``tminus tokens`` and ``tminus access`` (issue #17, item 3), through the real CLI on a
SQLite store.

Mutations tried (each made the named test fail, then was restored):

* ``tokens create`` storing the token instead of ``hash_token(token)`` →
  ``test_create_prints_the_token_once_and_stores_its_hash``.
* ``tokens list`` showing every column of the row (the hash with it) →
  ``test_create_prints_the_token_once_and_stores_its_hash``.
* ``tokens revoke`` not writing ``revoked_at`` → ``test_revoke``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Tm
from tminus.security import hash_token, verify_token
from tminus.store.store import Store


def test_create_prints_the_token_once_and_stores_its_hash(tm: Tm, tmp_path: Path) -> None:
    proc = tm("tokens", "create", "--person", "alice", "--label", "ci", check=0)
    lines = proc.stdout.splitlines()
    token = lines[-1]
    assert len(token) == 43 and " " not in token  # alone on its last line
    assert "token 1 for alice (ci): shown once" in lines[0]
    assert "alice has no grant yet" in proc.stdout
    store = Store(f"sqlite:///{tmp_path}/.tminus/state.db")
    row = store.token_by_hash(hash_token(token))
    assert row is not None and verify_token(token, row["hash"]) and row["hash"] != token
    assert row["person"] == "alice" and row["created_by"] == "alice" and row["label"] == "ci"
    store.close()
    listed = tm("tokens", "list", check=0).stdout
    as_json = tm("tokens", "list", "--output", "json", check=0).stdout
    for text in (listed, as_json):
        assert token not in text and hash_token(token) not in text and "sha256" not in text
    (entry,) = json.loads(as_json)
    assert entry["person"] == "alice" and entry["state"] == "active"
    assert entry["last_used_at"] is None and "hash" not in entry
    second = tm("tokens", "create", "--person", "alice", check=0).stdout.splitlines()[-1]
    assert second != token


def test_revoke(tm: Tm, tmp_path: Path) -> None:
    token = tm("tokens", "create", "--person", "bob", check=0).stdout.splitlines()[-1]
    proc = tm("tokens", "revoke", "1", "--as", "carol", check=0)
    assert "token 1 of bob revoked" in proc.stdout
    (entry,) = tm.json("tokens", "list")
    assert entry["state"] == "revoked" and entry["revoked_by"] == "carol"
    store = Store(f"sqlite:///{tmp_path}/.tminus/state.db")
    assert store.token_by_hash(hash_token(token))["revoked_at"] is not None  # type: ignore[index]
    store.close()
    assert "already revoked" in tm("tokens", "revoke", "1", check=0).stdout
    proc = tm("tokens", "revoke", "9", check=2)
    assert "error: no token 9" in proc.stderr and "Traceback" not in proc.stderr


def test_grant_list_revoke(tm: Tm) -> None:
    out = tm("access", "grant", "alice", "operator", "--plan", "shop", "--env", "prod", check=0)
    assert "alice may now act as operator on plan shop, environment prod" in out.stdout
    again = tm("access", "grant", "alice", "operator", "--plan", "shop", "--env", "prod", check=0)
    assert "already had" in again.stdout
    tm("access", "grant", "bob", "viewer", check=0)
    rows = tm.json("access", "list")
    assert [(g["person"], g["permission"], g["plan"], g["environment"]) for g in rows] == [
        ("alice", "operator", "shop", "prod"),
        ("bob", "viewer", "*", "*"),
    ]
    assert rows[0]["created_by"] == "alice"
    assert "bob" not in tm("access", "list", "--person", "alice", check=0).stdout
    proc = tm("access", "revoke", "alice", "operator", "--plan", "shop", check=2)
    assert "no grant operator on plan shop, environment *" in proc.stderr
    assert "--plan shop --env prod" in proc.stderr  # the hint shows what they hold
    tm("access", "revoke", "alice", "operator", "--plan", "shop", "--env", "prod", check=0)
    assert [g["person"] for g in tm.json("access", "list")] == ["bob"]


def test_bad_input_is_a_clear_error(tm: Tm) -> None:
    for args in (
        ("access", "grant", "alice", "admin"),
        ("access", "grant", "bad\tname", "viewer"),
        ("access", "grant", "alice", "viewer", "--plan", ""),
        ("tokens", "create", "--person", " "),
        ("tokens", "create"),
        ("tokens", "revoke", "one"),
    ):
        proc = tm(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "error" in proc.stderr.lower(), (args, proc.stderr)
