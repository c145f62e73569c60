"""``kind: log``: the message goes to tminus's own console (stderr) and event log. It is
delivered when it is printed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, ClassVar

from tminus.notifiers.base import Delivery, Message, SendContext

if TYPE_CHECKING:
    from tminus.plan.model import NotificationChannel

__all__ = ["NOTIFIER", "LogNotifier"]


class LogNotifier:
    kind: ClassVar[str] = "log"
    threads: ClassVar[bool] = False

    async def send(
        self, channel: NotificationChannel, message: Message, ctx: SendContext
    ) -> Delivery:
        print(f"[{message.severity}] {message.title}: {message.text}", file=sys.stderr, flush=True)
        return Delivery(True, "printed")


NOTIFIER = LogNotifier()
