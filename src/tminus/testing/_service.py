"""What every real-service fixture needs: find its binary (or say which Debian package to
install) and stop its process (or process group) for sure."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

__all__ = ["find_binary", "stop_process"]


def find_binary(
    name: str, candidates: Sequence[str], package: str, error: type[RuntimeError], label: str = ""
) -> str:
    """The first executable of ``candidates`` (then ``$PATH``), else ``error`` naming the
    Debian ``package`` to install."""
    for cand in (*candidates, shutil.which(name)):
        if cand and os.access(cand, os.X_OK):
            return cand
    where = ", ".join(sorted({os.path.dirname(c) for c in candidates}))
    raise error(
        f"{label or name} is not installed (looked in {where}, $PATH); run "
        f"scripts/test-services.sh or `apt-get install -y {package}` (Debian package: {package})"
    )


def stop_process(
    proc: subprocess.Popen[bytes] | None, *, group: bool = False, timeout: float = 5.0
) -> None:
    """SIGTERM (to the process group when ``group``), then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)

    send(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(5)
