"""The plan's ``notifications`` section: channels (where messages go, how fast, whether a
run waits for them) and rules (which event sends what to which channels)."""

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tminus.plan._base import Name, PlanModel, new_dict, new_list
from tminus.plan.values import DurationStr

__all__ = ["NotificationChannel", "NotificationRule", "Notifications", "NotifyWhen", "RateLimit"]


@dataclass(frozen=True)
class RateLimit:
    """``N/DURATION``: at most ``count`` messages per ``per``."""

    count: int
    per: timedelta

    @classmethod
    def parse(cls, text: str) -> "RateLimit | None":
        """``20/1m`` → 20 per minute; ``none`` → None (no limit). ValueError if malformed."""
        from tminus.plan.values import parse_duration

        text = text.strip()
        if text.lower() == "none":
            return None
        n, sep, per = text.partition("/")
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise ValueError(f"rate_limit '{text}': write N/DURATION, e.g. 20/1m or 1/1s, or none")
        span = parse_duration(per.strip())
        if span.total_seconds() <= 0:
            raise ValueError(f"rate_limit '{text}': the duration must be more than 0")
        return cls(count=int(n), per=span)

    def __str__(self) -> str:
        from tminus.plan.values import format_duration

        return f"{self.count}/{format_duration(self.per)}"


class NotificationChannel(PlanModel):
    """A channel: slack (webhook), email (SMTP), webhook, statuspage or log."""

    kind: Literal["slack", "email", "webhook", "statuspage", "apprise", "log"]
    url: str | None = Field(
        None,
        description="Webhook or API URL; apprise: an Apprise URL (msteams://, discord://, "
        "pagerduty://, opsgenie://, tgram://, json://…).",
    )
    to: list[str] = Field(default_factory=new_list)
    sender: str | None = Field(None, alias="from")
    smtp: str | None = Field(None, description="host:port of the SMTP server.")
    username: str | None = None
    password: str | None = None
    token: str | None = None
    headers: dict[str, str] = Field(default_factory=new_dict)
    audience: str | None = None
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="email: STARTTLS on the SMTP port (default), TLS from the first byte "
        "(port 465), or none (a local relay only).",
    )
    secret: str | None = Field(
        None, description="webhook: the HMAC-SHA256 signing secret (use a secret: ${hook_key})."
    )
    channel: str | None = Field(
        None, description="slack with a bot token: the channel ID messages are posted to."
    )
    to_roles: list[Name] = Field(
        default_factory=new_list,
        description="email: roles of the plan whose `contact` (an email address) is added to "
        "the recipients.",
    )
    required: bool = Field(
        False,
        description="A message a run records for this channel must be delivered (within "
        "`required_within`) before the run goes on; if it cannot be, the deploy pauses.",
    )
    required_within: DurationStr | None = Field(
        None,
        description="required: how long the run waits for a message to be delivered before "
        "it pauses (default 60s).",
    )
    rate_limit: str | None = Field(
        None,
        description="At most N messages per duration, e.g. '20/1m'; more are held and sent "
        "later, in order (default: '1/1s' for slack, none for the others; 'none': no limit).",
    )

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            RateLimit.parse(value)
        return value

    def effective_rate_limit(self) -> RateLimit | None:
        """The channel's limit: its own, or its kind's default (slack: 1 per second)."""
        if self.rate_limit is not None:
            return RateLimit.parse(self.rate_limit)
        if self.kind == "slack":
            return RateLimit(1, timedelta(seconds=1))
        return None

    @model_validator(mode="after")
    def _needs(self) -> "NotificationChannel":
        if self.kind == "slack" and not self.url and not (self.token and self.channel):
            raise ValueError("a slack channel needs 'url' (a webhook), or 'token' and 'channel'")
        if self.kind in ("webhook", "statuspage", "apprise") and not self.url:
            raise ValueError(f"a {self.kind} channel needs 'url'")
        if self.kind == "statuspage" and not self.token:
            raise ValueError("a statuspage channel needs 'token' (its API key; use a secret)")
        if self.kind == "email" and not (self.to or self.to_roles):
            raise ValueError("an email channel needs 'to' or 'to_roles'")
        if self.required_within is not None and not self.required:
            raise ValueError("'required_within' bounds the wait of 'required: true'; set both")
        if self.to_roles and self.kind != "email":
            raise ValueError("'to_roles' adds email recipients: only an email channel takes it")
        if self.kind == "email" and not self.smtp:
            raise ValueError("an email channel needs 'smtp' (host:port of the SMTP server)")
        return self


NotifyWhen = Literal[
    "before_window",
    "window_start",
    "phase_start",
    "phase_end",
    "during",
    "success",
    "after_success",
    "failure",
    "rollback",
    "approval_needed",
    "paused",
    "watch_warn",
    "watch_critical",
]


class NotificationRule(PlanModel):
    """When to notify whom: ``before: 24h`` the window, ``every: 30m`` during it, on events."""

    when: NotifyWhen
    before: DurationStr | None = None
    after: DurationStr | None = None
    every: DurationStr | None = None
    channels: list[Name] = Field(default_factory=new_list)
    message: str | None = None
    audience: str | None = None

    @model_validator(mode="after")
    def _timing(self) -> "NotificationRule":
        if self.when == "before_window" and self.before is None:
            raise ValueError("when: before_window needs 'before' (e.g. 24h)")
        if self.when == "during" and self.every is None:
            raise ValueError("when: during needs 'every' (e.g. 30m)")
        if self.when == "after_success" and self.after is None:
            raise ValueError("when: after_success needs 'after' (e.g. 1h)")
        return self


class Notifications(PlanModel):
    channels: dict[Name, NotificationChannel] = Field(default_factory=new_dict)
    rules: list[NotificationRule] = Field(default_factory=new_list)
