"""index.html in a real headless browser: every image loads, the summary and the first plots fit the
first screen, headings go in order, and a screenshot is not blank.

Uses Debian's ``chromium`` (``apt-get install -y chromium``) in headless mode: ``--dump-dom`` of a
probe page that loads the report in an iframe and writes what it finds, and ``--screenshot``.
Without chromium the test is skipped and says so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnbench.report import write_report
from tests.test_report import write_counted_run

BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no chromium (Debian: apt-get install -y chromium); the report was not rendered"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"]
PROBE = """<!DOCTYPE html><html><body>
<iframe id="f" src="run/index.html" style="width:1280px;height:900px;border:0"></iframe><pre id="out"></pre>
<script>
document.getElementById('f').addEventListener('load', () => {
  const d = document.getElementById('f').contentDocument;
  const imgs = [...d.images];
  Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = r; i.onerror = r; }))).then(() => {
    document.getElementById('out').textContent = JSON.stringify({
      images: imgs.map(i => [i.getAttribute('src'), i.naturalWidth]),
      plotsTop: d.getElementById('plots').getBoundingClientRect().top,
      firstFigureTop: d.querySelector('#plots figure').getBoundingClientRect().top,
      headings: [...d.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => +h.tagName[1]),
      links: [...d.querySelectorAll('#files a')].map(a => a.getAttribute('href')),
      manifestOverflow: getComputedStyle(d.querySelector('pre.manifest')).overflow,
      tablesFolded: d.querySelectorAll('#tables details').length,
    });
  });
});
</script></body></html>
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("html")
    run = write_counted_run(root / "run", sizes=(14, 28), n_wins=(2, 7), topks=(1, 4))
    write_report(run, formats=("png",))
    return run


def _browser(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, *FLAGS, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_image_loads_and_the_page_reads_in_order(report):
    (report.parent / "probe.html").write_text(PROBE)
    out = _browser(
        ["--virtual-time-budget=15000", "--dump-dom", (report.parent / "probe.html").as_uri()], report
    )
    found = re.search(r'<pre id="out">(.*?)</pre>', out.stdout, re.S)
    assert found and found.group(1), out.stdout[-2000:] + out.stderr[-2000:]
    page = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert page["images"], "the report shows no image"
    for src, width in page["images"]:
        assert width > 0, f"{src} did not load"
        assert (report / src).is_file()
    assert page["firstFigureTop"] < 900, "the first plot is not on the first screen"
    levels = page["headings"]
    assert levels[0] == 1 and all(b <= a + 1 for a, b in zip(levels, levels[1:])), levels
    assert "results.csv" in page["links"] and any(h.startswith("tables/") for h in page["links"])
    assert all((report / h).is_file() for h in page["links"])
    assert page["manifestOverflow"] == "auto" and page["tablesFolded"] >= 1


@pytest.mark.slow  # a second browser start; the page test keeps chromium in the default run
def test_screenshot_is_not_blank(report):
    shot = report.parent / "shot.png"
    _browser(["--window-size=1280,1400", f"--screenshot={shot}", (report / "index.html").as_uri()], report)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1400, 1280)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # text and plots, not an empty page
