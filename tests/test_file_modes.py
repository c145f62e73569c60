"""Private by default (issue #13, item 4): everything ``tminus run`` writes locally is 0700
(directories) or 0600 (files), whatever the umask; another user cannot read the state
database, a backup or a dump; what an older version left open is tightened where tminus owns
it, and warned about where the user named it.

Real PostgreSQL, MariaDB and SQLite databases and a real file tree are backed up through the
CLI. The tests run as root (here and in CI); "another user" is ``nobody`` via ``setpriv``, and
each denial is checked against a control: the same read with the modes an older version left
(0755/0644) succeeds, so a denial is the modes' doing, not the probe's.

Mutations tried (each made the named tests fail, then was restored):

* ``BackupDir.commit`` without ``tighten_tree`` → ``test_everything_written_is_private``
  [022] and [000] (backup files 0644) and ``test_another_user_cannot_read_state_or_backups``
  (with its directories opened, nobody reads the SQLite backup: the 0700 directory alone
  protected it).
* ``open_private`` without ``fchmod`` and ``os.open`` mode 0o666 → [022], [000] (migrate
  record 0644/0666), ``test_sqlite_wal_and_shm_are_private`` (state.db, lock 0666),
  ``test_older_modes_are_tightened_or_warned_about`` (state.db stays 0644).
* ``private_dir`` with ``mkdir`` 0o777 and no ``chmod`` → [022], [000] (``.tminus`` 0755/0777:
  run warns about it) and ``test_sqlite_wal_and_shm_are_private``.
* ``Store`` without ``private_sqlite`` (a plain ``mkdir``) → [022], [000], the WAL test and the
  older-modes test.
* ``BackupDir`` without ``tighten_backups`` → ``test_older_modes_are_tightened_or_warned_about``.
* ``start_loaded`` without ``_warn_exposed`` → the same test (no warning from run).
* ``_warn_exposed`` without ``private_state_dir`` →
  ``test_dot_tminus_is_tightened_with_a_postgresql_store`` (``.tminus`` left 0755, warned).
"""

from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SECRET = "s3cret-Ahx7"


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory other users can enter (pytest's tmp_path is under a 0700 directory, which
    would hide everything from ``nobody`` whatever tminus did)."""
    d = Path(tempfile.mkdtemp(prefix="tminus-modes-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tminus(
    cwd: Path, *args: str, umask: int = 0o022, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "TMINUS_OPERATOR": "alice", **(env or {})}
    if not env or "TMINUS_STATE" not in env:
        full.pop("TMINUS_STATE", None)
    return subprocess.run(
        [sys.executable, "-m", "tminus", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        umask=umask,
    )


def as_nobody(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*NOBODY, "cat", str(path)], capture_output=True, timeout=30)


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.lstat().st_mode)}
    for p in sorted(root.rglob("*")):
        out[p.relative_to(root).as_posix()] = stat.S_IMODE(p.lstat().st_mode)
    return out


def seed(work: Path, pg_url: str, mysql_url: str) -> Path:
    """Secret data in every kind of target, each private to its owner; the plan backing them
    all up, migrating the SQLite one and shifting traffic (an undo record)."""
    import psycopg
    import pymysql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (s text)")
        conn.execute("INSERT INTO t VALUES (%s)", (SECRET,))
    u = mysql_url.rsplit("/", 1)
    my = pymysql.connect(host="127.0.0.1", user="root", database=u[1], autocommit=True)
    with my.cursor() as cur:
        cur.execute("CREATE TABLE t (s varchar(40))")
        cur.execute("INSERT INTO t VALUES (%s)", (SECRET,))
    my.close()
    db = work / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (s text)")
        conn.execute("INSERT INTO t VALUES (?)", (SECRET,))
    conn.close()
    db.chmod(0o600)
    tree = work / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "key.pem").write_text(SECRET + "\n")
    (tree / "sub" / "key.pem").chmod(0o600)
    tree.chmod(0o700)
    migs = work / "migs"
    migs.mkdir()
    (migs / "001_a.up.sql").write_text("CREATE TABLE t_a (x text);\n")
    (migs / "001_a.down.sql").write_text("DROP TABLE t_a;\n")
    (work / "flags.json").write_text('{"flags": {}}\n')
    plan = work / "p.yaml"
    plan.write_text(
        f"""\
name: modes
environment: test
targets:
  databases:
    pg: {{kind: postgres, url: "{pg_url}"}}
    my: {{kind: mariadb, url: "{mysql_url}"}}
    lite: {{kind: sqlite, url: "sqlite:///{db}"}}
  paths:
    tree: {{path: "{tree}"}}
  routers:
    rollout: {{kind: flags, store: flags, flag: new-ui, on_pool: green}}
  flag_stores:
    flags: {{kind: flagd, path: "{work}/flags.json"}}
