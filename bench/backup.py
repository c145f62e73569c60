"""Backup plus verified restore of a PostgreSQL database of about 1 GB: tminus's postgres
driver against raw ``pg_dump -Fd -j2`` plus ``pg_restore -j2``.

    uv run python bench/backup.py [--size-mb 1024] [--repeat 3] [--jobs 2]
    uv run python bench/backup.py --size-mb 100 --repeat 2      # a quick run, ~1 minute

A fresh database ``tminus_bench_backup_<pid>`` is filled server-side (``INSERT … SELECT
generate_series``) with a wide table (text, jsonb, timestamps), a narrow one of integers, a
small parent table, indexes, a foreign key and a serial. Per repeat (the order of the two sides
alternates, so machine noise hits both):

- raw: ``pg_dump -Fd -j N -f DIR``, then ``pg_restore -j N --exit-on-error -d NEW DIR`` into a
  fresh empty database. Nothing is verified: this is the floor a careful operator's script gets.
- tminus: ``driver.backup(url, dest, jobs=N)`` (pg_dump in the exported snapshot, row counts and
  checksums computed in that snapshot as pg_dump's workers go idle, ``pg_restore --list``,
  sha256 of every file, fsync), then ``driver.restore(manifest, backup_dir, url2, jobs=N)``
  into another fresh empty database (sha256 of every file first, pg_restore, each table
  counted and checksummed as its data lands, then compared with the manifest: the "verified
  restore").

Restore targets are created (``TEMPLATE template0``) before the clock starts and dropped after
each repeat; dump directories are deleted between repeats; every database the bench created is
dropped at the end, also on failure or Ctrl-C.

Where tminus's extra time goes is measured by wrapping a few of the driver's module-level
helpers with ``time.perf_counter`` for the duration of the bench (nothing under ``src/`` is
changed); a helper that no longer exists is simply not reported.

Figures are printed, not asserted: the exit status is non-zero only if a run fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.1
#: raw pg_dump/pg_restore; tminus; tminus with the restore's checksums after pg_restore (the
#: driver before 2026-12-07), see restore_checksums_after: ``--sides`` picks (raw and tminus
#: always run)
SIDES = ("raw", "tminus", "tminus-after")
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACCOUNTS = 100_000


# --- databases -----------------------------------------------------------------------------
class Server:
    """Databases on the server of ``admin_url``; every one created here is dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def execute(self, query: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(query)  # type: ignore[arg-type]

    def scalar(self, query: str) -> Any:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(query).fetchone()
        return None if row is None else row[0]

    def create(self, name: str) -> str:
        self.created.append(name)  # before CREATE: an interrupted CREATE is still dropped
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            try:
                self.drop(name)
            except Exception as exc:
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


SCHEMA = """
CREATE TABLE accounts (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    plan text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE events (
    id bigserial,
    account_id integer NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    body text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz
);
-- no column is named t: the driver's checksum query aliases each table t, and a column t
-- would be hashed instead of the whole row (see bench/README.md)
CREATE TABLE readings (
    account_id integer NOT NULL,
    sensor smallint NOT NULL,
    minute integer NOT NULL,
    value integer NOT NULL,
    flags integer NOT NULL DEFAULT 0
);
"""

FILL_ACCOUNTS = f"""
INSERT INTO accounts (name, email, plan, created_at)
SELECT 'Account ' || i, 'user' || i || '@example.com',
       (ARRAY['free', 'team', 'business', 'enterprise'])[1 + i % 4],
       timestamptz '2020-01-01 00:00:00+00' + i * interval '17 minutes'
FROM generate_series(1, {ACCOUNTS}) AS i
"""

# ~450 bytes a row: hex text of varying length, a jsonb document, two timestamps.
FILL_EVENTS = """
INSERT INTO events (account_id, kind, payload, body, created_at, updated_at)
SELECT 1 + (i * 7919) % {accounts},
       (ARRAY['login', 'logout', 'view', 'click', 'purchase', 'error'])[1 + i % 6],
       jsonb_build_object(
           'v', 1, 'user', i % 5000, 'ok', i % 3 = 0,
           'tags', jsonb_build_array('t' || i % 7, 't' || i % 11),
           'score', round((i % 10007) / 13.0, 3),
           'ip', '10.' || i % 256 || '.' || (i / 256) % 256 || '.1',
           'ref', md5(i::text)),
       substr(md5(i::text) || ' ' || md5((i * 31)::text) || ' ' || md5((i * 17)::text)
              || ' ' || md5((i * 7)::text) || ' ' || md5((i * 3)::text), 1, (60 + i % 110)::int),
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1.7 seconds',
       CASE WHEN i % 4 = 0 THEN NULL
            ELSE timestamptz '2025-01-01 00:00:00+00' + i * interval '1.7 seconds'
                 + (i % 3600) * interval '1 second' END
FROM generate_series({lo}::bigint, {hi}::bigint) AS i
"""

# ~44 bytes a row of integers; (account_id, sensor, minute) is unique by construction.
FILL_READINGS = """
INSERT INTO readings (account_id, sensor, minute, value, flags)
SELECT 1 + i % {accounts}, (i / {accounts}) % 16, i / ({accounts} * 16),
       (i * 2654435761::bigint % 100000)::int, i % 8
FROM generate_series({lo}::bigint, {hi}::bigint) AS i
"""

AFTER_FILL = (
    "CREATE UNIQUE INDEX accounts_email_key ON accounts (email)",
    "ALTER TABLE events ADD PRIMARY KEY (id)",
    "ALTER TABLE events ADD CONSTRAINT events_account_fk"
    " FOREIGN KEY (account_id) REFERENCES accounts (id)",
    "CREATE INDEX events_account_created ON events (account_id, created_at)",
    "CREATE INDEX events_kind ON events (kind)",
    "ALTER TABLE readings ADD PRIMARY KEY (account_id, sensor, minute)",
)

# Heap share of the final size: the indexes built after the fill add the rest (measured: the
# database ends within a few % of --size-mb).
HEAP_SHARE = 0.80


def fill(url: str, size_mb: int, max_seconds: float) -> dict[str, Any]:
    """Create and fill the source database; returns timings, sizes and row counts."""
    import psycopg

    t0 = time.perf_counter()
    target = size_mb * 1024 * 1024
    # rows per chunk scale with the size, so a 100 MB run fills in about as many chunks
    ev_chunk = max(2_000, size_mb * 100)
    rd_chunk = 3 * ev_chunk
    ev_next = rd_next = 1
    stopped_early = False
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(SCHEMA)  # type: ignore[arg-type]
        conn.execute(FILL_ACCOUNTS)  # type: ignore[arg-type]

        def size() -> int:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0

        while size() < target * HEAP_SHARE:
            if time.perf_counter() - t0 > max_seconds:
                stopped_early = True
                break
            for template, lo, n in (
                (FILL_EVENTS, ev_next, ev_chunk),
                (FILL_READINGS, rd_next, rd_chunk),
            ):
                query = template.format(accounts=ACCOUNTS, lo=lo, hi=lo + n - 1)
                conn.execute(query)  # type: ignore[arg-type]  # no parameters: % is modulo
            ev_next += ev_chunk
            rd_next += rd_chunk
        t_data = time.perf_counter() - t0
        for stmt in AFTER_FILL:
            conn.execute(stmt)  # type: ignore[arg-type]
        t_index = time.perf_counter() - t0 - t_data
        # hint bits, visibility map and statistics settled once, so no repeat pays for them
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")
        rows = {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in ("accounts", "events", "readings")
        }
        final = size()
    return {
        "seconds": time.perf_counter() - t0,
        "data_s": t_data,
        "index_s": t_index,
        "size": final,
        "rows": rows,
        "stopped_early": stopped_early,
    }


# --- the two sides -------------------------------------------------------------------------
def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")


def run_raw(src_url: str, dump_dir: Path, target_url: str, jobs: int) -> tuple[float, float]:
    """(backup s, restore s) of raw pg_dump -Fd -j N and pg_restore -j N."""
    t0 = time.perf_counter()
    _run(
        ["pg_dump", "-Fd", "-j", str(jobs), "--no-password", "-f", str(dump_dir), "-d", src_url],
        "pg_dump",
    )
    t1 = time.perf_counter()
    _run(
        ["pg_restore", "-j", str(jobs), "--exit-on-error", "--no-password", "-d", target_url,
         str(dump_dir)],
        "pg_restore",
    )  # fmt: skip
    return t1 - t0, time.perf_counter() - t1


class Probe:
    """Wall time spent in some of the postgres driver's module-level helpers, by label.

    The helpers are looked up by name at call time from their module, so wrapping the module
    attribute is enough; the originals are put back by :meth:`close`.
    """

    def __init__(self) -> None:
        self.times: dict[str, float] = defaultdict(float)
        self.phase = "?"
        self._undo: list[tuple[Any, str, Any]] = []
        self.missing: list[str] = []
        self.threads: list[threading.Thread] = []

    def add(self, label: str, seconds: float) -> None:
        self.times[f"{self.phase}: {label}"] += seconds

    def take(self) -> dict[str, float]:
        for thread in self.threads:
            thread.join()
        self.threads.clear()
        out, self.times = dict(self.times), defaultdict(float)
        return out

    def wrap(self, module: Any, name: str, label: Callable[..., str] | str) -> None:
        orig = getattr(module, name, None)
        if orig is None:
            self.missing.append(f"{module.__name__}.{name}")
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                text = label if isinstance(label, str) else label(*args, **kwargs)
                self.add(text, time.perf_counter() - t0)

        setattr(module, name, timed)
        self._undo.append((module, name, orig))

    def close(self) -> None:
        for module, name, orig in reversed(self._undo):
            setattr(module, name, orig)
        self._undo.clear()


@contextmanager
def probed_driver() -> Iterator[Probe]:
    from tminus.backups import backup_dir, postgres

    probe = Probe()

    from tminus import work

    class WorkProxy:
        """``tminus.work`` as the driver module sees it, with pg_dump's own wall time: a thread
        waits for the process while the driver computes the snapshot (``Popen.wait`` is safe to
        call from two threads; the later one returns at once)."""

        def popen(self, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            proc = work.popen(*args, **kwargs)
            phase = probe.phase

            def watch() -> None:
                proc.wait()
                probe.times[f"{phase}: pg_dump (alongside the snapshot)"] += (
                    time.perf_counter() - t0
                )

            thread = threading.Thread(target=watch, daemon=True)
            thread.start()
            probe.threads.append(thread)
            return proc

        def __getattr__(self, name: str) -> Any:
            return getattr(work, name)

    probe.wrap(
        postgres,
        "_state",
        lambda *a, **kw: (
            "row counts + checksums (_state, waiting for pg_dump's idle workers)"
            if probe.phase == "backup"
            else "row counts + checksums (_state, `jobs` sessions)"
        ),
    )
    # the driver runs these two in the background, beside pg_dump's start and the file hashes
    probe.wrap(postgres, "tool_version", "pg_dump --version (in the background)")
    probe.wrap(
        postgres,
        "run_tool",
        lambda *a, **kw: (
            "pg_restore --list (in the background)"
            if kw.get("what") == "pg_restore --list"
            else str(kw.get("what", "tool"))
        ),
    )
    probe.wrap(postgres, "require_intact", "sha256 of every file (require_intact)")
    probe.wrap(
        postgres,
        "restore_checksummed",
        "pg_restore, each table checksummed as its data lands",
    )
    probe.wrap(backup_dir, "file_entries", "sha256 of every file (manifest)")
    probe.wrap(backup_dir, "fsync_tree", "fsync of the backup")
    if getattr(postgres, "work", None) is work:
        probe._undo.append((postgres, "work", work))
        postgres.work = WorkProxy()  # type: ignore[assignment]
    else:
        probe.missing.append("tminus.backups.postgres.work")
    try:
        yield probe
    finally:
        probe.close()


def restore_checksums_after(
    driver: Any, manifest: Any, backup_dir: Path, target_url: str, jobs: int
) -> None:
    """The verified restore as the driver did it before its checksums moved alongside
    pg_restore (side ``tminus-after``), from the same driver's parts: files checked
    (``require_intact``), ``pg_restore -j N --exit-on-error``, then every table counted and
    checksummed on ``jobs`` sessions sharing a snapshot (``compare``). The target is a fresh
    empty database, so the driver's schema drop (~0.02 s) is left out."""
    from tminus.backups import postgres

    postgres.require_intact(manifest, backup_dir, "postgres")
    postgres.run_tool(
        ["pg_restore", "--exit-on-error", "--no-password", "-j", str(jobs), "-d", target_url,
         str(backup_dir / postgres.DUMP_DIR)],
        what="pg_restore into the target",
    )  # fmt: skip
    problems = driver.compare(manifest, target_url, jobs=jobs)
    if problems:
        raise RuntimeError(f"restore differs from the backup: {problems}")


def run_tminus(
    probe: Probe,
    src_url: str,
    dest: Path,
    target_url: str,
    jobs: int,
    *,
    checksums_after: bool = False,
) -> tuple[float, float, dict[str, float]]:
    """(backup s, restore s, phases) of the tminus driver's backup and verified restore (with
    ``checksums_after``: the restore of :func:`restore_checksums_after`)."""
    from tminus.backups import get_driver

    driver = get_driver("postgres")
    probe.take()
    probe.phase = "backup"
    t0 = time.perf_counter()
    manifest = driver.backup(src_url, dest, jobs=jobs)
    t1 = time.perf_counter()
    probe.phase = "restore"
    if checksums_after:
        restore_checksums_after(driver, manifest, dest / manifest.id, target_url, jobs)
    else:
        driver.restore(manifest, dest / manifest.id, target_url, jobs=jobs)
    t2 = time.perf_counter()
    phases = probe.take()
    phases["backup: total"] = t1 - t0
    phases["restore: total"] = t2 - t1
    for phase, total in (("backup", t1 - t0), ("restore", t2 - t1)):
        mine = {
            k: v for k, v in phases.items() if k.startswith(f"{phase}: ") and k != f"{phase}: total"
        }
        overlap = [v for k, v in mine.items() if "pg_dump (" in k or "_state" in k]
        serial = [
            v
            for k, v in mine.items()
            if "pg_dump (" not in k and "_state" not in k and "in the background" not in k
        ]
        # pg_dump and the snapshot overlap during a backup: count the longer of the two
        timed = sum(serial) + (max(overlap, default=0) if phase == "backup" else sum(overlap))
        phases[f"{phase}: other (connect, catalog, drop schemas, rename)"] = total - timed
    return t1 - t0, t2 - t1, phases


class CpuMeter:
    """CPU seconds spent by one side, which a busy machine stretches far less than wall time:

    - server: the PostgreSQL backends that ended meanwhile (the postmaster's reaped children:
      ``cutime + cstime`` in ``/proc/<postmaster>/stat``; needs the server on this host and
      ``SHOW data_directory``, else not measured). Other clients of the same server that end a
      session meanwhile are counted too;
    - client: the tools this process ran and waited for (``RUSAGE_CHILDREN``: pg_dump,
      pg_restore) plus this process itself (``RUSAGE_SELF``: tminus's Python side).
    """

    SETTLE_S = 1.0  # the postmaster reaps a backend shortly after its client disconnects

    def __init__(self, server: Server) -> None:
        self.stat: Path | None = None
        try:
            data_dir = Path(str(server.scalar("SHOW data_directory")))
            pid = int((data_dir / "postmaster.pid").read_text().split()[0])
            stat = Path(f"/proc/{pid}/stat")
            stat.read_text()
            self.stat = stat
        except Exception as exc:  # a remote server, no permission: client CPU only
            print(f"(server CPU not measured: {type(exc).__name__}: {exc})")
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float | None, float]:
        import resource

        server = None
        if self.stat is not None:
            fields = self.stat.read_text().rsplit(")", 1)[1].split()
            server = (int(fields[13]) + int(fields[14])) / self.tick  # cutime + cstime
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return server, own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# what other ways to checksum would cost, over every user table ({t}: schema.table); the
# driver's own checksum (chain64) is the first "_state" line, the one before it (row64) the last
CHECKSUM_STEPS = (
    ("count(*) only", "SELECT count(*) FROM {t} t"),
    ("row as text ((t.*)::text)", "SELECT count(*), sum(length((t.*)::text)) FROM {t} t"),
    (
        "64-bit hash of the row as text",
        "SELECT count(*), sum(hashtextextended((t.*)::text, 0)) FROM {t} t",
    ),
    (
        "format 1's md5 of the row as text, both halves summed",
        "SELECT count(*), sum(('x' || substr(h, 1, 16))::bit(64)::bigint),"
        " sum(('x' || substr(h, 17, 16))::bit(64)::bigint)"
        " FROM (SELECT md5((t.*)::text) AS h FROM {t} t OFFSET 0) s",
    ),
)


def snapshot_alone(url: str, jobs: int, meter: CpuMeter) -> list[tuple[str, float, float | None]]:
    """The driver's counts + checksums (``_state``) on ``url`` with the machine to itself, on one
    session and on ``jobs`` sessions sharing a snapshot, and the same scans done other ways:
    (label, wall s, server CPU s). Server CPU: this session's backend plus the backends and
    parallel workers that ended meanwhile (``None`` when the server is not on this host)."""
    from psycopg import sql

    from tminus.backups import postgres

    out: list[tuple[str, float, float | None]] = []
    conn = postgres._connect(url)  # the driver's session settings
    backend = Path(f"/proc/{conn.info.backend_pid}/stat")

    def cpu() -> float | None:
        server, _ = meter.read()
        if server is None or not backend.exists():
            return None
        fields = backend.read_text().rsplit(")", 1)[1].split()
        return server + (int(fields[11]) + int(fields[12])) / meter.tick  # + utime + stime

    def timed(label: str, run: Callable[[], object]) -> None:
        time.sleep(CpuMeter.SETTLE_S)
        c0, t0 = cpu(), time.perf_counter()
        run()
        wall = time.perf_counter() - t0
        time.sleep(CpuMeter.SETTLE_S)
        c1 = cpu()
        out.append((label, wall, None if c0 is None or c1 is None else c1 - c0))

    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snap = str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        new, old = postgres.CHECKSUM_CHAIN64, postgres.CHECKSUM_ROW64
        state = postgres._state(conn, new)  # warm the cache; the table list
        timed(f"_state: counts + {new} checksums, 1 session", lambda: postgres._state(conn, new))
        timed(
            f"_state: counts + {new} checksums, {jobs} sessions",
            lambda: postgres._state(conn, new, url=url, snapshot=snap, jobs=jobs),
        )
        timed(f"_state: counts + {old} checksums, 1 session", lambda: postgres._state(conn, old))
        tables = [t.name.split(".", 1) for t in state.tables]
        for label, template in CHECKSUM_STEPS:

            def scan(template: str = template) -> None:
                for schema, name in tables:
                    query = sql.SQL(template).format(t=sql.Identifier(schema, name))
                    conn.execute(query).fetchall()

            timed(label + ", 1 session", scan)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return out


# --- report ----------------------------------------------------------------------------
# the order the breakdown is printed in: the order the driver runs its steps
ORDER = (
    "version",
    "require_intact",
    "pg_dump (",
    "pg_restore into",
    "as its data lands",
    "_state",
    "--list",
    "(manifest)",
    "fsync",
    "other",
)


# ----------------------------------------------------------------------------
def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, dict[str, list[float]]], phases: dict[str, list[float]]) -> bool:
    sides = [s for s in SIDES if s in results]
    runs = len(results["raw"]["total"])
    cols = ("backup", "restore", "total")
    m = {side: {c: med(results[side][c]) for c in cols} for side in results}
    print()
    print(f"median of {runs} run(s)")
    header = f"{'side':<12} {'backup (s)':>11} {'restore (s)':>12} {'total (s)':>10}"
    print(header)
    print("-" * len(header))
    for side in sides:
        print(
            f"{side:<12} {m[side]['backup']:>11.2f} {m[side]['restore']:>12.2f} "
            f"{m[side]['total']:>10.2f}"
        )
    for side in sides[1:]:
        r = {c: m[side][c] / m["raw"][c] for c in cols}
        print(
            f"{side + '/raw':<12} {r['backup']:>10.2f}x {r['restore']:>11.2f}x {r['total']:>9.2f}x"
        )
    ratios = {c: m["tminus"][c] / m["raw"][c] for c in cols}
    print("(raw verifies nothing: no row counts, no checksums, no file hashes, no comparison)")
    if all(results[side]["client_cpu"] for side in sides):
        print()
        print("CPU seconds per backup + restore (medians; busy machines stretch these far less):")
        print(f"{'side':<12} {'server':>8} {'client':>8} {'total':>8}")
        cpu: dict[str, tuple[float, float]] = {}
        for side in sides:
            server_cpu = med(results[side]["server_cpu"]) if results[side]["server_cpu"] else 0.0
            client_cpu = med(results[side]["client_cpu"])
            cpu[side] = (server_cpu, client_cpu)
            print(
                f"{side:<12} {server_cpu:>8.1f} {client_cpu:>8.1f} {server_cpu + client_cpu:>8.1f}"
            )
        raw_total = sum(cpu["raw"])
        for side in sides[1:]:
            if raw_total > 0:
                label = side + "/raw"
                print(f"{label:<12} {'':>8} {'':>8} {sum(cpu[side]) / raw_total:>7.2f}x")
    met = ratios["total"] <= TARGET_RATIO
    print()
    print(
        f"target: total ≤ {TARGET_RATIO:g}× raw — {'met' if met else 'NOT met'} "
        f"({ratios['total']:.2f}×)"
    )

    if phases:
        print()
        print("where the tminus time goes (medians; the snapshot runs alongside pg_dump):")
        raw_of = {"backup": m["raw"]["backup"], "restore": m["raw"]["restore"]}
        raw_of["(checksums after) restore"] = raw_of["restore"]
        for phase in ("backup", "restore", "(checksums after) restore"):
            if f"{phase}: total" not in phases:
                continue
            keys = sorted(
                (k for k in phases if k.startswith(f"{phase}: ") and "total" not in k),
                key=lambda k: next((i for i, w in enumerate(ORDER) if w in k), len(ORDER)),
            )
            total = med(phases[f"{phase}: total"])
            print(f"  {phase:<8} total {total:7.2f} s   (raw {raw_of[phase]:.2f} s)")
            for k in keys:
                print(f"    {k.split(': ', 1)[1]:<52} {med(phases[k]):7.2f} s")
    return met


