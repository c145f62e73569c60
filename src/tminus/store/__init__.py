"""Durable state: deploys, steps, events, compensations, approvals, locks."""

from tminus.store.store import Store, default_state_url

__all__ = ["Store", "default_state_url"]
