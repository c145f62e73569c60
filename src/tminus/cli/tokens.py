"""Who may use ``tminus serve``: API tokens (``tminus tokens``) and grants (``tminus access``).

Whoever can open the state store administers these (the CLI is trusted; the server's HTTP
side is what they guard)."""

from __future__ import annotations

from typing import Any

import click

from tminus.cli._util import echo_json, handle_errors, state_option
from tminus.cli.deploy import _as_opt, _operator

__all__ = ["COMMANDS"]

_PERMISSIONS = ("viewer", "operator", "approver")


def _ts(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M %Z}" if value is not None else "-"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _person(name: str, what: str = "PERSON") -> str:
    from tminus.store.access import valid_person

    person = valid_person(name)
    if person is None:
        raise click.BadParameter(
            "a person's name is 1 to 200 characters without control characters", param_hint=what
        )
    return person


def _scope(value: str, what: str) -> str:
    """A plan or environment name of a grant, or ``*``."""
    value = value.strip()
    if not value or len(value) > 120 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise click.BadParameter(
            "1 to 120 characters without control characters, or '*' for all", param_hint=what
        )
    return value


# --- tokens -------------------------------------------------------------------------------------
@click.group()
def tokens() -> None:
    """API tokens of tminus serve's API and dashboard (stored hashed, shown once)."""


@tokens.command("create")
@click.option("--person", required=True, help="Whose token it is (their grants apply).")
@click.option("--label", default=None, help="What it is for (shown by `tokens list`).")
@_as_opt
@state_option
@handle_errors
def tokens_create(
    person: str, label: str | None, operator: str | None, state_url: str | None
) -> None:
    """Make a token for PERSON and print it, alone on the last line: it is shown once and
    stored as its hash only. Send it as `Authorization: Bearer TOKEN`, or paste it in the
    dashboard's login page."""
    from tminus.security import hash_token, new_token
    from tminus.store import Store

    who = _person(person, "--person")
    store = Store(state_url)
    token = new_token()
    token_id = store.add_token(who, hash_token(token), label=label, by=_operator(operator))
    grants = store.grants(person=who)
    click.echo(
        f"token {token_id} for {who}{f' ({label})' if label else ''}: shown once, keep it secret"
    )
    if not grants:
        click.echo(f"note: {who} has no grant yet: tminus access grant {who} viewer")
    click.echo(token)


