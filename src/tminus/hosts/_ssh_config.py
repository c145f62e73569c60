"""What reaching a host over SSH needs to know (for :mod:`tminus.hosts.ssh`): the errors (and
how an SSH or OS error is described), the pool-wide :class:`SshOptions`, one host's
:class:`SshSettings`, and the ``sudo -n`` wrapper of ``become``."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncssh

from tminus.errors import TminusError

if TYPE_CHECKING:
    from tminus.plan.targets import Host as TargetHost

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


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
    #: Handshakes in progress at once over a pool (connect + key exchange + login): the rest
    #: wait their turn, and connect_timeout counts from the start of their own handshake, so
    #: a thousand hosts opened at once do not time out queueing for the client's CPU.
    max_connecting: int = 64


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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__
