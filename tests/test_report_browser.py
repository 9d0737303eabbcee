"""The HTML report in a real headless browser: every table renders and every image decodes.

Needs Chromium. When it is missing the module fixture installs Debian's ``chromium`` with
apt-get (as root, once: later sessions find it on PATH) and skips, naming the step that failed,
when that is not possible. ``--no-install-recommends`` keeps the install to about 25 packages
(with recommends apt adds about 130, systemd, perl and samba among them) and under a minute.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from test_report import METHOD_ORDER, build_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = (
    ["apt-get", "update"],
    ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
)
# after `load`, write what rendered into the DOM, where --dump-dom shows it
PROBE = """<script>
window.addEventListener("load", () => {
  const tables = Array.from(document.querySelectorAll("table"));
  const images = Array.from(document.images);
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    tables: tables.length,
    rows: tables.map((t) => t.rows.length),
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 0).length,
  });
  document.body.appendChild(probe);
});
</script>"""


def _browser() -> str | None:
    return next(filter(None, map(shutil.which, BROWSERS)), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The path of a Chromium binary, installed with apt-get when missing (root only)."""
    found = _browser()
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed; installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in INSTALL:
        step = " ".join(command)
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=150)
        except subprocess.TimeoutExpired:
            pytest.skip(f"chromium not installed: `{step}` timed out after 150 s")
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
            pytest.skip(f"chromium not installed: `{step}` failed ({result.returncode}): {reason}")
    return _browser() or pytest.skip(f"`{' '.join(INSTALL[-1])}` left no {BROWSERS[0]} on PATH")


def test_report_renders_in_chromium(chromium, tmp_path):
    run_dir = build_run(tmp_path / "run")
    result = subprocess.run(
        [sys.executable, "-m", "owsbench", "report", str(run_dir), "--format", "html"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    page = (run_dir / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "\n</body>"))
    dom = subprocess.run(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000", "--dump-dom", probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the probe did not run; stderr: {dom.stderr[-2000:]}"
    probe = json.loads(html.unescape(found.group(1)))
    # split test: header + 3 methods; split val (older rows): header + 3 methods
    assert probe["tables"] == page.count("<table") == 2
    assert probe["rows"] == [1 + len(METHOD_ORDER)] * 2
    # curves and samples of split test, the training curves; all decoded
    assert probe["images"] == page.count("<img") == 3
    assert probe["decoded"] == probe["images"]
