"""`tminus check` for SQL written in plans (``sql`` steps, ``sql`` checks): a ``${…}`` where
no value can go safely (a comment, a dollar-quoted body, a prefixed literal), ``:name``
placeholders without a parameter, parameters nothing uses, parameter values not of their
type, and a check query of more than one statement. See :mod:`tminus.plan.sqlbind`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tminus.plan.checks import SqlCheck
from tminus.plan.interpolate import ResolveError, Resolver, references
from tminus.plan.model import Plan
from tminus.plan.problems import Loc, Problem, did_you_mean
from tminus.plan.sqlbind import (
    SAFE_IDENT,
    SAFE_NUMBER,
    Bare,
    convert_param,
    dialect_of,
    lex,
    needs_binding,
    params_hint,
)
from tminus.plan.steps import SqlStep
from tminus.plan.walk import iter_check_sites, iter_steps

__all__ = ["sql_problems"]


def _templates(
    plan: Plan,
) -> Iterator[tuple[Loc, str, list[tuple[Loc, str]], Mapping[str, Any], bool]]:
    """(path, database, [(path, sql text)], params, is a query) of every sql step and check."""
    for site in iter_steps(plan):
        s = site.step
        if isinstance(s, SqlStep):
            texts = [((*site.path, "statements", k), t) for k, t in enumerate(s.statements)]
            yield site.path, s.database, texts, s.params, False
    for csite in iter_check_sites(plan):
        c = csite.check
        if isinstance(c, SqlCheck):
            yield csite.path, c.database, [((*csite.path, "query"), c.query)], c.params, True


def _plan_values(plan: Plan) -> Resolver | None:
    try:
        return Resolver.for_plan(plan.variables, {}, env={})
    except (ResolveError, ValueError):
        return None


def sql_problems(plan: Plan) -> list[Problem]:
    out: list[Problem] = []
    values = _plan_values(plan)

    def add(
        severity: str,
        code: str,
        message: str,
        path: Loc,
        hint: str | None = None,
        *,
        key: bool = False,
    ) -> None:
        p = Problem(severity, code, message, path=path, hint=hint)  # type: ignore[arg-type]
        p.key = str(path[-1]) if key else None
        out.append(p)

    for path, database, texts, params, is_query in _templates(plan):
        db = plan.targets.databases.get(database)
        if db is None:
            continue  # reported as an undefined database
        dialect = dialect_of(db.kind)
        used: set[str] = set()
        for tpath, text in texts:
            stmts = lex(text, dialect)
            bound = [s for s in stmts if needs_binding(s, params)]
            bound_ids = {id(s) for s in bound}
            if is_query and bound and len(stmts) > 1:
                add(
                    "error",
                    "sql-statements",
                    f"a query with values is one statement; this is {len(stmts)}",
                    tpath,
                    "keep one statement in the query (split at ';')",
                )
            for stmt in stmts:
                for bad in stmt.bad:
                    name = bad.ref.name if SAFE_IDENT.fullmatch(bad.ref.name) else "value"
                    add(
                        "error",
                        "sql-reference-unsafe",
                        f"{bad.ref.text} is inside {bad.where}, where no value can be put safely",
                        tpath,
                        params_hint(name),
                    )
                if id(stmt) not in bound_ids:
                    continue
                for ph in stmt.placeholders:
                    used.add(ph.name)
                    if ph.name not in params:
                        add(
                            "error",
                            "sql-unknown-param",
                            f":{ph.name} is not a parameter of this "
                            + ("check" if is_query else "step"),
                            tpath,
                            did_you_mean(ph.name, params)
                            or f"declare it: params: {{{ph.name}: VALUE}}",
                        )
                if values is not None:
                    _unquoted(stmt.tokens, values, tpath, add)
        for name, spec in params.items():
            ppath = (*path, "params", name)
            if name not in used:
                add(
                    "error",
                    "sql-unused-param",
                    f"parameter '{name}' is not used: no :{name} in the SQL",
                    ppath,
                    f"write :{name} where the value goes, or remove the parameter",
                    key=True,
                )
            raw, type_ = (spec.value, spec.type) if hasattr(spec, "type") else (spec, None)
            if isinstance(raw, str) and references(raw):
                continue  # converted when it runs
            try:
                convert_param(raw, type_)
            except ValueError as exc:
                add("error", "sql-bad-param", f"parameter '{name}': {exc}", ppath)
    return out


def _unquoted(tokens: list[Any], values: Resolver, path: Loc, add: Any) -> None:
    """An unquoted ``${…}`` whose plan value would be refused when it runs: a warning (the
    value may be overridden with --var)."""
    for tok in tokens:
        if not isinstance(tok, Bare):
            continue
        try:
            v = values.lookup(tok.ref)
        except ResolveError:
            continue  # env, secrets, artifacts: known when it runs
        if SAFE_NUMBER.fullmatch(v) or SAFE_IDENT.fullmatch(v):
            continue
        add(
            "warning",
            "sql-unquoted-value",
            f"{tok.ref.text} is unquoted in the SQL and its value ({v!r}) is not a number or "
            "a plain identifier: the statement would be refused",
            path,
            f"write '{tok.ref.text}' to pass it as a string value, or "
            + params_hint(tok.ref.name if SAFE_IDENT.fullmatch(tok.ref.name) else "value"),
        )
