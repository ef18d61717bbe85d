"""report.html as a reader sees it: headless Chromium opens it (inside a wrapper page that
this test writes, so the product stays free of test code) and every figure must have decoded
to the size of its PNG and be laid out on the page. Chromium comes from the test set-up
(Debian's ``chromium``, see the Makefile); without it the test is skipped, saying so."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from test_tuned_report import write_study

from optstudy.study.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (make test installs Debian's chromium)"
)
# The wrapper loads the report in an iframe and, once it has loaded, writes what each image
# looks like into its own DOM, which --dump-dom prints.
WRAPPER = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="{src}" width="1300" height="900"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {{
  const doc = document.getElementById("report").contentDocument;
  const images = Array.from(doc.images).map(i => ({{
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
    shown: i.getBoundingClientRect().width }}));
  document.getElementById("result").textContent = JSON.stringify({{title: doc.title, images}});
}});
</script></body></html>
"""


def rendered(report_html: Path, tmp_path: Path) -> dict:
    """What Chromium shows of ``report_html``'s images: title, then per image its alt text,
    whether it loaded, its decoded size and its laid-out width."""
    wrapper = tmp_path / "wrapper.html"
    wrapper.write_text(WRAPPER.format(src=report_html.resolve().as_uri()))
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
        wrapper.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, re.S)
    assert found is not None, result.stdout[-3000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    write_study(root / "syn")
    write_report([root / "syn"], root / "report", target=0.8)
    return root / "report"


def test_every_figure_renders_at_the_size_of_its_png(report, tmp_path):
    page = rendered(report / "report.html", tmp_path)
    assert page["title"] == "Study report"
    pngs = {p.stem: Image.open(p).size for p in report.glob("*.png")}
    assert len(pngs) == 9
    assert sorted(image["alt"] for image in page["images"]) == sorted(pngs)
    for image in page["images"]:
        assert image["complete"], image
        assert (image["width"], image["height"]) == pngs[image["alt"]], image
        assert image["shown"] > 100, image  # laid out, not collapsed


def test_a_broken_figure_is_caught(report, tmp_path):
    """The check can fail: a copy whose first image holds bytes that are no PNG."""
    text = (report / "report.html").read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[^\"]{20}", "base64,bm90IGEgcG5nIGF0IGFsbA", text, count=1))
    images = rendered(broken, tmp_path)["images"]
    assert [image["width"] for image in images].count(0) == 1
