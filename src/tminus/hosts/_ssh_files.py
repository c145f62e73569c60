"""File operations of :class:`tminus.hosts.ssh.SshHost`: an atomic upload over SFTP (with
``become``, moved into place by the become user) and the SHA-256 of a remote file."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import uuid
from typing import TYPE_CHECKING

import asyncssh

from tminus.hosts._ssh_config import SshError, _describe

if TYPE_CHECKING:
    from tminus.hosts.ssh import SshHost


async def put(host: SshHost, local_path: str | os.PathLike[str], remote_path: str) -> None:
    """Upload a file to ``host`` atomically: see :meth:`tminus.hosts.ssh.SshHost.put`."""
    conn = await host.connect()
    token = uuid.uuid4().hex[:12]
    parent, name = os.path.split(remote_path)
    if host.settings.become_user:
        tmp = f".tminus-upload-{token}"
    else:
        tmp = os.path.join(parent, f".{name or 'upload'}.tminus-{token}")
    try:
        async with conn.start_sftp_client() as sftp:
            await sftp.put(os.fspath(local_path), tmp)
            if host.settings.become_user:
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
            f"{host.settings.label}: upload to {remote_path} failed: {_describe(exc)}"
        ) from None
    src, dst = shlex.quote(tmp), shlex.quote(remote_path)
    part = shlex.quote(f"{remote_path}.tminus-{token}")
    result = await host.run(
        f"cp -- {src} {part} && mv -f -- {part} {dst}; rc=$?; rm -f -- {src}; exit $rc"
    )
    if not result.ok:
        raise SshError(
            f"{host.settings.label}: cannot move the upload into {remote_path}: "
            f"{result.stderr.strip()}"
        )


async def sha256(host: SshHost, remote_path: str) -> str | None:
    """The SHA-256 of a remote file of ``host`` (hex), or None when it does not exist."""
    q = shlex.quote(remote_path)
    result = await host.run(
        f"if [ ! -e {q} ]; then echo missing; exit 0; fi; "
        f"if command -v sha256sum >/dev/null 2>&1; then sha256sum -- {q}; "
        f"else shasum -a 256 -- {q}; fi"
    )
    if not result.ok:
        raise SshError(
            f"{host.settings.label}: cannot checksum {remote_path}: "
            f"{result.stderr.strip() or 'exit ' + str(result.exit_status)}"
        )
    first = result.stdout.strip().split()
    if first == ["missing"]:
        return None
    if not first or not re.fullmatch(r"[0-9a-f]{64}", first[0]):
        raise SshError(f"{host.settings.label}: unexpected checksum output {result.stdout!r}")
    return first[0]
