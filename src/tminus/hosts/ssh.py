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
import contextlib
import functools
import os
import re
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncssh

from tminus import runloop, work
from tminus.hosts import _ssh_files as files
from tminus.hosts import _ssh_hostkeys as hostkeys
from tminus.hosts._ssh_config import (
    DEFAULT_KNOWN_HOSTS,
    HostKeyError,
    SshError,
    SshOptions,
    SshSettings,
    _become_user,
    _describe,
    become_command,
)
from tminus.hosts._ssh_kill import _MARK_CMD, POSIX_SHELLS, kill_groups, parse_mark
from tminus.hosts.base import CompletedRun, LineSink
from tminus.hosts.local import MAX_CAPTURE
from tminus.work import ProcRecord

__all__ = [
    "DEFAULT_KNOWN_HOSTS",
    "HostKeyError",
    "SshError",
    "SshHost",
    "SshOptions",
    "SshSettings",
    "become_command",
]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHUNK = 256 * 1024  # stdin is written in pieces of this size, with flow control


@functools.cache
def _ciphers() -> tuple[str, ...]:
    """asyncssh's default ciphers with AES-GCM first: one AEAD call per packet (AES-NI),
    where asyncssh's chacha20-poly1305 builds cipher contexts for every packet (tminus's CPU
    for a command with 200 KB of stdin: 1.65 ms with chacha20, 1.1 ms with AES-GCM). The
    server still picks from the whole list: a host without AES-GCM gets chacha20 or AES-CTR."""
    from asyncssh.encryption import get_default_encryption_algs

    first = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    rest = [a.decode() for a in get_default_encryption_algs()]
    return (*(a for a in first if a in rest), *(a for a in rest if a not in first))


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


class SshHost:
    """One SSH host; implements :class:`tminus.hosts.base.Host`. Prefer :class:`HostPool`."""

    def __init__(
        self,
        settings: SshSettings,
        options: SshOptions | None = None,
        connecting: asyncio.Semaphore | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or SshOptions()
        #: Shared by the hosts of a pool: handshakes in progress at once (max_connecting).
        self._connecting = connecting or asyncio.Semaphore(self.options.max_connecting)
        self.name = settings.name
        self.connections_opened = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lost: str | None = None
        self._lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(self.options.max_sessions)
        self._presented_key: asyncssh.SSHKey | None = None
        self._client: _Client | None = None
        #: While the preflight opens the connection ahead: a key accepted under accept-new
        #: is kept here, and recorded only when the deploy takes the connection.
        self._hold_new_key = False
        self._new_key: asyncssh.SSHKey | None = None
        #: The connection whose login shell is POSIX sh (its marker said so): commands on it
        #: run in that shell, without ``exec sh -c`` (one process fewer per command).
        self._direct: asyncssh.SSHClientConnection | None = None

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
        return hostkeys.read_known_hosts(self.known_hosts_path, self.settings)

    async def connect(self) -> asyncssh.SSHClientConnection:
        """The open connection, opening it if needed. Raises :class:`HostKeyError` or
        :class:`SshError`."""
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = None
            conn = self._take_parked()
            if conn is None:
                async with self._connecting:
                    conn = await self._open()
            self._conn, self._lost = conn, None
            self.connections_opened += 1
            return conn

    @property
    def _park_key(self) -> tuple[SshSettings, SshOptions]:
        return self.settings, self.options

    def _take_parked(self) -> asyncssh.SSHClientConnection | None:
        """The connection the preflight opened to this host in this run's session, if any."""
        s = runloop.current()
        parked = s.take(self._park_key) if s is not None else None
        if parked is None:
            return None
        parked.client._host = self
        self._client = parked.client
        if parked.new_key is not None:
            self._remember(parked.new_key)
        return parked.conn

    async def open_ahead(self, session: runloop.Session) -> str | None:
        """The host-key preflight inside a run's session: open the real connection (key
        exchange, known_hosts check, login) and park it for the deploy. Returns what is
        wrong with the host's key, in the words of :meth:`check_host_key`, or None; a host
        that cannot be reached or logged into gives None (the deploy counts it as a failed
        host) and parks nothing."""
        self._hold_new_key, self._new_key = True, None
        try:
            conn = await self.connect()
        except HostKeyError:
            return hostkeys.key_problem(
                self.settings, self.options, self.known_hosts_path, self._presented_key
            )
        except SshError:
            return None
        finally:
            self._hold_new_key = False
        self._conn = None  # the deploy's host takes it from the session
        session.park(self._park_key, runloop.Parked(conn, self._client, self._new_key))
        self._new_key = None
        return None

    def _new_client(self, accept: bool) -> _Client:
        self._client = _Client(self, accept)
        return self._client

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
                client_factory=lambda: self._new_client(accept),
                connect_timeout=o.connect_timeout,
                encryption_algs=_ciphers(),
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
            if self._hold_new_key:
                self._new_key = self._presented_key
            else:
                self._remember(self._presented_key)
        return conn

    def _host_key_error(self, host_is_known: bool, detail: str) -> HostKeyError:
        return hostkeys.host_key_error(
            self.settings, self.known_hosts_path, self._presented_key, host_is_known, detail
        )

    async def check_host_key(self) -> str | None:
        """Before a deploy: what is wrong with this host's key, or None. Unknown (no entry in
        known_hosts, unless ``accept_new_host_keys``), CHANGED (it presents a key other than
        those recorded) or revoked. The key is fetched with a key exchange alone (no login,
        nothing run); a host that cannot be reached gives None — the deploy counts it as a
        failed host when it runs. Hosts trusted through ``@cert-authority`` are verified when
        connecting. Raises :class:`HostKeyError` for a known_hosts file that cannot be read."""
        return await hostkeys.check_host_key(self.settings, self.options, self.known_hosts_path)

    def _remember(self, key: asyncssh.SSHKey) -> None:
        """Append the key to known_hosts (accept-new)."""
        hostkeys.remember(self.known_hosts_path, self.settings, key)

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
        direct: bool = False,
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
        if direct:  # the login shell is POSIX sh: it runs the script itself
            return "\n".join([_MARK_CMD, *parts])
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
        if conn is self._direct:
            script = self._script(shown, env, cwd, become, direct=True)
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
                mark = parse_mark(line) if name == "stderr" and len(groups) < 2 else None
                if mark is not None:
                    if not groups and mark[2] in POSIX_SHELLS:  # the login shell's marker
                        self._direct = conn
                    rec = ProcRecord(self.name, mark[0], mark[1])
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
        return await kill_groups(conn, groups, self.settings.become_user, self.options.kill_timeout)

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
        await files.put(self, local_path, remote_path)

    async def sha256(self, remote_path: str) -> str | None:
        """The SHA-256 of a remote file (hex), or None when it does not exist."""
        return await files.sha256(self, remote_path)
