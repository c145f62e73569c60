"""Hosts reached over SSH (asyncssh): one connection per host, opened on first use and reused
for every command; host keys checked against known_hosts; ``become`` through ``sudo -n``.

A remote command runs as ``sh -c`` (like Ansible's shell module), wrapped so that its process
group and start time come first on the same channel (a stderr marker line, stripped, and
reported to :func:`tminus.work.track`): on timeout or cancellation the whole group gets SIGTERM
over a second channel, SIGKILL after the grace, and only then is the channel closed and the
cancellation let through. A connection that drops (or cannot be opened) gives a failed
:class:`CompletedRun` with ``exit_status=None`` instead of an exception; the next command
reconnects. Host key problems raise :class:`HostKeyError`: a host that cannot be authenticated
is not a mere failed host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shlex
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from tminus import work
from tminus.errors import TminusError
from tminus.hosts.base import CompletedRun, LineSink
from tminus.hosts.local import MAX_CAPTURE
from tminus.work import ProcRecord

if TYPE_CHECKING:
    from tminus.plan.targets import Host as TargetHost

__all__ = [
    "DEFAULT_KNOWN_HOSTS",
    "HostKeyError",
    "SshError",
    "SshHost",
    "SshOptions",
    "SshSettings",
    "become_command",
]

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_MARK = "\x1etminus-pgid "
# The shell's pid (its process group: sshd starts each session's shell with setsid) and its
# start time (field 22 of /proc/PID/stat, with shell builtins only), on the same channel.
_MARK_CMD = (
    "t=; if [ -r /proc/$$/stat ]; then read -r t </proc/$$/stat; set -- ${t##*) }; t=${20}; fi; "
    'printf \'\\036tminus-pgid %s %s\\n\' "$$" "$t" >&2'
)
# Kill process groups "PGID TOKEN" (a group whose leader's start time differs is another
# process: skipped): SIGTERM, up to GRACE_TENTHS × 0.1 s for them to end, then SIGKILL.
_KILL_SCRIPT = """ours() {
  if [ -r /proc/$1/stat ]; then read -r s </proc/$1/stat; set -- "$1" "$2" ${s##*) }
    [ -z "$2" ] || [ "${22}" = "$2" ]
  else kill -s 0 -- "-$1" 2>/dev/null; fi
}
gs=; for p in GROUPS; do set -- $p; if ours "$1" "$2"; then gs="$gs $1"; fi; done
[ -n "$gs" ] || exit 0
for g in $gs; do kill -s TERM -- "-$g" 2>/dev/null; done
i=0; while [ $i -lt GRACE_TENTHS ]; do
  a=; for g in $gs; do kill -s 0 -- "-$g" 2>/dev/null && a=1; done
  [ -n "$a" ] || break; sleep 0.1; i=$((i + 1))
done
for g in $gs; do kill -s KILL -- "-$g" 2>/dev/null; done
echo killed
"""
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHUNK = 256 * 1024  # stdin is written in pieces of this size, with flow control


class HostKeyError(TminusError):
    """The host's key is not in known_hosts, or differs from the one recorded there."""

    exit_code = 2


class SshError(TminusError):
    """An SSH operation that is not a command failed (connect, upload, checksum)."""


@dataclass(frozen=True)
class SshOptions:
    """Settings shared by every host of a pool."""

    known_hosts: str | None = None  # default for hosts without their own; ~/.ssh/known_hosts
    accept_new_host_keys: bool = False  # like StrictHostKeyChecking=accept-new
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    agent: bool = True  # use $SSH_AUTH_SOCK when set
    max_sessions: int = 8  # concurrent channels per connection (sshd's MaxSessions is 10)
    kill_timeout: float = 5.0


@dataclass(frozen=True)
class SshSettings:
    """How to reach one host."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    become: bool | str = False

    @classmethod
    def from_target(cls, name: str, target: TargetHost | None = None) -> SshSettings:
        if target is None:
            return cls(name=name, address=name)
        return cls(
            name=name,
            address=target.address or name,
            port=target.port,
            user=target.user,
            identity_file=target.identity_file,
            known_hosts=target.known_hosts,
            become=target.become,
        )

    @property
    def become_user(self) -> str | None:
        return _become_user(self.become)

    @property
    def label(self) -> str:
        where = self.address if self.port == 22 else f"{self.address}:{self.port}"
        return self.name if where == self.name else f"{self.name} ({where})"


def _become_user(become: bool | str) -> str | None:
    if become is True:
        return "root"
    return become or None


def become_command(user: str, script: str) -> str:
    """``sudo -n -u USER -- sh -c 'SCRIPT'``: never prompts; fails if a password is needed."""
    return f"sudo -n -u {shlex.quote(user)} -- sh -c {shlex.quote(script)}"


def _known_hosts_entry(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _Client(asyncssh.SSHClient):
    """Records the presented host key and decides on keys not in known_hosts."""

    def __init__(self, host: SshHost, accept: bool) -> None:
        self._host = host
        self._accept = accept

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self._host._presented_key = key
        return self._accept

    def connection_lost(self, exc: Exception | None) -> None:
        self._host._on_lost(exc)


_KNOWN_HOSTS_CACHE: dict[Path, tuple[tuple[int, int, int], asyncssh.SSHKnownHosts]] = {}


def _parsed_known_hosts(path: Path) -> asyncssh.SSHKnownHosts:
    """A known_hosts file parsed once per content version (path, mtime, size, inode): a pool
    of 100 hosts sharing one file parses it once, not once per connection."""
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except FileNotFoundError:
        stamp = (0, 0, 0)
    except OSError as exc:
        raise HostKeyError(f"cannot read known_hosts {path}: {exc.strerror or exc}") from None
    cached = _KNOWN_HOSTS_CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        text = path.read_text(encoding="utf-8") if stamp != (0, 0, 0) else ""
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise HostKeyError(f"cannot read known_hosts {path}: {exc.strerror or exc}") from None
    try:
        known = asyncssh.import_known_hosts(text)
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise HostKeyError(f"known_hosts {path} cannot be parsed: {exc}") from None
    _KNOWN_HOSTS_CACHE[path] = (stamp, known)
    return known


class SshHost:
    """One SSH host; implements :class:`tminus.hosts.base.Host`. Prefer :class:`HostPool`."""

    def __init__(self, settings: SshSettings, options: SshOptions | None = None) -> None:
        self.settings = settings
        self.options = options or SshOptions()
        self.name = settings.name
        self.connections_opened = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lost: str | None = None
        self._lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(self.options.max_sessions)
        self._presented_key: asyncssh.SSHKey | None = None

    # ------------------------------------------------------------------ connection

    @property
    def known_hosts_path(self) -> Path:
        raw = self.settings.known_hosts or self.options.known_hosts or DEFAULT_KNOWN_HOSTS
        return Path(raw).expanduser()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost = str(exc) if exc else "closed by the remote side"
        self._conn = None

    def _read_known_hosts(self) -> tuple[asyncssh.SSHKnownHosts, bool]:
        """The known_hosts file, and whether it has any key for this host."""
        known = _parsed_known_hosts(self.known_hosts_path)
        s = self.settings
        trusted = asyncssh.match_known_hosts(known, s.address, "", s.port)[0]
        return known, bool(trusted)

    async def connect(self) -> asyncssh.SSHClientConnection:
        """The open connection, opening it if needed. Raises :class:`HostKeyError` or
        :class:`SshError`."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = None
            conn = await self._open()
            self._conn, self._lost = conn, None
            self.connections_opened += 1
            return conn

    async def _open(self) -> asyncssh.SSHClientConnection:
        s, o = self.settings, self.options
        known, host_is_known = self._read_known_hosts()
        accept = o.accept_new_host_keys and not host_is_known
        self._presented_key = None
        kwargs: dict[str, Any] = {}
        if s.identity_file:
            kwargs["client_keys"] = [str(Path(s.identity_file).expanduser())]
        if not o.agent:
            kwargs["agent_path"] = None
        if s.user:  # otherwise asyncssh uses the local user name
            kwargs["username"] = s.user
        try:
            conn = await asyncssh.connect(
                s.address,
                s.port,
                known_hosts=known,
                client_factory=lambda: _Client(self, accept),
                connect_timeout=o.connect_timeout,
                keepalive_interval=o.keepalive_interval,
                keepalive_count_max=o.keepalive_count_max,
                config=None,
                **kwargs,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise self._host_key_error(host_is_known, str(exc)) from None
        except asyncssh.PermissionDenied:
            who = s.user or "the current user"
            raise SshError(
                f"{s.label}: authentication failed for {who}",
                hint="check identity_file / ansible_ssh_private_key_file, the agent, and the "
                "remote authorized_keys",
            ) from None
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise SshError(f"cannot connect to {s.label}: {_describe(exc)}") from None
        except asyncssh.KeyImportError as exc:
            raise SshError(f"{s.label}: cannot load identity_file: {exc}") from None
        if accept and self._presented_key is not None:
            self._remember(self._presented_key)
        return conn

    def _host_key_error(self, host_is_known: bool, detail: str) -> HostKeyError:
        s, key = self.settings, self._presented_key
        path = self.known_hosts_path
        entry = _known_hosts_entry(s.address, s.port)
        about = (
            f"{key.get_algorithm()} key {key.get_fingerprint('sha256')}"
            if key is not None
            else "its key"
        )
        if host_is_known:
            return HostKeyError(
                f"host key of {s.name} ({s.address} port {s.port}) CHANGED: it presented {about}, "
                f"which differs from the key recorded in {path}",
                hint="this may be an attack. If the host was really re-keyed, remove the old key "
                f"with `ssh-keygen -R '{entry}' -f {path}` and connect again",
            )
        if key is None:
            return HostKeyError(f"host key of {s.name} could not be verified: {detail}")
        return HostKeyError(
            f"unknown host key for {s.name} ({s.address} port {s.port}): {about} is not in {path}",
            hint=f"verify the fingerprint, then add it with `ssh-keyscan -p {s.port} "
            f"{s.address} >> {path}`, or allow first-use with accept_new_host_keys",
        )

    async def check_host_key(self) -> str | None:
        """Before a deploy: what is wrong with this host's key, or None. Unknown (no entry in
        known_hosts, unless ``accept_new_host_keys``), CHANGED (it presents a key other than
        those recorded) or revoked. The key is fetched with a key exchange alone (no login,
        nothing run); a host that cannot be reached gives None — the deploy counts it as a
        failed host when it runs. Hosts trusted through ``@cert-authority`` are verified when
        connecting. Raises :class:`HostKeyError` for a known_hosts file that cannot be read."""
        s, o = self.settings, self.options
        path = self.known_hosts_path
        known = _parsed_known_hosts(path)
        trusted, cas, revoked, *_ = asyncssh.match_known_hosts(known, s.address, "", s.port)
        if not trusted and (cas or o.accept_new_host_keys):
            return None
        algs = list(dict.fromkeys(a.decode() for k in trusted for a in k.sig_algorithms))
        try:
            key = await asyncssh.get_server_host_key(
                s.address,
                s.port,
                server_host_key_algs=algs or (),
                config=None,
                options=asyncssh.SSHClientConnectionOptions(
                    connect_timeout=o.connect_timeout, config=None
                ),
            )
        except (asyncssh.Error, OSError, TimeoutError, ValueError):
            key = None
        where = f"{s.name} ({s.address} port {s.port})"
        entry = _known_hosts_entry(s.address, s.port)
        if not trusted:
            about = (
                f": it presents {key.get_algorithm()} key {key.get_fingerprint('sha256')}, which"
                if key is not None
                else ": its key"
            )
            return (
                f"unknown host key for {where}{about} is not in {path}; verify the fingerprint "
                f"out of band, then add it with `ssh-keyscan -p {s.port} {s.address} >> {path}`, "
                "or set targets.ssh.accept_new_host_keys: true"
            )
        if key is None:
            return None  # unreachable now: the deploy counts it as a failed host
        about = f"{key.get_algorithm()} key {key.get_fingerprint('sha256')}"
        if any(k.public_data == key.public_data for k in revoked):
            return f"host key of {where} is REVOKED in {path}: it presents {about}"
        if any(k.public_data == key.public_data for k in trusted):
            return None
        return (
            f"host key of {where} CHANGED: it presents {about}, which differs from the key "
            f"recorded in {path}. This may be an attack; if the host was really re-keyed, "
            f"remove the old key with `ssh-keygen -R '{entry}' -f {path}`, verify the new "
            f"fingerprint out of band and add it with `ssh-keyscan -p {s.port} {s.address} >> "
            f"{path}`"
        )

    def _remember(self, key: asyncssh.SSHKey) -> None:
        """Append the key to known_hosts (accept-new)."""
        path = self.known_hosts_path
        line = (
            f"{_known_hosts_entry(self.settings.address, self.settings.port)} "
            f"{key.get_algorithm()} {base64.b64encode(key.public_data).decode()}\n"
        )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    async def __aenter__(self) -> SshHost:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ commands

    def _script(
        self,
        command: str,
        env: Mapping[str, str] | None,
        cwd: str | None,
        become: bool | str | None = None,
    ) -> str:
        parts: list[str] = []
        for k, v in (env or {}).items():
            if not _ENV_NAME.match(k):
                raise ValueError(f"'{k}' is not a valid environment variable name")
            parts.append(f"export {k}={shlex.quote(str(v))}")
        if cwd:
            parts.append(f"cd -- {shlex.quote(cwd)} || exit 1")
        parts.append(command)
        user = self.settings.become_user if become is None else _become_user(become)
        if user:
            # sudo's use_pty runs the command in a session of its own: report that group too.
            inner = "\n".join([_MARK_CMD, *parts])
            return f"{_MARK_CMD}; exec {become_command(user, inner)}"
        return f"{_MARK_CMD}; exec sh -c {shlex.quote(chr(10).join(parts))}"

    def _failed(
        self, shown: str, message: str, start: float, out: str = "", err: str = ""
    ) -> CompletedRun:
        if err and not err.endswith("\n"):
            err += "\n"
        return CompletedRun(
            host=self.name,
            command=shown,
            exit_status=None,
            stdout=out,
            stderr=err + message + "\n",
            duration=time.monotonic() - start,
        )

    async def run(
        self,
        command: str | list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        on_line: LineSink | None = None,
        input: bytes | None = None,
        become: bool | str | None = None,
    ) -> CompletedRun:
        """Run ``command`` under ``sh -c``; ``input`` is written to its stdin (then EOF);
        ``become`` overrides the host's setting (``False``: as the login user)."""
        shown = command if isinstance(command, str) else shlex.join(command)
        start = time.monotonic()
        script = self._script(shown, env, cwd, become)
        try:
            conn = await self.connect()
        except HostKeyError:
            raise
        except SshError as exc:
            return self._failed(shown, f"tminus: {exc}", start)
        async with self._sessions:
            return await self._run_on(conn, shown, script, start, timeout, on_line, input)

    async def _run_on(
        self,
        conn: asyncssh.SSHClientConnection,
        shown: str,
        script: str,
        start: float,
        timeout: float | None,
        on_line: LineSink | None,
        input: bytes | None = None,
    ) -> CompletedRun:
        try:
            # Bytes in and out: stdin may be a tar stream; output is decoded line by line.
            proc = await conn.create_process(
                script, stdin=asyncssh.DEVNULL if input is None else asyncssh.PIPE, encoding=None
            )
        except (asyncssh.Error, OSError) as exc:
            self._drop(conn)
            return self._failed(shown, f"tminus: {self.settings.label}: {_describe(exc)}", start)
        out: list[str] = []
        err: list[str] = []
        groups: list[tuple[int, str]] = []  # (pgid, start token) from the marker lines
        marked = asyncio.Event()

        async def feed() -> None:
            if input is None:
                return
            with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
                view = memoryview(input)
                for k in range(0, len(view), _CHUNK):
                    proc.stdin.write(bytes(view[k : k + _CHUNK]))
                    await proc.stdin.drain()
                proc.stdin.write_eof()

        async def pump(reader: asyncssh.SSHReader[bytes], sink: list[str], name: str) -> None:
            size = 0
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace")
                if name == "stderr" and len(groups) < 2 and line.startswith(_MARK):
                    fields = line[len(_MARK) :].split()
                    with contextlib.suppress(ValueError, IndexError):
                        rec = ProcRecord(self.name, int(fields[0]), "".join(fields[1:2]))
                        groups.append((rec.pid, rec.token))
                        work.track(rec)
                    marked.set()
                    continue
                sink.append(line)
                size += len(line)
                while size > MAX_CAPTURE and len(sink) > 1:
                    size -= len(sink.pop(0))
                if on_line is not None:
                    on_line(name, line.rstrip("\n"))

        pumps = asyncio.gather(
            pump(proc.stdout, out, "stdout"), pump(proc.stderr, err, "stderr"), feed()
        )

        async def stop() -> None:
            """Kill the remote groups (SIGTERM, SIGKILL after the grace), then close."""
            if not marked.is_set() and not pumps.done():  # cancelled in the first instant
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(marked.wait(), self.options.kill_timeout)
            await self._kill(conn, groups)
            proc.close()
            pumps.cancel()
            with contextlib.suppress(BaseException):
                await pumps

        timed_out = False
        lost: str | None = None
        try:
            await asyncio.wait_for(asyncio.shield(pumps), timeout)
            await asyncio.wait_for(proc.wait_closed(), self.options.kill_timeout)
        except TimeoutError:
            if pumps.done():  # the output ended but the channel did not close in time
                proc.close()
            else:
                timed_out = True
                await work.shielded(stop())
        except (asyncssh.Error, OSError) as exc:
            lost = _describe(exc)
        except asyncio.CancelledError:
            # The remote work stops before the cancellation goes on (even a second one).
            await work.shielded(stop())
            raise
        status = proc.returncode
        if lost is None and status is None and not timed_out:
            lost = self._lost if conn.is_closed() else "the channel closed without an exit status"
        if lost is not None:
            if conn.is_closed() or self._conn is not conn:
                self._drop(conn)
            return self._failed(
                shown,
                f"tminus: connection to {self.settings.label} lost: {lost or 'closed'}",
                start,
                "".join(out),
                "".join(err),
            )
        return CompletedRun(
            host=self.name,
            command=shown,
            exit_status=status,
            stdout="".join(out),
            stderr="".join(err),
            timed_out=timed_out,
            duration=time.monotonic() - start,
        )

    def _drop(self, conn: asyncssh.SSHClientConnection) -> None:
        if self._conn is conn:
            self._conn = None
        conn.abort()

    async def _kill(
        self, conn: asyncssh.SSHClientConnection, groups: list[tuple[int, str]]
    ) -> bool:
        """Kill the command's process groups over a second channel on the same connection,
        as the login user and (concurrently) as the become user: SIGTERM, SIGKILL after
        :func:`tminus.work.grace_s`. A reported id that leads no group (sudo without use_pty)
        or a pid reused by another process (the token differs) is left alone. True when a
        live group was found (and killed)."""
        groups = [(g, t) for g, t in groups if g > 1]
        if not groups:
            return False
        grace = work.grace_s()
        script = _KILL_SCRIPT.replace("GRACE_TENTHS", str(round(grace * 10))).replace(
            "GROUPS", " ".join(shlex.quote(f"{g} {t}".strip()) for g, t in groups)
        )
        scripts = [script]
        user = self.settings.become_user
        if user:
            scripts.append(become_command(user, script))

        async def one(text: str) -> bool:
            try:
                res = await asyncio.wait_for(
                    conn.run(text, check=False), grace + self.options.kill_timeout
                )
            except (asyncssh.Error, OSError, TimeoutError):
                return False
            return "killed" in str(res.stdout or "")

        return any(await asyncio.gather(*(one(t) for t in scripts)))

    async def kill_group(self, rec: ProcRecord) -> bool:
        """Kill a process group recorded earlier on this host (for :func:`tminus.work.reap`
        after a runner died): True if it was still running and was killed."""
        try:
            conn = await self.connect()
        except SshError:
            return False
        return await self._kill(conn, [(rec.pid, rec.token)])

    # ------------------------------------------------------------------ files

    async def put(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        """Upload a file atomically: to a temporary name beside ``remote_path``, then renamed.
        With ``become`` it is uploaded to the login user's home, then moved by the become user.
        Raises :class:`SshError`."""
        conn = await self.connect()
        token = uuid.uuid4().hex[:12]
        parent, name = os.path.split(remote_path)
        if self.settings.become_user:
            tmp = f".tminus-upload-{token}"
        else:
            tmp = os.path.join(parent, f".{name or 'upload'}.tminus-{token}")
        try:
            async with conn.start_sftp_client() as sftp:
                await sftp.put(os.fspath(local_path), tmp)
                if self.settings.become_user:
                    tmp = f"{await sftp.realpath('.')}/{tmp}"
                else:
                    try:
                        await sftp.posix_rename(tmp, remote_path)
                    except asyncssh.Error:
                        with contextlib.suppress(asyncssh.Error):
                            await sftp.remove(tmp)
                        raise
                    return
        except (asyncssh.Error, OSError) as exc:
            raise SshError(
                f"{self.settings.label}: upload to {remote_path} failed: {_describe(exc)}"
            ) from None
        src, dst = shlex.quote(tmp), shlex.quote(remote_path)
        part = shlex.quote(f"{remote_path}.tminus-{token}")
        result = await self.run(
            f"cp -- {src} {part} && mv -f -- {part} {dst}; rc=$?; rm -f -- {src}; exit $rc"
        )
        if not result.ok:
            raise SshError(
                f"{self.settings.label}: cannot move the upload into {remote_path}: "
                f"{result.stderr.strip()}"
            )

    async def sha256(self, remote_path: str) -> str | None:
        """The SHA-256 of a remote file (hex), or None when it does not exist."""
        q = shlex.quote(remote_path)
        result = await self.run(
            f"if [ ! -e {q} ]; then echo missing; exit 0; fi; "
            f"if command -v sha256sum >/dev/null 2>&1; then sha256sum -- {q}; "
            f"else shasum -a 256 -- {q}; fi"
        )
        if not result.ok:
            raise SshError(
                f"{self.settings.label}: cannot checksum {remote_path}: "
                f"{result.stderr.strip() or 'exit ' + str(result.exit_status)}"
            )
        first = result.stdout.strip().split()
        if first == ["missing"]:
            return None
        if not first or not re.fullmatch(r"[0-9a-f]{64}", first[0]):
            raise SshError(f"{self.settings.label}: unexpected checksum output {result.stdout!r}")
        return first[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__
