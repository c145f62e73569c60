"""The manual fallback: the shell commands an operator could type if tminus were unavailable,
one function per step kind (like :data:`tminus.plan.describe.DESCRIBERS`), values as written
(the runbook resolves them afterwards, secrets as ``***``).

They are a fallback, not what tminus runs: no manifest, checksum or comparison is done, and the
path of a backup has its time stamp as a pattern (``<YYYYMMDDTHHMMSSZ>``: take the newest).
Kinds with nothing to type (a wait for a check, a notification) give a comment saying what to
do by hand; a kind not listed here gives nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from tminus.plan import _runbook_backups as backups
from tminus.plan._steps_kube import kubectl_fallback
from tminus.plan.describe import one_line
from tminus.plan.model import Plan
from tminus.plan.steps import (
    ApproveStep,
    BackupRef,
    BackupStep,
    BlueGreenStep,
    CanaryStep,
    FlagStep,
    HttpStep,
    KubernetesStep,
    MaintenanceStep,
    MigrateStep,
    NotifyStep,
    ReleaseStep,
    RestoreStep,
    RunStep,
    SqlStep,
    SshStep,
    StepBase,
    TrafficStep,
    UploadStep,
    VerifyBackupStep,
    WaitStep,
)
from tminus.plan.targets import HaproxyRouter, NginxRouter
from tminus.plan.values import format_duration

__all__ = ["FALLBACKS", "RESOLVE", "auto_undo_fallback", "fallback", "numbered", "undo_fallback"]


def _cmd(command: str | list[str]) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _in(cwd: str | None, command: str) -> str:
    return f"cd {cwd} && {command}" if cwd else command


def _hosts(plan: Plan, on: str) -> list[str]:
    """``user@address -p port`` of the hosts ``on`` names (a host, or a group's hosts)."""
    t = plan.targets
    names = [on] if on in t.hosts or on not in t.groups else list(t.groups[on].hosts)
    if on in t.groups:
        for child in t.groups[on].children:
            names += list(t.groups[child].hosts) if child in t.groups else []
    out = []
    for n in dict.fromkeys(names):
        h = t.hosts.get(n)
        if h is None:
            out.append(n)
            continue
        addr = f"{h.user}@{h.address or n}" if h.user else (h.address or n)
        out.append(addr + (f" -p {h.port}" if h.port != 22 else ""))
    return out


def _on_each(plan: Plan, on: str, remote: str) -> list[str]:
    hosts = _hosts(plan, on)
    if len(hosts) == 1:
        return [f"ssh {hosts[0]} {shlex.quote(remote)}"]
    listed = " ".join(f"'{h}'" for h in hosts)
    return [f"for h in {listed}; do ssh $h {shlex.quote(remote)}; done"]


def _db(plan: Plan, name: str | None) -> tuple[str, str]:
    """(kind, how to connect) of a database target: the URL as written (``${secret}`` shows
    as ``***``; its environment variable is named when the plan reads it from one)."""
    db = plan.targets.databases.get(name or "")
    if db is None:
        return "", f"<database {name}>"
    url = db.url
    raw = url[2:-1] if url.startswith("${") and url.endswith("}") else ""
    secret = plan.secrets.get(raw, "")
    if secret.startswith("${env:"):
        env = secret[6:].split(":-", 1)[0].rstrip("}")
        return db.kind, f'"${env}"'
    return db.kind, url


#: Resolves ``${…}`` as the runbook being built does (``build_runbook`` sets it), so that a
#: backup's label is taken from the resolved URL or path, as the driver takes it.
RESOLVE: ContextVar[Callable[[str], str] | None] = ContextVar("RESOLVE", default=None)


def _resolved(text: str) -> str:
    resolve = RESOLVE.get()
    return resolve(text) if resolve is not None and "${" in text else text


def _db_name(plan: Plan, name: str | None) -> str:
    """The database's name in its target's URL (the backup's label, the schema a MariaDB
    client opens), or a placeholder saying where to read it."""
    db = plan.targets.databases.get(name or "")
    if db is None:
        return f"<database of {name}>"
    label = backups.database_label(db.kind, _resolved(db.url))
    if label is not None:
        return label
    _, conn = _db(plan, name)  # one word, so that the command still splits as it should
    where = conn.strip('"') if conn.startswith('"$') else f"url-of-{name}"
    return f"<dbname-from-{where}>"


def _client(plan: Plan, name: str | None) -> str:
    kind, conn = _db(plan, name)
    if kind == "postgres":
        return f"psql {conn}"
    if kind in ("mysql", "mariadb"):
        return f"mariadb {_db_name(plan, name)}  # connect as {conn} says"
    if kind == "sqlite":
        return f"sqlite3 {conn.removeprefix('sqlite:///')}"
    return f"<client of {name}> {conn}"


def _backup_step(plan: Plan, ref: str | BackupRef | None) -> BackupStep | None:
    bid = ref if isinstance(ref, str) else (ref.backup if ref is not None else None)
    from tminus.plan.walk import iter_steps

    for site in iter_steps(plan):
        if isinstance(site.step, BackupStep) and site.step.id == bid:
            return site.step
    return None


def _path(plan: Plan, path: str) -> str:
    return plan.targets.paths[path].path if path in plan.targets.paths else path


def _backup_dir(plan: Plan, b: BackupStep | None) -> str:
    """``<dest>/<stamp>-<label>``, the directory the step's driver writes (see
    :mod:`tminus.plan._runbook_backups`)."""
    if b is None:
        return f"<backup dir>/{backups.STAMP}-<label>"
    dest = b.dest or "${state_dir}/backups"
    if b.path is not None:  # a files backup is labelled by its directory's name
        path = _path(plan, b.path)
        label = backups.path_label(_resolved(path))
        name = (
            backups.dir_name(label)
            if label is not None
            else f"{backups.STAMP}-<last-part-of-{path}>"
        )
        return f"{dest}/{name}"
    db_name = _db_name(plan, b.database)
    name = (
        backups.dir_name(db_name) if not db_name.startswith("<") else f"{backups.STAMP}-{db_name}"
    )
    return f"{dest}/{name}"


def _dump_file(plan: Plan, b: BackupStep | None) -> str:
    kind = "files" if b is None or b.path is not None else _db(plan, b.database)[0]
    return f"{_backup_dir(plan, b)}/{backups.DUMP_FILES.get(kind, 'dump')}"


def _dump(plan: Plan, b: BackupStep) -> list[str]:
    where = _backup_dir(plan, b)
    file = _dump_file(plan, b)
    if b.path is not None:
        return [f"mkdir -p {where} && tar -czf {file} -C {_path(plan, b.path)} ."]
    kind, conn = _db(plan, b.database)
    if kind == "postgres":
        return [f"pg_dump -Fd -j {b.jobs} -f {file} {conn}"]
    if kind in ("mysql", "mariadb"):
        return [
            f"mkdir -p {where} && mariadb-dump --single-transaction --routines --triggers "
            f"{_db_name(plan, b.database)} | gzip > {file}  # connect as {conn} says"
        ]
    return [f"mkdir -p {where} && sqlite3 {conn.removeprefix('sqlite:///')} '.backup {file}'"]


def _load(plan: Plan, target_db: str | None, target_path: str | None, b: BackupStep | None) -> str:
    file = _dump_file(plan, b)
    path = target_path or (b.path if b is not None else None)
    if path is not None:
        p = _path(plan, path)
        return f"rm -rf {p}.old && mv {p} {p}.old && mkdir {p} && tar -xzf {file} -C {p}"
    db = target_db or (b.database if b is not None else None)
    kind, conn = _db(plan, db)
    if kind == "postgres":
        return f"pg_restore --clean --if-exists --exit-on-error -j 2 -d {conn} {file}"
    if kind in ("mysql", "mariadb"):
        return f"gunzip -c {file} | mariadb {_db_name(plan, db)}  # connect as {conn} says"
    return f"cp {file} {conn.removeprefix('sqlite:///')}"


def _router_set(plan: Plan, router: str, weights: dict[str, int]) -> list[str]:
    r = plan.targets.routers.get(router)
    if isinstance(r, NginxRouter):
        servers = "; ".join(
            f"server {s} weight={w}"
            for pool, w in weights.items()
            if w
            for s in r.pools.get(pool, [])
        )
        reload = r.reload or f"{r.nginx} -s reload"
        return [
            f"# edit {r.include_file}: upstream {r.upstream} {{ {servers}; }}",
            f"{r.nginx} -t && {reload}",
        ]
    if isinstance(r, HaproxyRouter):
        return [
            f'echo "set server {r.backend}/{s} weight {w}" | socat stdio {r.socket}'
            for pool, w in weights.items()
            for s in r.pools.get(pool, [])
        ]
    return [f"# router {router}: set " + ", ".join(f"{p} {w}%" for p, w in weights.items())]


# --- one per kind ---------------------------------------------------------------------------


def _run(plan: Plan, s: RunStep) -> list[str]:
    return [_in(s.cwd, _cmd(s.command))]


def _ssh(plan: Plan, s: SshStep) -> list[str]:
    command = _cmd(s.command)
    if s.become:  # as the step runs it: through sudo
        user = f"-u {s.become} " if isinstance(s.become, str) else ""
        command = f"sudo {user}sh -c {shlex.quote(command)}"
    return _on_each(plan, s.on, _in(s.cwd, command))


def _http(plan: Plan, s: HttpStep) -> list[str]:
    want = s.expect.status or "2xx"
    return [
        f"curl -sS -o /dev/null -w '%{{http_code}}\\n' -X {s.method} '{s.url}'  # expect {want}"
    ]


def _sql(plan: Plan, s: SqlStep) -> list[str]:
    client = _client(plan, s.database).split("  #")[0]
    flag = "-c" if client.startswith("psql") else "-e"
    out = [f"{client} {flag} {shlex.quote(one_line('; '.join(s.statements), 400))}"]
    return (out if s.statements else []) + ([f"{client} < {s.file}"] if s.file else [])


def _wait(plan: Plan, s: WaitStep) -> list[str]:
    if s.until is not None:
        name = s.until.name or getattr(s.until, "use", None) or "its check"
        return [f"# repeat the check {name} until it passes"]
    return [f"sleep {int(s.duration.total_seconds())}" if s.duration else "# wait"]


def _approve(plan: Plan, s: ApproveStep) -> list[str]:
    return [f"# sign-off by {', '.join(s.roles)} (on paper, in the table at the end)"]


def _maint_way(plan: Plan, s: MaintenanceStep, action: str) -> list[str]:
    """The step's own settings, else the plan's ``maintenance`` (as the step kind does)."""
    m = plan.maintenance
    flag = s.flag_file or (m.flag_file if m is not None and not (s.enable or s.disable) else None)
    if flag:
        return [f"touch {flag}" if action == "on" else f"rm -f {flag}"]
    how = s.enable if action == "on" else s.disable
    if how is None and m is not None:
        how = m.enable if action == "on" else m.disable
    return [_cmd(how)] if how else [f"# maintenance mode {action.upper()} by hand"]


def _maintenance(plan: Plan, s: MaintenanceStep) -> list[str]:
    return _maint_way(plan, s, s.action)


def _notify(plan: Plan, s: NotifyStep) -> list[str]:
    to = ", ".join(s.channels) or "every channel"
    return [f"# tell {to}: {one_line(s.message, 120)}"]


def _backup(plan: Plan, s: BackupStep) -> list[str]:
    return _dump(plan, s)


def _restore(plan: Plan, s: RestoreStep) -> list[str]:
    return [_load(plan, s.database, s.path, _backup_step(plan, s.from_))]


def _verify_backup(plan: Plan, s: VerifyBackupStep) -> list[str]:
    b = _backup_step(plan, s.from_)
    return [f"# restore {_backup_dir(plan, b)} into a scratch database and compare row counts"]


def _migrate(plan: Plan, s: MigrateStep) -> list[str]:
    if s.tool == "alembic":
        cfg = f" -c {s.config}" if s.config else ""
        return [f"alembic{cfg} upgrade {s.revision}"]
    if s.tool == "sql_dir":
        client = _client(plan, s.database).split("  #")[0]
        return [f'for f in {s.dir}/*.up.sql; do {client} < "$f" || break; done']
    return [s.up] if s.up else []


def _migrate_undo(plan: Plan, s: MigrateStep) -> list[str]:
    if s.on_rollback == "restore":
        return [_load(plan, s.database, None, _backup_step(plan, s.backup))]
    if s.on_rollback == "none":
        return []
    if s.tool == "alembic":
        cfg = f" -c {s.config}" if s.config else ""
        return [f"alembic{cfg} downgrade <revision before the deploy>"]
    if s.tool == "sql_dir":
        client = _client(plan, s.database).split("  #")[0]
        return [f"# newest first: {client} < {s.dir}/<NNN>_<name>.down.sql"]
    return [f"TMINUS_VERSION=<version before the deploy> {s.down}"] if s.down else []


def _upload(plan: Plan, s: UploadStep) -> list[str]:
    out = []
    for h in _hosts(plan, s.on):
        addr, _, port = h.partition(" -p ")
        p = f"-P {port} " if port else ""
        out.append(f"scp -r {p}{s.src} {addr}:{s.dest}")
        if s.mode:
            out.append(f"ssh {h} chmod {s.mode} {s.dest}")
    return out


def _switch(root: str, release: str) -> str:
    """The atomic symlink switch of ``current`` (what the release step does)."""
    new = f"{root}/current.new"
    return f"ln -sfn {root}/releases/{release} {new} && mv -T {new} {root}/current"


def _release(plan: Plan, s: ReleaseStep) -> list[str]:
    root = s.path
    if s.action == "rollback":  # back from release_id to the release before it
        return _on_each(plan, s.on, _switch(root, "<release before>"))
    rid = s.release_id or backups.STAMP
    copy = f"mkdir -p {root}/releases/{rid} && cp -a {s.source}/. {root}/releases/{rid}/"
    return _on_each(plan, s.on, f"{copy} && {_switch(root, rid)}")


def _release_undo(plan: Plan, s: ReleaseStep) -> list[str]:
    return _on_each(plan, s.on, _switch(s.path, "<previous>"))


def _traffic(plan: Plan, s: TrafficStep) -> list[str]:
    if s.restore is not None:
        return [f"# router {s.router}: set the weights back to those before {s.restore}"]
    return _router_set(plan, s.router, s.weights)


def _flag(plan: Plan, s: FlagStep) -> list[str]:
    state = [f"{s.percentage:g}%"] if s.percentage is not None else []
    if s.enabled is not None:
        state.append("on" if s.enabled else "off")
    store = plan.targets.flag_stores.get(s.store)
    where = getattr(store, "path", None) or s.store
    return [f"# edit {where}: flag {s.flag} → {', '.join(state) or 'as recorded'}"]


def _canary(plan: Plan, s: CanaryStep) -> list[str]:
    out: list[str] = []
    for w in s.steps:
        out += _router_set(plan, s.router, {s.stable: 100 - w.weight, s.canary: w.weight})
        if w.pause is not None:
            hold = format_duration(w.pause) if not isinstance(w.pause, str) else w.pause
            out.append(f"# hold ({hold}); watch the analysis checks before the next weight")
    return out


def _canary_undo(plan: Plan, s: CanaryStep) -> list[str]:
    return _router_set(plan, s.router, {s.stable: 100, s.canary: 0})


def _blue_green(plan: Plan, s: BlueGreenStep) -> list[str]:
    return [
        f"# deploy to {s.idle} (steps above), check it, then:",
        *_router_set(plan, s.router, {s.idle: 100, s.active: 0}),
    ]


def _blue_green_undo(plan: Plan, s: BlueGreenStep) -> list[str]:
    return _router_set(plan, s.router, {s.active: 100, s.idle: 0})


def _traffic_undo(plan: Plan, s: TrafficStep) -> list[str]:
    return [f"# router {s.router}: set the weights back to those before this step"]


def _maintenance_undo(plan: Plan, s: MaintenanceStep) -> list[str]:
    return _maint_way(plan, s, "off") if s.action == "on" else []


#: The manual equivalent of each built-in step kind.
FALLBACKS: dict[type[StepBase], Callable[[Plan, Any], list[str]]] = {
    RunStep: _run,
    SshStep: _ssh,
    HttpStep: _http,
    SqlStep: _sql,
    WaitStep: _wait,
    ApproveStep: _approve,
    MaintenanceStep: _maintenance,
    NotifyStep: _notify,
    BackupStep: _backup,
    RestoreStep: _restore,
    VerifyBackupStep: _verify_backup,
    MigrateStep: _migrate,
    UploadStep: _upload,
    ReleaseStep: _release,
    TrafficStep: _traffic,
    FlagStep: _flag,
    CanaryStep: _canary,
    BlueGreenStep: _blue_green,
    KubernetesStep: kubectl_fallback,
}

#: The manual equivalent of what the engine undoes on its own for a step of these kinds.
UNDO_FALLBACKS: dict[type[StepBase], Callable[[Plan, Any], list[str]]] = {
    MaintenanceStep: _maintenance_undo,
    MigrateStep: _migrate_undo,
    ReleaseStep: _release_undo,
    TrafficStep: _traffic_undo,
    CanaryStep: _canary_undo,
    BlueGreenStep: _blue_green_undo,
}


#: Kinds whose manual equivalent is only a comment that repeats the task's own row ("repeat
#: the check until it passes", "sign-off by", "tell the channels"): left out of the blocks.
_SAID_IN_THE_TASK = (WaitStep, ApproveStep, NotifyStep)


def fallback(
    plan: Plan, step: StepBase, *, all_kinds: bool = True, shown: str | None = None
) -> list[str]:
    """The commands that do what ``step`` does, by hand; [] when the kind has none. With
    ``all_kinds=False``, also [] for the kinds whose task row already says what to do by hand
    (a wait for a check, a sign-off, a notification), and for a ``run`` step whose whole
    command (and directory) the task's row, ``shown``, already prints."""
    if not all_kinds and isinstance(step, _SAID_IN_THE_TASK):
        return []
    if not all_kinds and shown is not None and isinstance(step, RunStep):
        where = step.cwd or ""
        if _cmd(step.command) in shown and where in shown:  # the row prints it whole
            return []
    fn = FALLBACKS.get(type(step))
    return fn(plan, step) if fn is not None else []


def auto_undo_fallback(plan: Plan, step: StepBase) -> list[str]:
    """The commands that undo by hand what the engine undoes on its own for ``step``."""
    fn = UNDO_FALLBACKS.get(type(step))
    return fn(plan, step) if fn is not None else []


def numbered(entries: list[tuple[int, list[str]]]) -> str:
    """The lines of a fallback block, each command after the number of its task (or of its
    rollback action) instead of a comment repeating the task's name: ``2  mkdir …``."""
    width = max((len(str(n)) for n, cmds in entries if cmds), default=1)
    lines: list[str] = []
    for n, cmds in entries:
        for i, cmd in enumerate(cmds):
            lines.append(f"{str(n) if i == 0 else '':>{width}}  {cmd}")
    return "\n".join(lines)


def undo_fallback(plan: Plan, step: StepBase) -> list[str]:
    """The commands that undo ``step`` by hand: its ``undo:`` steps, then what the engine
    would undo on its own."""
    out: list[str] = []
    for u in step.undo:
        out += fallback(plan, u)
    return out + auto_undo_fallback(plan, step)