phases:
  - name: one
    steps:
      - {{kind: backup, database: pg}}
      - {{kind: backup, database: my}}
      - {{kind: backup, database: lite}}
      - {{kind: backup, path: tree}}
      - {{kind: migrate, database: lite, tool: sql_dir, dir: "{migs}"}}
      - {{kind: traffic, router: rollout, weights: {{stable: 50, green: 50}}}}
"""
    )
    return plan


def backup_of(state: Path, suffix: str) -> Path:
    (d,) = [p for p in (state / "backups").iterdir() if p.name.endswith(suffix)]
    return d


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["022", "000"])
def test_everything_written_is_private(work: Path, pg_url: str, mysql_url: str, umask: int) -> None:
    plan = seed(work, pg_url, mysql_url)
    proc = tminus(work, "run", str(plan), umask=umask)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "warning:" not in proc.stderr
    state = work / ".tminus"
    found = modes(state)
    wrong = {
        p: f"{m:04o}"
        for p, m in found.items()
        if m != (0o700 if (state / p).is_dir() and not (state / p).is_symlink() else 0o600)
    }
    assert wrong == {}, wrong
    names = set(found)
    # what was written: the store, its lock, four backups, the migrate and undo records
    assert {"state.db", "state.db.lock", "backups", "migrate", "undo"} <= names
    backups = [p for p in names if p.count("/") == 1 and p.startswith("backups/")]
    assert len(backups) == 4 and not any(".partial" in p for p in backups), backups
    assert any(p.startswith("backups/") and p.endswith("/dump/toc.dat") for p in names)
    assert any(p.endswith("/dump.sql.gz") for p in names)
    assert any(p.endswith("/database.sqlite3") for p in names)
    assert any(p.endswith("/files.tar.gz") for p in names)
    assert sum(p.endswith("/manifest.json") for p in names) == 4
    assert any(p.startswith("migrate/") and p.endswith(".json") for p in names)
    assert any(p.startswith("undo/") and p.endswith(".json") for p in names)


def test_another_user_cannot_read_state_or_backups(work: Path, pg_url: str, mysql_url: str) -> None:
    plan = seed(work, pg_url, mysql_url)
    proc = tminus(work, "run", str(plan), umask=0o000)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    state = work / ".tminus"
    lite = backup_of(state, "-app")
    files = [
        state / "state.db",
        next(p for p in (state / "backups").rglob("dump.sql.gz")),
        next(p for p in (state / "backups").rglob("toc.dat")),
        lite / "database.sqlite3",
        next(p for p in (state / "backups").rglob("files.tar.gz")),
        next(p for p in (state / "undo").rglob("*.json")),
    ]
    for f in files:
        got = as_nobody(f)
        assert got.returncode != 0 and b"Permission denied" in got.stderr, f
    # the backup directory alone would not do: opened up, the 0600 file still refuses
    os.chmod(state, 0o755)
    os.chmod(state / "backups", 0o755)
    os.chmod(lite, 0o755)
    got = as_nobody(lite / "database.sqlite3")
    assert got.returncode != 0 and b"Permission denied" in got.stderr
    # control: with the modes an older version left (0755 directories, 0644 files), nobody
    # reads the SQLite backup, the MariaDB dump's INSERTs and the state database
    for p in [state, *state.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    got = as_nobody(lite / "database.sqlite3")
    assert got.returncode == 0 and SECRET.encode() in got.stdout
    dump = as_nobody(next(p for p in (state / "backups").rglob("dump.sql.gz")))
    assert dump.returncode == 0 and SECRET.encode() in gzip.decompress(dump.stdout)
    assert b"events" in as_nobody(state / "state.db").stdout  # the deploys' event log


def test_sqlite_wal_and_shm_are_private(work: Path) -> None:
    """The store, in this process, with umask 000: the -wal and -shm files SQLite makes while
    a connection is open take the database file's mode (0600)."""
    from sqlalchemy import text

    from tminus.store.store import Store

    old = os.umask(0)
    try:
        store = Store(f"sqlite:///{work}/.tminus/state.db")
        with store.tx() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x text)"))
        state = work / ".tminus"
        seen = modes(state)
        assert {"state.db-wal", "state.db-shm"} <= set(seen), seen
        assert {p: f"{m:04o}" for p, m in seen.items() if p != "."} == {
            p: "0600" for p in seen if p != "."
        }
        assert seen["."] == 0o700
        store.engine.dispose()
    finally:
        os.umask(old)


