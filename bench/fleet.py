"""Fleet rollout: the same 5-step release to N real sshd hosts with tminus, ansible-playbook
and raw parallel ``ssh``.

    uv run --group bench python bench/fleet.py [--hosts 100] [--repeat 3] [--json]

The five steps, the same on every host for each variant (see bench/README.md for the mapping):

1. a command: prepare the deploy root (``mkdir -p releases shared/log stage``);
2. an upload: a tree of 20 files (~200 KB) into ``stage/``;
3. a release switch: ``releases/<id>`` from the uploaded tree, ``log`` linked from
   ``shared/``, ``current`` switched atomically (``ln -sfn … current.tmp && mv -T``);
4. a health check: ``current/VERSION`` holds this run's version;
5. cleanup: keep the 3 newest releases.

Each of the N hosts is its own OpenSSH sshd (``tminus.testing.sshd``) running in its own mount
namespace, so that the deploy root (one absolute path) is a different directory on every host,
as on real machines. Before each timed run the deploy roots are wiped and seeded with four old
releases (``current`` on the newest), off the clock; after it every host is checked: ``current``
on the new release, its VERSION and the sha256 of its whole tree, the shared link, exactly the
3 newest releases left. A run that did not do the work fails the bench.

Variants run interleaved (the order rotates per repeat); the report shows medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tminus.testing.sshd import SshdFleet, SshdInstance

TARGET_VS_ANSIBLE = 20.0  # tminus at least 20x faster than ansible-playbook (issue #20)
TARGET_VS_RAW = 1.1  # tminus at most 1.1x raw parallel ssh at the same concurrency
TARGET_RSS_MB = 500.0  # the tminus process's peak resident memory
VARIANTS = ("tminus", "ansible", "raw")
KEEP = 3
OLD_RELEASES = 4
GROUP = "web"
PERSIST = "3600s"  # ControlPersist of raw's and Ansible's masters (closed after each run)
OUT_JSON = False  # --json: the report goes to stdout as JSON, progress lines to stderr


def log(msg: str) -> None:
    print(msg, file=sys.stderr if OUT_JSON else sys.stdout, flush=True)


# --- the fleet: one sshd per host, each in its own mount namespace -------------------------
class BenchFleet(SshdFleet):
    """SshdFleet whose instances each see their own directory at the same path ``deploy``:
    ``unshare --mount`` then a bind mount, then ``exec sshd`` (so the process is still sshd
    and the fleet's stop/kill works unchanged)."""

    deploy: Path
    data: Path

    def _launch(self, instances: list[SshdInstance]) -> None:
        """In batches (``start_batch``): a thousand sshd forking at once overrun the machine."""
        for k in range(0, len(instances), self.start_batch):
            self._launch_batch(instances[k : k + self.start_batch])

    def _launch_batch(self, instances: list[SshdInstance]) -> None:
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        for inst in instances:
            src = self.data / inst.name
            src.mkdir(mode=0o755, exist_ok=True)
            _chown(src, self.user)
            script = (
                f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(self.deploy))} && "
                f"exec {shlex.quote(self.sshd)} -D -e -f {shlex.quote(str(inst.config))}"
            )
            with inst.log.open("ab") as fh:
                inst.proc = subprocess.Popen(
                    [unshare, "--mount", "--propagation", "private", "sh", "-c", script],
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=fh,
                    start_new_session=True,
                )
        for inst in instances:
            inst.wait_ready(20)


