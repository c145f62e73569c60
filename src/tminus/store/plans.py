"""The plans a ``tminus serve`` knows (``plans`` table, Alembic 0006): registered by path or
uploaded (``tminus plans register``, ``POST /api/v1/plans``), checked when registered. One
row per (name, environment): registering again replaces it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select

from tminus.clock import now
from tminus.store import schema as t
from tminus.store._connect import StoreBase
from tminus.store._rows import _row

__all__ = ["PlansMixin"]


class PlansMixin(StoreBase):
    def register_plan(
        self,
        name: str,
        environment: str,
        path: str,
        plan_hash: str,
        description: str | None,
        by: str,
    ) -> None:
        """Record (or replace) the registration of plan ``name`` for ``environment``."""
        with self.tx(count=False) as conn:
            conn.execute(
                delete(t.plans).where(t.plans.c.name == name, t.plans.c.environment == environment)
            )
            conn.execute(
                insert(t.plans).values(
                    name=name,
                    environment=environment,
                    path=path,
                    plan_hash=plan_hash,
                    description=description,
                    registered_at=now(),
                    registered_by=by,
                )
            )

    def registered_plans(self) -> list[dict[str, Any]]:
        """Every registered plan, by name and environment."""
        q = select(t.plans).order_by(t.plans.c.name, t.plans.c.environment)
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def registered_plan(self, name: str, environment: str) -> dict[str, Any] | None:
        q = select(t.plans).where(t.plans.c.name == name, t.plans.c.environment == environment)
        with self._read() as conn:
            row = conn.execute(q).mappings().first()
        return _row(row) if row else None

    def unregister_plan(self, name: str, environment: str) -> bool:
        with self.tx(count=False) as conn:
            res = conn.execute(
                delete(t.plans).where(t.plans.c.name == name, t.plans.c.environment == environment)
            )
            return bool(res.rowcount)
