"""The HTML runbook of every seed plan, rendered by the installed CLI and looked at in a real
headless Chromium (Debian's ``chromium`` driven by Playwright): the text a person reads has no
raw ``${``, every check row says what it expects, tick boxes are there. One screenshot per
seed (the one-page summary), and the printed page count of the full and compact
runbooks through ``tminus render --format pdf`` (Chromium's own print-to-pdf).

``TMINUS_WRITE_DOC_IMAGES=1`` writes the screenshots to docs/img/runbook-<seed>.png (they
are in the repository); otherwise they go to the test's temporary directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "examples" / "seeds"
ALL = sorted(SEEDS.glob("*.yaml"))
START = "2026-03-01T02:00"


def _tminus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tminus", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


def _pages(pdf: Path) -> int:
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF"), data[:20]
    return len(re.findall(rb"/Type\s*/Page(?![a-z])", data))


_CHECK_ROWS = """
() => {
  const out = [];
  for (const table of document.querySelectorAll("table")) {
    const heads = [...table.querySelectorAll("thead th")].map(th => th.innerText.trim());
    const e = heads.indexOf("Expect");
    if (e < 0) continue;
    for (const tr of table.querySelectorAll("tbody tr")) {
      const cells = [...tr.querySelectorAll("td")].map(td => td.innerText.trim());
      out.push({check: cells[0], source: cells[1], expect: cells[e],
                warn: cells[e + 1] || "", critical: cells[e + 2] || ""});
    }
  }
  return out;
}
"""


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_seed_runbook_in_chromium(path: Path, browser: Browser, tmp_path: Path) -> None:
    html_file = tmp_path / f"{path.stem}.html"
    res = _tminus("render", str(path), "--format", "html", "--start", START, "-o", str(html_file))
    assert res.returncode == 0, res.stderr
    page = browser.new_page(viewport={"width": 1200, "height": 1500})
    try:
        page.goto(html_file.as_uri())
        text = page.inner_text("body")
        assert "${" not in text
        assert "Sun 2026-03-01 02:00" in text or "Sun 2026-03-01" in text
        # every check row says what passes (an expectation, or a WARN/CRITICAL level)
        rows = page.evaluate(_CHECK_ROWS)
        assert rows, "no check table"
        empty = [r for r in rows if not (r["expect"] or r["warn"] or r["critical"])]
        assert not empty, empty[:3]
        http = [r for r in rows if re.match(r"(GET|POST|PUT|HEAD) ", r["source"])]
        assert all("HTTP" in r["expect"] or r["expect"] for r in http)
        # tick boxes in front of tasks, checklist items, notices and watch periods
        boxes = page.locator("table.tasks td:first-child").all_inner_texts()
        assert len(boxes) >= 20 and set(boxes) == {"☐"}
        assert page.locator("table.tasks th", has_text="Done at").count() >= 3
        assert page.locator("#bridge-summary").is_visible()
        out_dir = ROOT / "docs" / "img" if os.environ.get("TMINUS_WRITE_DOC_IMAGES") else tmp_path
        shot = out_dir / f"runbook-{path.stem}.png"
        page.locator("#bridge-summary").screenshot(path=str(shot))  # the one page
        assert shot.stat().st_size > 10_000
    finally:
        page.close()


def test_printed_pages_full_and_compact(tmp_path: Path) -> None:
    """The PDF through the installed CLI. Seed 000's runbook printed 27 pages before issue
    #18; its compact runbook must be about a third of that (at most 10 pages), and at most
    a third of the full one (measured: 8 of 34)."""
    counts: dict[str, tuple[int, int]] = {}
    for path in ALL:
        pages = []
        for extra in ([], ["--compact"]):
            pdf = tmp_path / f"{path.stem}{'-c' if extra else ''}.pdf"
            res = _tminus("render", str(path), "--format", "pdf", "-o", str(pdf), *extra)
            assert res.returncode == 0, res.stderr
            pages.append(_pages(pdf))
        counts[path.stem] = (pages[0], pages[1])
    print("printed pages (full, compact):", counts)
    full, compact = counts["archive-import"]
    assert compact <= 10, counts
    assert compact * 3 <= full + 2, counts
    for stem, (f, c) in counts.items():
        assert c < f, (stem, counts)


def test_pdf_needs_an_output_file_and_chromium(tmp_path: Path) -> None:
    res = _tminus("render", str(ALL[0]), "--format", "pdf")
    assert res.returncode == 2 and "error: --format pdf writes a file" in res.stderr
    env = {**os.environ, "TMINUS_CHROMIUM": "no-such-chromium"}
    done = subprocess.run(
        [sys.executable, "-m", "tminus", "render", str(ALL[0]), "--format", "pdf", "-o", "x.pdf"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "needs Chromium" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.pdf").exists()