def run_bench(
    args: argparse.Namespace, server: Server, work: Path
) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[float]]]:
    pid = os.getpid()
    src = f"tminus_bench_backup_{pid}"
    src_url = server.create(src)
    print(f"filling {src} to about {args.size_mb} MB …", flush=True)
    info = fill(src_url, args.size_mb, args.max_fill_s)
    rows = ", ".join(f"{t} {n:,}" for t, n in info["rows"].items())
    print(
        f"fill: {info['seconds']:.1f} s (data {info['data_s']:.1f} s, indexes + FK "
        f"{info['index_s']:.1f} s, vacuum/analyze/checkpoint the rest); "
        f"pg_database_size {info['size'] / 2**20:.0f} MB; rows: {rows}"
    )
    if info["stopped_early"]:
        print(
            f"warning: the fill stopped after --max-fill-s {args.max_fill_s:g}; smaller than asked"
        )

    results: dict[str, dict[str, list[float]]] = {
        s: {"backup": [], "restore": [], "total": [], "server_cpu": [], "client_cpu": []}
        for s in SIDES
        if s in args.sides
    }
    meter = CpuMeter(server)
    phases: dict[str, list[float]] = defaultdict(list)
    with probed_driver() as probe:
        if probe.missing:
            print(f"(breakdown: not found in the driver, not timed: {', '.join(probe.missing)})")
        sides = list(results)
        for r in range(args.repeat):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]  # rotates
            line = [f"  run {r + 1}/{args.repeat}"]
            for side in order:
                target = f"{src}_{side}_{r}"
                target_url = server.create(target)
                out = work / f"{side}-{r}"
                time.sleep(CpuMeter.SETTLE_S)
                cpu0 = meter.read()
                try:
                    if side == "raw":
                        b, s = run_raw(src_url, out, target_url, args.jobs)
                        size = dir_bytes(out)
                    else:
                        out.mkdir()
                        after = side == "tminus-after"
                        b, s, ph = run_tminus(
                            probe, src_url, out, target_url, args.jobs, checksums_after=after
                        )
                        size = dir_bytes(out)
                        for k, v in ph.items():
                            phases[("(checksums after) " if after else "") + k].append(v)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                    server.drop(target)
                time.sleep(CpuMeter.SETTLE_S)
                cpu1 = meter.read()
                for key, value in (("backup", b), ("restore", s), ("total", b + s)):
                    results[side][key].append(value)
                results[side]["client_cpu"].append(cpu1[1] - cpu0[1])
                cpu = f"cpu {cpu1[1] - cpu0[1]:.1f} client"
                if cpu0[0] is not None and cpu1[0] is not None:
                    results[side]["server_cpu"].append(cpu1[0] - cpu0[0])
                    cpu += f" + {cpu1[0] - cpu0[0]:.1f} server"
                line.append(
                    f"{side} {b:6.2f} + {s:6.2f} = {b + s:6.2f} s ({cpu}; "
                    f"dump {size / 2**20:.0f} MB)"
                )
            print("   ".join(line), flush=True)

        if args.snapshot_alone:
            probe.take()
            print("  the snapshot's cost on the source alone (no pg_dump running):")
            for label, seconds, used in snapshot_alone(src_url, args.jobs, meter):
                shown = "" if used is None else f", server CPU {used:6.2f} s"
                print(f"    {label:<58} {seconds:6.2f} s{shown}", flush=True)
    return results, phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the source database")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side (medians reported)")
    ap.add_argument("--jobs", type=int, default=2, help="-j of pg_dump/pg_restore and the driver")
    ap.add_argument(
        "--max-fill-s", type=float, default=900, help="stop filling after this many seconds"
    )
    ap.add_argument(
        "--no-snapshot-alone",
        dest="snapshot_alone",
        action="store_false",
        help="skip timing the counts + checksums once on their own at the end",
    )
    ap.add_argument(
        "--pg-admin-url",
        default=DEFAULT_PG_ADMIN_URL,
        help="PostgreSQL server (any database on it) to create the bench databases on",
    )
    ap.add_argument(
        "--sides",
        default="raw,tminus",
        help=f"comma-separated, of {','.join(SIDES)} (raw and tminus always run)",
    )
    ap.add_argument("--work-dir", help="where the dumps go (default: a temporary directory)")
    args = ap.parse_args(argv)
    args.sides = {"raw", "tminus", *(s.strip() for s in args.sides.split(",") if s.strip())}
    if not args.sides <= set(SIDES):
        ap.error(f"--sides: unknown side(s) {', '.join(sorted(args.sides - set(SIDES)))}")
    if args.size_mb < 10 or args.repeat < 1 or args.jobs < 1:
        ap.error("--size-mb must be at least 10, --repeat and --jobs at least 1")
    missing = [t for t in ("pg_dump", "pg_restore") if shutil.which(t) is None]
    if missing:
        print(
            f"bench failed: {', '.join(missing)} not on PATH (postgresql-client)", file=sys.stderr
        )
        return 1

    load1, load5, load15 = os.getloadavg()
    print(f"date {date.today()}, {os.cpu_count()} cpu(s), python {sys.version.split()[0]}")
    print(f"load average at start: {load1:.2f} {load5:.2f} {load15:.2f}")
    proc = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=False)
    print(f"{proc.stdout.strip()}, -j {args.jobs}, {args.repeat} repeat(s)")

    server = Server(args.pg_admin_url)
    work = Path(tempfile.mkdtemp(prefix="tminus-bench-backup-", dir=args.work_dir))
    try:
        results, phases = run_bench(args, server, work)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if "psycopg" in type(exc).__module__:
            print("(is PostgreSQL up? --pg-admin-url URL)", file=sys.stderr)
        return 1
    finally:
        server.drop_all()
        shutil.rmtree(work, ignore_errors=True)
    report(results, phases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
