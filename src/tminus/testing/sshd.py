"""Real OpenSSH ``sshd`` instances on free loopback ports, for tests and benches.

    with SshdFleet(10) as fleet:               # starts 10 sshd, waits for their banners
        pool = HostPool(fleet.targets())        # name -> plan Host (127.0.0.1, port, user, key)
        fleet["h3"].kill()                      # SIGKILL: the host dies mid-rollout
        fleet["h3"].start()                     # and comes back (same port, same host key)

Everything lives in one temporary directory: per instance an ``sshd_config``, an ed25519 host
key and a log (``sshd -D -e``, ``LogLevel VERBOSE``: one line per accepted login and one per
command started, see :meth:`SshdInstance.accepted` and :meth:`SshdInstance.sessions`);
shared: a user key pair, ``authorized_keys`` and a ``known_hosts`` with every instance's key.

Logins go to a dedicated unprivileged user, ``tminus-test`` (created when missing, shell
``/bin/sh``, so no rc file slows commands down), never root. When the tests do not run as
root, sshd runs unprivileged and the login user is the current user (no ``become``).
With root, :func:`ensure_sudoers` writes ``/etc/sudoers.d/tminus-test`` when missing:
passwordless ``sudo`` for that user, limited to ``sh`` (which is what ``become`` runs).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tminus.testing._service import find_binary

if TYPE_CHECKING:
    from tminus.plan.targets import Host as TargetHost

__all__ = [
    "SUDOERS_FILE",
    "TEST_USER",
    "SshdFleet",
    "SshdInstance",
    "SshdUnavailable",
    "ensure_sudoers",
    "ensure_user",
    "find_sshd",
]

TEST_USER = "tminus-test"
SUDOERS_FILE = Path("/etc/sudoers.d/tminus-test")
_SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


class SshdUnavailable(RuntimeError):
    """sshd cannot be started here; the message says why and how to fix it."""


def find_sshd() -> str:
    return find_binary("sshd", _SSHD_CANDIDATES, "openssh-server", SshdUnavailable, "OpenSSH sshd")


def _is_root() -> bool:
    return os.geteuid() == 0


def ensure_user(name: str = TEST_USER) -> str:
    """The login user: ``name`` (created if missing) as root, else the current user."""
    if not _is_root():
        return getpass.getuser()
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--create-home", "--shell", "/bin/sh", "--user-group", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            try:  # another test process may have created it at the same moment
                pwd.getpwnam(name)
            except KeyError:
                raise SshdUnavailable(f"cannot create user {name}: {proc.stderr.strip()}") from None
    # sshd without PAM refuses accounts whose password is locked ('!'); '*' is "no password".
    shadow = Path("/etc/shadow")
    with contextlib.suppress(OSError):
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name and fields[1].startswith("!"):
                usermod = shutil.which("usermod") or "/usr/sbin/usermod"
                subprocess.run([usermod, "-p", "*", name], check=False, capture_output=True)
    return name


def ensure_sudoers(user: str = TEST_USER) -> bool:
    """Passwordless ``sudo sh`` for the test user; written only when the file is missing.
    Returns whether sudo can be used for ``become`` tests."""
    if not _is_root() or shutil.which("sudo") is None:
        return False
    if not SUDOERS_FILE.exists():
        text = (
            "# Written by tminus.testing.sshd for the tminus test suite (become tests).\n"
            f"{user} ALL=(ALL) NOPASSWD: /bin/sh, /usr/bin/sh\n"
        )
        tmp = SUDOERS_FILE.with_name(f".tminus-test.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o440)
        visudo = shutil.which("visudo") or "/usr/sbin/visudo"
        if os.access(visudo, os.X_OK):
            check = subprocess.run([visudo, "-cf", str(tmp)], capture_output=True, check=False)
            if check.returncode != 0:
                tmp.unlink()
                return False
        tmp.rename(SUDOERS_FILE)
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports below the ephemeral range when it leaves room (from a random
    start): a port the kernel hands out to clients may be taken by any outgoing connection
    (a fleet's own ssh clients) between this check and sshd's bind; these are not."""
    low, _high = _ephemeral_range()
    first, last = 10000, low - 1
    socks: list[socket.socket] = []
    try:
        if last - first > 4 * n:
            start = random.randrange(first, last)
            for k in range(last - first):
                if len(socks) == n:
                    break
                port = first + (start - first + k) % (last - first)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    s.close()
                    continue
                socks.append(s)
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _tree(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    kids = _children_map() if kids is None else kids
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


@dataclass
class SshdInstance:
    """One sshd on 127.0.0.1:``port``."""

    name: str
    port: int
    dir: Path
    fleet: SshdFleet
    host_key_line: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def accepted(self) -> int:
        """Logins accepted so far (sshd logs one line per authenticated connection)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if "Accepted publickey for" in line)

    def sessions(self) -> int:
        """Commands started so far (sshd logs, at ``LogLevel VERBOSE``, one ``Starting
        session`` line per channel that runs a command, a shell or a subsystem)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if "Starting session:" in line)

    def target(self, **extra: Any) -> TargetHost:
        from tminus.plan.targets import Host as TargetHost

        fields: dict[str, Any] = {
            "address": "127.0.0.1",
            "port": self.port,
            "user": self.fleet.user,
            "identity_file": str(self.fleet.identity_file),
            "known_hosts": str(self.fleet.known_hosts),
        }
        fields.update(extra)
        return TargetHost(**fields)

    def start(self, wait: float = 10.0) -> None:
        if self.running:
            return
        self.spawn()
        self.wait_ready(wait)

    def spawn(self) -> None:
        """``sshd -D -e -f CONFIG`` in the foreground, in its own session, logging to a file."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.fleet.sshd, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def wait_ready(self, wait: float = 10.0) -> None:
        deadline = time.monotonic() + wait
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SshdUnavailable(
                    f"sshd {self.name} on port {self.port} exited with {self.proc.returncode}: "
                    f"{self._log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    banner = s.recv(64)
                if banner.startswith(b"SSH-"):
                    return
                last = f"unexpected banner {banner!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.02)
        raise SshdUnavailable(
            f"sshd {self.name} on port {self.port} did not answer within {wait:g}s ({last}): "
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    def _signal_tree(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        for _ in range(3):  # a connection may fork while we walk the tree
            pids = [p for p in _tree(self.proc.pid) if p > 1]
            for p in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, sig)
            if sig != signal.SIGKILL or len(pids) <= 1:
                break

    def kill(self) -> None:
        """SIGKILL sshd, its connections and their sessions: the host is gone."""
        if self.proc is None:
            return
        self._signal_tree(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL what is left after two seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_tree(signal.SIGTERM)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@dataclass
class SshdFleet:
    """``n`` sshd instances named ``h1``…``hN`` (``prefix``) sharing one user key."""

    n: int = 1
    prefix: str = "h"
    root: Path | None = None
    max_sessions: int = 20
    start_batch: int = 100  # sshd started (then waited for) at a time
    instances: list[SshdInstance] = field(default_factory=list)
    user: str = ""
    sshd: str = ""
    can_become: bool = False
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def identity_file(self) -> Path:
        assert self.root is not None
        return self.root / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        assert self.root is not None
        return self.root / "client" / "known_hosts"

    @property
    def authorized_keys(self) -> Path:
        assert self.root is not None
        return self.root / "ssh" / "authorized_keys"

    def __getitem__(self, name: str) -> SshdInstance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        raise KeyError(name)

    def targets(self, **extra: Any) -> dict[str, TargetHost]:
        return {i.name: i.target(**extra) for i in self.instances}

    def start(self) -> SshdFleet:
        import asyncssh

        self.sshd = find_sshd()
        self.user = ensure_user()
        self.can_become = ensure_sudoers(self.user)
        if _is_root():
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tminus-sshd-")
            self.root = Path(self._tmp.name)
        self.root.chmod(0o755)  # the login user reads authorized_keys below it
        (self.root / "client").mkdir(mode=0o700, exist_ok=True)
        (self.root / "ssh").mkdir(mode=0o755, exist_ok=True)
        user_key = asyncssh.generate_private_key("ssh-ed25519", comment="tminus-test")
        user_key.write_private_key(str(self.identity_file))
        self.identity_file.chmod(0o600)
        self.authorized_keys.write_bytes(user_key.export_public_key())
        self.authorized_keys.chmod(0o644)
        try:
            self._create(self.n)
            self._launch(self.instances)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self, n: int) -> None:
        import asyncssh

        assert self.root is not None
        ports = _free_ports(n)
        first = len(self.instances) + 1
        lines = []
        for k, port in enumerate(ports):
            name = f"{self.prefix}{first + k}"
            d = self.root / name
            d.mkdir(mode=0o700)
            key = asyncssh.generate_private_key("ssh-ed25519")
            key.write_private_key(str(d / "ssh_host_ed25519_key"))
            (d / "ssh_host_ed25519_key").chmod(0o600)
            pub = key.export_public_key().decode().split()
            inst = SshdInstance(name=name, port=port, dir=d, fleet=self)
            inst.host_key_line = f"[127.0.0.1]:{port} {pub[0]} {pub[1]}"
            lines.append(inst.host_key_line + "\n")
            self._write_config(inst)
            self.instances.append(inst)
        with self.known_hosts.open("a") as fh:
            fh.writelines(lines)

    def _write_config(self, inst: SshdInstance) -> None:
        inst.config.write_text(
            "\n".join(
                [
                    f"Port {inst.port}",
                    "ListenAddress 127.0.0.1",
                    "AddressFamily inet",
                    f"HostKey {inst.dir / 'ssh_host_ed25519_key'}",
                    "PidFile none",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "StrictModes no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    f"AllowUsers {self.user}",
                    "PermitRootLogin no",
                    "MaxStartups 200:30:400",
                    f"MaxSessions {self.max_sessions}",
                    "LoginGraceTime 30",
                    "UseDNS no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "X11Forwarding no",
                    "AllowTcpForwarding no",
                    "AllowAgentForwarding no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    def _launch(self, instances: list[SshdInstance]) -> None:
        """Start a batch, then wait for its banners (in parallel, so 100 hosts start in about
        a second), batch after batch: a thousand sshd starting at once overrun a small
        machine and miss their time to answer."""
        for k in range(0, len(instances), self.start_batch):
            batch = instances[k : k + self.start_batch]
            for inst in batch:
                inst.spawn()
            for inst in batch:
                inst.wait_ready()

    def add(self, n: int = 1) -> list[SshdInstance]:
        """Start ``n`` more instances (their keys are appended to the fleet's known_hosts)."""
        before = len(self.instances)
        self._create(n)
        new = self.instances[before:]
        self._launch(new)
        return new

    def stop(self) -> None:
        """SIGKILL every instance with its connections (one /proc walk for all), then reap."""
        for _ in range(3):
            kids = _children_map()
            roots = [i.proc.pid for i in self.instances if i.proc is not None and i.running]
            pids = [p for r in roots for p in _tree(r, kids)]
            for p in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            if not pids:
                break
            for inst in self.instances:
                if inst.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        inst.proc.wait(5)
        if self._tmp is not None:
            with contextlib.suppress(Exception):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SshdFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