@tokens.command("list")
@click.option("--person", default=None, help="Only this person's tokens.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@state_option
@handle_errors
def tokens_list(person: str | None, output: str, state_url: str | None) -> None:
    """The tokens: id, person, label, when made and by whom, last use, revoked. Never the
    token nor its hash."""
    from tminus.store import Store

    rows = Store(state_url).tokens(person=person)
    if output == "json":
        echo_json(
            [
                {
                    "id": r["id"],
                    "person": r["person"],
                    "label": r["label"],
                    "created_at": _iso(r["created_at"]),
                    "created_by": r["created_by"],
                    "last_used_at": _iso(r["last_used_at"]),
                    "revoked_at": _iso(r["revoked_at"]),
                    "revoked_by": r["revoked_by"],
                    "state": "revoked" if r["revoked_at"] else "active",
                }
                for r in rows
            ]
        )
        return
    if not rows:
        click.echo("no tokens (tminus tokens create --person NAME)")
        return
    for r in rows:
        state = (
            f"revoked {_ts(r['revoked_at'])} by {r['revoked_by']}" if r["revoked_at"] else "active"
        )
        click.echo(
            f"{r['id']:>4}  {r['person']:<16} {(r['label'] or '-'):<16} made "
            f"{_ts(r['created_at'])} by {r['created_by']}, last used "
            f"{_ts(r['last_used_at'])}  {state}"
        )


@tokens.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@_as_opt
@state_option
@handle_errors
def tokens_revoke(token_id: int, operator: str | None, state_url: str | None) -> None:
    """Revoke token ID (from `tokens list`): refused from the next request on, and the
    dashboard sessions made from it end too."""
    from tminus.errors import NotFound
    from tminus.store import Store

    store = Store(state_url)
    before = store.token(token_id)
    if before is None:
        raise NotFound(f"no token {token_id}", hint="tminus tokens list")
    row = store.revoke_token(token_id, by=_operator(operator))
    assert row is not None
    if before["revoked_at"] is not None:
        click.echo(
            f"token {token_id} of {row['person']} was already revoked {_ts(row['revoked_at'])}"
        )
        return
    click.echo(f"token {token_id} of {row['person']} revoked; its sessions end with it")


# --- grants -------------------------------------------------------------------------------------
@click.group()
def access() -> None:
    """Who may view, operate or approve which plans and environments on tminus serve."""


_plan_opt = click.option("--plan", default="*", show_default=True, help="Plan name, or * for all.")
_env_opt = click.option(
    "--env", "environment", default="*", show_default=True, help="Environment, or * for all."
)


@access.command("grant")
@click.argument("person")
@click.argument("permission", type=click.Choice(_PERMISSIONS))
@_plan_opt
@_env_opt
@_as_opt
@state_option
@handle_errors
def access_grant(
    person: str,
    permission: str,
    plan: str,
    environment: str,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Give PERSON a PERMISSION: viewer (see), operator (start, pause, resume, abort, roll
    back; may view) or approver (approve; may view), on one plan and environment or all."""
    from tminus.store import Store

    who = _person(person)
    plan, environment = _scope(plan, "--plan"), _scope(environment, "--env")
    new = Store(state_url).add_grant(
        who, permission, plan=plan, environment=environment, by=_operator(operator)
    )
    what = f"{permission} on plan {plan}, environment {environment}"
    click.echo(f"{who} may now act as {what}" if new else f"{who} already had {what}")


@access.command("revoke")
@click.argument("person")
@click.argument("permission", type=click.Choice(_PERMISSIONS))
@_plan_opt
@_env_opt
@state_option
@handle_errors
def access_revoke(
    person: str, permission: str, plan: str, environment: str, state_url: str | None
) -> None:
    """Take back exactly the grant (PERSON, PERMISSION, --plan, --env) from `access list`."""
    from tminus.errors import NotFound
    from tminus.store import Store

    who = _person(person)
    plan, environment = _scope(plan, "--plan"), _scope(environment, "--env")
    store = Store(state_url)
    if not store.remove_grant(who, permission, plan=plan, environment=environment):
        held = store.grants(person=who)
        raise NotFound(
            f"{who} has no grant {permission} on plan {plan}, environment {environment}",
            hint=(
                "their grants: "
                + "; ".join(
                    f"{g['permission']} --plan {g['plan']} --env {g['environment']}" for g in held
                )
                if held
                else f"{who} has no grants"
            ),
        )
    click.echo(f"{who} may no longer act as {permission} on plan {plan}, environment {environment}")


@access.command("list")
@click.option("--person", default=None, help="Only this person's grants.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@state_option
@handle_errors
def access_list(person: str | None, output: str, state_url: str | None) -> None:
    """The grants: person, permission, plan, environment, when given and by whom."""
    from tminus.store import Store

    rows = Store(state_url).grants(person=person)
    if output == "json":
        echo_json(
            [
                {
                    "person": g["person"],
                    "permission": g["permission"],
                    "plan": g["plan"],
                    "environment": g["environment"],
                    "created_at": _iso(g["created_at"]),
                    "created_by": g["created_by"],
                }
                for g in rows
            ]
        )
        return
    if not rows:
        click.echo("no grants (tminus access grant PERSON viewer|operator|approver)")
        return
    for g in rows:
        click.echo(
            f"{g['person']:<16} {g['permission']:<9} plan {g['plan']:<16} env "
            f"{g['environment']:<12} given {_ts(g['created_at'])} by {g['created_by']}"
        )


COMMANDS = [tokens, access]
