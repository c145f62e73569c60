"""The crash campaign with tminus's state on PostgreSQL (a fresh state database per point),
where a step's end and the process records are committed without waiting for their WAL
flush (``Store.tx(flush=False)``): a runner killed right after such a commit must find it
on resume exactly as if it had been flushed. A sample of about 30 points; ``bench/
crash_campaign.py --store postgres`` runs them all. See :mod:`tminus.testing.crash_campaign`.

Mutations that must make this test fail (each was tried):
- an unflushed commit that is not a commit (``Store.tx`` rolls back when ``flush=False``):
  steps found still in flight and orphans not found, at commit and spawn points;
- never pause on an in-flight forward step (``_rerun_safe`` always True in
  ``phase.step_node``): the ledger shows ``fwd:…`` twice at effect points, on this store too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN
from tminus.testing.crash_campaign import Campaign, format_table, sample

PER_KIND = 1  # points per (variant, kind): 2 variants x 3 kinds; the bench runs them all


@pytest.mark.timeout(900)
@pytest.mark.parametrize("variant", ["success", "rollback"])
def test_crash_campaign_sample_on_postgres_store(tmp_path: Path, variant: str) -> None:
    campaign = Campaign(tmp_path, PG_ADMIN, store="postgres")
    counts = {variant: campaign.count(variant)}
    assert all(n > 0 for n in counts[variant].values()), counts
    outcomes = [campaign.run_point(p) for p in sample(counts, PER_KIND)]
    print(format_table(outcomes))
    bad = [f"{o.point}: {'; '.join(o.problems)}" for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)
    assert all(o.crashed for o in outcomes), [str(o.point) for o in outcomes if not o.crashed]
    assert any(o.shown == "crashed" for o in outcomes), format_table(outcomes)
    # effect points on non-idempotent steps paused and were answered
    assert any(o.pauses for o in outcomes if o.point.kind == "effect"), format_table(outcomes)
