"""Host keys for :mod:`tminus.hosts.ssh`: known_hosts files parsed once per version, the
:class:`HostKeyError` of a refused connection (unknown or CHANGED key), the key check before a
deploy (a key exchange alone) and accept-new (a first key appended to known_hosts)."""

from __future__ import annotations

import base64
from pathlib import Path

import asyncssh

from tminus.hosts._ssh_config import HostKeyError, SshOptions, SshSettings


def _known_hosts_entry(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


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


def read_known_hosts(path: Path, s: SshSettings) -> tuple[asyncssh.SSHKnownHosts, bool]:
    """The known_hosts file, and whether it has any key for this host."""
    known = _parsed_known_hosts(path)
    trusted = asyncssh.match_known_hosts(known, s.address, "", s.port)[0]
    return known, bool(trusted)


def host_key_error(
    s: SshSettings,
    path: Path,
    key: asyncssh.SSHKey | None,
    host_is_known: bool,
    detail: str,
) -> HostKeyError:
    """Why the connection to ``s`` was refused over its key (``key``: the one it presented)."""
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


async def check_host_key(s: SshSettings, o: SshOptions, path: Path) -> str | None:
    """What is wrong with the key of host ``s`` against ``path``, or None: see
    :meth:`tminus.hosts.ssh.SshHost.check_host_key`."""
    known = _parsed_known_hosts(path)
    trusted, cas, *_ = asyncssh.match_known_hosts(known, s.address, "", s.port)
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
    return key_problem(s, o, path, key)


def key_problem(
    s: SshSettings, o: SshOptions, path: Path, key: asyncssh.SSHKey | None
) -> str | None:
    """What is wrong with ``key``, the key host ``s`` presented (None: none was seen), against
    ``path``, or None; the preflight's words (:func:`check_host_key`, and a connection the
    preflight opened and known_hosts refused)."""
    known = _parsed_known_hosts(path)
    trusted, cas, revoked, *_ = asyncssh.match_known_hosts(known, s.address, "", s.port)
    if not trusted and (cas or o.accept_new_host_keys):
        return None
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


def remember(path: Path, s: SshSettings, key: asyncssh.SSHKey) -> None:
    """Append the key to known_hosts (accept-new)."""
    line = (
        f"{_known_hosts_entry(s.address, s.port)} "
        f"{key.get_algorithm()} {base64.b64encode(key.public_data).decode()}\n"
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