def test_older_modes_are_tightened_or_warned_about(work: Path) -> None:
    """What tminus owns (a ``.tminus`` directory, its ``backups/``, the backups in it, the
    SQLite files) is tightened on the next run; what the user named (a backup ``dest``, a
    ``TMINUS_STATE`` directory not called ``.tminus``) is left as it is, with a warning from
    both ``check`` and ``run``."""
    db = work / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (s text)")
    conn.close()
    shared = work / "shared-backups"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    plan = work / "p.yaml"
    plan.write_text(
        f"""\
name: old
targets:
  databases:
    lite: {{kind: sqlite, url: "sqlite:///{db}"}}
phases:
  - name: one
    steps:
      - {{kind: backup, database: lite}}
      - {{kind: backup, database: lite, dest: "{shared}"}}
"""
    )
    assert tminus(work, "run", str(plan)).returncode == 0
    state = work / ".tminus"
    old_backup = backup_of(state, "-app")
    # what an older version left: everything 0755/0644
    for p in [state, *state.rglob("*"), *shared.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    check = tminus(work, "check", str(plan))
    assert check.returncode == 0, check.stderr
    assert (
        f"warning: the state directory {state} is open to its group and other users "
        "(mode 0755)" in check.stderr
    )
    assert "`tminus run` makes it 0700" in check.stderr
    assert f"the backup directory {state / 'backups'} is open" in check.stderr
    assert f"the backup directory {shared} is open" in check.stderr
    assert f"chmod 700 {shared}" in check.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o755  # check changes nothing
    run = tminus(work, "run", str(plan))
    assert run.returncode == 0, (run.stdout, run.stderr)
    # tightened: tminus's own
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "backups").stat().st_mode) == 0o700
    assert stat.S_IMODE(old_backup.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "state.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "state.db.lock").stat().st_mode) == 0o600
    # the older backups in the user's dest: their directories tightened by the next backup
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in shared.iterdir())
    # the user's directory: warned about, not chmod-ed
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert f"warning: the backup directory {shared} is open" in run.stderr
    assert f"the state directory {state}" not in run.stderr  # tightened before the warning
    assert len(list(shared.iterdir())) == 2
    # a TMINUS_STATE directory the user named: warned about, not chmod-ed; the file is 0600
    mine = work / "state-here"
    mine.mkdir()
    mine.chmod(0o750)
    env = {"TMINUS_STATE": f"sqlite:///{mine}/tminus.db"}
    check = tminus(work, "check", str(plan), env=env)
    assert f"the state directory {mine} is open to its group (mode 0750)" in check.stderr
    run = tminus(work, "run", str(plan), env=env)
    assert run.returncode == 0, run.stderr
    assert f"the state directory {mine} is open to its group (mode 0750)" in run.stderr
    assert stat.S_IMODE(mine.stat().st_mode) == 0o750
    assert stat.S_IMODE((mine / "tminus.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((mine / "backups").stat().st_mode) == 0o700  # made by tminus


def test_canary_progress_record_is_private(work: Path) -> None:
    """A canary's progress record (written under the state directory between its stages),
    with umask 000: the directories it makes 0700, the record 0600."""
    from tminus.steps.canary import Progress

    old = os.umask(0)
    try:
        Progress(work / ".tminus" / "progress" / "d-1" / "canary.json").save(stage=2)
    finally:
        os.umask(old)
    assert {p: f"{m:04o}" for p, m in modes(work / ".tminus").items()} == {
        ".": "0700",
        "progress": "0700",
        "progress/d-1": "0700",
        "progress/d-1/canary.json": "0600",
    }


def test_dot_tminus_is_tightened_with_a_postgresql_store(work: Path, pg_url: str) -> None:
    """With the state in PostgreSQL, ``.tminus`` still holds backups and records: an open
    one is warned about by check ("`tminus run` makes it 0700") and tightened by run."""
    db = work / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (s text)")
    conn.close()
    state = work / ".tminus"
    state.mkdir()
    state.chmod(0o755)
    plan = work / "p.yaml"
    plan.write_text(
        f"""\
name: pgstate
targets:
  databases:
    lite: {{kind: sqlite, url: "sqlite:///{db}"}}
phases:
  - name: one
    steps:
      - {{kind: backup, database: lite}}
"""
    )
    env = {"TMINUS_STATE": pg_url}
    check = tminus(work, "check", str(plan), env=env)
    assert f"the state directory {state} is open" in check.stderr
    assert "`tminus run` makes it 0700" in check.stderr
    run = tminus(work, "run", str(plan), env=env)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "warning:" not in run.stderr
    assert {p: f"{m:04o}" for p, m in modes(state).items() if m not in (0o700, 0o600)} == {}
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_private_sqlite_keeps_this_process_locks_on_an_open_database(tmp_path: Path) -> None:
    """Making a second Store on a database this process already has open must not drop the
    first one's SQLite locks: closing *any* descriptor of a file drops all of the process's
    POSIX locks on it, so the existing file is tightened by path, never opened.

    Mutation tried: ``os.close(open_private(p, os.O_RDWR | os.O_CREAT))`` for an existing
    file (the first version) → the child takes the lock and this test fails."""
    import fcntl

    from tminus.files import private_sqlite

    db = tmp_path / "state.db"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    fd = os.open(db, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what SQLite holds while it writes
        private_sqlite(db)
        probe = (
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n"
            "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "except OSError:\n"
            "    sys.exit(7)\n"
        )
        child = subprocess.run([sys.executable, "-c", probe, str(db)], check=False)
        assert child.returncode == 7, "the lock was dropped: another process could take it"
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    finally:
        os.close(fd)
