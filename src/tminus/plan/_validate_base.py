"""What every rule of :func:`tminus.plan.validate.validate_plan` reports into: the collector of
problems (with the "undefined NAME" message and its did-you-mean hint)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tminus.plan.problems import Loc, Problem, did_you_mean

Severity = Literal["error", "warning"]


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        path: Loc,
        hint: str | None = None,
        *,
        key: bool = False,
    ) -> None:
        self.problems.append(
            Problem(
                severity, code, message, path=path, hint=hint, key=str(path[-1]) if key else None
            )
        )

    def undefined(
        self,
        what: str,
        name: str,
        path: Loc,
        defined: Iterable[str],
        where: str,
        *,
        key: bool = False,
    ) -> None:
        names = sorted(set(defined))
        hint = did_you_mean(name, names)
        if hint is None:
            hint = f"define it under '{where}'" + (
                f" (defined: {', '.join(names)})" if names else ""
            )
        self.add(
            "error",
            f"undefined-{what.replace(' ', '-')}",
            f"undefined {what} '{name}'",
            path,
            hint,
            key=key,
        )
