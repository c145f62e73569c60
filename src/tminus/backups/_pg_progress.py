"""What ``pg_dump -v -j N`` and ``pg_restore -v -j N`` announce on stderr, read as they run.

In parallel mode both tools' leaders announce ``finished item <dumpId> <desc> <tag>`` as a
worker ends an item (PostgreSQL's ``parallel.c``); the drivers use the ``TABLE DATA`` ones. A
backup starts its checksums when pg_dump has a worker idle for good (:class:`Announcements`), a
restore checksums each table as its data is committed (:mod:`._postgres_restore`). The lines
are read in English and uncoloured (:func:`plain_env`), with the leader's and the workers'
lines interleaved as they may be (:func:`read_line`). Serial mode (``-j 1``) announces nothing.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from typing import IO

__all__ = ["Announcements", "plain_env", "read_line"]

#: The tool's prefix. PostgreSQL's logging (``src/common/logging.c``) writes ``"pg_restore:"``,
#: then ``" "``, then ``"<message>\n"``, three writes, so with ``-j`` the leader's and a
#: worker's lines can interleave: ``pg_restore: pg_restore: finished item 7 …`` or
#: ``pg_restore:pg_restore:  finished item 7 …``, or `` finished item 7 …`` (seen here: 40
#: restores with ``-j 4`` held 10 such announcements), then a bare message. Only the message
#: ends its line in one write: any run of prefixes and blanks before it is dropped.
_PREFIX = re.compile(r"^(?:pg_(?:dump|restore):|[ \t])+")
_FINISHED = re.compile(r"^finished item (\d+) TABLE DATA ")
#: The tools' -v progress messages (pg_restore's, then pg_dump's), left out of an error message
_PROGRESS = re.compile(
    r"^(processing|launching|finished|creating|executing|connecting|entering"
    r"|setting owner|restoring|disabling|enabling|dropping|skipping"
    r"|reading|identifying|finding|flagging|saving|last built-in OID|dumping contents)\b"
)

_LOCALE_CATEGORIES = ("LC_CTYPE", "LC_COLLATE", "LC_NUMERIC", "LC_TIME", "LC_MONETARY")


def read_line(line: str) -> tuple[int | None, bool]:
    """``(dumpId, progress)`` of one line of ``pg_restore -v``'s or ``pg_dump -v``'s stderr:
    the dumpId of the table data it announces finished (else None), and whether it is a
    progress message (left out of an error message). The message is matched after any run of
    prefixes, or alone."""
    message = _PREFIX.sub("", line, count=1)
    m = _FINISHED.match(message)
    return (int(m.group(1)) if m else None), bool(_PROGRESS.match(message))


def plain_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the tool's messages in English and uncoloured, the form :func:`read_line`
    reads (``PG_COLOR=always`` wraps the prefix in escapes; a translated ``finished item`` is
    not found). ``LC_ALL`` would override ``LC_MESSAGES``: its value moves to the other
    categories, so only the messages' language changes."""
    out = {k: v for k, v in env.items() if k not in ("LC_ALL", "LANGUAGE")}
    if env.get("LC_ALL"):
        out.update(dict.fromkeys(_LOCALE_CATEGORIES, env["LC_ALL"]))
    return {**out, "LC_MESSAGES": "C", "PG_COLOR": "never"}


class Announcements:
    """A thread reading a tool's ``-v`` stderr to its end: counts the ``TABLE DATA`` items
    announced finished (:meth:`wait_finished` blocks until enough are) and keeps the last 40
    lines that are not progress (:attr:`messages`) for an error message. Reading the whole
    stream also keeps the tool from blocking on a full pipe."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.messages: deque[str] = deque(maxlen=40)
        self.finished = 0
        self.ended = False
        self._stream = stream
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="tminus-progress", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                dump_id, progress = read_line(line)
                if dump_id is not None:
                    with self._cond:
                        self.finished += 1
                        self._cond.notify_all()
                elif not progress:
                    self.messages.append(line)
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait_finished(self, count: int) -> None:
        """Until ``count`` table data items are announced finished or the stream ends."""
        with self._cond:
            self._cond.wait_for(lambda: self.ended or self.finished >= count)

    def join(self) -> str:
        """Wait for the stream's end; the kept messages, one per line."""
        self._thread.join()
        return "\n".join(self.messages)
