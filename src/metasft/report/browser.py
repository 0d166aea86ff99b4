"""Open a report.html in headless Chromium as its reader would, and say what they would see.

A copy of the file alone in a fresh directory (as when it is mailed or attached) is loaded at a
laptop's first screen (1280 x 800 CSS px). Checked after load: every <img> decoded
(naturalWidth > 0), no element fetches anything outside the file, and the summary table lies on
the first screen. A screenshot of that screen is written for a person to look at.

    python -m metasft.report.browser runs/embedded_default/report/report.html --screenshot first_screen.png

Needs Chromium: `apt-get install chromium` (Debian/Ubuntu), or any Chrome; METASFT_CHROMIUM names
the binary when it is not on PATH as chromium, chromium-browser or google-chrome.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from metasft.rundir import REPORT_HTML

VIEWPORT = (1280, 800)
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_PROBE_ID = "metasft-probe"
# Runs after load in the checked copy only (the screenshot is of the unmodified copy).
_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                  width: i.naturalWidth}));
  const external = [...document.querySelectorAll("[src], link[href]")]
    .map(e => e.getAttribute("src") || e.getAttribute("href"))
    .filter(u => u && !u.startsWith("data:") && !u.startsWith("#"));
  const table = document.querySelector("table.summary");
  const box = table ? table.getBoundingClientRect() : null;
  const pre = document.createElement("pre");
  pre.id = "%s";
  pre.textContent = JSON.stringify({images, external, height: window.innerHeight,
                                    summary_bottom: box ? box.bottom : null});
  document.body.appendChild(pre);
});
</script>""" % _PROBE_ID


class BrowserUnavailable(RuntimeError):
    """No headless Chromium on this machine."""


@dataclass
class BrowserCheck:
    images: list[dict]                   # alt, ok (decoded), width (natural px), per <img>
    external: list[str]                  # src/href values that leave the file
    viewport_height: int
    summary_bottom: float | None         # CSS px from the top; None when there is no summary table
    screenshot: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium() -> str | None:
    named = os.environ.get("METASFT_CHROMIUM")
    if named:
        return named if shutil.which(named) or Path(named).is_file() else None
    return next((path for name in _NAMES if (path := shutil.which(name))), None)


def _run(chromium: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    width, height = VIEWPORT
    # --no-sandbox: containers often run as root, where Chromium's sandbox refuses to start
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           "--no-first-run", f"--window-size={width},{height}", "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_html(html_path: Path, screenshot: Path | None = None, chromium: str | None = None,
               timeout: float = 120) -> BrowserCheck:
    """Load a copy of `html_path`, alone in a temporary directory, in headless Chromium; see the
    module docstring. Raises BrowserUnavailable when there is no Chromium."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise BrowserUnavailable("no headless Chromium found (apt-get install chromium, or set METASFT_CHROMIUM)")
    text = Path(html_path).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="metasft-html-") as tmp:
        alone = Path(tmp) / REPORT_HTML
        alone.write_text(text, encoding="utf-8")
        probed = Path(tmp) / "probed.html"
        probed.write_text(text.replace("</body>", _PROBE + "\n</body>", 1), encoding="utf-8")
        result = _run(chromium, ["--dump-dom", probed.as_uri()], timeout)
        found = re.search(rf'<pre id="{_PROBE_ID}">(.*?)</pre>', result.stdout, re.S)
        if not found:
            raise RuntimeError(f"Chromium gave no probe result (exit {result.returncode}): {result.stderr[-500:]}")
        probe = json.loads(html.unescape(found.group(1)))
        if screenshot is not None:
            screenshot = Path(screenshot).resolve()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            shot = _run(chromium, [f"--screenshot={screenshot}", alone.as_uri()], timeout)
            if not screenshot.is_file():
                raise RuntimeError(f"Chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr[-500:]}")
    check = BrowserCheck(probe["images"], probe["external"], probe["height"], probe["summary_bottom"], screenshot)
    broken = [i["alt"] for i in check.images if not i["ok"]]
    if broken:
        check.problems.append(f"{len(broken)} of {len(check.images)} image(s) did not load: {broken}")
    if check.external:
        check.problems.append(f"references outside the file: {check.external}")
    if check.summary_bottom is None:
        check.problems.append("no summary table (table.summary)")
    elif check.summary_bottom > check.viewport_height:
        check.problems.append(f"the summary table ends at {check.summary_bottom:.0f} px, below the first screen "
                              f"({check.viewport_height} px)")
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metasft.report.browser",
                                     description="Check a report.html in headless Chromium, as a copy on its own.")
    parser.add_argument("html", type=Path, help="the report.html to check, e.g. runs/embedded_default/report/report.html")
    parser.add_argument("--screenshot", type=Path, default=None, help="write the first screen here (PNG)")
    args = parser.parse_args(argv)
    try:
        check = check_html(args.html, args.screenshot)
    except (BrowserUnavailable, OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    loaded = sum(i["ok"] for i in check.images)
    print(f"{loaded}/{len(check.images)} images loaded; summary table ends at {check.summary_bottom} px of a "
          f"{check.viewport_height} px first screen" + (f"; screenshot {check.screenshot}" if check.screenshot else ""))
    for problem in check.problems:
        print(f"problem: {problem}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
