"""Fixtures shared by the fleet step tests: ten real sshd hosts and a directory they can use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tminus.testing.sshd import SshdFleet, SshdUnavailable

NAMES = [f"h{i}" for i in range(1, 11)]


@pytest.fixture(scope="module")
def fleet() -> Iterator[SshdFleet]:
    try:
        f = SshdFleet(len(NAMES)).start()
    except SshdUnavailable as exc:  # fail, never skip: these tests need real SSH
        pytest.fail(f"cannot start sshd: {exc}")
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory the hosts' login user can write to (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="tminus-fleet-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)
