"""Real sshd hosts for the SSH tests: one fleet of 10 per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tminus.testing.sshd import SshdFleet, SshdUnavailable


@pytest.fixture(scope="module")
def fleet() -> Iterator[SshdFleet]:
    try:
        f = SshdFleet(10).start()
    except SshdUnavailable as exc:  # fail, never skip: the suite must exercise real SSH
        pytest.fail(f"cannot start sshd for the SSH tests: {exc}")
    try:
        yield f
    finally:
        f.stop()
