"""Print the HTML runbook to PDF with headless Chromium (``--print-to-pdf``).

The same HTML, the same print stylesheet (page breaks between phases, the summary alone on its
first page), so the PDF has the same content as the HTML. Chromium is found on ``PATH``
(``chromium``, ``chromium-browser``, ``google-chrome``, ``google-chrome-stable``; Debian:
``apt install chromium``), or named by ``TMINUS_CHROMIUM``. It runs with a throw-away profile in
a private temporary directory, with no network (the runbook is self-contained) and a time
limit; nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PdfError", "find_chromium", "html_to_pdf"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_TIMEOUT_S = 120


class PdfError(RuntimeError):
    """No Chromium, or it failed to print: the message says what to do."""


def find_chromium() -> str | None:
    named = os.environ.get("TMINUS_CHROMIUM")
    if named:
        return shutil.which(named)
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def html_to_pdf(html: str) -> bytes:
    """``html`` printed to PDF (A4, the stylesheet's margins, no header or footer)."""
    binary = find_chromium()
    if binary is None:
        raise PdfError(
            "--format pdf needs Chromium: none found on PATH "
            "(install it, e.g. `apt install chromium`, or set TMINUS_CHROMIUM)"
        )
    with tempfile.TemporaryDirectory(prefix="tminus-pdf-") as tmp:
        page = Path(tmp) / "runbook.html"
        out = Path(tmp) / "runbook.pdf"
        page.write_text(html, encoding="utf-8")
        argv = [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-sandbox" if os.geteuid() == 0 else "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--proxy-server=127.0.0.1:9",  # nothing to fetch; never reach out
            f"--user-data-dir={tmp}/profile",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
                check=False,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            raise PdfError(f"Chromium did not print the runbook within {_TIMEOUT_S}s") from None
        except OSError as exc:
            raise PdfError(f"cannot start {binary}: {exc.strerror or exc}") from None
        if done.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            tail = " ".join((done.stderr or "").strip().splitlines()[-3:])[:400]
            raise PdfError(f"Chromium failed to print the runbook (exit {done.returncode}): {tail}")
        return out.read_bytes()