def _chown(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


# --- the application tree ------------------------------------------------------------------
def make_artifact(root: Path) -> None:
    """20 files, ~200 KB: bin/, lib/, static/, config, VERSION (rewritten per run)."""
    rng = random.Random(5)
    names = (
        ["bin/app", "bin/migrate"]
        + [f"lib/module_{i:02d}.py" for i in range(8)]
        + [f"static/css/site_{i}.css" for i in range(3)]
        + [f"static/js/bundle_{i}.js" for i in range(4)]
        + ["static/img/logo.bin", "config/app.ini"]
    )
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        size = 6_000 + (i * 1_337) % 9_000
        if name.endswith((".py", ".css", ".js", ".ini")):
            text = "".join(rng.choice("abcdefghij klmnop\n") for _ in range(size))
            p.write_text(text)
        else:
            p.write_bytes(rng.randbytes(size))
    (root / "bin" / "app").chmod(0o755)
    (root / "bin" / "migrate").chmod(0o755)
    (root / "VERSION").write_text("unset\n")
    assert sum(1 for f in root.rglob("*") if f.is_file()) == 20


def tree_digest(root: Path) -> str:
    """sha256 of ``find . -type f | LC_ALL=C sort | xargs sha256sum`` run in ``root``."""
    lines = []
    files = sorted("./" + str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
    for rel in files:
        digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        lines.append(f"{digest}  {rel}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# --- the five steps as shell (raw ssh and ansible run these exact strings) ----------------
@dataclass
class Rollout:
    deploy: str  # the deploy root, the same absolute path on every host
    release_id: str
    version: str

    @property
    def q(self) -> str:
        return shlex.quote(self.deploy)

    def prepare(self) -> str:
        d = self.q
        return f"mkdir -p {d}/releases {d}/shared/log {d}/stage && test -w {d}/releases"

    def unpack(self) -> str:  # raw ssh's upload: the receiving end of `tar c | ssh 'tar x'`
        return f"tar -C {self.q}/stage -xf -"

    def switch(self) -> str:
        d, rid = self.q, self.release_id
        return (
            f"set -e; cd {d}; cp -a stage releases/{rid}; "
            f"ln -sfn {d}/shared/log releases/{rid}/log; "
            f"ln -sfn {d}/releases/{rid} current.tmp; mv -T current.tmp current"
        )

    def health(self) -> str:
        return f'test "$(cat {self.q}/current/VERSION)" = {shlex.quote(self.version)}'

    def cleanup(self) -> str:
        return (
            f"cd {self.q}/releases && ls -1 | LC_ALL=C sort | head -n -{KEEP} | xargs -r rm -rf --"
        )

    # untimed: reset before a run, check after it
    def seed(self) -> str:
        d = self.q
        old = " ".join(old_release_ids())
        return (
            f"set -e; find {d} -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +; "
            f"mkdir -p {d}/releases {d}/shared/log; "
            f"for r in {old}; do mkdir {d}/releases/$r; echo old-$r > {d}/releases/$r/VERSION; "
            f"ln -s {d}/shared/log {d}/releases/$r/log; done; "
            f"ln -s {d}/releases/{old_release_ids()[-1]} {d}/current"
        )

    def probe(self) -> str:
        d = self.q
        return (
            f"cd {d} && printf '%s|%s|%s|%s|%s\\n' "
            '"$(basename "$(readlink current)")" "$(cat current/VERSION)" '
            '"$(ls -1 releases | LC_ALL=C sort | tr "\\n" ,)" '
            '"$(cd current/ && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum '
            '| cut -d" " -f1)" '
            '"$(test "$(readlink -f current/log)" = "$(readlink -f shared/log)" && echo ok)"'
        )


def old_release_ids() -> list[str]:
    return [f"20200101000000{k:02d}" for k in range(1, OLD_RELEASES + 1)]


# --- running ssh from Python ---------------------------------------------------------------
@dataclass
class SshClient:
    """OpenSSH client arguments for the fleet (no ~/.ssh/config, no agent, strict keys)."""

    identity: str
    known_hosts: str
    user: str

    def base(self) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-i",
            self.identity,
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "ServerAliveInterval=15",
            "-l",
            self.user,
        ]

    def to(self, port: int, control: Path | None, master: bool = False) -> list[str]:
        args = [*self.base(), "-p", str(port)]
        if control is not None:
            args += ["-o", f"ControlPath={control}/%C"]
            if master:
                # idle masters must outlive the slowest step: at 1000 hosts a host waits more
                # than a minute between two commands (each master is closed after the run)
                args += ["-o", "ControlMaster=yes", "-o", f"ControlPersist={PERSIST}", "-f", "-N"]
            else:
                args += ["-o", "ControlMaster=no"]
        return [*args, "127.0.0.1"]


@dataclass
class Result:
    host: str
    status: int | None
    out: str
    err: str


async def _one(
    argv: list[str], host: str, stdin: bytes | None, timeout: float, capture: bool = True
) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return Result(host, None, "", f"timed out after {timeout:g}s")
    return Result(host, proc.returncode, (out or b"").decode(), (err or b"").decode())


async def on_all(
    fleet: SshdFleet,
    client: SshClient,
    command: str | None,
    *,
    control: Path | None = None,
    master: bool = False,
    stdin: bytes | None = None,
    timeout: float = 120,
    forks: int | None = None,
) -> list[Result]:
    """One ssh per host, at most ``forks`` at a time (``xargs -P forks``; None: all at
    once); raises if any host failed."""
    gate = asyncio.Semaphore(forks or len(fleet.instances) or 1)

    async def one(argv: list[str], name: str) -> Result:
        async with gate:
            # a master forks into the background holding its stdio: never pipe it
            return await _one(argv, name, stdin, timeout, capture=not master)

    jobs = []
    for inst in fleet.instances:
        argv = client.to(inst.port, control, master)
        if command is not None:
            argv.append(command)
        jobs.append(one(argv, inst.name))
    results = await asyncio.gather(*jobs)
    bad = [r for r in results if r.status != 0]
    if bad:
        first = bad[0]
        raise RuntimeError(
            f"{len(bad)}/{len(results)} host(s) failed {command or 'connect'!r}: "
            f"{first.host}: exit {first.status}: {first.err.strip()[-300:]}"
        )
    return results


async def close_masters(client: SshClient, control: Path) -> None:
    socks = list(control.glob("*")) if control.exists() else []
    jobs = [
        _one([*client.base(), "-o", f"ControlPath={s}", "-O", "exit", "x"], s.name, None, 10)
        for s in socks
    ]
    await asyncio.gather(*jobs)


# --- the three variants --------------------------------------------------------------------
@dataclass
class Bench:
    args: argparse.Namespace
    fleet: BenchFleet
    tmp: Path
    client: SshClient
    artifact: Path
    tar: bytes = b""
    counter: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    last_cpu: float = 0.0  # CPU seconds of the last timed CLI run and the children it waited for
    last_steps: dict[str, float] = field(default_factory=dict)  # seconds per step, last run
    last_rss_mb: float = 0.0  # peak resident memory of the last timed CLI process (its own)

    @property
    def forks(self) -> int:
        """The concurrency of tminus (``targets.ssh.forks``) and raw ssh (``xargs -P``)."""
        return int(self.args.forks or len(self.fleet.instances))

    @property
    def ansible_forks(self) -> int:
        return int(self.args.ansible_forks or self.forks)

    @property
    def deploy(self) -> str:
        return str(self.fleet.deploy)

    def new_rollout(self, variant: str, rep: int) -> Rollout:
        self.counter += 1
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        rid = f"{stamp}{self.counter % 100:02d}"
        ro = Rollout(self.deploy, rid, f"{variant}-{rep + 1}-{rid}")
        (self.artifact / "VERSION").write_text(ro.version + "\n")
        self.tar = subprocess.run(
            ["tar", "-C", str(self.artifact), "-cf", "-", "."], capture_output=True, check=True
        ).stdout
        return ro

    # ---- untimed: reset and verify
    def seed(self, ro: Rollout) -> None:
        control = self.tmp / "cm-admin"
        control.mkdir(exist_ok=True)
        asyncio.run(self._admin(ro.seed(), control))

    async def _admin(self, command: str, control: Path) -> list[Result]:
        try:
            await on_all(self.fleet, self.client, None, control=control, master=True)
            return await on_all(self.fleet, self.client, command, control=control)
        finally:
            await close_masters(self.client, control)

    def verify(self, ro: Rollout) -> None:
        control = self.tmp / "cm-admin"
        results = asyncio.run(self._admin(ro.probe(), control))
        want_releases = ",".join(sorted([*old_release_ids(), ro.release_id])[-KEEP:]) + ","
        want = f"{ro.release_id}|{ro.version}|{want_releases}|{tree_digest(self.artifact)}|ok"
        wrong = [(r.host, r.out.strip()) for r in results if r.out.strip() != want]
        if wrong:
            host, got = wrong[0]
            raise RuntimeError(
                f"verification failed on {len(wrong)}/{len(results)} host(s); "
                f"{host}: got {got!r}, want {want!r}"
            )

    # ---- raw parallel ssh
    def run_raw(self, ro: Rollout) -> float:
        control = self.tmp / f"cm-raw-{self.counter}"
        control.mkdir()
        try:
            t0 = time.perf_counter()
            asyncio.run(asyncio.wait_for(self._raw(ro, control), self.args.timeout))
            return time.perf_counter() - t0
        finally:
            asyncio.run(close_masters(self.client, control))

    async def _raw(self, ro: Rollout, control: Path) -> None:
        f, c = self.fleet, self.client
        self.last_steps = {}
        work: list[tuple[str, str | None, bytes | None]] = [
            ("connect", None, None),  # the multiplexed connections, opened once
            ("prepare", ro.prepare(), None),
            ("upload", ro.unpack(), self.tar),
            ("release", ro.switch(), None),
            ("health", ro.health(), None),
            ("cleanup", ro.cleanup(), None),
        ]
        for name, command, stdin in work:
            t0 = time.perf_counter()
            master = command is None
            await on_all(
                f, c, command, control=control, master=master, stdin=stdin, forks=self.forks
            )
            self.last_steps[name] = time.perf_counter() - t0

    # ---- ansible-playbook
    def ansible_files(self) -> tuple[Path, Path, dict[str, str]]:
        d = self.tmp / "ansible"
        (d / "home").mkdir(parents=True, exist_ok=True)
        (d / "local_tmp").mkdir(exist_ok=True)
        inv = d / "inventory.ini"
        lines = [f"[{GROUP}]"]
        for inst in self.fleet.instances:
            lines.append(
                f"{inst.name} ansible_host=127.0.0.1 ansible_port={inst.port} "
                f"ansible_user={self.fleet.user} "
                f"ansible_ssh_private_key_file={self.fleet.identity_file}"
            )
        inv.write_text("\n".join(lines) + "\n")
        ssh_args = (
            f"-F /dev/null -o ControlMaster=auto -o ControlPersist={PERSIST} -o IdentitiesOnly=yes "
            f"-o IdentityAgent=none -o UserKnownHostsFile={self.fleet.known_hosts} "
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"
        )
        cfg = d / "ansible.cfg"
        cfg.write_text(
            "\n".join(
                [
                    "[defaults]",
                    f"inventory = {inv}",
                    f"forks = {self.ansible_forks}",
                    "strategy = linear",
                    "host_key_checking = True",
                    "gathering = explicit",
                    "interpreter_python = /usr/bin/python3",
                    "retry_files_enabled = False",
                    "timeout = 30",
                    f"local_tmp = {d / 'local_tmp'}",
                    "",
                    "[ssh_connection]",
                    "pipelining = True",
                    f"ssh_args = {ssh_args}",
                    "",
                ]
            )
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ANSIBLE_") and k != "SSH_AUTH_SOCK"
        }
        env = self.python_env(env)
        env |= {
            "ANSIBLE_CONFIG": str(cfg),
            "ANSIBLE_HOME": str(d / "home"),
            "ANSIBLE_LOCAL_TEMP": str(d / "local_tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
        return d, cfg, env

    def playbook(self, ro: Rollout, path: Path) -> None:
        if self.args.ansible_upload == "copy":
            upload: dict[str, Any] = {
                "name": "upload",
                "ansible.builtin.copy": {"src": f"{self.artifact}/", "dest": f"{ro.deploy}/stage/"},
            }
        else:
            upload = {
                "name": "upload",
                "ansible.builtin.unarchive": {
                    "src": str(self.tmp / "artifact.tar"),
                    "dest": f"{ro.deploy}/stage/",
                },
            }
        play = {
            "name": "fleet rollout",
            "hosts": GROUP,
            "gather_facts": False,
            "strategy": "linear",
            "tasks": [
                {"name": "prepare", "ansible.builtin.shell": ro.prepare()},
                upload,
                {"name": "release", "ansible.builtin.shell": ro.switch()},
                {"name": "health", "ansible.builtin.shell": ro.health()},
                {"name": "cleanup", "ansible.builtin.shell": ro.cleanup()},
            ],
        }
        path.write_text(yaml.safe_dump([play], sort_keys=False, width=1000))

    def run_ansible(self, ro: Rollout) -> float:
        d, _cfg, env = self.ansible_files()
        control = self.tmp / f"cm-ans-{self.counter}"
        control.mkdir()
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control)
        book = d / f"playbook-{self.counter}.yml"
        if self.args.ansible_upload == "unarchive":
            (self.tmp / "artifact.tar").write_bytes(self.tar)
        self.playbook(ro, book)
        argv = [str(Path(sys.executable).with_name("ansible-playbook")), str(book)]
        self.last_steps = {}
        try:
            return self._timed(argv, env, d / f"ansible-{self.counter}.log", "ansible-playbook")
        finally:
            asyncio.run(close_masters(self.client, control))

    def ansible_syntax_check(self, ro: Rollout) -> None:
        d, _cfg, env = self.ansible_files()
        book = d / "playbook-check.yml"
        self.playbook(ro, book)
        argv = [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "--syntax-check",
            str(book),
        ]
        self._timed(argv, env, d / "ansible-check.log", "ansible-playbook --syntax-check")

    # ---- tminus
    def plan(self, ro: Rollout, path: Path) -> None:
        """The tminus plan: ssh, upload, release, ssh. The release step streams the tree into
        ``releases/<id>``, links ``shared``, switches ``current`` and prunes to ``keep: 3``:
        steps 3 and 5 of the rollout, as Capistrano's deploy does its cleanup."""
        hosts = {
            inst.name: {
                "address": "127.0.0.1",
                "port": inst.port,
                "user": self.fleet.user,
                "identity_file": str(self.fleet.identity_file),
                "known_hosts": str(self.fleet.known_hosts),
            }
            for inst in self.fleet.instances
        }
        steps: list[dict[str, Any]] = [
            {"kind": "ssh", "name": "prepare", "on": GROUP, "command": ro.prepare()},
            {
                "kind": "upload",
                "name": "upload",
                "on": GROUP,
                "src": f"{self.artifact}/",
                "dest": f"{ro.deploy}/stage/",
            },
            {
                "kind": "release",
                "name": "release",
                "on": GROUP,
                "path": ro.deploy,
                "source": f"{self.artifact}/",
                "release_id": ro.release_id,
                "shared": ["log"],
                "keep": KEEP,
            },
            {"kind": "ssh", "name": "health", "on": GROUP, "command": ro.health()},
        ]
        if self.args.tminus_cleanup_step:  # the prune again, as its own step (a no-op by then)
            steps.append({"kind": "ssh", "name": "cleanup", "on": GROUP, "command": ro.cleanup()})
        plan = {
            "tminus": 1,
            "name": "fleet-bench",
            "version": ro.version,
            "environment": "bench",
            "targets": {
                "ssh": {"known_hosts": str(self.fleet.known_hosts), "forks": self.forks},
                "hosts": hosts,
                "groups": {GROUP: list(hosts)},
            },
            "phases": [{"name": "rollout", "on_failure": "pause", "steps": steps}],
        }
        path.write_text(yaml.safe_dump(plan, sort_keys=False, width=1000))

    def run_tminus(self, ro: Rollout, profile: Path | None = None) -> float:
        d = self.tmp / "tminus"
        d.mkdir(exist_ok=True)
        plan = d / f"plan-{self.counter}.yaml"
        self.plan(ro, plan)
        state = f"sqlite:///{d}/state-{self.counter}.db"
        prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
        argv = [sys.executable, *prof, "-m", "tminus", "run", str(plan), "--state", state]
        argv += ["--as", "bench"]
        env = self.python_env({k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"})
        t = self._timed(argv, env, d / f"tminus-{self.counter}.log", "tminus run", cwd=d)
        self.last_steps = self.tminus_steps(state, t, cwd=d)
        return t

    def tminus_steps(self, state: str, wall: float, cwd: Path) -> dict[str, float]:
        """Seconds per step of the deploy just run (from ``tminus status``), and the rest of
        the wall time: interpreter start, imports, plan load, preflight, store, exit."""
        proc = subprocess.run(
            [sys.executable, "-m", "tminus", "status", "--state", state, "--output", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
            env=self.python_env(dict(os.environ)),
            check=False,
        )
        if proc.returncode != 0:
            return {}
        data = json.loads(proc.stdout)
        out: dict[str, float] = {}
        for st in data.get("steps", []):
            if st["key"].startswith("phase/0/step/") and st.get("ended_at"):
                took = datetime.fromisoformat(st["ended_at"]) - datetime.fromisoformat(
                    st["started_at"]
                )
                out[st["title"]] = took.total_seconds()
        deploy = datetime.fromisoformat(data["finished_at"]) - datetime.fromisoformat(
            data["created_at"]
        )
        out["outside the deploy"] = wall - deploy.total_seconds()
        return out

    def python_env(self, env: dict[str, str]) -> dict[str, str]:
        """Bytecode caching on, in a cache of the bench's own (PYTHONDONTWRITEBYTECODE in the
        caller's environment would make every run compile every module it imports)."""
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.tmp / "pycache")
        return env

    def check_plan(self) -> None:
        """``tminus check`` on a generated plan, off the clock (warnings are fine)."""
        d = self.tmp / "tminus"
        d.mkdir(exist_ok=True)
        plan = d / "plan-check.yaml"
        self.plan(Rollout(self.deploy, "2020010100000099", "check"), plan)
        proc = subprocess.run(
            [sys.executable, "-m", "tminus", "check", str(plan)],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.python_env(dict(os.environ)),
            check=False,
        )
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0:
            raise RuntimeError(f"tminus check rejected the generated plan:\n{out}")
        log(f"tminus check: {out.splitlines()[-1] if out else 'ok'}")

    # ---- a timed CLI run, bounded, killed as a process group
    def _timed(
        self,
        argv: list[str],
        env: dict[str, str],
        logfile: Path,
        what: str,
        cwd: Path | None = None,
    ) -> float:
        with logfile.open("wb") as fh:
            c0 = _children_cpu()
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd or self.tmp,
                start_new_session=True,
            )
            self.procs.append(proc)
            try:
                code, self.last_rss_mb = _wait_rss(proc, self.args.timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                raise RuntimeError(f"{what} timed out after {self.args.timeout:g}s") from None
            finally:
                self.procs.remove(proc)
            elapsed = time.perf_counter() - t0
            self.last_cpu = _children_cpu() - c0
        if code != 0:
            tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{what} exited {code} (log {logfile}):\n{tail}")
        return elapsed


def _wait_rss(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait for ``proc`` (raising TimeoutExpired after ``timeout``); its exit code and its own
    peak resident memory in MB (``wait4``'s ru_maxrss: that process, not its children)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, ru.ru_maxrss / 1024
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.02)


def _raise_nofile() -> tuple[int, int]:
    """The open-file limit raised to its hard limit (sockets and pipes to every host)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group this bench started (its id is the child's pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def machine_settings() -> str:
    """What bounds a fleet of local sshd: memory, process and port limits."""

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip().replace("\t", "-")
        except OSError:
            return "?"

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{mem:.0f} GiB, pid_max {read('/proc/sys/kernel/pid_max')}, "
        f"ports {read('/proc/sys/net/ipv4/ip_local_port_range')}, "
        f"somaxconn {read('/proc/sys/net/core/somaxconn')}, "
        f"file-max {read('/proc/sys/fs/file-max')}"
    )


def tminus_kinds_missing() -> list[str]:
    from tminus.steps.registry import implemented_kinds

    have = implemented_kinds()
    return [k for k in ("ssh", "upload", "release") if k not in have]


def profile_tminus(bench: Bench, out: Path) -> None:
    """One more tminus run, off the clock, under cProfile; the stats go to ``out``."""
    import pstats

    ro = bench.new_rollout("tminus", -2)
    bench.seed(ro)
    t = bench.run_tminus(ro, profile=out.resolve())
    bench.verify(ro)
    log(f"\nprofiled tminus run: {t:.2f}s wall (with cProfile), stats in {out}")
    stats = pstats.Stats(str(out), stream=sys.stderr if OUT_JSON else sys.stdout)
    stats.sort_stats("tottime").print_stats(25)


# --- report --------------------------------------------------------------------------------
def summarize(
    times: dict[str, list[float]], loads: list[tuple[float, float, float]]
) -> dict[str, Any]:
    med = {v: statistics.median(t) for v, t in times.items() if t}
    out: dict[str, Any] = {
        "medians_s": med,
        "runs_s": times,
        "ratios": {},
        "targets": {},
        "load": {"min_1m": min(x[0] for x in loads), "max_1m": max(x[0] for x in loads)},
    }
    if "tminus" in med and "ansible" in med:
        r = med["ansible"] / med["tminus"]
        out["ratios"]["ansible/tminus"] = r
        out["targets"][f"ansible/tminus >= {TARGET_VS_ANSIBLE:g}"] = r >= TARGET_VS_ANSIBLE
    if "tminus" in med and "raw" in med:
        r = med["tminus"] / med["raw"]
        out["ratios"]["tminus/raw"] = r
        out["targets"][f"tminus/raw <= {TARGET_VS_RAW:g}"] = r <= TARGET_VS_RAW
    if "ansible" in med and "raw" in med:
        out["ratios"]["ansible/raw"] = med["ansible"] / med["raw"]
    return out


def report(args: argparse.Namespace, s: dict[str, Any]) -> None:
    n = args.hosts
    log("")
    log(f"{n} hosts, 5 steps, median of {args.repeat} run(s)")
    header = f"{'variant':<10} {'median (s)':>10} {'per host (ms)':>14}  runs (s)"
    log(header)
    log("-" * len(header))
    for v in VARIANTS:
        if v in s["medians_s"]:
            m = s["medians_s"][v]
            runs = " ".join(f"{t:.2f}" for t in s["runs_s"][v])
            log(f"{v:<10} {m:>10.2f} {m / n * 1000:>14.1f}  {runs}")
    if "tminus_cpu_s" in s:
        log(f"(tminus process CPU, median: {s['tminus_cpu_s']:.2f}s)")
    if "tminus_rss_mb" in s:
        log(f"(tminus process peak RSS, max over runs: {s['tminus_rss_mb']:.0f} MB)")
    for v, per in s.get("steps_median_s", {}).items():
        parts = ", ".join(f"{name} {secs:.2f}" for name, secs in per.items())
        log(f"{v} per step (s, medians): {parts}")
    log("")
    for k, r in s["ratios"].items():
        log(f"{k:<15} {r:6.2f}x")
    for k, ok in s["targets"].items():
        log(f"target {k}: {'met' if ok else 'NOT met'}")
    load = s["load"]
    log(f"load average (1 min) during the runs: {load['min_1m']:.2f} – {load['max_1m']:.2f}")


# --- main ----------------------------------------------------------------------------------
def run_bench(args: argparse.Namespace, bench: Bench, variants: list[str]) -> dict[str, Any]:
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: list[float] = []
    rss: list[float] = []
    steps: dict[str, dict[str, list[float]]] = {}
    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    runners = {"tminus": bench.run_tminus, "ansible": bench.run_ansible, "raw": bench.run_raw}
    if args.warmup:  # first-use costs (imports, page cache) off the clock
        for v in variants:
            if v == "ansible":  # minutes at 100 hosts: warm its imports with a syntax check
                bench.ansible_syntax_check(bench.new_rollout(v, -1))
                continue
            ro = bench.new_rollout(v, -1)
            bench.seed(ro)
            runners[v](ro)
            bench.verify(ro)
        log("warm-up done")
    for rep in range(args.repeat):
        order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
        for v in order:
            ro = bench.new_rollout(v, rep)
            bench.seed(ro)
            load = os.getloadavg()
            loads.append(load)
            t = runners[v](ro)
            bench.verify(ro)
            times[v].append(t)
            for name, secs in bench.last_steps.items():
                steps.setdefault(v, {}).setdefault(name, []).append(secs)
            extra = ""
            if v == "tminus":
                cpu.append(bench.last_cpu)
                rss.append(bench.last_rss_mb)
                extra = (
                    f", tminus process cpu {bench.last_cpu:.2f}s, "
                    f"peak RSS {bench.last_rss_mb:.0f} MB"
                )
            log(
                f"  run {rep + 1}/{args.repeat} {v:<8} {t:7.2f}s  (load {load[0]:.2f}{extra}) "
                "verified"
            )
    loads.append(os.getloadavg())
    s = summarize(times, loads)
    if cpu:
        s["tminus_cpu_s"] = statistics.median(cpu)
    if rss:
        s["tminus_rss_mb"] = max(rss)
        s["targets"][f"tminus peak RSS <= {TARGET_RSS_MB:g} MB"] = max(rss) <= TARGET_RSS_MB
    s["steps_median_s"] = {
        v: {name: statistics.median(xs) for name, xs in per.items()} for v, per in steps.items()
    }
    return s


def main(argv: Iterable[str] | None = None) -> int:
    global OUT_JSON
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=100, help="sshd instances (default 100)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant (medians reported)")
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset of tminus,ansible,raw (default: all three)",
    )
    ap.add_argument(
        "--ansible-upload",
        choices=["copy", "unarchive"],
        default="copy",
        help="ansible's upload task: copy of the tree (default) or unarchive of a tarball",
    )
    ap.add_argument(
        "--tminus-cleanup-step",
        action="store_true",
        help="add step 5 to the tminus plan as an ssh step (release's keep: 3 already prunes)",
    )
    ap.add_argument(
        "--forks",
        type=int,
        default=0,
        help="concurrency of tminus (targets.ssh.forks) and raw ssh (default: all hosts)",
    )
    ap.add_argument(
        "--ansible-forks",
        type=int,
        default=0,
        help="ansible's forks (default: --forks); each fork is a Python process",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per run")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the warm-up")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="after the bench, one more tminus run under cProfile; stats saved to FILE",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = ap.parse_args(list(argv) if argv is not None else None)
    OUT_JSON = args.json
    if args.hosts < 1 or args.repeat < 1:
        ap.error("--hosts and --repeat must be at least 1")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}")
    if os.geteuid() != 0:
        print(
            "bench/fleet.py needs root (sshd per host in its own mount namespace)", file=sys.stderr
        )
        return 2

    skipped: dict[str, str] = {}
    if "tminus" in variants:
        missing = tminus_kinds_missing()
        if missing:
            skipped["tminus"] = f"step kind(s) not implemented yet: {', '.join(missing)}"
            variants.remove("tminus")
            log(f"skipping tminus: {skipped['tminus']}")
    if "ansible" in variants and not Path(sys.executable).with_name("ansible-playbook").exists():
        skipped["ansible"] = "ansible-playbook not installed: uv sync --group bench"
        variants.remove("ansible")
        log(f"skipping ansible: {skipped['ansible']}")
    if not variants:
        print("nothing to run", file=sys.stderr)
        return 1

    load0 = os.getloadavg()
    started = datetime.now(UTC)
    log(
        f"{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cpu(s), python {sys.version.split()[0]}, "
        f"{subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}"
    )
    log(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    nofile = _raise_nofile()
    log(f"machine: {machine_settings()}; open files (this process): {nofile[0]}")

    # SIGINT (even when inherited as ignored), SIGTERM and SIGHUP end the bench like Ctrl-C,
    # so that the finally blocks clean up.
    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)

    tmp = Path(tempfile.mkdtemp(prefix="tmfb-", dir="/tmp"))  # short: ssh control paths
    tmp.chmod(0o755)
    fleet = BenchFleet(args.hosts, root=tmp / "sshd")
    bench: Bench | None = None
    try:
        (tmp / "sshd").mkdir()
        fleet.deploy = tmp / "deploy"
        fleet.data = tmp / "data"
        fleet.data.mkdir()
        fleet.deploy.mkdir(mode=0o755)
        t0 = time.perf_counter()
        fleet.start()
        _chown(fleet.deploy, fleet.user)
        log(f"{args.hosts} sshd started in {time.perf_counter() - t0:.1f}s")
        artifact = tmp / "artifact"
        make_artifact(artifact)
        client = SshClient(str(fleet.identity_file), str(fleet.known_hosts), fleet.user)
        bench = Bench(args, fleet, tmp, client, artifact)
        if "tminus" in variants:
            bench.check_plan()
        summary = run_bench(args, bench, variants)
        if args.profile and "tminus" in variants:
            profile_tminus(bench, Path(args.profile))
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if bench is not None:
            for proc in list(bench.procs):
                kill_group(proc)
        fleet.stop()  # kills every sshd with its sessions: lingering ssh masters exit too
        shutil.rmtree(tmp, ignore_errors=True)

    summary |= {
        "date": started.isoformat(timespec="seconds"),
        "hosts": args.hosts,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "load_at_start": load0,
        "ansible_upload": args.ansible_upload,
        "forks": args.forks or args.hosts,
        "ansible_forks": args.ansible_forks or args.forks or args.hosts,
        "skipped": skipped,
    }
    report(args, summary)
    if skipped:
        for v, why in skipped.items():
            log(f"{v}: not measured ({why})")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
