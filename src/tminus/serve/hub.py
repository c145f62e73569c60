"""What wakes the server's live views: one poll of the store's newest event sequence number,
every :data:`POLL_S` while at least one stream is open, shared by every stream (a hundred
open dashboards cost one cheap query per poll, not a hundred). Events are written by other
processes (the workers, a ``tminus run`` elsewhere), so the store is the only place to learn
of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tminus.store import Store

__all__ = ["POLL_S", "EventHub"]

#: How often the newest event is looked for while streams are open.
POLL_S = 0.1


class EventHub:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.seq = 0
        self.subscribers = 0
        #: The server stops: every stream ends (uvicorn waits for open responses to end).
        self.closed = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def subscribed(self) -> Iterator[None]:
        """While a stream is open: the poll runs."""
        self.subscribers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        try:
            yield
        finally:
            self.subscribers -= 1

    async def wait(self, timeout: float) -> bool:
        """Until a new event is in the store (True) or ``timeout`` seconds (False)."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def _poll(self) -> None:
        self.seq = self.store.last_event_seq()
        while self.subscribers > 0 and not self.closed:
            await asyncio.sleep(POLL_S)
            try:
                seq = self.store.last_event_seq()
            except Exception:  # a store hiccup: the next poll tries again
                continue
            if seq != self.seq:
                self.seq = seq
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()
