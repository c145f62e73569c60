"""The run session: one event loop for `tminus run`'s preflight and deploy, and the connections
the preflight opens, kept for the deploy.

``tminus run`` runs its preflight and its deploy in one event loop (:func:`session`, an
:class:`asyncio.Runner`). Inside a session the host-key preflight of the fleet steps opens
each host's real connection (key exchange, known_hosts check, login) instead of a key
exchange alone, and parks it here (:meth:`Session.park`); the deploy's first
:class:`~tminus.hosts.ssh.SshHost` for the same host and options takes it
(:meth:`Session.take`). Each host then sees one handshake and one login per run instead of
two handshakes: at 1,000 hosts that was ~7 s of a 62 s deploy (bench/README, issue #20).

- A host whose key is refused is never logged into; the preflight reports it as before and
  the run exits 2 having run nothing (the hosts whose keys passed were logged into, and
  their connections are closed unused).
- A key accepted under ``accept_new_host_keys`` is appended to known_hosts when the deploy
  takes its connection, not during the preflight.
- Connections no step took are closed when the session ends; a parked connection that
  dropped meanwhile is not handed out (the host connects again).
- Outside a session (the preflight called by other code than ``tminus run``), or when the
  thread already runs an event loop, the preflight stays a key exchange alone.

Sessions are per thread: a parked connection is only handed to a host in the session's own
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncssh

__all__ = ["Parked", "Session", "current", "session"]

T = TypeVar("T")


@dataclass
class Parked:
    """A connection opened ahead: its asyncssh client object (re-pointed at the host that
    takes it) and a host key accepted under accept-new, still to be recorded."""

    conn: asyncssh.SSHClientConnection
    client: Any
    new_key: asyncssh.SSHKey | None = None


class Session:
    """One run's event loop and the connections parked for it."""

    def __init__(self, runner: asyncio.Runner) -> None:
        self._runner = runner
        self._parked: dict[Hashable, Parked] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion in the session's loop."""
        return self._runner.run(coro)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def park(self, key: Hashable, parked: Parked) -> None:
        old = self._parked.pop(key, None)
        if old is not None:
            old.conn.close()
        self._parked[key] = parked

    def take(self, key: Hashable) -> Parked | None:
        """The connection parked under ``key``, if it is still open and this is the session's
        loop; it is the caller's from then on."""
        try:
            if asyncio.get_running_loop() is not self._runner.get_loop():
                return None
        except RuntimeError:
            return None
        parked = self._parked.pop(key, None)
        if parked is None or parked.conn.is_closed():
            return None
        return parked

    async def close(self) -> None:
        """Close what no one took."""
        left, self._parked = list(self._parked.values()), {}
        for p in left:
            p.conn.close()
        for p in left:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.conn.wait_closed(), 5)


_local = threading.local()


def current() -> Session | None:
    """This thread's session, if one is open."""
    return getattr(_local, "session", None)


@contextlib.contextmanager
def session() -> Iterator[Session | None]:
    """A session for the calling thread (None, and nothing changes, when an event loop
    already runs here or a session is open): preflight and deploy share its loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        yield None
        return
    if current() is not None:
        yield None
        return
    with asyncio.Runner() as runner:
        s = Session(runner)
        _local.session = s
        try:
            yield s
        finally:
            _local.session = None
            with contextlib.suppress(Exception):
                runner.run(s.close())
