"""Open a page ``infopo-verl report`` wrote in headless Chromium, check that every figure renders, screenshot it.

Run once by hand (not in CI), on Debian: ``apt-get install -y chromium``, then::

    python tools/check_report_in_browser.py REPORT_DIR --screenshot docs/report.png

Browser runs, each in a fresh profile with networking features off:

1. a copy of ``index.html`` (beside the same figures) with a script added at the end that, once the page has
   loaded, writes every ``<img>``'s ``src``, ``complete`` and ``naturalWidth`` x ``naturalHeight`` into the DOM;
   ``--dump-dom`` prints that DOM and this script fails unless every image decoded to a non-empty size;
2. the page itself, unmodified, ``--screenshot`` at ``--window-size``; ``--also PAGE=PNG`` screenshots other
   pages of the report the same way (e.g. a dialogue page).

Exit status 0 when every figure rendered.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK_SCRIPT = """
<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(image => ({
    src: image.getAttribute('src'), complete: image.complete,
    width: image.naturalWidth, height: image.naturalHeight}));
  const out = document.createElement('pre');
  out.id = 'image-check';
  out.textContent = JSON.stringify(images);
  document.body.appendChild(out);
});
</script>
"""
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    command = [binary, *BROWSER_FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def check_images(binary: str, report_dir: Path) -> list[dict]:
    """What the browser decoded for each ``<img>`` of ``report_dir/index.html``."""
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    probe = report_dir / "_browser_check.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as profile:
            # virtual time lets the load event and its handler run before the DOM is dumped
            result = chromium(binary, Path(profile), "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    match = re.search(r'<pre id="image-check">(.*?)</pre>', result.stdout, re.S)
    if not match:
        raise SystemExit(f"the browser printed no image check (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report_dir", type=Path, help="the --out directory of infopo-verl report")
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG to write")
    parser.add_argument("--window-size", default="1150,3000", help="width,height in pixels (default 1150,3000)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium", help="browser binary")
    parser.add_argument("--also", action="append", default=[], metavar="PAGE=PNG",
                        help="also screenshot another page of the report, e.g. dialogues/step_2.html=docs/step.png")
    parser.add_argument("--also-window-size", default="1150,1600", help="window size for the --also pages")
    args = parser.parse_args(argv)

    images = check_images(args.chromium, args.report_dir.resolve())
    failed = [image for image in images if not (image["complete"] and image["width"] > 0 and image["height"] > 0)]
    for image in images:
        print(f"{image['src']}: {image['width']} x {image['height']} {'ok' if image not in failed else 'NOT RENDERED'}")
    if not images or failed:
        print(f"{len(failed)} of {len(images)} figures did not render", file=sys.stderr)
        return 1
    shots = [("index.html", args.screenshot, args.window_size)]
    shots += [(*item.split("=", 1), args.also_window_size) for item in args.also]
    for page, shot, size in shots:
        shot = Path(shot).resolve()
        shot.unlink(missing_ok=True)  # a stale file must not pass for a new screenshot
        with tempfile.TemporaryDirectory() as profile:
            result = chromium(args.chromium, Path(profile), f"--window-size={size}",
                              f"--screenshot={shot}", (args.report_dir.resolve() / page).as_uri())
        if not shot.is_file():
            print(f"no screenshot of {page} written (exit {result.returncode}):\n{result.stderr[-2000:]}",
                  file=sys.stderr)
            return 1
    print(f"all {len(images)} figures rendered; screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
