"""The SQL lexer and binder, re-exported: they live in :mod:`tminus.plan.sqlbind`, inside
``plan`` (whose ``check`` lints SQL with them), so ``plan`` imports nothing else of tminus."""

from tminus.plan.sqlbind import (
    PARAM_TYPES,
    Bound,
    Dialect,
    SqlBindError,
    Statement,
    bind_statements,
    convert_param,
    describe_sql,
    dialect_of,
    lex,
    params_hint,
    prepare,
    resolve_params,
)

__all__ = [
    "PARAM_TYPES",
    "Bound",
    "Dialect",
    "SqlBindError",
    "Statement",
    "bind_statements",
    "convert_param",
    "describe_sql",
    "dialect_of",
    "lex",
    "params_hint",
    "prepare",
    "resolve_params",
]
