"""The sequential tests, re-exported: they live in :mod:`tminus.metrics.sequential`, below both
the ``probe`` metric source and the analysis runner, so ``metrics`` never imports ``analysis``."""

from tminus.metrics.sequential import (
    Decision,
    LatencyTest,
    OneSampleTest,
    SequentialTest,
    Verdict,
    ratio_grid,
)

__all__ = [
    "Decision",
    "LatencyTest",
    "OneSampleTest",
    "SequentialTest",
    "Verdict",
    "ratio_grid",
]
