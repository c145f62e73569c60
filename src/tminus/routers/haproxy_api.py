"""HAProxy's runtime API over its stats socket (``stats socket PATH level admin``).

One command per connection (HAProxy closes the socket after answering unless the session is
put in prompt mode); several commands may be sent at once separated by ``;``, and HAProxy
executes them in order in the same connection, which is how a whole weight map is applied in
one call. Shared by the haproxy router and the haproxy metric source.
"""

from __future__ import annotations

import asyncio
import csv
import io

from tminus.errors import TminusError

__all__ = ["HaproxyApiError", "runtime_command", "show_stat"]


class HaproxyApiError(TminusError):
    """The stats socket could not be reached, or a command was refused."""


async def runtime_command(socket_path: str, command: str, timeout: float = 5.0) -> str:
    """Send ``command`` (``;``-separated commands allowed) and return HAProxy's whole answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(socket_path), timeout)
    except (OSError, TimeoutError) as exc:
        raise HaproxyApiError(
            f"cannot reach the HAProxy stats socket {socket_path}: {exc}",
            hint="is HAProxy running with 'stats socket PATH level admin'?",
        ) from None
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, TimeoutError) as exc:
        raise HaproxyApiError(f"HAProxy stats socket {socket_path}: {exc}") from None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return data.decode(errors="replace")


async def show_stat(socket_path: str, timeout: float = 5.0) -> list[dict[str, str]]:
    """``show stat`` as a list of rows (``pxname``, ``svname``, ``hrsp_5xx``, ``rtime``...)."""
    text = await runtime_command(socket_path, "show stat", timeout)
    if not text.startswith("# "):
        raise HaproxyApiError(f"unexpected answer to 'show stat': {text[:200]!r}")
    rows = csv.DictReader(io.StringIO(text[2:]))
    return [{k: v for k, v in row.items() if k} for row in rows]
