"""report.html in a real browser (headless Chromium): every image loads and nothing overflows the page
width, at a desktop and at a narrow window. A small script added to a copy of the page writes what it
finds into the DOM, which ``chromium --dump-dom`` hands back."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest

from testbed.analysis import compare
from tests.compare_data import make_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="needs Debian's chromium package (scripts/setup.sh installs it)")

CHECK = """
<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  // wide tables scroll inside their own box: what is inside it may be wider, the box may not
  const over = [...document.body.querySelectorAll("*")]
    .filter(e => e.id !== "check" && !(e.parentElement && e.parentElement.closest(".scroll")))
    .filter(e => e.getBoundingClientRect().right > width + 1)
    .map(e => e.tagName + (e.className ? "." + e.className : ""));
  const out = {width: width, scrollWidth: document.documentElement.scrollWidth, images: images.length,
               broken: broken, overflowing: over,
               shown: images.map(i => [i.alt, i.getBoundingClientRect().width, i.naturalWidth])};
  const pre = document.createElement("pre");
  pre.id = "check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    base = tmp_path_factory.mktemp("html")
    res = compare.compare([make_results(str(base))], str(base / "cmp"), html_page=True)
    text = open(res["html"], encoding="utf-8").read()
    probe = base / "probe.html"
    probe.write_text(text.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    return probe, res


def _open(probe, tmp_path, width: int) -> dict:
    cmd = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / f'profile{width}'}", f"--window-size={width},900",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="check">(.*?)</pre>', p.stdout, re.S)
    assert m, f"no result from chromium (rc {p.returncode}): {p.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.parametrize("width", [1280, 820])
def test_every_image_loads_and_nothing_overflows(page, tmp_path, width):
    probe, res = page
    out = _open(probe, tmp_path, width)
    assert out["images"] == len(res["images"]) == 5
    assert out["broken"] == []
    assert out["overflowing"] == [], out["overflowing"]
    assert out["scrollWidth"] <= out["width"]
    for alt, shown, natural in out["shown"]:
        assert 0 < shown <= natural + 2, (alt, shown, natural)  # never blown up past the drawn size (+ border)
